// mfpo-coordinator: the job service. Keeps jobs in a SQLite file, serves JobService (mfpoctl)
// and WorkerService (mfpo-worker, mfpo-datagen --coordinator) over gRPC, and drives every job
// through its stages (coordinator.h). SIGINT / SIGTERM stop it cleanly; a restart with the same
// --database continues every job.
#include <signal.h>

#include <fstream>
#include <thread>
#include <iostream>
#include <string>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/cli_util.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "common/metrics_server.h"
#include "common/rpc_util.h"
#include "coordinator/coordinator.h"
#include "coordinator/coordinator_metrics.h"
#include "coordinator/service.h"

ABSL_FLAG(std::string, address, "127.0.0.1:7070", "HOST:PORT to serve gRPC on (port 0: a free one, see --port_file)");
ABSL_FLAG(std::string, database, "", "SQLite file of the job store (created when missing); required");
ABSL_FLAG(std::string, roots, "", "comma-separated directories that job specs' paths must lie under; required");
ABSL_FLAG(std::string, port_file, "", "write the port served to this file once listening");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate (turns TLS on)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "", "PEM CA: require client certificates signed by it");
ABSL_FLAG(std::string, token_file, "", "file holding the bearer token every call must carry");
ABSL_FLAG(double, heartbeat_interval_s, 1.0, "how often workers heartbeat");
ABSL_FLAG(double, worker_timeout_s, 10.0, "a worker silent for this long is lost (its group is re-formed)");
ABSL_FLAG(double, lease_s, 30.0, "a datagen shard lease lasts this long past its last heartbeat");
ABSL_FLAG(int64_t, shard_records, 64, "records per datagen shard");
ABSL_FLAG(std::string, health_address, "",
          "also serve grpc.health.v1 alone, in plaintext, at HOST:PORT (for Kubernetes' gRPC probes); empty = off");
ABSL_FLAG(std::string, metrics_address, "",
          "serve Prometheus metrics at HOST:PORT/metrics (e.g. 0.0.0.0:9100); empty = off");

namespace mfpo {
namespace {

struct Options {
  CoordinatorOptions coordinator;
  ServerOptions server;
  std::string port_file;
  std::string metrics_address;
};

absl::StatusOr<Options> OptionsFromFlags() {
  Options o;
  o.coordinator.database = absl::GetFlag(FLAGS_database);
  for (absl::string_view r : absl::StrSplit(absl::GetFlag(FLAGS_roots), ',', absl::SkipEmpty()))
    o.coordinator.allowed_roots.emplace_back(r);
  const double hb = absl::GetFlag(FLAGS_heartbeat_interval_s), timeout = absl::GetFlag(FLAGS_worker_timeout_s),
               lease = absl::GetFlag(FLAGS_lease_s);
  if (!(hb >= 0.05 && hb <= 60)) return absl::InvalidArgumentError("--heartbeat_interval_s must be in [0.05, 60]");
  if (!(timeout >= 2 * hb && timeout <= 3600))
    return absl::InvalidArgumentError("--worker_timeout_s must be at least twice --heartbeat_interval_s (and <= 3600)");
  if (!(lease >= timeout && lease <= 86400))
    return absl::InvalidArgumentError("--lease_s must be at least --worker_timeout_s (and <= 86400)");
  if (absl::GetFlag(FLAGS_shard_records) < 1) return absl::InvalidArgumentError("--shard_records must be >= 1");
  o.coordinator.heartbeat_interval_ms = static_cast<int64_t>(hb * 1000);
  o.coordinator.worker_timeout_ms = static_cast<int64_t>(timeout * 1000);
  o.coordinator.lease_ms = static_cast<int64_t>(lease * 1000);
  o.coordinator.shard_records = absl::GetFlag(FLAGS_shard_records);
  o.server.address = absl::GetFlag(FLAGS_address);
  MFPO_RETURN_IF_ERROR(CheckListenAddress(o.server.address, "--address"));
  o.server.security.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  o.server.security.tls_key = absl::GetFlag(FLAGS_tls_key);
  o.server.security.client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  if (const std::string f = absl::GetFlag(FLAGS_token_file); !f.empty()) {
    MFPO_ASSIGN_OR_RETURN(o.server.security.token, ReadTokenFile(f));
  }
  o.port_file = absl::GetFlag(FLAGS_port_file);
  o.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  o.server.health_address = absl::GetFlag(FLAGS_health_address);
  if (!o.server.health_address.empty())
    MFPO_RETURN_IF_ERROR(CheckListenAddress(o.server.health_address, "--health_address"));
  if (!o.metrics_address.empty()) MFPO_RETURN_IF_ERROR(CheckListenAddress(o.metrics_address, "--metrics_address"));
  return o;
}

int Run(const Options& o) {
  // SIGINT / SIGTERM are taken by sigwait below (blocked here, before any thread starts).
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  absl::StatusOr<std::unique_ptr<Coordinator>> coordinator = Coordinator::Open(o.coordinator);
  if (!coordinator.ok()) return ExitCode(coordinator.status(), "mfpo-coordinator");
  auto registry = std::make_shared<prometheus::Registry>();
  CoordinatorMetrics metrics(*registry, MFPO_VERSION);
  std::unique_ptr<MetricsServer> metrics_server;
  if (!o.metrics_address.empty()) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> started = MetricsServer::Start(o.metrics_address, registry);
    if (!started.ok()) return ExitCode(started.status(), "mfpo-coordinator");
    metrics_server = std::move(*started);
    metrics_server->SetRefresh([&] { metrics.Sync((*coordinator)->TakeSnapshot()); });
    spdlog::info("metrics at {}", metrics_server->url());
  }
  ServerOptions server_options = o.server;
  server_options.observe_heartbeat = [&metrics](double s) { metrics.ObserveHeartbeat(s); };
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> server = CoordinatorServer::Start(coordinator->get(), server_options);
  if (!server.ok()) return ExitCode(server.status(), "mfpo-coordinator");

