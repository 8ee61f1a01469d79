// Activation checkpointing (gradient checkpointing) for LibTorch C++, which has no
// torch.utils.checkpoint: run a block without keeping its activations, and recompute them in the
// backward pass. This is the "reentrant" scheme of PyTorch: the forward runs under no-grad and
// attaches one autograd node to the output; that node's backward re-runs the block with grad
// enabled on a detached copy of the input, back-propagates the incoming gradient through it (which
// accumulates the block's parameter gradients directly) and returns the input's gradient.
//
// Contract: `block` must be deterministic (no dropout, no RNG) and must not change any state that
// the recomputation would see differently (no KV cache). The block's parameters receive their
// gradients even when `input` does not require grad.
#ifndef MFPO_COMMON_ACTIVATION_CHECKPOINT_H_
#define MFPO_COMMON_ACTIVATION_CHECKPOINT_H_

#include <torch/torch.h>

#include <functional>

namespace mfpo {

using CheckpointBlock = std::function<torch::Tensor(const torch::Tensor&)>;

// Returns block(input). When grad mode is on, the activations inside `block` are not stored.
torch::Tensor CheckpointedCall(const CheckpointBlock& block, const torch::Tensor& input);

}  // namespace mfpo

#endif  // MFPO_COMMON_ACTIVATION_CHECKPOINT_H_
