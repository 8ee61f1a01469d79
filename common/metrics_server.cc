#include "common/metrics_server.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include <prometheus/gauge.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace mfpo {
namespace {

absl::Status SysError(const std::string& address, const char* what, int err) {
  return absl::UnavailableError(absl::StrCat("metrics address ", address, ": ", what, ": ", std::strerror(err)));
}

void WriteAll(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address,
                                                                   std::shared_ptr<prometheus::Registry> registry) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos)
    return absl::InvalidArgumentError(absl::StrCat("metrics address '", address, "': expected HOST:PORT or :PORT"));
  std::string host = address.substr(0, colon);
  int port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535)
    return absl::InvalidArgumentError(absl::StrCat("metrics address '", address, "': port must be 0-65535"));
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &found); rc != 0)
    return absl::InvalidArgumentError(absl::StrCat("metrics address ", address, ": cannot resolve '", host, "': ", gai_strerror(rc)));
  int fd = -1, last_err = 0;
  const char* failed = "socket";
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_err = errno, failed = "socket";
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 16) != 0) {
      last_err = errno, failed = "cannot bind and listen";
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0) return SysError(address, failed, last_err);
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  const int actual = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                                  : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  int wake[2];
  if (::pipe2(wake, O_CLOEXEC) != 0) {
    const int err = errno;
    ::close(fd);
    return SysError(address, "pipe", err);
  }
  return std::unique_ptr<MetricsServer>(
      new MetricsServer(fd, wake[0], wake[1], actual, host.empty() ? "127.0.0.1" : host, std::move(registry)));
}

MetricsServer::MetricsServer(int listen_fd, int wake_read, int wake_write, int port, std::string host,
                             std::shared_ptr<prometheus::Registry> registry)
    : listen_fd_(listen_fd), wake_read_(wake_read), wake_write_(wake_write), port_(port), host_(std::move(host)),
      registry_(std::move(registry)) {
  acceptor_ = std::thread([this] { Accept(); });
  for (int i = 0; i < kHandlers; ++i) handlers_.emplace_back([this] { Handle(); });
}

MetricsServer::~MetricsServer() {
  const char c = 'x';
  (void)!::write(wake_write_, &c, 1);
  acceptor_.join();
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (auto& t : handlers_) t.join();
  for (int fd : queue_) ::close(fd);  // accepted but never served
  ::close(listen_fd_);
  ::close(wake_read_);
  ::close(wake_write_);
}

std::string MetricsServer::url() const {
  const bool v6 = host_.find(':') != std::string::npos;
  const std::string host = host_ == "0.0.0.0" || host_ == "::" ? "127.0.0.1" : host_;
  return absl::StrCat("http://", v6 && host == host_ ? absl::StrCat("[", host, "]") : host, ":", port_, "/metrics");
}

void MetricsServer::Accept() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_read_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    const int conn = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) continue;
    absl::MutexLock lock(&mu_);
    if (queue_.size() >= kMaxQueued) {
      ::close(conn);
      continue;
    }
    queue_.push_back(conn);
  }
}

void MetricsServer::Handle() {
  while (true) {
    int conn = -1;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](MetricsServer* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) { return s->stopping_ || !s->queue_.empty(); }, this));
      if (stopping_) return;
      conn = queue_.front();
      queue_.pop_front();
    }
    HandleConnection(conn);
    ::close(conn);
  }
}

void MetricsServer::HandleConnection(int fd) {
  // A slow or silent client cannot hold a handler long: 2 s to send the request line and headers.
  timeval timeout{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  std::string request;
  char buf[4096];
  while (request.find("\r\n\r\n") == std::string::npos && request.find("\n\n") == std::string::npos) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    request.append(buf, static_cast<size_t>(n));
    if (request.size() > 16384) {
      WriteAll(fd, "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      return;
    }
  }
  const std::string line = request.substr(0, request.find_first_of("\r\n"));
  const bool get = absl::StartsWith(line, "GET "), head = absl::StartsWith(line, "HEAD ");
  const size_t path_begin = line.find(' ') + 1;
  const std::string path = line.substr(path_begin, line.find(' ', path_begin) - path_begin);
  const std::string bare = path.substr(0, path.find('?'));
  if (!get && !head) {
    WriteAll(fd, "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    return;
  }
  if (bare != "/metrics" && bare != "/metrics/") {
    const std::string body = "not found: the metrics are at /metrics\n";
    WriteAll(fd, absl::StrCat("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: ", body.size(),
                              "\r\nConnection: close\r\n\r\n", get ? body : ""));
    return;
  }
  std::function<void()> refresh;
  {
    absl::MutexLock lock(&mu_);
    refresh = refresh_;
  }
  if (refresh) refresh();
  const std::string body = prometheus::TextSerializer().Serialize(registry_->Collect());
  WriteAll(fd, absl::StrCat("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: ",
                            body.size(), "\r\nConnection: close\r\n\r\n", get ? body : ""));
}

void RegisterProcessInfo(prometheus::Registry& registry, const std::string& version, const std::string& component) {
  prometheus::BuildGauge()
      .Name("mfpo_build_info")
      .Help("Always 1; the version and component of this process")
      .Register(registry)
      .Add({{"version", version}, {"component", component}})
      .Set(1);
  prometheus::BuildGauge()
      .Name("mfpo_process_start_time_seconds")
      .Help("Unix time at which this process started")
      .Register(registry)
      .Add({{"component", component}})
      .Set(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
}

}  // namespace mfpo
