#include "common/metrics_server.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

#include <prometheus/counter.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/metrics_test_util.h"

namespace mfpo {
namespace {

TEST(MetricsServerTest, ServesTheRegistryAtSlashMetrics) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildCounter().Name("mfpo_test_things_total").Help("things").Register(*registry);
  family.Add({{"kind", "a"}}).Increment(3);
  auto server = MetricsServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  EXPECT_EQ((*server)->url(), absl::StrCat("http://127.0.0.1:", (*server)->port(), "/metrics"));
  const std::string body = HttpGet((*server)->port(), "/metrics");
  EXPECT_TRUE(absl::StartsWith(body, "HTTP/1.1 200 OK")) << body;
  EXPECT_TRUE(absl::StrContains(body, "text/plain; version=0.0.4")) << body;
  EXPECT_TRUE(absl::StrContains(body, "mfpo_test_things_total{kind=\"a\"} 3")) << body;
  family.Add({{"kind", "a"}}).Increment();
  EXPECT_TRUE(absl::StrContains(HttpGet((*server)->port(), "/metrics"), "mfpo_test_things_total{kind=\"a\"} 4"));
  EXPECT_TRUE(absl::StartsWith(HttpGet((*server)->port(), "/other"), "HTTP/1.1 404"));
}

TEST(MetricsServerTest, ErrorsSayWhatFailed) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto first = MetricsServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(first.ok());
  auto taken = MetricsServer::Start(absl::StrCat("127.0.0.1:", (*first)->port()), registry);
  ASSERT_FALSE(taken.ok());
  EXPECT_TRUE(absl::StrContains(taken.status().message(), "Address already in use")) << taken.status();
  for (const char* bad : {"nonsense", "127.0.0.1:99999", "127.0.0.1:x"}) {
    auto s = MetricsServer::Start(bad, registry);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_TRUE(absl::IsInvalidArgument(s.status())) << s.status();
  }
  auto unresolved = MetricsServer::Start("no-such-host.invalid:9102", registry);
  EXPECT_FALSE(unresolved.ok());
}

TEST(MetricsServerTest, ASilentClientDoesNotBlockOtherScrapes) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto server = MetricsServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(server.ok());
  // Connects and says nothing: it holds one handler (until its 5 s read timeout), not the server.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>((*server)->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(absl::StartsWith(HttpGet((*server)->port(), "/metrics"), "HTTP/1.1 200"));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(4)) << "the scrape waited for the silent client";
  ::close(fd);
}

}  // namespace
}  // namespace mfpo
