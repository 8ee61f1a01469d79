// Minimal parameter-holding layers whose parameter names match Hugging Face's
// (`weight`, `bias`), so that a module tree's named_parameters() are checkpoint tensor names.
//
// Unlike torch::nn::Linear these allocate uninitialised storage: a 7B model is loaded straight
// from the checkpoint without paying for a random initialisation first. Initialisation for new
// models is explicit (see presets.h).
#ifndef MFPO_COMMON_NN_LAYERS_H_
#define MFPO_COMMON_NN_LAYERS_H_

#include <torch/torch.h>

namespace mfpo::nn {

// A linear layer, optionally with a LoRA adapter (common/lora.h attaches it):
//   y = x W^T + b + dropout(x) A^T B^T * (alpha / r)
// with A = `lora_A.weight` [r, in] and B = `lora_B.weight` [out, r] (PEFT's names under the layer).
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias, const torch::TensorOptions& options) {
    weight = register_parameter("weight", torch::empty({out, in}, options));
    if (bias) this->bias = register_parameter("bias", torch::empty({out}, options));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = torch::linear(x, weight, bias);
    if (!lora_A.defined() || !lora_enabled) return y;
    const torch::Tensor h = lora_dropout > 0 && is_training() ? torch::dropout(x, lora_dropout, true) : x;
    return y + torch::linear(torch::linear(h, lora_A), lora_B) * lora_scaling;
  }
  // Registers A (uninitialised) and B (zeros): the layer's output is unchanged until B trains.
  void AddLora(int64_t rank, double scaling, double dropout) {
    auto a = register_module("lora_A", std::make_shared<torch::nn::Module>("LoraA"));
    auto b = register_module("lora_B", std::make_shared<torch::nn::Module>("LoraB"));
    lora_A = a->register_parameter("weight", torch::empty({rank, weight.size(1)}, weight.options()));
    lora_B = b->register_parameter("weight", torch::zeros({weight.size(0), rank}, weight.options()));
    lora_scaling = scaling;
    lora_dropout = dropout;
  }
  torch::Tensor weight;
  torch::Tensor bias;  // undefined when the layer has none
  torch::Tensor lora_A, lora_B;  // undefined without an adapter
  double lora_scaling = 0, lora_dropout = 0;
  bool lora_enabled = true;  // false: the base layer alone (the reference model)
};
TORCH_MODULE(Linear);

class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t dim, double eps, const torch::TensorOptions& options) : eps_(eps) {
    weight = register_parameter("weight", torch::empty({dim}, options));
    bias = register_parameter("bias", torch::empty({dim}, options));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::layer_norm(x, {weight.size(0)}, weight, bias, eps_);
  }
  torch::Tensor weight, bias;

 private:
  double eps_;
};
TORCH_MODULE(LayerNorm);

// Llama's RMSNorm: normalises in fp32, multiplies by the weight in the input dtype.
class RmsNormImpl : public torch::nn::Module {
 public:
  RmsNormImpl(int64_t dim, double eps, const torch::TensorOptions& options) : eps_(eps) {
    weight = register_parameter("weight", torch::empty({dim}, options));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = x.to(torch::kFloat32);
    h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps_);
    return weight * h.to(x.scalar_type());
  }
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RmsNorm);

}  // namespace mfpo::nn

#endif  // MFPO_COMMON_NN_LAYERS_H_
