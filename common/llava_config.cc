#include "common/llava_config.h"

#include <cmath>
#include <limits>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/jsonl.h"
#include "common/status_macros.h"

namespace mfpo {
using json = nlohmann::json;

namespace {

// Reads `obj[key]` into `*out` when present; a value of the wrong type is an error naming the
// field path.
template <typename T>
absl::Status Get(const json& obj, const std::string& path, const char* key, T* out) {
  if (!obj.contains(key) || obj[key].is_null()) return absl::OkStatus();
  const json& v = obj[key];
  const std::string field = path.empty() ? key : absl::StrCat(path, ".", key);
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) return absl::InvalidArgumentError(absl::StrCat(field, ": expected true or false"));
    *out = v.get<bool>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) return absl::InvalidArgumentError(absl::StrCat(field, ": expected a string"));
    *out = v.get<std::string>();
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer())
      return absl::InvalidArgumentError(absl::StrCat(field, ": expected an integer"));
    *out = v.get<T>();
  } else {
    if (!v.is_number()) return absl::InvalidArgumentError(absl::StrCat(field, ": expected a number"));
    *out = v.get<T>();
  }
  return absl::OkStatus();
}

absl::Status ParseVision(const json& v, ClipVisionConfig* c) {
  const std::string p = "vision_config";
  std::string model_type = "clip_vision_model";
  MFPO_RETURN_IF_ERROR(Get(v, p, "model_type", &model_type));
  if (model_type != "clip_vision_model")
    return absl::UnimplementedError(absl::StrCat(
        p, ".model_type: '", model_type, "' is not supported (only clip_vision_model)"));
  MFPO_RETURN_IF_ERROR(Get(v, p, "hidden_size", &c->hidden_size));
  MFPO_RETURN_IF_ERROR(Get(v, p, "intermediate_size", &c->intermediate_size));
  MFPO_RETURN_IF_ERROR(Get(v, p, "num_hidden_layers", &c->num_hidden_layers));
  MFPO_RETURN_IF_ERROR(Get(v, p, "num_attention_heads", &c->num_attention_heads));
  MFPO_RETURN_IF_ERROR(Get(v, p, "num_channels", &c->num_channels));
  MFPO_RETURN_IF_ERROR(Get(v, p, "image_size", &c->image_size));
  MFPO_RETURN_IF_ERROR(Get(v, p, "patch_size", &c->patch_size));
  MFPO_RETURN_IF_ERROR(Get(v, p, "projection_dim", &c->projection_dim));
  MFPO_RETURN_IF_ERROR(Get(v, p, "hidden_act", &c->hidden_act));
  MFPO_RETURN_IF_ERROR(Get(v, p, "layer_norm_eps", &c->layer_norm_eps));
  return absl::OkStatus();
}

