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

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias, const torch::TensorOptions& options) {
    weight = register_parameter("weight", torch::empty({out, in}, options));
    if (bias) this->bias = register_parameter("bias", torch::empty({out}, options));
  }
  torch::Tensor forward(const torch::Tensor& x) { return torch::linear(x, weight, bias); }
  torch::Tensor weight;
  torch::Tensor bias;  // undefined when the layer has none
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
