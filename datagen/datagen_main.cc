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

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/cli_util.h"
#include "datagen/perturb_flags.h"

ABSL_FLAG(std::string, model, "", "LLaVA model directory (model grounder, word vectors)");
ABSL_FLAG(std::string, out, "", "output directory");
ABSL_FLAG(uint64_t, seed, 0, "base seed of the noise");
ABSL_FLAG(int32_t, noise_step, 500, "DDPM step t");
ABSL_FLAG(int32_t, threads, 0, "worker threads (0: one per core)");
ABSL_FLAG(std::string, metrics_address, "",
          "serve Prometheus metrics at HOST:PORT (e.g. 0.0.0.0:9102); empty = off");

namespace {

// The worker's Prometheus metrics (DESIGN.md section 8: mfpo_ prefix, base units, bounded labels).
struct DatagenMetrics {
  explicit DatagenMetrics(prometheus::Registry& r)
      : records(prometheus::BuildCounter()
                    .Name("mfpo_datagen_records_total")
                    .Help("Records finished by this worker, by result")
                    .Register(r)),
        ok(records.Add({{"result", "ok"}})),
        error(records.Add({{"result", "error"}})),
        skipped(records.Add({{"result", "skipped"}})),
        fallback(prometheus::BuildCounter()
                     .Name("mfpo_datagen_global_fallback_total")
                     .Help("Records whose keywords had no region (global noise)")
                     .Register(r)
                     .Add({})),
        queue(prometheus::BuildGauge()
                  .Name("mfpo_datagen_queue_depth")
                  .Help("Records of the shard not finished yet")
                  .Register(r)
                  .Add({})),
        in_flight(prometheus::BuildGauge()
                      .Name("mfpo_datagen_records_in_flight")
                      .Help("Records being processed now")
                      .Register(r)
                      .Add({})),
        seconds(prometheus::BuildHistogram()
                    .Name("mfpo_datagen_record_seconds")
                    .Help("Wall time per record (decode, keywords, grounding, noise, encode, write)")
                    .Register(r)
                    .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                                      0.25, 0.5, 1, 2.5})) {}
  prometheus::Family<prometheus::Counter>& records;
  prometheus::Counter &ok, &error, &skipped, &fallback;
  prometheus::Gauge &queue, &in_flight;
  prometheus::Histogram& seconds;
};

}  // namespace

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
  DatagenMetrics metrics(*registry);
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
  counters.observe_record = [&](double s) { metrics.seconds.Observe(s); };
  // Mirror the pipeline's counters into the metrics once a second.
  std::atomic<bool> running{true};
  std::thread mirror([&] {
    int64_t ok = 0, error = 0, skipped = 0, fallback = 0;
    auto sync = [&] {
      auto bump = [](prometheus::Counter& c, int64_t& seen, int64_t now) {
        if (now > seen) c.Increment(static_cast<double>(now - seen));
        seen = now;
      };
      bump(metrics.ok, ok, counters.done.load());
      bump(metrics.error, error, counters.errors.load());
      bump(metrics.skipped, skipped, counters.skipped.load());
      bump(metrics.fallback, fallback, counters.fallbacks.load());
      metrics.in_flight.Set(static_cast<double>(counters.in_flight.load()));
      metrics.queue.Set(static_cast<double>(counters.total.load() - counters.done.load() - counters.errors.load() -
                                            counters.skipped.load()));
    };
    while (running.load()) {
      sync();
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    sync();
  });
  absl::StatusOr<mfpo::ShardReport> report = mfpo::RunPerturbCommand(o, &counters);
  running = false;
  mirror.join();
  if (report.ok()) {
    metrics.queue.Set(0);
    std::cout << mfpo::ShardReportText(*report);
  }
  return mfpo::ExitCode(report.status(), "mfpo-datagen");
}
