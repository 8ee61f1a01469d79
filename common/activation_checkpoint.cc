#include "common/activation_checkpoint.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <memory>
#include <string>
#include <utility>

namespace mfpo {
namespace {

// The autograd node standing for the whole block in the graph.
class CheckpointBackward : public torch::autograd::Node {
 public:
  CheckpointBackward(CheckpointBlock block, torch::Tensor input, bool input_needs_grad)
      : block_(std::move(block)), input_(std::move(input)), input_needs_grad_(input_needs_grad) {}

  std::string name() const override { return "mfpo::CheckpointBackward"; }

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    TORCH_CHECK(input_.defined(), "checkpointed block backward ran twice (retain_graph is not "
                                  "supported with activation checkpointing)");
    torch::Tensor x = input_.detach().requires_grad_(input_needs_grad_);
    torch::Tensor y;
    {
      torch::AutoGradMode enable(true);
      y = block_(x);
    }
    input_ = torch::Tensor();  // release the saved input as the non-checkpointed graph would
    if (y.requires_grad()) torch::autograd::backward({y}, {grads[0]});
    return {input_needs_grad_ ? x.grad() : torch::Tensor()};
  }

  void release_variables() override { input_ = torch::Tensor(); }

 private:
  CheckpointBlock block_;
  torch::Tensor input_;
  bool input_needs_grad_;
};

}  // namespace

torch::Tensor CheckpointedCall(const CheckpointBlock& block, const torch::Tensor& input) {
  if (!torch::GradMode::is_enabled()) return block(input);
  torch::Tensor output;
  {
    torch::NoGradGuard no_grad;
    output = block(input);
  }
  auto node = std::make_shared<CheckpointBackward>(block, input.detach(), input.requires_grad());
  node->set_next_edges(torch::autograd::collect_next_edges(input));
  torch::autograd::set_history(output, node);
  return output;
}

}  // namespace mfpo
