// One stage of a service job, run in a child process of the trainer agent (`mfpo-worker stage`):
// joins the group the assignment names (through the agent's store, under the assignment's
// prefix) and runs that stage with the trainer library (trainer.h), which resumes from whatever
// earlier stages and runs left in output_dir. EVALUATING runs the spec's evaluation on the
// newest checkpoint.
//
// The child talks to its agent on stdout, one line each:
//   PROGRESS <metrics.jsonl line>           rank 0, after each optimizer step
//   CHECKPOINT {"step":N,"seconds":S}        rank 0, after each checkpoint
//   RESULT {"code":0,"message":"","checkpoint":"..."}   last line
#ifndef MFPO_WORKER_STAGE_RUNNER_H_
#define MFPO_WORKER_STAGE_RUNNER_H_

#include <functional>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "mfpo_service.pb.h"

namespace mfpo {

struct StageOutcome {
  std::string checkpoint;  // newest checkpoint after the stage ("" before training)
};

// `threads` > 0 overrides the spec's resources.threads. `on_step` gets rank 0's metrics lines.
absl::StatusOr<StageOutcome> RunStage(const v1::Assignment& assignment, int threads,
                                      const std::function<void(const std::string&)>& on_step,
                                      const std::function<void(int64_t, double)>& on_checkpoint, std::ostream& log);

}  // namespace mfpo

#endif  // MFPO_WORKER_STAGE_RUNNER_H_
