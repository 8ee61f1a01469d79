#include "common/llama.h"

#include <cmath>
#include <limits>

#include "common/activation_checkpoint.h"

namespace mfpo {
namespace {

torch::Tensor RotateHalf(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
}

torch::Tensor ApplyRotary(const torch::Tensor& x, const AttentionContext& ctx) {
  return x * ctx.cos + RotateHalf(x) * ctx.sin;
}

}  // namespace

KvCache KvCache::Allocate(const LlamaConfig& c, int64_t batch, int64_t capacity,
                          const torch::TensorOptions& options) {
  KvCache cache;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    cache.keys.push_back(torch::zeros({batch, c.num_key_value_heads, capacity, c.head_dim}, options));
    cache.values.push_back(torch::zeros({batch, c.num_key_value_heads, capacity, c.head_dim}, options));
  }
  return cache;
}

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaConfig& c, const torch::TensorOptions& o)
    : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim) {
  q_proj_ = register_module("q_proj", nn::Linear(c.hidden_size, heads_ * head_dim_, false, o));
  k_proj_ = register_module("k_proj", nn::Linear(c.hidden_size, kv_heads_ * head_dim_, false, o));
  v_proj_ = register_module("v_proj", nn::Linear(c.hidden_size, kv_heads_ * head_dim_, false, o));
  o_proj_ = register_module("o_proj", nn::Linear(heads_ * head_dim_, c.hidden_size, false, o));
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx,
                                          int64_t layer) {
  const int64_t b = x.size(0), l = x.size(1);
  torch::Tensor q = q_proj_(x).view({b, l, heads_, head_dim_}).transpose(1, 2);
  torch::Tensor k = k_proj_(x).view({b, l, kv_heads_, head_dim_}).transpose(1, 2);
  torch::Tensor v = v_proj_(x).view({b, l, kv_heads_, head_dim_}).transpose(1, 2);
  q = ApplyRotary(q, ctx);
  k = ApplyRotary(k, ctx);
  if (ctx.cache != nullptr) {
    KvCache& cache = *ctx.cache;
    const int64_t past = cache.length;
    cache.keys[layer].slice(2, past, past + l).copy_(k);
    cache.values[layer].slice(2, past, past + l).copy_(v);
    k = cache.keys[layer].slice(2, 0, past + l);
    v = cache.values[layer].slice(2, 0, past + l);
  }
  const int64_t t = k.size(2);
  if (kv_heads_ != heads_) {  // GQA: kv head j serves query heads [j*rep, (j+1)*rep)
    const int64_t rep = heads_ / kv_heads_;
    k = k.unsqueeze(2).expand({b, kv_heads_, rep, t, head_dim_}).reshape({b, heads_, t, head_dim_});
    v = v.unsqueeze(2).expand({b, kv_heads_, rep, t, head_dim_}).reshape({b, heads_, t, head_dim_});
  }
  torch::Tensor scores =
      torch::matmul(q, k.transpose(-1, -2)) * (1.0 / std::sqrt(static_cast<double>(head_dim_)));
  // Softmax in fp32 whatever the model dtype; masked scores get the lowest finite value (not
  // -inf) so that a fully masked row (a left-pad query) stays finite.
  scores = scores.to(torch::kFloat32)
               .masked_fill(ctx.allowed.logical_not(), std::numeric_limits<float>::lowest());
  torch::Tensor probs = torch::softmax(scores, -1).to(q.scalar_type());
  torch::Tensor out = torch::matmul(probs, v).transpose(1, 2).reshape({b, l, heads_ * head_dim_});
  return o_proj_(out);
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaConfig& c, const torch::TensorOptions& o) {
  self_attn_ = register_module("self_attn", LlamaAttention(c, o));
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>("LlamaMlp"));
  gate_proj_ = mlp->register_module("gate_proj", nn::Linear(c.hidden_size, c.intermediate_size, false, o));
  up_proj_ = mlp->register_module("up_proj", nn::Linear(c.hidden_size, c.intermediate_size, false, o));
  down_proj_ = mlp->register_module("down_proj", nn::Linear(c.intermediate_size, c.hidden_size, false, o));
  input_layernorm_ = register_module("input_layernorm", nn::RmsNorm(c.hidden_size, c.rms_norm_eps, o));
  post_attention_layernorm_ =
      register_module("post_attention_layernorm", nn::RmsNorm(c.hidden_size, c.rms_norm_eps, o));
}

