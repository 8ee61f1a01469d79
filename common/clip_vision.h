// CLIP ViT vision tower (pre-LN), parameter names as transformers' CLIPVisionModel.
#ifndef MFPO_COMMON_CLIP_VISION_H_
#define MFPO_COMMON_CLIP_VISION_H_

#include <torch/torch.h>

#include "common/llava_config.h"
#include "common/nn_layers.h"

namespace mfpo {

class ClipAttentionImpl : public torch::nn::Module {
 public:
  ClipAttentionImpl(const ClipVisionConfig& c, const torch::TensorOptions& o);
  torch::Tensor forward(const torch::Tensor& x);  // [B, S, D] -> [B, S, D], no mask

 private:
  int64_t heads_, head_dim_;
  nn::Linear q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, out_proj_{nullptr};
};
TORCH_MODULE(ClipAttention);

class ClipEncoderLayerImpl : public torch::nn::Module {
 public:
  ClipEncoderLayerImpl(const ClipVisionConfig& c, const torch::TensorOptions& o);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  bool quick_gelu_;
  ClipAttention self_attn_{nullptr};
  nn::LayerNorm layer_norm1_{nullptr}, layer_norm2_{nullptr};
  nn::Linear fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(ClipEncoderLayer);

// `vision_model` of CLIPVisionModel: embeddings, pre_layrnorm, encoder.layers.*.
// (post_layernorm is not part of the module: LLaVA never uses it; loaders report it as unused.)
class ClipVisionTransformerImpl : public torch::nn::Module {
 public:
  ClipVisionTransformerImpl(const ClipVisionConfig& c, const torch::TensorOptions& o);
  // pixel_values [B, 3, H, W] -> hidden state after `num_layers` encoder layers [B, 1+P, D].
  torch::Tensor forward(const torch::Tensor& pixel_values, int64_t num_layers);
  // Recompute each encoder layer's activations in backward (common/activation_checkpoint.h).
  void SetActivationCheckpointing(bool on) { checkpoint_layers_ = on; }

 private:
  ClipVisionConfig config_;
  bool checkpoint_layers_ = false;
  torch::Tensor class_embedding_, patch_embedding_, position_embedding_;
  nn::LayerNorm pre_layrnorm_{nullptr};
  torch::nn::ModuleList layers_;
};
TORCH_MODULE(ClipVisionTransformer);

}  // namespace mfpo

#endif  // MFPO_COMMON_CLIP_VISION_H_
