// mfpo-datagen: the datagen worker. Processes one shard of a preference manifest (keywords ->
// regions -> diffusion noise -> rejected images), resumable, with all cores, reporting progress
// in the log and as Prometheus metrics. For now it runs standalone on a shard given by flags;
// the coordinator hands out shards as leases later.
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/cli_util.h"
#include "datagen/datagen_metrics.h"
#include "datagen/perturb_flags.h"

ABSL_FLAG(std::string, model, "", "LLaVA model directory (model grounder, word vectors)");
ABSL_FLAG(std::string, out, "", "output directory");
ABSL_FLAG(uint64_t, seed, 0, "base seed of the noise");
ABSL_FLAG(int32_t, noise_step, 500, "DDPM step t");
ABSL_FLAG(int32_t, threads, 0, "worker threads (0: one per core)");
ABSL_FLAG(std::string, metrics_address, "",
          "serve Prometheus metrics at HOST:PORT (e.g. 0.0.0.0:9102); empty = off");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(absl::StrCat("mfpo-datagen [flags]\n", mfpo::PerturbFlagsHelp(),
                                            "  [--metrics-address HOST:PORT]\n"));
  std::vector<std::string> normalised = mfpo::NormaliseFlagNames(argc, argv);
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
  // Record-level parallelism: each worker thread runs its own LibTorch ops single-threaded.
  torch::set_num_threads(1);

  auto registry = std::make_shared<prometheus::Registry>();
  mfpo::DatagenMetrics metrics(*registry);
  std::unique_ptr<prometheus::Exposer> exposer;
  const std::string address = absl::GetFlag(FLAGS_metrics_address);
  if (!address.empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(address);
    } catch (const std::exception& e) {
      return mfpo::ExitCode(absl::InvalidArgumentError(absl::StrCat("--metrics_address ", address, ": ", e.what())),
                            "mfpo-datagen");
    }
    exposer->RegisterCollectable(registry);
    spdlog::info("metrics at http://{}/metrics", address);
  }
  mfpo::PerturbCounters counters;
  metrics.Attach(counters);
  // Mirror the pipeline's counters into the metrics once a second.
  std::atomic<bool> running{true};
  std::thread mirror([&] {
    while (running.load()) {
      metrics.Sync(counters);
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    metrics.Sync(counters);
  });
  absl::StatusOr<mfpo::ShardReport> report = mfpo::RunPerturbCommand(o, &counters);
  running = false;
  mirror.join();
  if (report.ok()) {
    std::cout << mfpo::ShardReportText(*report);
  }
  return mfpo::ExitCode(report.status(), "mfpo-datagen");
}
