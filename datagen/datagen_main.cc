// mfpo-datagen: the datagen worker. Processes one shard of a preference manifest (keywords ->
// regions -> diffusion noise -> rejected images), resumable, with all cores, reporting progress
// in the log and as Prometheus metrics. For now it runs standalone on a shard given by flags;
// the coordinator hands out shards as leases later.
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/registry.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "common/device.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/cli_util.h"
#include "common/metrics_server.h"
#include "common/torch_seam.h"
#include "common/file_util.h"
#include "datagen/datagen_agent.h"
#include "datagen/datagen_metrics.h"
#include <unistd.h>
#include "datagen/perturb_flags.h"

ABSL_FLAG(std::string, model, "", "LLaVA model directory (model grounder, word vectors)");
ABSL_FLAG(std::string, out, "", "output directory");
ABSL_FLAG(uint64_t, seed, 0, "base seed of the noise");
ABSL_FLAG(int32_t, noise_step, 500, "DDPM step t");
ABSL_FLAG(int32_t, threads, 0, "worker threads (0: one per core)");
ABSL_FLAG(std::string, metrics_address, "",
          "serve Prometheus metrics at HOST:PORT (e.g. 0.0.0.0:9102); empty = off");
ABSL_FLAG(std::string, coordinator, "",
          "HOST:PORT of mfpo-coordinator: take shard leases from it instead of --manifest/--begin/--end");
ABSL_FLAG(std::string, name, "", "a name for this worker in listings (with --coordinator)");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA that signed the coordinator's certificate (turns TLS on)");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate (mutual TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "", "the name to verify in the coordinator's certificate");
ABSL_FLAG(std::string, token_file, "", "file holding the coordinator's bearer token");

namespace {
std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }
}  // namespace

