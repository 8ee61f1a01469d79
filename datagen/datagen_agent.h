// The datagen agent (`mfpo-datagen --coordinator ADDR`): takes shard leases from the coordinator
// instead of --begin/--end, runs each with the same pipeline as `mfpo perturb` (records already
// finished in the output directory are kept, so a re-issued lease redoes nothing), and reports
// records done in its heartbeats, which also renew the lease.
#ifndef MFPO_DATAGEN_DATAGEN_AGENT_H_
#define MFPO_DATAGEN_DATAGEN_AGENT_H_

#include <atomic>

#include "absl/status/status.h"
#include "common/agent_runner.h"
#include "datagen/perturb_command.h"

namespace mfpo {

struct DatagenAgentOptions {
  AgentOptions agent;
  int threads = 0;  // record workers per shard (0: one per core)
  PerturbCounters* counters = nullptr;  // optional: mirrored into the metrics
};

// The perturb options of a lease: the job spec's datagen section and objective.noise_step.
PerturbCommandOptions PerturbOptionsForLease(const v1::Assignment& lease, int threads);

absl::Status RunDatagenAgent(const DatagenAgentOptions& options, const std::atomic<bool>& stop);

}  // namespace mfpo

#endif  // MFPO_DATAGEN_DATAGEN_AGENT_H_
