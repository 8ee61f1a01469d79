#include "common/clip_vision.h"

#include <cmath>

#include "common/activation_checkpoint.h"

namespace mfpo {

ClipAttentionImpl::ClipAttentionImpl(const ClipVisionConfig& c, const torch::TensorOptions& o)
    : heads_(c.num_attention_heads), head_dim_(c.head_dim()) {
  const int64_t d = c.hidden_size;
  k_proj_ = register_module("k_proj", nn::Linear(d, d, true, o));
  v_proj_ = register_module("v_proj", nn::Linear(d, d, true, o));
  q_proj_ = register_module("q_proj", nn::Linear(d, d, true, o));
  out_proj_ = register_module("out_proj", nn::Linear(d, d, true, o));
}

torch::Tensor ClipAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t b = x.size(0), s = x.size(1);
  auto split = [&](const torch::Tensor& t) {
    return t.view({b, s, heads_, head_dim_}).transpose(1, 2);  // [B, H, S, hd]
  };
  torch::Tensor q = split(q_proj_(x)) * (1.0 / std::sqrt(static_cast<double>(head_dim_)));
  torch::Tensor k = split(k_proj_(x));
  torch::Tensor v = split(v_proj_(x));
  torch::Tensor probs = torch::softmax(torch::matmul(q, k.transpose(-1, -2)), -1,
                                       torch::kFloat32).to(q.scalar_type());
  torch::Tensor out = torch::matmul(probs, v).transpose(1, 2).reshape({b, s, heads_ * head_dim_});
  return out_proj_(out);
}

ClipEncoderLayerImpl::ClipEncoderLayerImpl(const ClipVisionConfig& c,
                                           const torch::TensorOptions& o)
    : quick_gelu_(c.hidden_act == "quick_gelu") {
  self_attn_ = register_module("self_attn", ClipAttention(c, o));
  layer_norm1_ = register_module("layer_norm1", nn::LayerNorm(c.hidden_size, c.layer_norm_eps, o));
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>("ClipMlp"));
  fc1_ = mlp->register_module("fc1", nn::Linear(c.hidden_size, c.intermediate_size, true, o));
  fc2_ = mlp->register_module("fc2", nn::Linear(c.intermediate_size, c.hidden_size, true, o));
  layer_norm2_ = register_module("layer_norm2", nn::LayerNorm(c.hidden_size, c.layer_norm_eps, o));
}

torch::Tensor ClipEncoderLayerImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = x + self_attn_(layer_norm1_(x));
  torch::Tensor m = fc1_(layer_norm2_(h));
  m = quick_gelu_ ? m * torch::sigmoid(1.702 * m) : torch::gelu(m);
  return h + fc2_(m);
}

ClipVisionTransformerImpl::ClipVisionTransformerImpl(const ClipVisionConfig& c,
                                                     const torch::TensorOptions& o)
    : config_(c) {
  auto emb = register_module("embeddings", std::make_shared<torch::nn::Module>("ClipEmbeddings"));
  class_embedding_ = emb->register_parameter("class_embedding", torch::empty({c.hidden_size}, o));
  auto patch = emb->register_module("patch_embedding", std::make_shared<torch::nn::Module>("Conv2d"));
  patch_embedding_ = patch->register_parameter(
      "weight", torch::empty({c.hidden_size, c.num_channels, c.patch_size, c.patch_size}, o));
  auto pos = emb->register_module("position_embedding", std::make_shared<torch::nn::Module>("Embedding"));
  position_embedding_ =
      pos->register_parameter("weight", torch::empty({c.num_patches() + 1, c.hidden_size}, o));
  pre_layrnorm_ = register_module("pre_layrnorm", nn::LayerNorm(c.hidden_size, c.layer_norm_eps, o));
  auto encoder = register_module("encoder", std::make_shared<torch::nn::Module>("ClipEncoder"));
  layers_ = encoder->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers_->push_back(ClipEncoderLayer(c, o));
}

torch::Tensor ClipVisionTransformerImpl::forward(const torch::Tensor& pixel_values,
                                                 int64_t num_layers) {
  const int64_t b = pixel_values.size(0);
  torch::Tensor x = torch::conv2d(pixel_values.to(patch_embedding_.scalar_type()),
                                  patch_embedding_, /*bias=*/{}, config_.patch_size);
  x = x.flatten(2).transpose(1, 2);  // [B, P, D]
  torch::Tensor cls = class_embedding_.view({1, 1, -1}).expand({b, 1, x.size(2)});
  x = torch::cat({cls, x}, 1) + position_embedding_.unsqueeze(0);
  x = pre_layrnorm_(x);
  for (int64_t i = 0; i < num_layers; ++i) {
    ClipEncoderLayerImpl* layer = layers_[i]->as<ClipEncoderLayer>();
    x = checkpoint_layers_
            ? CheckpointedCall([layer](const torch::Tensor& h) { return layer->forward(h); }, x)
            : layer->forward(x);
  }
  return x;
}

}  // namespace mfpo
