#include "cli/train_command.h"

#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/jsonl.h"
#include "common/status_macros.h"
#include "evaluator/evaluation.h"
#include "worker/job_spec.h"
#include "worker/trainer.h"

namespace mfpo {

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
  TrainControl control;
  control.stop_after_steps = options.stop_after_steps;
  MFPO_ASSIGN_OR_RETURN(TrainResult result, RunTraining(spec, control, out));
  if (spec.evaluation().data().empty() || !result.completed) return absl::OkStatus();

  EvalCommandOptions eval;
  eval.model_dir = result.final_checkpoint;
  eval.data_dir = spec.evaluation().data();
  eval.suites.assign(spec.evaluation().suites().begin(), spec.evaluation().suites().end());
  eval.out_dir = (std::filesystem::path(spec.output_dir()) / "eval").string();
  eval.split = spec.evaluation().split();
  eval.limit = spec.evaluation().limit();
  eval.max_new_tokens = spec.evaluation().max_new_tokens();
  eval.seed = spec.evaluation().seed();
  eval.batch_size = spec.evaluation().batch_size();
  eval.dtype = spec.model().dtype();
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
  out << "== evaluation of " << result.final_checkpoint << " on " << eval.data_dir << " (" << eval.split << ")\n";
  return Annotate(RunEval(eval, out), "evaluation");
}

}  // namespace mfpo
