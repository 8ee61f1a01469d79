// AdamW state saved by parameter name, so that a checkpoint can be resumed by any number of
// ranks and any partition of the optimizer state (optimizer.shard_state). One safetensors file
// per writer holds, for each parameter it owns, "<name>.exp_avg", "<name>.exp_avg_sq" and
// "<name>.step" (int64 [1]); a rank that resumes takes the entries of the parameters it owns
// from whichever file has them.
//
// Also where ZeRO-1's partition of the parameters over ranks is decided (OwnerOfParams).
#ifndef MFPO_WORKER_OPTIMIZER_STATE_H_
#define MFPO_WORKER_OPTIMIZER_STATE_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/safetensors.h"

namespace mfpo {

using NamedParams = std::vector<std::pair<std::string, torch::Tensor>>;

// The state of `params` (those AdamW holds state for; parameters without state yet are
// skipped) as named tensors.
NamedTensors AdamWStateTensors(const torch::optim::AdamW& optimizer, const NamedParams& params);

// Sets AdamW's state of every parameter in `params` from `files`. A parameter found in no file
// is an error naming it (a checkpoint written without it cannot continue the run exactly).
absl::Status LoadAdamWState(torch::optim::AdamW& optimizer, const NamedParams& params,
                            const std::vector<std::shared_ptr<SafetensorsFile>>& files);

// Bytes of optimizer state AdamW holds (exp_avg, exp_avg_sq, max_exp_avg_sq).
int64_t AdamWStateBytes(const torch::optim::AdamW& optimizer);

// Which rank owns each parameter's optimizer state when it is sharded over `world` ranks:
// largest parameters first, each to the least-loaded rank (ties: the lower rank). The same on
// every rank.
std::vector<int> OwnerOfParams(const std::vector<int64_t>& numels, int world);

}  // namespace mfpo

#endif  // MFPO_WORKER_OPTIMIZER_STATE_H_
