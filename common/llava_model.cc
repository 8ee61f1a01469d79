#include "common/llava_model.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
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
      "linear_1", nn::Linear(c.vision.hidden_size, c.text.hidden_size, c.multimodal_projector_bias, o));
  linear_2_ = proj->register_module(
      "linear_2", nn::Linear(c.text.hidden_size, c.text.hidden_size, c.multimodal_projector_bias, o));
  if (c.is_next()) image_newline_ = register_parameter("image_newline", torch::empty({c.text.hidden_size}, o));
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

torch::Tensor LlavaModelImpl::PackImageFeatures(const torch::Tensor& crops, int64_t height, int64_t width) {
  const int64_t side = config_.vision.image_size / config_.vision.patch_size;
  const Resolution best = SelectBestResolution(height, width, config_.image_grid_pinpoints);
  const int64_t tile_rows = best[0] / config_.vision.image_size, tile_cols = best[1] / config_.vision.image_size;
  const int64_t d = crops.size(-1);
  // Tiles in row-major order, each side x side features -> one (tile_rows*side) x (tile_cols*side) grid.
  torch::Tensor grid = crops.slice(0, 1)
                           .view({tile_rows, tile_cols, side, side, d})
                           .permute({0, 2, 1, 3, 4})
                           .reshape({tile_rows * side, tile_cols * side, d});
  const UnpaddedGrid keep = UnpadGrid(height, width, tile_rows * side, tile_cols * side);
  grid = grid.slice(0, keep.top, keep.top + keep.rows).slice(1, keep.left, keep.left + keep.cols);
  torch::Tensor newline = image_newline_.to(grid.scalar_type()).view({1, 1, d}).expand({keep.rows, 1, d});
  torch::Tensor rows = torch::cat({grid, newline}, 1).reshape({keep.rows * (keep.cols + 1), d});
  return torch::cat({crops[0], rows}, 0);
}

absl::StatusOr<EncodedImages> LlavaModelImpl::Encode(const std::vector<PixelInput>& images) {
  EncodedImages out;
  if (images.empty()) return absl::InvalidArgumentError("Encode: no images");
  const auto param = linear_1_->weight;
  const int64_t crop = config_.vision.image_size;
  for (size_t i = 0; i < images.size(); ++i) {
    const torch::Tensor& px = images[i].pixel_values;
    const int64_t want_dim = config_.is_next() ? 4 : 3;
    if (!px.defined() || px.dim() != want_dim || px.size(-1) != crop || px.size(-2) != crop || px.size(-3) != 3)
      return absl::InvalidArgumentError(absl::StrCat(
          "image ", i, ": pixel values must be ", config_.is_next() ? "[1 + tiles, " : "[", "3, ", crop, ", ", crop,
          "], got ", px.defined() ? c10::str(px.sizes()) : std::string("none")));
    if (config_.is_next()) {
      const Resolution best = SelectBestResolution(images[i].height, images[i].width, config_.image_grid_pinpoints);
      const int64_t tiles = (best[0] / crop) * (best[1] / crop);
      if (images[i].height <= 0 || images[i].width <= 0 || px.size(0) != 1 + tiles)
        return absl::InvalidArgumentError(absl::StrCat("image ", i, " of ", images[i].width, "x", images[i].height,
                                                       ": ", px.size(0), " crops, its size tiles into 1 + ", tiles));
    }
  }
  return CatchAll("encoding images", [&]() -> EncodedImages {
    std::vector<torch::Tensor> pixels;
    for (const PixelInput& p : images) pixels.push_back(p.pixel_values);
    if (!config_.is_next()) {
      out.features = EncodeImages(torch::stack(pixels).to(param.device(), param.scalar_type()));
      out.lengths = torch::full({static_cast<int64_t>(images.size())}, out.features.size(1), torch::kInt64);
      return out;
    }
    // All crops of all images through the tower in one batch, then packed image by image.
    torch::Tensor crops = EncodeImages(torch::cat(pixels, 0).to(param.device(), param.scalar_type()));
    std::vector<torch::Tensor> packed;
    std::vector<int64_t> lengths;
    int64_t at = 0;
    for (const PixelInput& p : images) {
      const int64_t k = p.pixel_values.size(0);
      packed.push_back(PackImageFeatures(crops.slice(0, at, at + k), p.height, p.width));
      lengths.push_back(packed.back().size(0));
      at += k;
    }
    const int64_t longest = *std::max_element(lengths.begin(), lengths.end());
    for (torch::Tensor& f : packed)
      if (f.size(0) < longest) f = torch::cat({f, f.new_zeros({longest - f.size(0), f.size(1)})}, 0);
    out.features = torch::stack(packed);
    out.lengths = torch::tensor(lengths, torch::kInt64);
    return out;
  });
}

absl::Status LlavaModelImpl::SetImages(LlavaBatch* batch, const std::vector<PixelInput>& images) {
  MFPO_ASSIGN_OR_RETURN(EncodedImages e, Encode(images));
  batch->image_features = e.features;
  // LLaVA-1.5 images all have image_tokens() features: no lengths needed.
  batch->image_lengths = config_.is_next() ? e.lengths.to(e.features.device()) : torch::Tensor();
  return absl::OkStatus();
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
  const int64_t images = b.image_features.defined() ? b.image_features.size(0) : 0;
  if (b.image_features.defined()) {
    const int64_t want = b.image_lengths.defined() ? b.image_features.size(1) : config_.image_tokens();
    if (b.image_features.dim() != 3 || b.image_features.size(1) != want ||
        b.image_features.size(2) != config_.text.hidden_size)
      return bad("image_features must be [I, ", want, ", ", config_.text.hidden_size, "]");
  }
  torch::Tensor lengths;
  if (b.image_lengths.defined()) {
    lengths = b.image_lengths.to(torch::kCPU);
    if (lengths.dim() != 1 || lengths.size(0) != images ||
        (images > 0 && lengths.max().item<int64_t>() > b.image_features.size(1)))
      return bad("image_lengths must give each of the ", images, " images at most ",
                 b.image_features.defined() ? b.image_features.size(1) : 0, " features");
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = counts[r].item<int64_t>();
    int64_t img = b.image_index.defined() ? b.image_index[r].item<int64_t>() : r;
    if (!b.image_index.defined() && images == 0) img = -1;
    if (img < 0) {
      if (c != 0) return bad("row ", r, " has ", c, " image tokens but no image");
      continue;
    }
    if (img >= images) return bad("row ", r, " refers to image ", img, " of ", images);
    const int64_t n = lengths.defined() ? lengths[img].item<int64_t>() : config_.image_tokens();
    if (c != n) return bad("row ", r, " has ", c, " image tokens, its image ", img, " has ", n, " features");
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
  torch::Tensor used = index.masked_select(with_image);
  torch::Tensor feats = b.image_features.index_select(0, used);
  if (b.image_lengths.defined()) {  // drop each image's padding rows
    torch::Tensor lengths = b.image_lengths.to(used.device()).index_select(0, used);
    torch::Tensor valid = torch::arange(feats.size(1), used.options()).unsqueeze(0) < lengths.unsqueeze(1);
    feats = feats.index({valid});  // [sum of lengths, D], image by image
  }
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