int main(int argc, char** argv) {
  // A write beyond the file-size limit (ulimit -f) fails with EFBIG and is reported like a full
  // disk, instead of the default SIGXFSZ killing the process mid-write.
  std::signal(SIGXFSZ, SIG_IGN);
  const std::string synopsis =
      absl::StrCat("[flags]\n", mfpo::PerturbFlagsHelp(), "  [--metrics-address HOST:PORT]\n",
                   "or, as the job service's datagen agent:\n",
                   "  --coordinator HOST:PORT [--threads N] [--name N] [--metrics-address HOST:PORT]\n",
                   "  [--tls-ca PEM [--tls-cert PEM --tls-key PEM] [--tls-server-name N]] [--token-file F]");
  absl::SetProgramUsageMessage(absl::StrCat("mfpo-datagen ", synopsis, "\n"));
  std::vector<std::string> normalised = mfpo::NormaliseFlagNames(argc, argv);
  std::vector<std::string> flags = mfpo::PerturbFlagNames();
  for (const char* f : {"metrics_address", "coordinator", "name", "tls_ca", "tls_cert", "tls_key", "tls_server_name",
                        "token_file"})
    flags.push_back(f);
  const mfpo::CommandFlags command{"", synopsis, flags};
  if (mfpo::WantsHelp(normalised)) {
    std::cout << mfpo::CommandHelp("mfpo-datagen", command, {});
    return 0;
  }
  for (const std::string& a : normalised)
    if (a == "--version") {
      std::cout << "mfpo-datagen " << MFPO_VERSION << "\n";
      return 0;
    }
  const std::vector<std::string> given = mfpo::GivenFlagNames(normalised);
  if (absl::Status s = mfpo::CheckCommandFlags("mfpo-datagen", command, {}, given); !s.ok())
    return mfpo::ExitCode(s, "mfpo-datagen");
  // An agent's shard settings come from each job's spec (datagen.*): a perturb flag given here
  // would be ignored, so it is refused.
  if (std::find(given.begin(), given.end(), "coordinator") != given.end()) {
    const std::vector<std::string> shard_settings = mfpo::PerturbFlagNames();
    for (const std::string& f : given)
      if (f != "threads" && std::find(shard_settings.begin(), shard_settings.end(), f) != shard_settings.end())
        return mfpo::ExitCode(absl::InvalidArgumentError(absl::StrCat(
                                  "--", f, " is a shard setting, not an agent's: with --coordinator each job's spec "
                                  "decides it (datagen.*, objective.noise_step)")),
                              "mfpo-datagen");
  }
  std::vector<char*> raw;
  for (auto& a : normalised) raw.push_back(a.data());
  std::vector<char*> args = absl::ParseCommandLine(static_cast<int>(raw.size()), raw.data());
  spdlog::set_default_logger(spdlog::stderr_color_mt("mfpo-datagen"));
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  if (args.size() != 1) {
    std::cerr << "mfpo-datagen: unexpected positional arguments\n";
    return 2;
  }
  mfpo::PerturbCommandOptions o;
  mfpo::PerturbOptionsFromFlags(&o);
  if (o.shard.threads < 0 || o.shard.threads > 1024)
    return mfpo::ExitCode(absl::InvalidArgumentError("--threads must be in [0, 1024] (0: one per core)"), "mfpo-datagen");
  // Record-level parallelism: each worker thread runs its own LibTorch ops single-threaded.
  mfpo::SetComputeThreads(1);

  auto registry = std::make_shared<prometheus::Registry>();
  mfpo::DatagenMetrics metrics(*registry);
  mfpo::RegisterProcessInfo(*registry, MFPO_VERSION, "datagen");
  std::unique_ptr<mfpo::MetricsServer> server;
  const std::string address = absl::GetFlag(FLAGS_metrics_address);
  if (!address.empty()) {
    auto started = mfpo::MetricsServer::Start(address, registry);
    if (!started.ok()) return mfpo::ExitCode(started.status(), "mfpo-datagen");
    server = std::move(*started);
    spdlog::info("metrics at {}", server->url());
  }
  mfpo::PerturbCounters counters;
  metrics.Attach(counters);
  if (const std::string coordinator = absl::GetFlag(FLAGS_coordinator); !coordinator.empty()) {
    // Agent mode: shard leases from the coordinator.
    mfpo::DatagenAgentOptions agent;
    agent.agent.coordinator = coordinator;
    agent.agent.name = absl::GetFlag(FLAGS_name);
    if (agent.agent.name.empty()) agent.agent.name = absl::StrCat("datagen:", getpid());
    agent.agent.security.ca = absl::GetFlag(FLAGS_tls_ca);
    agent.agent.security.cert = absl::GetFlag(FLAGS_tls_cert);
    agent.agent.security.key = absl::GetFlag(FLAGS_tls_key);
    agent.agent.security.server_name = absl::GetFlag(FLAGS_tls_server_name);
    if (const std::string f = absl::GetFlag(FLAGS_token_file); !f.empty()) {
      absl::StatusOr<std::string> token = mfpo::ReadTokenFile(f);
      if (!token.ok()) return mfpo::ExitCode(token.status(), "mfpo-datagen");
      agent.agent.security.token = *token;
    }
    agent.agent.capacity.set_device("cpu");
    agent.agent.capacity.set_threads(o.shard.threads > 0 ? o.shard.threads
                                                         : static_cast<int>(std::thread::hardware_concurrency()));
    agent.threads = o.shard.threads;
    agent.counters = &counters;
    std::signal(SIGINT, OnSignal);
    std::signal(SIGTERM, OnSignal);
    std::atomic<bool> mirroring{true};
    std::thread mirror([&] {
      while (mirroring.load()) {
        metrics.Sync(counters);
        std::this_thread::sleep_for(std::chrono::seconds(1));
      }
    });
    absl::Status s = mfpo::RunDatagenAgent(agent, g_stop);
    mirroring = false;
    mirror.join();
    return mfpo::ExitCode(s, "mfpo-datagen");
  }
  // Mirror the pipeline's counters into the metrics once a second.
  std::atomic<bool> running{true};
  std::thread mirror([&] {
    while (running.load()) {
      metrics.Sync(counters);
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    metrics.Sync(counters);
  });
  absl::StatusOr<mfpo::ShardReport> report = mfpo::CatchAll("mfpo-datagen", [&] { return mfpo::RunPerturbCommand(o, &counters); });
  running = false;
  mirror.join();
  if (!report.ok()) return mfpo::ExitCode(report.status(), "mfpo-datagen");
  std::cout << mfpo::ShardReportText(*report);
  return mfpo::ExitCode(mfpo::CheckShardProducedRecords(*report), "mfpo-datagen");
}
