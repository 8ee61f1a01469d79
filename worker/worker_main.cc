// mfpo-worker: the trainer agent. `mfpo-worker --coordinator HOST:PORT` registers with the
// coordinator and runs the training stages it is assigned (trainer_agent.h); SIGINT / SIGTERM
// stop it and its stage. `mfpo-worker stage --assignment FILE` is the stage child it starts.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/cli_util.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "common/metrics_server.h"
#include "worker/trainer_agent.h"
#include "worker/trainer_metrics.h"

ABSL_FLAG(std::string, coordinator, "", "HOST:PORT of mfpo-coordinator; required");
ABSL_FLAG(std::string, name, "", "a name for this worker in listings (default: the host name)");
ABSL_FLAG(std::string, advertise_host, "127.0.0.1",
          "the address other trainers reach this one at (its rendezvous store); the pod IP on a cluster");
ABSL_FLAG(int32_t, threads, 0, "CPU threads of each stage (0: the job's resources.threads)");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda (advertised capacity)");
ABSL_FLAG(int32_t, gpus, 0, "GPUs of this worker (advertised capacity)");
ABSL_FLAG(std::string, work_dir, "", "where assignments and stage logs go (default: a new directory in /tmp)");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA that signed the coordinator's certificate (turns TLS on)");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate (mutual TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "", "the name to verify in the coordinator's certificate");
ABSL_FLAG(std::string, token_file, "", "file holding the coordinator's bearer token");
ABSL_FLAG(std::string, assignment, "", "stage: the assignment file");
ABSL_FLAG(std::string, metrics_address, "", "serve Prometheus metrics at HOST:PORT/metrics (e.g. 0.0.0.0:9101); empty = off");

namespace mfpo {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

absl::StatusOr<TrainerAgentOptions> OptionsFromFlags() {
  TrainerAgentOptions o;
  o.agent.coordinator = absl::GetFlag(FLAGS_coordinator);
  if (o.agent.coordinator.empty()) return absl::InvalidArgumentError("--coordinator HOST:PORT is required");
  o.agent.name = absl::GetFlag(FLAGS_name);
  if (o.agent.name.empty()) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    o.agent.name = absl::StrCat(host, ":", getpid());
  }
  o.agent.security.ca = absl::GetFlag(FLAGS_tls_ca);
  o.agent.security.cert = absl::GetFlag(FLAGS_tls_cert);
  o.agent.security.key = absl::GetFlag(FLAGS_tls_key);
  o.agent.security.server_name = absl::GetFlag(FLAGS_tls_server_name);
  if (const std::string f = absl::GetFlag(FLAGS_token_file); !f.empty()) {
    MFPO_ASSIGN_OR_RETURN(o.agent.security.token, ReadTokenFile(f));
  }
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device != "cpu" && device != "cuda") return absl::InvalidArgumentError("--device must be cpu or cuda");
  o.threads = absl::GetFlag(FLAGS_threads);
  if (o.threads < 0 || o.threads > 1024) return absl::InvalidArgumentError("--threads must be in [0, 1024]");
  o.agent.capacity.set_device(device);
  o.agent.capacity.set_threads(o.threads > 0 ? o.threads : static_cast<int>(std::thread::hardware_concurrency()));
  o.agent.capacity.set_gpus(absl::GetFlag(FLAGS_gpus));
  o.advertise_host = absl::GetFlag(FLAGS_advertise_host);
  o.work_dir = absl::GetFlag(FLAGS_work_dir);
  char self[4096] = {};
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return absl::InternalError("cannot find this program's path (/proc/self/exe)");
  o.binary.assign(self, static_cast<size_t>(n));
  return o;
}

}  // namespace
}  // namespace mfpo

int main(int argc, char** argv) {
  std::signal(SIGXFSZ, SIG_IGN);
  if (argc >= 2 && std::string(argv[1]) == "stage") {
    std::vector<std::string> positional;
    const int code = mfpo::ParseSingleCommand("mfpo-worker stage", "mfpo-worker stage --assignment FILE [--threads N]",
                                              {"assignment", "threads"}, argc - 1, argv + 1, MFPO_VERSION, &positional);
    if (code >= 0) return code;
    spdlog::set_default_logger(spdlog::stderr_color_mt("stage"));
    spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
    return mfpo::RunStageChild(absl::GetFlag(FLAGS_assignment), absl::GetFlag(FLAGS_threads));
  }
  spdlog::set_default_logger(spdlog::stderr_color_mt("mfpo-worker"));
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  std::vector<std::string> positional;
  const int code = mfpo::ParseSingleCommand(
      "mfpo-worker",
      "mfpo-worker --coordinator HOST:PORT [--name N] [--advertise_host H] [--threads N] [--device cpu|cuda]\n"
      "  [--gpus N] [--work_dir DIR] [--tls_ca PEM [--tls_cert PEM --tls_key PEM] [--tls_server_name N]]\n"
      "  [--token_file F] [--metrics_address HOST:PORT]",
      {"coordinator", "name", "advertise_host", "threads", "device", "gpus", "work_dir", "tls_ca", "tls_cert", "tls_key",
       "tls_server_name", "token_file", "metrics_address"},
      argc, argv, MFPO_VERSION, &positional);
  if (code >= 0) return code;
  if (!positional.empty())
    return mfpo::ExitCode(absl::InvalidArgumentError(absl::StrCat("unexpected argument '", positional[0], "'")), "mfpo-worker");
  absl::StatusOr<mfpo::TrainerAgentOptions> options = mfpo::OptionsFromFlags();
  if (!options.ok()) return mfpo::ExitCode(options.status(), "mfpo-worker");
  auto registry = std::make_shared<prometheus::Registry>();
  mfpo::TrainerMetrics metrics(*registry, "trainer", MFPO_VERSION);
  std::unique_ptr<mfpo::MetricsServer> metrics_server;
  if (const std::string address = absl::GetFlag(FLAGS_metrics_address); !address.empty()) {
    absl::StatusOr<std::unique_ptr<mfpo::MetricsServer>> started = mfpo::MetricsServer::Start(address, registry);
    if (!started.ok()) return mfpo::ExitCode(started.status(), "mfpo-worker");
    metrics_server = std::move(*started);
    spdlog::info("metrics at {}", metrics_server->url());
  }
  options->metrics = &metrics;
  std::signal(SIGINT, mfpo::OnSignal);
  std::signal(SIGTERM, mfpo::OnSignal);
  absl::Status s = mfpo::RunTrainerAgent(*options, mfpo::g_stop);
  if (s.ok()) spdlog::info("stopped");
  return mfpo::ExitCode(s, "mfpo-worker");
}
