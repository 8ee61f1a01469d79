// LLaVA-1.5 and LLaVA-1.6 (LLaVA-NeXT): CLIP vision tower -> 2-layer GELU projector -> Llama /
// Mistral decoder, with the projected image features replacing the embeddings of the expanded
// `<image>` placeholder tokens. LLaVA-NeXT encodes the whole image and its tiles, and packs them
// as transformers' pack_image_features does: the whole image's features, then the tiles' feature
// grid unpadded to the image's aspect ratio, each row followed by the learnt `image_newline`.
//
// Module tree = legacy Hugging Face tensor names: `vision_tower.vision_model.*`,
// `multi_modal_projector.linear_{1,2}.*`, `image_newline` (NeXT), `language_model.model.*`,
// `language_model.lm_head.*`.
#ifndef MFPO_COMMON_LLAVA_MODEL_H_
#define MFPO_COMMON_LLAVA_MODEL_H_

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/clip_vision.h"
#include "common/image.h"
#include "common/llama.h"
#include "common/llava_config.h"

namespace mfpo {

// One padded batch of sequences. Each row that has an image contains exactly as many copies of
// image_token_index as its image has features (LLaVA-1.5: config.image_tokens(); LLaVA-NeXT:
// config.ImageTokensFor(height, width)), in one run or not.
struct LlavaBatch {
  torch::Tensor input_ids;       // [B, L] int64
  torch::Tensor attention_mask;  // [B, L] int64 (1 = real token); undefined = all real
  torch::Tensor image_features;  // [I, N, D_text] from Encode / EncodeImages; undefined = no images
  torch::Tensor image_lengths;   // [I] int64 features of each image (rows padded to N); undefined = all N
  torch::Tensor image_index;     // [B] int64: image row per sequence, -1 none; undefined = b -> b
};

// Projected features of a list of images, padded to the longest.
struct EncodedImages {
  torch::Tensor features;  // [I, N, D_text]
  torch::Tensor lengths;   // [I] int64 (CPU)
};

// Per-row response statistics over labelled positions (label != -100, shifted for next-token
// prediction), in fp32.
struct ResponseScores {
  torch::Tensor logp;        // [B] sum of log-probs of the labelled tokens
  torch::Tensor entropy;     // [B] mean predictive entropy at the labelled positions
  torch::Tensor num_tokens;  // [B] number of labelled tokens
};

class LlavaModelImpl : public torch::nn::Module {
 public:
  LlavaModelImpl(const LlavaConfig& config, const torch::TensorOptions& options);

  const LlavaConfig& config() const { return config_; }

  // LLaVA-1.5: pixel_values [I, 3, H, W] -> projected image features [I, N, D_text]. Runs the
  // vision tower without autograd while it is frozen (the default).
  torch::Tensor EncodeImages(const torch::Tensor& pixel_values);
  // Any model: every image's features (LLaVA-NeXT: packed), padded into one tensor. The pixels
  // are moved to the model's device and dtype. Errors name the image whose tile count does not
  // match its size.
  absl::StatusOr<EncodedImages> Encode(const std::vector<PixelInput>& images);
  // Encodes `images` into batch->image_features (and image_lengths for LLaVA-NeXT).
  absl::Status SetImages(LlavaBatch* batch, const std::vector<PixelInput>& images);
  // The number of image tokens `image` expands to in a sequence.
  int64_t ImageTokens(const PixelInput& image) const {
    return config_.ImageTokensFor(image.height, image.width);
  }
  // Checks shapes, id ranges and the placeholder count of every row; cheap, CPU-side.
  absl::Status ValidateBatch(const LlavaBatch& batch) const;
  // Token embeddings with the image features merged in: [B, L, D_text].
  torch::Tensor InputEmbeddings(const LlavaBatch& batch);
  // Final hidden states [B, L, D_text]; with a cache, `batch.attention_mask` covers the cached
  // positions as well and input_ids only the new ones.
  torch::Tensor Hidden(const LlavaBatch& batch, KvCache* cache = nullptr);
  torch::Tensor Logits(const LlavaBatch& batch) { return language_model_->LmHead(Hidden(batch)); }
  // LLaVA-NeXT's packing of one image's projected crop features [1 + tiles, n, D] -> [T, D].
  torch::Tensor PackImageFeatures(const torch::Tensor& crops, int64_t height, int64_t width);
  // Response log-prob and entropy; applies lm_head only at labelled positions.
  ResponseScores ScoreResponses(const LlavaBatch& batch, const torch::Tensor& labels);

  LlamaForCausalLm& language_model() { return language_model_; }
  ClipVisionTransformer& vision_tower() { return vision_model_; }
  // Vision-tower features LLaVA feeds the projector: [I, N, D_vision] (CLS dropped under the
  // "default" select strategy), with autograd while the tower is trainable.
  torch::Tensor VisionFeatures(const torch::Tensor& pixel_values);
  // Sets requires_grad=false on the vision tower (true = frozen, LLaVA's default).
  void FreezeVisionTower(bool frozen);
  bool vision_frozen() const { return vision_frozen_; }
  // Activation checkpointing of every decoder layer, and of the vision encoder layers (which only
  // matters while the tower is trained).
  void SetActivationCheckpointing(bool on);

 private:
  LlavaConfig config_;
  ClipVisionTransformer vision_model_{nullptr};
  nn::Linear linear_1_{nullptr}, linear_2_{nullptr};
  torch::Tensor image_newline_;  // [D_text], LLaVA-NeXT only
  LlamaForCausalLm language_model_{nullptr};
  bool vision_frozen_ = true;
};
TORCH_MODULE(LlavaModel);

// Response scores from full logits [B, L, V] (the plain reference path; tests compare the two).
ResponseScores ScoreResponsesFromLogits(const torch::Tensor& logits, const torch::Tensor& labels);

}  // namespace mfpo

#endif  // MFPO_COMMON_LLAVA_MODEL_H_