absl::Status ParseText(const json& t, LlamaConfig* c) {
  const std::string p = "text_config";
  std::string model_type = "llama";
  MFPO_RETURN_IF_ERROR(Get(t, p, "model_type", &model_type));
  if (model_type != "llama" && model_type != "mistral")
    return absl::UnimplementedError(absl::StrCat(
        p, ".model_type: '", model_type, "' is not supported (llama or mistral)"));
  c->model_type = model_type;
  if (model_type == "mistral") {  // MistralConfig's defaults differ from LlamaConfig's
    c->intermediate_size = 14336;
    c->max_position_embeddings = 4096 * 32;
    c->sliding_window = 4096;
  }
  MFPO_RETURN_IF_ERROR(Get(t, p, "vocab_size", &c->vocab_size));
  MFPO_RETURN_IF_ERROR(Get(t, p, "hidden_size", &c->hidden_size));
  MFPO_RETURN_IF_ERROR(Get(t, p, "intermediate_size", &c->intermediate_size));
  MFPO_RETURN_IF_ERROR(Get(t, p, "num_hidden_layers", &c->num_hidden_layers));
  MFPO_RETURN_IF_ERROR(Get(t, p, "num_attention_heads", &c->num_attention_heads));
  c->num_key_value_heads = model_type == "mistral" ? 8 : c->num_attention_heads;
  MFPO_RETURN_IF_ERROR(Get(t, p, "num_key_value_heads", &c->num_key_value_heads));
  if (model_type == "mistral" && t.contains("sliding_window")) {
    if (t["sliding_window"].is_null()) {
      c->sliding_window = 0;
    } else {
      MFPO_RETURN_IF_ERROR(Get(t, p, "sliding_window", &c->sliding_window));
      if (c->sliding_window <= 0)
        return absl::InvalidArgumentError(absl::StrCat(p, ".sliding_window: must be positive or null"));
    }
  }
  c->head_dim = c->num_attention_heads > 0 ? c->hidden_size / c->num_attention_heads : 0;
  MFPO_RETURN_IF_ERROR(Get(t, p, "head_dim", &c->head_dim));
  MFPO_RETURN_IF_ERROR(Get(t, p, "max_position_embeddings", &c->max_position_embeddings));
  MFPO_RETURN_IF_ERROR(Get(t, p, "rms_norm_eps", &c->rms_norm_eps));
  MFPO_RETURN_IF_ERROR(Get(t, p, "rope_theta", &c->rope_theta));
  MFPO_RETURN_IF_ERROR(Get(t, p, "hidden_act", &c->hidden_act));
  MFPO_RETURN_IF_ERROR(Get(t, p, "bos_token_id", &c->bos_token_id));
  MFPO_RETURN_IF_ERROR(Get(t, p, "eos_token_id", &c->eos_token_id));
  if (t.contains("rope_scaling") && !t["rope_scaling"].is_null())
    return absl::UnimplementedError(absl::StrCat(p, ".rope_scaling: not supported"));
  if (t.contains("tie_word_embeddings") && t["tie_word_embeddings"].is_boolean() &&
      t["tie_word_embeddings"].get<bool>())
    return absl::UnimplementedError(
        absl::StrCat(p, ".tie_word_embeddings: true is not supported (Llama uses an untied lm_head)"));
  if (t.contains("attention_bias") && t["attention_bias"].is_boolean() &&
      t["attention_bias"].get<bool>())
    return absl::UnimplementedError(absl::StrCat(p, ".attention_bias: true is not supported"));
  return absl::OkStatus();
}

}  // namespace

absl::Status ParsePinpoints(const nlohmann::json& v, const std::string& field, std::vector<Resolution>* out) {
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(field, ": expected a list of [height, width] pairs of positive integers"));
  };
  if (!v.is_array() || v.empty()) return bad();
  out->clear();
  for (const json& r : v) {
    if (!r.is_array() || r.size() != 2 || !r[0].is_number_integer() || !r[1].is_number_integer()) return bad();
    const int64_t h = r[0].get<int64_t>(), w = r[1].get<int64_t>();
    if (h <= 0 || w <= 0 || h > 1'000'000 || w > 1'000'000) return bad();
    out->push_back({h, w});
  }
  return absl::OkStatus();
}

Resolution SelectBestResolution(int64_t height, int64_t width, const std::vector<Resolution>& pinpoints) {
  Resolution best = pinpoints.empty() ? Resolution{height, width} : pinpoints[0];
  int64_t max_effective = 0;
  double min_wasted = std::numeric_limits<double>::infinity();
  for (const Resolution& r : pinpoints) {
    const double scale = std::min(static_cast<double>(r[1]) / static_cast<double>(width),
                                  static_cast<double>(r[0]) / static_cast<double>(height));
    const int64_t dw = static_cast<int64_t>(static_cast<double>(width) * scale);
    const int64_t dh = static_cast<int64_t>(static_cast<double>(height) * scale);
    const int64_t effective = std::min(dw * dh, width * height);
    const double wasted = static_cast<double>(r[0] * r[1] - effective);
    if (effective > max_effective || (effective == max_effective && wasted < min_wasted)) {
      max_effective = effective;
      min_wasted = wasted;
      best = r;
    }
  }
  return best;
}

namespace {
// Python's int(round(x, 7)) for the non-negative sizes here.
int64_t RoundedInt(double x) { return static_cast<int64_t>(std::nearbyint(x * 1e7) / 1e7); }
}  // namespace