  spdlog::info("serving on port {} ({}{}), database {}", (*server)->port(),
               o.server.security.tls_cert.empty() ? "plaintext" : "TLS",
               o.server.security.token.empty() ? "" : ", bearer token", o.coordinator.database);
  if (!o.port_file.empty()) {
    if (absl::Status s = WriteFileAtomically(o.port_file, absl::StrCat((*server)->port(), "\n")); !s.ok())
      return ExitCode(s, "mfpo-coordinator");
  }
  int sig = 0;
  sigwait(&stop, &sig);
  spdlog::info("signal {}: stopping", sig);
  metrics_server.reset();  // its refresh reads the coordinator
  (*server)->Shutdown(std::chrono::milliseconds(2000));
  server->reset();
  coordinator->reset();
  return 0;
}

}  // namespace
}  // namespace mfpo

int main(int argc, char** argv) {
  // absl's mutex deadlock detector keeps a lock graph on every acquisition (a few % of the
  // coordinator's CPU under load); the lock order here is one mutex.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  spdlog::set_default_logger(spdlog::stderr_color_mt("mfpo-coordinator"));
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  std::vector<std::string> positional;
  const int code = mfpo::ParseSingleCommand(
      "mfpo-coordinator",
      "mfpo-coordinator --database FILE --roots DIR[,DIR] [--address HOST:PORT] [--port_file F]\n"
      "  [--tls_cert PEM --tls_key PEM [--tls_client_ca PEM]] [--token_file F]\n"
      "  [--heartbeat_interval_s 1] [--worker_timeout_s 10] [--lease_s 30] [--shard_records 64]\n"
      "  [--metrics_address HOST:PORT] [--health_address HOST:PORT]",
      {"address", "database", "roots", "port_file", "tls_cert", "tls_key", "tls_client_ca", "token_file",
       "heartbeat_interval_s", "worker_timeout_s", "lease_s", "shard_records", "metrics_address", "health_address"},
      argc, argv, MFPO_VERSION, &positional);
  if (code >= 0) return code;
  if (!positional.empty()) return mfpo::ExitCode(absl::InvalidArgumentError("unexpected positional arguments"), "mfpo-coordinator");
  absl::StatusOr<mfpo::Options> options = mfpo::OptionsFromFlags();
  if (!options.ok()) return mfpo::ExitCode(options.status(), "mfpo-coordinator");
  return mfpo::Run(*options);
}