torch::Tensor LlamaDecoderLayerImpl::forward(const torch::Tensor& x, const AttentionContext& ctx,
                                             int64_t layer) {
  torch::Tensor h = x + self_attn_(input_layernorm_(x), ctx, layer);
  torch::Tensor n = post_attention_layernorm_(h);
  return h + down_proj_(torch::silu(gate_proj_(n)) * up_proj_(n));
}

LlamaForCausalLmImpl::LlamaForCausalLmImpl(const LlamaConfig& c, const torch::TensorOptions& o)
    : config_(c) {
  auto model = register_module("model", std::make_shared<torch::nn::Module>("LlamaModel"));
  auto embed = model->register_module("embed_tokens", std::make_shared<torch::nn::Module>("Embedding"));
  embed_tokens_ = embed->register_parameter("weight", torch::empty({c.vocab_size, c.hidden_size}, o));
  layers_ = model->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers_->push_back(LlamaDecoderLayer(c, o));
  norm_ = model->register_module("norm", nn::RmsNorm(c.hidden_size, c.rms_norm_eps, o));
  lm_head_ = register_module("lm_head", nn::Linear(c.hidden_size, c.vocab_size, false, o));
  inv_freq_ = 1.0 / torch::pow(c.rope_theta, torch::arange(0, c.head_dim, 2, torch::kInt64)
                                                     .to(torch::kFloat32) / static_cast<double>(c.head_dim));
}

torch::Tensor LlamaForCausalLmImpl::Hidden(const torch::Tensor& inputs_embeds,
                                           const torch::Tensor& attention_mask, KvCache* cache) {
  const int64_t l = inputs_embeds.size(1);
  const int64_t past = cache != nullptr ? cache->length : 0;
  const auto device = inputs_embeds.device();
  torch::Tensor key_valid = attention_mask.to(device).to(torch::kBool);  // [B, T]
  const int64_t t = key_valid.size(1);
  TORCH_CHECK(t == past + l, "attention_mask covers ", t, " positions, expected ", past + l);
  if (cache != nullptr)
    TORCH_CHECK(past + l <= cache->capacity(), "KV cache capacity ", cache->capacity(),
                " exceeded");

  // Position of each token = number of real tokens before it.
  torch::Tensor positions =
      (key_valid.to(torch::kInt64).cumsum(1) - 1).clamp_min(0).slice(1, past, past + l);
  torch::Tensor freqs =
      positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq_.to(device).view({1, 1, -1});
  torch::Tensor emb = torch::cat({freqs, freqs}, -1).unsqueeze(1);  // [B, 1, L, hd]
  AttentionContext ctx;
  ctx.cos = emb.cos().to(inputs_embeds.scalar_type());
  ctx.sin = emb.sin().to(inputs_embeds.scalar_type());
  torch::Tensor q_pos = torch::arange(past, past + l, torch::TensorOptions().device(device));
  torch::Tensor k_pos = torch::arange(0, t, torch::TensorOptions().device(device));
  torch::Tensor causal = k_pos.view({1, t}) <= q_pos.view({l, 1});            // [L, T]
  if (config_.sliding_window > 0)  // Mistral: only the last sliding_window keys (as transformers)
    causal = causal & (q_pos.view({l, 1}) - k_pos.view({1, t}) < config_.sliding_window);
  ctx.allowed = (causal.unsqueeze(0) & key_valid.unsqueeze(1)).unsqueeze(1);  // [B, 1, L, T]
  ctx.cache = cache;

  torch::Tensor x = inputs_embeds;
  for (int64_t i = 0; i < static_cast<int64_t>(layers_->size()); ++i) {
    LlamaDecoderLayerImpl* layer = layers_[i]->as<LlamaDecoderLayer>();
    if (checkpoint_layers_ && cache == nullptr) {
      x = CheckpointedCall([layer, ctx, i](const torch::Tensor& h) { return layer->forward(h, ctx, i); }, x);
    } else {
      x = layer->forward(x, ctx, i);
    }
  }
  if (cache != nullptr) cache->length += l;
  return norm_(x);
}

}  // namespace mfpo
