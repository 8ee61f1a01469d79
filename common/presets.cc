#include "common/presets.h"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/model_dir.h"
#include "common/status_macros.h"
#include "common/tokenizer.h"
#include "common/torch_seam.h"

namespace mfpo {
namespace fs = std::filesystem;
namespace {

LlavaConfig SmallLlava(int64_t image, int64_t patch, int64_t v_hidden, int64_t v_layers,
                       int64_t t_hidden, int64_t t_layers, int64_t t_heads, int64_t t_kv_heads,
                       int64_t t_inter, int64_t sp_vocab) {
  LlavaConfig c;
  c.vision.hidden_size = v_hidden;
  c.vision.intermediate_size = 4 * v_hidden;
  c.vision.num_hidden_layers = v_layers;
  c.vision.num_attention_heads = std::max<int64_t>(1, v_hidden / 32);
  c.vision.image_size = image;
  c.vision.patch_size = patch;
  c.vision.projection_dim = v_hidden;
  c.text.hidden_size = t_hidden;
  c.text.intermediate_size = t_inter;
  c.text.num_hidden_layers = t_layers;
  c.text.num_attention_heads = t_heads;
  c.text.num_key_value_heads = t_kv_heads;
  c.text.head_dim = t_hidden / t_heads;
  c.text.max_position_embeddings = 1024;
  c.text.rms_norm_eps = 1e-5;
  c.image_token_index = sp_vocab;
  c.pad_token_id = sp_vocab + 1;
  c.text.vocab_size = (sp_vocab + 2 + 63) / 64 * 64;  // padded as LLaVA's 32064
  return c;
}

bool IsNormWeight(const std::string& name) {
  return absl::StrContains(name, "norm") && absl::EndsWith(name, ".weight");
}

}  // namespace

std::vector<std::string> PresetNames() { return {"tiny", "tiny-next", "medium", "7b-shape"}; }

absl::StatusOr<ModelPreset> GetPreset(const std::string& name) {
  ModelPreset p;
  p.name = name;
  if (name == "tiny") {
    p.config = SmallLlava(/*image=*/64, /*patch=*/8, /*v_hidden=*/128, /*v_layers=*/3,
                          /*t_hidden=*/256, /*t_layers=*/4, /*t_heads=*/8, /*t_kv_heads=*/4,
                          /*t_inter=*/688, p.tokenizer_vocab);
  } else if (name == "tiny-next") {
    // The tiny model as LLaVA-1.6: 32 px tiles (16 features each) on LLaVA-NeXT's grid scaled
    // from 336 to 32 px; a 64x64 scene image is its 2x2 grid plus the whole image: 88 tokens.
    p.config = SmallLlava(/*image=*/32, /*patch=*/8, /*v_hidden=*/128, /*v_layers=*/3,
                          /*t_hidden=*/256, /*t_layers=*/4, /*t_heads=*/8, /*t_kv_heads=*/4,
                          /*t_inter=*/688, p.tokenizer_vocab);
    p.config.model_type = "llava_next";
    p.config.image_grid_pinpoints = {{32, 64}, {64, 32}, {64, 64}, {96, 32}, {32, 96}};
  } else if (name == "medium") {
    p.config = SmallLlava(/*image=*/64, /*patch=*/8, /*v_hidden=*/512, /*v_layers=*/4,
                          /*t_hidden=*/512, /*t_layers=*/4, /*t_heads=*/8, /*t_kv_heads=*/8,
                          /*t_inter=*/1376, p.tokenizer_vocab);
  } else if (name == "7b-shape") {
    // LLaVA-1.5-7B's shapes (CLIP ViT-L/14 at 336 px: 576 image tokens; Vicuna-7B: hidden 4096,
    // MLP 11008, 32 heads, vocabulary 32064) with 2 layers each: a GPU throughput check
    // (scripts/gpu-check.sh) without a 7B download. Random weights; the tiny tokenizer.
    p.config = SmallLlava(/*image=*/336, /*patch=*/14, /*v_hidden=*/1024, /*v_layers=*/2,
                          /*t_hidden=*/4096, /*t_layers=*/2, /*t_heads=*/32, /*t_kv_heads=*/32,
                          /*t_inter=*/11008, p.tokenizer_vocab);
    p.config.vision.num_attention_heads = 16;
    p.config.vision.projection_dim = 768;
    p.config.text.vocab_size = 32064;
    p.config.text.max_position_embeddings = 4096;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown preset '", name, "' (known: ",
                                                   absl::StrJoin(PresetNames(), ", "), ")"));
  }
  MFPO_RETURN_IF_ERROR(ValidateLlavaConfig(p.config));
  return p;
}

