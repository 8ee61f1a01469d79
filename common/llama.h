// Llama decoder (RMSNorm, rotary embeddings in HF rotate_half layout, SiLU-gated MLP, GQA),
// parameter names as transformers' LlamaForCausalLM (`model.*`, `lm_head.weight`).
#ifndef MFPO_COMMON_LLAMA_H_
#define MFPO_COMMON_LLAMA_H_

#include <torch/torch.h>

#include <vector>

#include "common/llava_config.h"
#include "common/nn_layers.h"

namespace mfpo {

// Preallocated keys/values for incremental decoding: per layer [B, kv_heads, capacity, hd].
struct KvCache {
  std::vector<torch::Tensor> keys, values;
  int64_t length = 0;  // positions filled so far
  int64_t capacity() const { return keys.empty() ? 0 : keys[0].size(2); }
  static KvCache Allocate(const LlamaConfig& c, int64_t batch, int64_t capacity,
                          const torch::TensorOptions& options);
};

// Inputs shared by every layer of one forward call.
struct AttentionContext {
  torch::Tensor cos, sin;  // [B, 1, L, hd] rotary tables for the new positions
  torch::Tensor allowed;   // [B, 1, L, T] bool: query may attend key (causal & not padding)
  KvCache* cache = nullptr;
};

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  LlamaAttentionImpl(const LlamaConfig& c, const torch::TensorOptions& o);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, int64_t layer);

 private:
  int64_t heads_, kv_heads_, head_dim_;
  nn::Linear q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, o_proj_{nullptr};
};
TORCH_MODULE(LlamaAttention);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  LlamaDecoderLayerImpl(const LlamaConfig& c, const torch::TensorOptions& o);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, int64_t layer);

 private:
  LlamaAttention self_attn_{nullptr};
  nn::Linear gate_proj_{nullptr}, up_proj_{nullptr}, down_proj_{nullptr};
  nn::RmsNorm input_layernorm_{nullptr}, post_attention_layernorm_{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

// LlamaForCausalLM: `model` (embed_tokens, layers, norm) and `lm_head`.
class LlamaForCausalLmImpl : public torch::nn::Module {
 public:
  LlamaForCausalLmImpl(const LlamaConfig& c, const torch::TensorOptions& o);

  torch::Tensor Embed(const torch::Tensor& ids) { return torch::embedding(embed_tokens_, ids); }
  const torch::Tensor& embed_tokens() const { return embed_tokens_; }  // [V, D]
  // inputs_embeds [B, L, D]; attention_mask [B, past + L] (1 = real token, covering the cached
  // positions too). Positions are counted over real tokens only (cumsum of the mask), so a
  // padded row computes exactly what it would unpadded. Returns final-normed hidden [B, L, D].
  torch::Tensor Hidden(const torch::Tensor& inputs_embeds, const torch::Tensor& attention_mask,
                       KvCache* cache = nullptr);
  torch::Tensor LmHead(const torch::Tensor& hidden) { return lm_head_(hidden); }

  const LlamaConfig& config() const { return config_; }
  // Recompute each decoder layer's activations in backward instead of storing them
  // (common/activation_checkpoint.h). Ignored when a KV cache is passed.
  void SetActivationCheckpointing(bool on) { checkpoint_layers_ = on; }

 private:
  LlamaConfig config_;
  bool checkpoint_layers_ = false;
  torch::Tensor embed_tokens_;
  torch::nn::ModuleList layers_;
  nn::RmsNorm norm_{nullptr};
  nn::Linear lm_head_{nullptr};
  torch::Tensor inv_freq_;  // [hd / 2] fp32, not a checkpoint tensor
};
TORCH_MODULE(LlamaForCausalLm);

}  // namespace mfpo

#endif  // MFPO_COMMON_LLAMA_H_