UnpaddedGrid UnpadGrid(int64_t height, int64_t width, int64_t rows, int64_t cols) {
  UnpaddedGrid g{rows, cols, 0, 0};
  const double original_aspect = static_cast<double>(width) / static_cast<double>(height);
  const double current_aspect = static_cast<double>(cols) / static_cast<double>(rows);
  if (original_aspect > current_aspect) {
    const int64_t new_rows = RoundedInt(static_cast<double>(height) * (static_cast<double>(cols) / static_cast<double>(width)));
    const int64_t padding = (rows - new_rows) / 2;
    g.top = padding;
    g.rows = rows - 2 * padding;
  } else {
    const int64_t new_cols = RoundedInt(static_cast<double>(width) * (static_cast<double>(rows) / static_cast<double>(height)));
    const int64_t padding = (cols - new_cols) / 2;
    g.left = padding;
    g.cols = cols - 2 * padding;
  }
  return g;
}

int64_t LlavaConfig::ImageTokensFor(int64_t height, int64_t width) const {
  if (!is_next()) return image_tokens();
  const int64_t side = vision.image_size / vision.patch_size;  // features per crop side
  const Resolution best = SelectBestResolution(height, width, image_grid_pinpoints);
  const int64_t rows = side * (best[0] / vision.image_size), cols = side * (best[1] / vision.image_size);
  const UnpaddedGrid g = UnpadGrid(height, width, rows, cols);
  return image_tokens() + g.rows * (g.cols + 1);
}

absl::Status ValidateLlavaConfig(const LlavaConfig& c) {
  auto bad = [](absl::string_view field, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
  };
  const auto& v = c.vision;
  const auto& t = c.text;
  for (auto [name, value] : {std::pair<const char*, int64_t>{"vision_config.hidden_size", v.hidden_size},
                             {"vision_config.num_hidden_layers", v.num_hidden_layers},
                             {"vision_config.num_attention_heads", v.num_attention_heads},
                             {"vision_config.patch_size", v.patch_size},
                             {"vision_config.image_size", v.image_size},
                             {"text_config.hidden_size", t.hidden_size},
                             {"text_config.vocab_size", t.vocab_size},
                             {"text_config.num_hidden_layers", t.num_hidden_layers},
                             {"text_config.num_attention_heads", t.num_attention_heads},
                             {"text_config.num_key_value_heads", t.num_key_value_heads},
                             {"text_config.head_dim", t.head_dim},
                             {"text_config.max_position_embeddings", t.max_position_embeddings},
                             {"vision_config.intermediate_size", v.intermediate_size},
                             {"text_config.intermediate_size", t.intermediate_size}}) {
    if (value <= 0) return bad(name, "must be positive");
  }
  // Non-positive values here turn every output into NaN without an error.
  for (auto [name, value] : {std::pair<const char*, double>{"text_config.rope_theta", t.rope_theta},
                             {"text_config.rms_norm_eps", t.rms_norm_eps},
                             {"vision_config.layer_norm_eps", v.layer_norm_eps}}) {
    if (!(value > 0) || !std::isfinite(value)) return bad(name, "must be a positive number");
  }
  if (v.hidden_size % v.num_attention_heads != 0)
    return bad("vision_config.hidden_size", "must be divisible by num_attention_heads");
  if (v.image_size % v.patch_size != 0)
    return bad("vision_config.image_size", "must be divisible by patch_size");
  if (v.hidden_act != "quick_gelu" && v.hidden_act != "gelu")
    return bad("vision_config.hidden_act", absl::StrCat("'", v.hidden_act, "' is not supported"));
  if (t.num_attention_heads % t.num_key_value_heads != 0)
    return bad("text_config.num_key_value_heads", "must divide num_attention_heads");
  if (t.head_dim % 2 != 0) return bad("text_config.head_dim", "must be even (rotary embedding)");
  if (t.hidden_act != "silu")
    return bad("text_config.hidden_act", absl::StrCat("'", t.hidden_act, "' is not supported"));
  if (c.projector_hidden_act != "gelu")
    return bad("projector_hidden_act", absl::StrCat("'", c.projector_hidden_act, "' is not supported"));
  if (c.vision_feature_select_strategy != "default" && c.vision_feature_select_strategy != "full")
    return bad("vision_feature_select_strategy", "must be 'default' or 'full'");
  const int64_t layers = c.vision_layers_to_run();
  if (layers < 1 || layers > v.num_hidden_layers)
    return bad("vision_feature_layer", absl::StrCat(c.vision_feature_layer, " selects no CLIP layer"));
  if (c.image_token_index < 0 || c.image_token_index >= t.vocab_size)
    return bad("image_token_index", "must be inside text_config.vocab_size");
  if (c.pad_token_id >= t.vocab_size) return bad("pad_token_id", "must be inside the vocabulary");
  if (t.sliding_window < 0) return bad("text_config.sliding_window", "must not be negative");
  if (c.model_type != "llava" && c.model_type != "llava_next")
    return bad("model_type", absl::StrCat("'", c.model_type, "' is not llava or llava_next"));
  if (c.is_next()) {
    if (c.vision_feature_select_strategy != "default")
      return bad("vision_feature_select_strategy", "llava_next packs a square grid of patch features: only 'default'");
    if (c.image_grid_pinpoints.empty()) return bad("image_grid_pinpoints", "must not be empty for llava_next");
    for (const Resolution& r : c.image_grid_pinpoints) {
      if (r[0] <= 0 || r[1] <= 0 || r[0] % v.image_size != 0 || r[1] % v.image_size != 0)
        return bad("image_grid_pinpoints", absl::StrCat("[", r[0], ", ", r[1], "] is not a multiple of vision_config.image_size ",
                                                        v.image_size, " on both sides"));
      if ((r[0] / v.image_size) * (r[1] / v.image_size) > 64)
        return bad("image_grid_pinpoints", absl::StrCat("[", r[0], ", ", r[1], "] makes more than 64 tiles"));
    }
  } else if (!c.image_grid_pinpoints.empty()) {
    return bad("image_grid_pinpoints", "only for model_type llava_next");
  }
  return absl::OkStatus();
}

