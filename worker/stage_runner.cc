#include "worker/stage_runner.h"

#include "absl/strings/str_cat.h"
#include "cli/train_command.h"
#include "common/status_macros.h"
#include "worker/trainer.h"

namespace mfpo {

absl::StatusOr<StageOutcome> RunStage(const v1::Assignment& a, int threads,
                                      const std::function<void(const std::string&)>& on_step,
                                      const std::function<void(int64_t, double)>& on_checkpoint, std::ostream& log) {
  if (a.kind() != v1::Assignment::TRAIN_STAGE)
    return absl::InvalidArgumentError(absl::StrCat(a.id(), ": not a training stage"));
  v1::JobSpec spec = a.spec();
  if (threads > 0) spec.mutable_resources()->set_threads(threads);
  StageOutcome outcome;
  if (a.stage() == v1::EVALUATING) {
    outcome.checkpoint = NewestCheckpoint(spec.output_dir());
    if (outcome.checkpoint.empty())
      return absl::FailedPreconditionError(absl::StrCat(spec.output_dir(), "/checkpoints: no checkpoint to evaluate"));
    MFPO_RETURN_IF_ERROR(EvaluateJob(spec, outcome.checkpoint, log));
    return outcome;
  }
  GroupOptions group;
  group.rank = a.rank();
  group.world_size = a.world_size();
  group.timeout_ms = static_cast<int64_t>(spec.resources().collective_timeout_s()) * 1000;
  if (a.world_size() > 1) {
    group.rendezvous = a.rendezvous();
    group.store_is_external = true;  // the agent of rank 0 hosts it
    group.store_prefix = a.store_prefix();
  }
  MFPO_ASSIGN_OR_RETURN(std::unique_ptr<TrainingJob> job, TrainingJob::Open(spec, group));
  MFPO_RETURN_IF_ERROR(job->ReferencePass());
  if (a.stage() == v1::REFERENCE) return outcome;
  MFPO_ASSIGN_OR_RETURN(Curriculum curriculum, job->ScoreDifficulty());
  if (a.stage() == v1::SCORING) return outcome;
  if (a.stage() != v1::TRAINING)
    return absl::InvalidArgumentError(absl::StrCat(a.id(), ": unknown stage ", v1::JobState_Name(a.stage())));
  if (a.phase() < 0 || a.phase() >= static_cast<int>(curriculum.phases.size()))
    return absl::InvalidArgumentError(
        absl::StrCat(a.id(), ": phase ", a.phase(), " is not in the curriculum (", curriculum.phases.size(), " phases)"));
  TrainControl control;
  control.on_step = on_step;
  control.on_checkpoint = on_checkpoint;
  MFPO_ASSIGN_OR_RETURN(TrainResult result, job->TrainPhase(curriculum, a.phase(), control, log));
  outcome.checkpoint = result.final_checkpoint;
  return outcome;
}

}  // namespace mfpo
