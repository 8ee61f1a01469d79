#include "cli/train_command.h"

#include <algorithm>
#include <filesystem>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include <nlohmann/json.hpp>

#include "cli/local_ranks.h"
#include "common/metrics_server.h"
#include "worker/trainer_metrics.h"
#include "common/file_util.h"
#include "common/jsonl.h"
#include "common/status_macros.h"
#include "evaluator/evaluation.h"
#include "worker/job_spec.h"
#include "worker/trainer.h"

namespace mfpo {
namespace {

// Training's progress line ends in '\r': an error printed after it starts on a line of its own.
absl::StatusOr<TrainResult> EndProgressLineOnError(absl::StatusOr<TrainResult> result, std::ostream& out) {
  if (!result.ok()) out << "\n" << std::flush;
  return result;
}

}  // namespace

absl::Status RunTrainCommand(const TrainCommandOptions& options, std::ostream& out) {
  if (options.spec_path.empty()) return absl::InvalidArgumentError("--spec is required");
  MFPO_ASSIGN_OR_RETURN(v1::JobSpec spec, LoadJobSpec(options.spec_path));
  // The evaluation's data is checked now, not after hours of training.
  if (!spec.evaluation().data().empty()) {
    const std::string annotations = (std::filesystem::path(spec.evaluation().data()) / "annotations.jsonl").string();
    absl::Status s = CheckRegularFile(annotations, "evaluation annotations");
    if (!s.ok())
      return absl::InvalidArgumentError(absl::StrCat(options.spec_path, ": evaluation.data: ", s.message(),
                                                     " (a world directory written by `mfpo world` is expected)"));
  }
  if (options.threads > 0) spec.mutable_resources()->set_threads(options.threads);
  TrainControl control;
  control.stop_after_steps = options.stop_after_steps;
  // Training metrics for Prometheus (rank 0 reports steps and checkpoints).
  auto registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<TrainerMetrics> metrics;
  std::unique_ptr<MetricsServer> metrics_server;
  if (!options.metrics_address.empty()) {
    if (!options.is_rank && spec.resources().workers() > 1)
      return absl::InvalidArgumentError(
          "--metrics_address with resources.workers > 1 local ranks: start the ranks yourself (--rank 0 ... with "
          "--metrics_address on rank 0), or use the job service (mfpo-worker --metrics_address)");
    MFPO_ASSIGN_OR_RETURN(metrics_server, MetricsServer::Start(options.metrics_address, registry));
    metrics = std::make_unique<TrainerMetrics>(*registry, "train", MFPO_VERSION);
    out << "== training metrics at " << metrics_server->url() << "\n";
    control.on_step = [m = metrics.get()](const std::string& line) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object()) m->OnStep(j);
    };
    control.on_checkpoint = [m = metrics.get()](int64_t step, double seconds) { m->OnCheckpoint(step, seconds); };
  }
  TrainResult result;
  if (options.is_rank) {
    MFPO_ASSIGN_OR_RETURN(result, EndProgressLineOnError(RunTraining(spec, control, out, options.group), out));
    // The launcher of local ranks evaluates once they are done; otherwise rank 0 does.
    if (options.launched_locally || options.group.rank != 0) return absl::OkStatus();
  } else if (spec.resources().workers() > 1) {
    const int n = spec.resources().workers();
    LocalRanksOptions launch;
    launch.binary = options.binary;
    launch.ranks = n;
    const int total = spec.resources().threads() > 0 ? spec.resources().threads()
                                                     : static_cast<int>(std::thread::hardware_concurrency());
    launch.threads_per_rank = std::max(1, total / n);
    launch.cuda = spec.resources().device() == "cuda";
    launch.timeout_ms = static_cast<int64_t>(spec.resources().collective_timeout_s()) * 1000;
    launch.rank_args = {"train", "--spec", options.spec_path};
    if (options.stop_after_steps > 0) {
      launch.rank_args.push_back("--stop_after_steps");
      launch.rank_args.push_back(std::to_string(options.stop_after_steps));
    }
    out << std::flush;
    MFPO_RETURN_IF_ERROR(RunLocalRanks(launch, out));
    if (options.stop_after_steps > 0 || spec.evaluation().data().empty()) return absl::OkStatus();
    // The final checkpoint: the newest one that the ranks wrote.
    result.final_checkpoint = NewestCheckpoint(spec.output_dir());
    if (result.final_checkpoint.empty())
      return absl::InternalError(absl::StrCat(spec.output_dir(), "/checkpoints: the ranks wrote no checkpoint"));
    result.completed = true;
  } else {
    MFPO_ASSIGN_OR_RETURN(result, EndProgressLineOnError(RunTraining(spec, control, out), out));
  }
  if (spec.evaluation().data().empty() || !result.completed) return absl::OkStatus();
  return EvaluateJob(spec, result.final_checkpoint, out);
}

absl::Status EvaluateJob(const v1::JobSpec& spec, const std::string& checkpoint, std::ostream& out) {
  EvalCommandOptions eval;
  eval.model_dir = checkpoint;
  if (spec.optimizer().has_lora()) {  // a LoRA checkpoint is the adapter: run it on the base model
    eval.model_dir = spec.model().path();
    eval.adapter_dir = checkpoint;
  }
  eval.data_dir = spec.evaluation().data();
  eval.suites.assign(spec.evaluation().suites().begin(), spec.evaluation().suites().end());
  eval.out_dir = (std::filesystem::path(spec.output_dir()) / "eval").string();
  eval.split = spec.evaluation().split();
  eval.limit = spec.evaluation().limit();
  eval.max_new_tokens = spec.evaluation().max_new_tokens();
  eval.seed = spec.evaluation().seed();
  eval.batch_size = spec.evaluation().batch_size();
  eval.dtype = spec.model().dtype();
  eval.chat_template = spec.model().chat_template();
  eval.overwrite = true;  // the job's own directory: a rerun with other settings evaluates again
  // A finished evaluation of this checkpoint with the same settings is kept (a rerun of a whole
  // experiment does not pay every evaluation again).
  const std::filesystem::path done = std::filesystem::path(eval.out_dir) / "report.json";
  if (std::error_code ec; std::filesystem::exists(done, ec)) {
    nlohmann::json previous;
    if (ReadJsonFile(done.string(), &previous).ok() && previous.is_object() && previous.contains("options") &&
        previous["options"] == EvalOptionsJson(eval)) {
      out << "== evaluation: kept " << eval.out_dir << " (the same checkpoint and settings)\n";
      return absl::OkStatus();
    }
  }
  out << "== evaluation of " << (eval.adapter_dir.empty() ? checkpoint : absl::StrCat(eval.model_dir, " + adapter ", checkpoint))
      << " on " << eval.data_dir << " (" << eval.split << ")\n";
  return Annotate(RunEval(eval, out), "evaluation");
}

}  // namespace mfpo
