// A Hugging Face LLaVA checkpoint directory: config.json, model.safetensors (or shards with an
// index), tokenizer.model, optional preprocessor_config.json.
#ifndef MFPO_COMMON_MODEL_DIR_H_
#define MFPO_COMMON_MODEL_DIR_H_

#include <torch/torch.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/image.h"
#include "common/llava_config.h"
#include "common/llava_model.h"
#include "common/safetensors.h"
#include "common/tokenizer.h"

namespace mfpo {

// Maps a checkpoint tensor name to this project's (legacy transformers) name: the newer
// `model.vision_tower.*`, `model.multi_modal_projector.*`, `model.language_model.*`, `lm_head.*`
// layout becomes `vision_tower.*`, `multi_modal_projector.*`, `language_model.model.*`,
// `language_model.lm_head.*`. Legacy names map to themselves.
std::string CanonicalTensorName(const std::string& name);
// Buffers transformers writes that carry no weights (`*.position_ids`, `*.rotary_emb.inv_freq`).
bool IsIgnoredTensorName(const std::string& name);

struct WeightLoadReport {
  int64_t loaded = 0;
  uint64_t bytes = 0;
  std::vector<std::string> unexpected;  // checkpoint tensors the model has no place for
};

// Fills every parameter of `module` from `ckpt`: adopted zero-copy where the dtype matches,
// otherwise converted tensor by tensor on a few threads, so peak memory is the model plus at
// most a few tensors in flight. Missing tensors and shape mismatches are errors
// naming the file and the tensor; unexpected tensors are returned in the report (the caller
// warns about them, as transformers does).
struct WeightLoadOptions {
  int threads = 0;  // 0: one per core (at most 8)
  // Parameters whose dtype matches the checkpoint's share its mapped pages instead of copying
  // them (SafetensorsFile::Adopt); the rest are converted into the model's own memory.
  bool zero_copy = true;
};
absl::StatusOr<WeightLoadReport> LoadWeights(const SafetensorsCheckpoint& ckpt,
                                             torch::nn::Module& module,
                                             const WeightLoadOptions& options = {});

struct LoadModelOptions {
  torch::ScalarType dtype = torch::kFloat32;
  torch::Device device = torch::kCPU;
  bool load_tokenizer = true;
  int threads = 0;  // weight-loading threads; 0: one per core
  std::string chat_template;  // llava-1.5 / vicuna / mistral; empty: ModelChatTemplate decides
  // A LoRA adapter directory (PEFT layout, common/lora.h) to run with the base model, unmerged.
  std::string adapter_dir;
};

// The conversation template of a model directory: `override_name` when given, else the one its
// chat_template.json / tokenizer_config.json holds, else mistral for a Mistral decoder, vicuna
// for other LLaVA-NeXT models and llava-1.5 for LLaVA-1.5.
absl::StatusOr<ChatTemplate> ModelChatTemplate(const std::string& dir, const LlavaConfig& config,
                                               const std::string& override_name);

struct LoadedModel {
  std::string dir;
  LlavaConfig config;
  LlavaModel model{nullptr};
  Tokenizer tokenizer;  // valid when loaded with load_tokenizer
  ImageProcessorConfig image;
  WeightLoadReport report;
};

absl::StatusOr<LoadedModel> LoadModelDir(const std::string& dir, const LoadModelOptions& options = {});

// The model's parameters under their checkpoint names (legacy layout), for writing; LoRA adapter
// tensors are left out (common/lora.h writes them apart).
NamedTensors ModelTensors(LlavaModel& model);

// Writes config.json and the weights (sharded above options.max_shard_bytes) into `dir`.
absl::Status SaveModelWeights(const std::string& dir, LlavaModel& model,
                              const CheckpointWriteOptions& options = {});

// Copies the files of a model directory besides config and weights (tokenizer.model,
// preprocessor_config.json, added_tokens.json, the chat template's files), those that exist in
// `from`, into `to`.
absl::Status CopyModelSideFiles(const std::string& from, const std::string& to);

}  // namespace mfpo

#endif  // MFPO_COMMON_MODEL_DIR_H_
