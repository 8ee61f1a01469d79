// The coordinator's gRPC server: JobService (mfpoctl) and WorkerService (the agents) over one
// Coordinator, plus grpc.health.v1.Health and server reflection. Every call but the health
// service's checks the bearer token when one is configured; statuses come from the Coordinator's
// absl::Status through ToGrpcStatus (common/rpc_util.h).
#ifndef MFPO_COORDINATOR_SERVICE_H_
#define MFPO_COORDINATOR_SERVICE_H_

#include <functional>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "common/rpc_util.h"
#include "coordinator/coordinator.h"

namespace mfpo {

struct ServerOptions {
  std::string address = "127.0.0.1:7070";  // HOST:PORT; port 0 picks a free one
  ServerSecurity security;
  std::function<void(double seconds)> observe_heartbeat;  // optional: each Heartbeat's handling time
  // Optional: a second, plaintext listener with only grpc.health.v1 (Kubernetes' gRPC probes
  // speak no TLS); "" = none.
  std::string health_address;
};

class CoordinatorServer {
 public:
  // Serves `coordinator` (not owned; must outlive the server) at options.address.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(Coordinator* coordinator, const ServerOptions& options);
  ~CoordinatorServer();
  int port() const { return port_; }
  int health_port() const { return health_port_; }
  // Stops accepting calls; calls in flight get `grace` to finish, then are cancelled.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  class JobServiceImpl;
  class WorkerServiceImpl;
  CoordinatorServer() = default;
  std::unique_ptr<JobServiceImpl> jobs_;
  std::unique_ptr<WorkerServiceImpl> workers_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::Server> health_server_;
  int port_ = 0;
  int health_port_ = 0;
  bool shut_down_ = false;
};

}  // namespace mfpo

#endif  // MFPO_COORDINATOR_SERVICE_H_
