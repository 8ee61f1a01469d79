// `mfpo train`: one local job end to end: training (worker/trainer.h), then the spec's
// evaluation section on the final checkpoint (worker/eval_commands.h).
#ifndef MFPO_CLI_TRAIN_COMMAND_H_
#define MFPO_CLI_TRAIN_COMMAND_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/status.h"

namespace mfpo {

struct TrainCommandOptions {
  std::string spec_path;         // YAML or JSON job spec
  int64_t stop_after_steps = 0;  // stop (with a checkpoint) after this many steps; 0 = run to the end
};

// Trains, then, when `evaluation.data` is set and training ran to the end, evaluates the final
// checkpoint into OUTPUT_DIR/eval (report.json, report.md, answers).
absl::Status RunTrainCommand(const TrainCommandOptions& options, std::ostream& out);

}  // namespace mfpo

#endif  // MFPO_CLI_TRAIN_COMMAND_H_
