// `mfpo train`: one local job end to end: training (worker/trainer.h), then the spec's
// evaluation section on the final checkpoint (worker/eval_commands.h).
#ifndef MFPO_CLI_TRAIN_COMMAND_H_
#define MFPO_CLI_TRAIN_COMMAND_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "mfpo_job.pb.h"
#include "worker/collective.h"

namespace mfpo {

struct TrainCommandOptions {
  std::string spec_path;         // YAML or JSON job spec
  int64_t stop_after_steps = 0;  // stop (with a checkpoint) after this many steps; 0 = run to the end
  int threads = 0;               // --threads: overrides resources.threads (all ranks together); 0 = the spec's
  // This process is one rank of a group (--rank/--world-size/--rendezvous or the torchrun and
  // PyTorchJob variables); unset: one process, or resources.workers local ranks.
  bool is_rank = false;
  GroupOptions group;
  bool launched_locally = false;  // a rank started by RunLocalRanks (the launcher evaluates)
  std::string binary;             // this program, to start local ranks
  std::string metrics_address;    // serve training metrics there (one process, or a rank of a group)
};

// Trains, then, when `evaluation.data` is set and training ran to the end, evaluates the final
// checkpoint into OUTPUT_DIR/eval (report.json, report.md, answers). With resources.workers N > 1
// and no group given, starts N local ranks (cli/local_ranks.h) and evaluates after them. A rank
// of a multi-machine group evaluates on rank 0 only.
absl::Status RunTrainCommand(const TrainCommandOptions& options, std::ostream& out);

// The spec's evaluation section on `checkpoint`, into OUTPUT_DIR/eval (kept when a finished
// evaluation of the same checkpoint and settings is there). The job service's EVALUATING stage.
absl::Status EvaluateJob(const v1::JobSpec& spec, const std::string& checkpoint, std::ostream& out);

}  // namespace mfpo

#endif  // MFPO_CLI_TRAIN_COMMAND_H_
