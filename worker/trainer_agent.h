// The trainer agent (`mfpo-worker --coordinator ADDR`): registers as a trainer, hosts a c10d
// store for the groups in which it is rank 0, and runs each assigned stage in a child process
// (`mfpo-worker stage`, stage_runner.h) so that an abort, a crash or a hung collective ends the
// child and never the agent. Rank 0's progress lines go to the coordinator as they come.
#ifndef MFPO_WORKER_TRAINER_AGENT_H_
#define MFPO_WORKER_TRAINER_AGENT_H_

#include <atomic>
#include <string>

#include "absl/status/status.h"
#include "common/agent_runner.h"
#include "worker/trainer_metrics.h"

namespace mfpo {

struct TrainerAgentOptions {
  AgentOptions agent;                   // coordinator, security, name, capacity
  std::string advertise_host = "127.0.0.1";  // the address other trainers reach this one's store at
  int threads = 0;                      // CPU threads of each stage (0: the spec's resources.threads)
  std::string binary;                   // this program (started as `BINARY stage ...`)
  std::string work_dir;                 // assignments and the stages' logs
  TrainerMetrics* metrics = nullptr;    // optional: fed from rank 0's step and checkpoint lines
};

absl::Status RunTrainerAgent(const TrainerAgentOptions& options, const std::atomic<bool>& stop);

// `mfpo-worker stage --assignment FILE`: the child side; prints PROGRESS and RESULT lines.
int RunStageChild(const std::string& assignment_path, int threads);

}  // namespace mfpo

#endif  // MFPO_WORKER_TRAINER_AGENT_H_
