// LLaVA-1.5 (`model_type: llava`) and LLaVA-1.6 / LLaVA-NeXT (`model_type: llava_next`)
// configuration, parsed from a Hugging Face `config.json`.
//
// Hub configs omit every field equal to the transformers class default; parsing fills them in
// with those defaults (LlavaConfig, LlamaConfig, CLIPVisionConfig), so a config written here
// and a config written by transformers describe the same model.
#ifndef MFPO_COMMON_LLAVA_CONFIG_H_
#define MFPO_COMMON_LLAVA_CONFIG_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "absl/status/statusor.h"

namespace mfpo {

struct ClipVisionConfig {
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t num_channels = 3;
  int64_t image_size = 224;
  int64_t patch_size = 32;
  int64_t projection_dim = 512;  // CLIP's own projection; unused by LLaVA, kept for round trips
  std::string hidden_act = "quick_gelu";  // "quick_gelu" or "gelu"
  double layer_norm_eps = 1e-5;

  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

// The decoder: Llama (Vicuna) or Mistral, which is Llama with a sliding attention window.
struct LlamaConfig {
  std::string model_type = "llama";  // "llama" or "mistral"
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;  // defaults to num_attention_heads when omitted
  int64_t head_dim = 128;            // defaults to hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;  // LlamaConfig's default; LLaVA-1.5 configs state 1e-5
  double rope_theta = 10000.0;
  std::string hidden_act = "silu";
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  int64_t sliding_window = 0;  // mistral: a query attends to the previous sliding_window keys; 0: all
};

// One (height, width) resolution of LLaVA-NeXT's image_grid_pinpoints.
using Resolution = std::array<int64_t, 2>;

// Reads a JSON list of [height, width] pairs (image_grid_pinpoints); errors name `field`.
absl::Status ParsePinpoints(const nlohmann::json& value, const std::string& field, std::vector<Resolution>* out);

// transformers' select_best_resolution: the pinpoint that keeps the most of the image's pixels
// after an aspect-preserving downscale, ties broken by the least wasted area; (height, width).
Resolution SelectBestResolution(int64_t height, int64_t width, const std::vector<Resolution>& pinpoints);

// The feature grid LLaVA-NeXT keeps of a `rows` x `cols` patch-feature grid after unpadding
// (transformers' unpad_image / the processor's _get_unpadded_features): the rows and columns that
// the image covers once resized into the grid with its aspect ratio.
struct UnpaddedGrid {
  int64_t rows = 0, cols = 0;
  int64_t top = 0, left = 0;  // first kept row / column
};
UnpaddedGrid UnpadGrid(int64_t height, int64_t width, int64_t rows, int64_t cols);

struct LlavaConfig {
  std::string model_type = "llava";  // "llava" (LLaVA-1.5) or "llava_next" (LLaVA-1.6)
  ClipVisionConfig vision;
  LlamaConfig text;
  int64_t image_token_index = 32000;
  int64_t pad_token_id = -1;  // -1: not set
  std::string projector_hidden_act = "gelu";
  int64_t vision_feature_layer = -2;
  std::string vision_feature_select_strategy = "default";  // "default" drops CLS, "full" keeps
  bool multimodal_projector_bias = true;
  // llava_next: the resolutions an image may be tiled at, (height, width), multiples of
  // vision.image_size (transformers' default: 336x672, 672x336, 672x672, 1008x336, 336x1008).
  std::vector<Resolution> image_grid_pinpoints;

  bool is_next() const { return model_type == "llava_next"; }
  // Number of image tokens one crop of vision.image_size expands to (LLaVA-1.5: per image).
  int64_t image_tokens() const {
    return vision.num_patches() + (vision_feature_select_strategy == "full" ? 1 : 0);
  }
  // Number of image tokens an image of height x width pixels expands to: image_tokens() for
  // LLaVA-1.5; for LLaVA-NeXT the base image's features, then the unpadded grid of the tiles'
  // features with one image_newline per row (transformers' LlavaNextProcessor count).
  int64_t ImageTokensFor(int64_t height, int64_t width) const;
  // Number of CLIP layers that must run to produce the selected hidden state.
  int64_t vision_layers_to_run() const {
    return vision_feature_layer < 0 ? vision.num_hidden_layers + 1 + vision_feature_layer
                                    : vision_feature_layer;
  }
};

// Parses config.json text; `source` names the file in errors. Rejects architectures other
// than LLaVA with a Llama decoder and a CLIP vision tower, and values this implementation
// cannot honour (rope_scaling, tied embeddings, unknown activations), naming the field.
absl::StatusOr<LlavaConfig> ParseLlavaConfig(const std::string& json_text,
                                             const std::string& source);
absl::StatusOr<LlavaConfig> LoadLlavaConfig(const std::string& path);

// Serialises to the Hugging Face layout (every field written explicitly).
std::string LlavaConfigToJson(const LlavaConfig& config);

// Checks internal consistency (divisibility, ranges). Parse calls it; presets may too.
absl::Status ValidateLlavaConfig(const LlavaConfig& config);

}  // namespace mfpo

#endif  // MFPO_COMMON_LLAVA_CONFIG_H_
