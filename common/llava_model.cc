#include "common/llava_model.h"

#include "absl/strings/str_cat.h"
#include "common/torch_seam.h"

namespace mfpo {
namespace {

constexpr int64_t kIgnoreIndex = -100;

// Next-token alignment: position i predicts token i+1. Returns (row, position) pairs of the
// predicting positions whose target is labelled, and those targets.
struct LabelledPositions {
  torch::Tensor rows, cols, targets;
};

LabelledPositions SelectLabelled(const torch::Tensor& labels) {
  torch::Tensor shifted = labels.slice(1, 1);  // targets for positions 0..L-2
  torch::Tensor nz = (shifted != kIgnoreIndex).nonzero();
  LabelledPositions p;
  p.rows = nz.select(1, 0);
  p.cols = nz.select(1, 1);
  p.targets = shifted.index({p.rows, p.cols});
  return p;
}

ResponseScores Reduce(const torch::Tensor& logits_sel, const LabelledPositions& p, int64_t batch) {
  torch::Tensor logprobs = torch::log_softmax(logits_sel.to(torch::kFloat32), -1);  // [K, V]
  torch::Tensor token_logp = logprobs.gather(1, p.targets.unsqueeze(1)).squeeze(1);
  torch::Tensor token_entropy = -(logprobs.exp() * logprobs).sum(-1);
  auto opts = token_logp.options();
  ResponseScores s;
  s.logp = torch::zeros({batch}, opts).index_add(0, p.rows, token_logp);
  s.num_tokens = torch::zeros({batch}, opts).index_add(0, p.rows, torch::ones_like(token_logp));
  s.entropy = torch::zeros({batch}, opts).index_add(0, p.rows, token_entropy) /
              s.num_tokens.clamp_min(1.0);
  return s;
}

}  // namespace

LlavaModelImpl::LlavaModelImpl(const LlavaConfig& c, const torch::TensorOptions& o) : config_(c) {
  auto tower = register_module("vision_tower", std::make_shared<torch::nn::Module>("ClipVisionModel"));
  vision_model_ = tower->register_module("vision_model", ClipVisionTransformer(c.vision, o));
  auto proj = register_module("multi_modal_projector",
                              std::make_shared<torch::nn::Module>("LlavaMultiModalProjector"));
  linear_1_ = proj->register_module(
      "linear_1", nn::Linear(c.vision.hidden_size, c.text.hidden_size, true, o));
  linear_2_ = proj->register_module(
      "linear_2", nn::Linear(c.text.hidden_size, c.text.hidden_size, true, o));
  language_model_ = register_module("language_model", LlamaForCausalLm(c.text, o));
  FreezeVisionTower(true);
}

void LlavaModelImpl::FreezeVisionTower(bool frozen) {
  vision_frozen_ = frozen;
  for (auto& p : vision_model_->parameters()) p.set_requires_grad(!frozen);
}

void LlavaModelImpl::SetActivationCheckpointing(bool on) {
  vision_model_->SetActivationCheckpointing(on);
  language_model_->SetActivationCheckpointing(on);
}

torch::Tensor LlavaModelImpl::VisionFeatures(const torch::Tensor& pixel_values) {
  c10::optional<torch::NoGradGuard> no_grad;
  if (vision_frozen_) no_grad.emplace();
  torch::Tensor feats = vision_model_(pixel_values, config_.vision_layers_to_run());
  if (config_.vision_feature_select_strategy == "default") feats = feats.slice(1, 1);  // drop CLS
  return feats;
}

torch::Tensor LlavaModelImpl::EncodeImages(const torch::Tensor& pixel_values) {
  torch::Tensor feats = VisionFeatures(pixel_values);
  return linear_2_(torch::gelu(linear_1_(feats)));
}

absl::Status LlavaModelImpl::ValidateBatch(const LlavaBatch& b) const {
  auto bad = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (!b.input_ids.defined() || b.input_ids.dim() != 2) return bad("input_ids must be [B, L]");
  if (b.input_ids.scalar_type() != torch::kInt64) return bad("input_ids must be int64");
  const int64_t rows = b.input_ids.size(0);
  torch::Tensor ids = b.input_ids.to(torch::kCPU);
  const int64_t vocab = config_.text.vocab_size;
  if (ids.numel() > 0 && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= vocab))
    return bad("input_ids outside [0, ", vocab, ")");
  if (b.attention_mask.defined() && b.attention_mask.sizes() != b.input_ids.sizes() &&
      b.attention_mask.size(0) != rows)
    return bad("attention_mask rows do not match input_ids");
  torch::Tensor counts = (ids == config_.image_token_index).sum(1);
  const int64_t n = config_.image_tokens();
  const int64_t images = b.image_features.defined() ? b.image_features.size(0) : 0;
  if (b.image_features.defined() &&
      (b.image_features.dim() != 3 || b.image_features.size(1) != n ||
       b.image_features.size(2) != config_.text.hidden_size))
    return bad("image_features must be [I, ", n, ", ", config_.text.hidden_size, "]");
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = counts[r].item<int64_t>();
    int64_t img = b.image_index.defined() ? b.image_index[r].item<int64_t>() : r;
    if (!b.image_index.defined() && images == 0) img = -1;
    if (img < 0) {
      if (c != 0) return bad("row ", r, " has ", c, " image tokens but no image");
      continue;
    }
    if (img >= images) return bad("row ", r, " refers to image ", img, " of ", images);
    if (c != n) return bad("row ", r, " has ", c, " image tokens, the model expects ", n);
  }
  return absl::OkStatus();
}

torch::Tensor LlavaModelImpl::InputEmbeddings(const LlavaBatch& b) {
  torch::Tensor ids = b.input_ids;
  torch::Tensor is_image = ids == config_.image_token_index;
  torch::Tensor embeds = language_model_->Embed(ids.masked_fill(is_image, 0));
  if (!b.image_features.defined()) return embeds;
  // Default: row r uses image r. Rows without placeholders are dropped before the lookup.
  torch::Tensor index = b.image_index.defined() ? b.image_index : torch::arange(ids.size(0), ids.options());
  torch::Tensor with_image = is_image.any(1) & (index >= 0);
  torch::Tensor feats = b.image_features.index_select(0, index.masked_select(with_image));
  // masked_scatter consumes the source in row-major order: row by row, placeholder by
  // placeholder, which is the order of the image features.
  return embeds.masked_scatter(is_image.unsqueeze(-1), feats.to(embeds.scalar_type()));
}

torch::Tensor LlavaModelImpl::Hidden(const LlavaBatch& b, KvCache* cache) {
  torch::Tensor mask = b.attention_mask.defined()
                           ? b.attention_mask
                           : torch::ones_like(b.input_ids);
  return language_model_->Hidden(InputEmbeddings(b), mask, cache);
}

ResponseScores LlavaModelImpl::ScoreResponses(const LlavaBatch& b, const torch::Tensor& labels) {
  torch::Tensor hidden = Hidden(b);
  LabelledPositions p = SelectLabelled(labels.to(hidden.device()));
  torch::Tensor logits = language_model_->LmHead(hidden.index({p.rows, p.cols}));  // [K, V]
  return Reduce(logits, p, labels.size(0));
}

ResponseScores ScoreResponsesFromLogits(const torch::Tensor& logits, const torch::Tensor& labels) {
  LabelledPositions p = SelectLabelled(labels.to(logits.device()));
  return Reduce(logits.index({p.rows, p.cols}), p, labels.size(0));
}

}  // namespace mfpo