absl::StatusOr<LlavaConfig> ParseLlavaConfig(const std::string& text, const std::string& source) {
  auto fail = [&](const absl::Status& s) { return Annotate(s, source); };
  absl::StatusOr<json> parsed = ParseJson(text);
  if (!parsed.ok()) return fail(absl::InvalidArgumentError(absl::StrCat("not a JSON object: ", parsed.status().message())));
  json j = std::move(*parsed);
  if (!j.is_object()) return fail(absl::InvalidArgumentError("not a JSON object"));
  std::string model_type;
  if (!Get(j, "", "model_type", &model_type).ok() || (model_type != "llava" && model_type != "llava_next"))
    return fail(absl::UnimplementedError(absl::StrCat(
        "model_type: '", model_type, "' is not supported ('llava': LLaVA-1.5, 'llava_next': LLaVA-1.6)")));
  const char* architecture =
      model_type == "llava" ? "LlavaForConditionalGeneration" : "LlavaNextForConditionalGeneration";
  if (j.contains("architectures") && j["architectures"].is_array()) {
    for (const auto& a : j["architectures"])
      if (a != architecture)
        return fail(absl::UnimplementedError(absl::StrCat("architectures: ", a.dump(), " is not ", architecture,
                                                          " (model_type '", model_type, "')")));
  }
  LlavaConfig c;
  c.model_type = model_type;
  // transformers' LlavaConfig without a vision_config uses these CLIP-L/336 values.
  c.vision.hidden_size = 1024;
  c.vision.intermediate_size = 4096;
  c.vision.num_hidden_layers = 24;
  c.vision.num_attention_heads = 16;
  c.vision.image_size = 336;
  c.vision.patch_size = 14;
  c.vision.projection_dim = 768;
  if (j.contains("vision_config") && j["vision_config"].is_object()) {
    c.vision = ClipVisionConfig();  // a given dict is completed with CLIPVisionConfig defaults
    absl::Status s = ParseVision(j["vision_config"], &c.vision);
    if (!s.ok()) return fail(s);
  }
  if (j.contains("text_config") && j["text_config"].is_object()) {
    absl::Status s = ParseText(j["text_config"], &c.text);
    if (!s.ok()) return fail(s);
  }
  absl::Status s = Get(j, "", "image_token_index", &c.image_token_index);
  if (s.ok()) s = Get(j, "", "image_token_id", &c.image_token_index);
  if (s.ok()) s = Get(j, "", "pad_token_id", &c.pad_token_id);
  if (s.ok()) s = Get(j, "", "projector_hidden_act", &c.projector_hidden_act);
  if (s.ok() && j.contains("vision_feature_layer") && j["vision_feature_layer"].is_array())
    s = absl::UnimplementedError("vision_feature_layer: lists of layers are not supported");
  if (s.ok()) s = Get(j, "", "vision_feature_layer", &c.vision_feature_layer);
  if (s.ok()) s = Get(j, "", "vision_feature_select_strategy", &c.vision_feature_select_strategy);
  if (s.ok()) s = Get(j, "", "multimodal_projector_bias", &c.multimodal_projector_bias);
  if (s.ok() && c.is_next()) {
    // LlavaNextConfig's default grid (CLIP-L/336 tiles).
    c.image_grid_pinpoints = {{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
    if (j.contains("image_grid_pinpoints") && !j["image_grid_pinpoints"].is_null())
      s = ParsePinpoints(j["image_grid_pinpoints"], "image_grid_pinpoints", &c.image_grid_pinpoints);
  } else if (s.ok() && j.contains("image_grid_pinpoints")) {
    s = absl::InvalidArgumentError("image_grid_pinpoints: only model_type 'llava_next' tiles images");
  }
  if (s.ok()) s = ValidateLlavaConfig(c);
  if (!s.ok()) return fail(s);
  return c;
}

absl::StatusOr<LlavaConfig> LoadLlavaConfig(const std::string& path) {
  MFPO_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, "model config"));
  return ParseLlavaConfig(text, path);
}