void InitializeWeights(LlavaModel& model, double std, uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  for (auto& item : model->named_parameters(/*recurse=*/true)) {
    torch::Tensor p = item.value();
    const std::string& name = item.key();
    if (IsNormWeight(name) || absl::EndsWith(name, "layrnorm.weight")) {
      p.fill_(1.0);
    } else if (absl::EndsWith(name, ".bias")) {
      p.zero_();
    } else {
      // Draw on CPU with the private generator, then copy (works for any device).
      p.copy_(torch::empty(p.sizes(), torch::kFloat32).normal_(0.0, std, gen));
    }
  }
}

int64_t CountParameters(LlavaModel& model) {
  int64_t n = 0;
  for (const auto& p : model->parameters()) n += p.numel();
  return n;
}

namespace {
absl::Status WriteModelFiles(const std::string& dir, const ModelPreset& preset, const InitModelOptions& options);
}  // namespace

absl::Status InitModelDir(const std::string& dir, const InitModelOptions& options) {
  MFPO_ASSIGN_OR_RETURN(ModelPreset preset, GetPreset(options.preset));
  MFPO_RETURN_IF_ERROR(CheckNewOutputDir(dir, options.overwrite));
  return WriteDirectoryWhole(dir, [&](const std::string& target) { return WriteModelFiles(target, preset, options); });
}

namespace {

absl::Status WriteModelFiles(const std::string& dir, const ModelPreset& preset, const InitModelOptions& options) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  const std::string sp_model = TinyTokenizerModelBytes();
  // The tokenizer must fit below the added tokens; check by loading it.
  MFPO_RETURN_IF_ERROR(Tokenizer::FromSerialized(sp_model, preset.config.image_token_index,
                                                 preset.config.pad_token_id, "tiny tokenizer")
                           .status());
  LlavaModel model{nullptr};
  MFPO_RETURN_IF_ERROR(CatchAll("building the model", [&] {
    model = LlavaModel(preset.config, torch::TensorOptions().dtype(torch::kFloat32));
    InitializeWeights(model, options.init_std, options.seed);
  }));
  MFPO_RETURN_IF_ERROR(SaveModelWeights(dir, model));
  auto write = [&](const char* name, const std::string& bytes) {
    return WriteFileAtomically((fs::path(dir) / name).string(), bytes);
  };
  MFPO_RETURN_IF_ERROR(write("tokenizer.model", sp_model));
  ImageProcessorConfig image;
  image.size = image.crop_size = preset.config.vision.image_size;
  image.image_grid_pinpoints = preset.config.image_grid_pinpoints;
  MFPO_RETURN_IF_ERROR(write("preprocessor_config.json", ImageProcessorConfigToJson(image)));
  // The tiny tokenizer's corpus is in the LLaVA-1.5 form; the file makes the choice explicit.
  nlohmann::json chat = {{"chat_template", ChatTemplateJinja(ChatTemplate::kLlava15)}};
  MFPO_RETURN_IF_ERROR(write("chat_template.json", chat.dump(2) + "\n"));
  nlohmann::json added = {{"<image>", preset.config.image_token_index},
                          {"<pad>", preset.config.pad_token_id}};
  MFPO_RETURN_IF_ERROR(write("added_tokens.json", added.dump(2) + "\n"));
  return absl::OkStatus();
}

}  // namespace

}  // namespace mfpo
