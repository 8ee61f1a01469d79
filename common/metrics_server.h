// The /metrics endpoint of every process: a small HTTP/1.1 server that serves a prometheus-cpp
// registry in the text exposition format.
//
// Why not prometheus::Exposer: it embeds civetweb, which Debian builds with a fixed 100 KiB
// thread stack (USE_STACK_SIZE), and glibc places a thread's static TLS inside its stack. Next to
// LibTorch and OpenBLAS (about 100 KiB of static TLS together) every civetweb thread fails to
// start, and Exposer reports it as "null context when constructing CivetServer. Possible
// problem binding to port." This server's one thread has the default stack, and its errors say
// what failed (resolve, bind, listen) with the OS's reason.
#ifndef MFPO_COMMON_METRICS_SERVER_H_
#define MFPO_COMMON_METRICS_SERVER_H_

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/registry.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace mfpo {

// `mfpo_build_info{version, component}` (always 1) and `mfpo_process_start_time_seconds{component}`
// (now), which every process serves: a changed start time is a restart.
void RegisterProcessInfo(prometheus::Registry& registry, const std::string& version, const std::string& component);

class MetricsServer {
 public:
  // Listens on `address` ("HOST:PORT", ":PORT" for every interface, "[::1]:PORT"; port 0 picks
  // a free one) and serves GET /metrics from `registry` until destroyed. Errors name the address.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& address,
                                                            std::shared_ptr<prometheus::Registry> registry);
  // `refresh` runs before each scrape is serialised (e.g. gauges copied from a state snapshot),
  // so that a scrape never shows a state older than the request. Set once, before serving.
  void SetRefresh(std::function<void()> refresh) {
    absl::MutexLock lock(&mu_);
    refresh_ = std::move(refresh);
  }
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }
  // "http://HOST:PORT/metrics" as a client would reach it.
  std::string url() const;

 private:
  MetricsServer(int listen_fd, int wake_fd_read, int wake_fd_write, int port, std::string host,
                std::shared_ptr<prometheus::Registry> registry);
  void Accept();                 // the accepting thread: queues connections
  void Handle();                 // each handler thread: serves queued connections
  void HandleConnection(int fd);

  static constexpr int kHandlers = 8;     // a slow client holds one, not the endpoint
  static constexpr size_t kMaxQueued = 64;  // beyond this, new connections are closed at once

  const int listen_fd_, wake_read_, wake_write_, port_;
  const std::string host_;
  std::shared_ptr<prometheus::Registry> registry_;
  absl::Mutex mu_;
  std::deque<int> queue_ ABSL_GUARDED_BY(mu_);
  std::function<void()> refresh_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread acceptor_;                 // owned: joined by the destructor
  std::vector<std::thread> handlers_;    // owned: joined by the destructor
};

}  // namespace mfpo

#endif  // MFPO_COMMON_METRICS_SERVER_H_