std::string LlavaConfigToJson(const LlavaConfig& c) {
  json j;
  j["architectures"] = {c.is_next() ? "LlavaNextForConditionalGeneration" : "LlavaForConditionalGeneration"};
  j["model_type"] = c.model_type;
  if (c.is_next()) {
    j["image_grid_pinpoints"] = json::array();
    for (const Resolution& r : c.image_grid_pinpoints) j["image_grid_pinpoints"].push_back({r[0], r[1]});
  }
  if (!c.multimodal_projector_bias) j["multimodal_projector_bias"] = false;
  j["ignore_index"] = -100;
  j["image_token_index"] = c.image_token_index;
  if (c.pad_token_id >= 0) j["pad_token_id"] = c.pad_token_id;
  j["projector_hidden_act"] = c.projector_hidden_act;
  j["vision_feature_layer"] = c.vision_feature_layer;
  j["vision_feature_select_strategy"] = c.vision_feature_select_strategy;
  j["tie_word_embeddings"] = false;
  j["vocab_size"] = c.text.vocab_size;
  j["torch_dtype"] = "float32";
  j["vision_config"] = {{"model_type", "clip_vision_model"},
                        {"hidden_size", c.vision.hidden_size},
                        {"intermediate_size", c.vision.intermediate_size},
                        {"num_hidden_layers", c.vision.num_hidden_layers},
                        {"num_attention_heads", c.vision.num_attention_heads},
                        {"num_channels", c.vision.num_channels},
                        {"image_size", c.vision.image_size},
                        {"patch_size", c.vision.patch_size},
                        {"projection_dim", c.vision.projection_dim},
                        {"hidden_act", c.vision.hidden_act},
                        {"layer_norm_eps", c.vision.layer_norm_eps}};
  j["text_config"] = {{"model_type", c.text.model_type},
                      {"architectures", {c.text.model_type == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"}},
                      {"vocab_size", c.text.vocab_size},
                      {"hidden_size", c.text.hidden_size},
                      {"intermediate_size", c.text.intermediate_size},
                      {"num_hidden_layers", c.text.num_hidden_layers},
                      {"num_attention_heads", c.text.num_attention_heads},
                      {"num_key_value_heads", c.text.num_key_value_heads},
                      {"head_dim", c.text.head_dim},
                      {"max_position_embeddings", c.text.max_position_embeddings},
                      {"rms_norm_eps", c.text.rms_norm_eps},
                      {"rope_theta", c.text.rope_theta},
                      {"hidden_act", c.text.hidden_act},
                      {"bos_token_id", c.text.bos_token_id},
                      {"eos_token_id", c.text.eos_token_id},
                      {"tie_word_embeddings", false}};
  if (c.text.model_type == "mistral")
    j["text_config"]["sliding_window"] = c.text.sliding_window > 0 ? json(c.text.sliding_window) : json(nullptr);
  return j.dump(2) + "\n";
}

}  // namespace mfpo
