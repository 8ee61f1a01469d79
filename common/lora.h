// LoRA adapters on a LlavaModel, in Hugging Face PEFT's layout.
//
// Adapters attach to the language model's decoder linears (q/k/v/o_proj, gate/up/down_proj) and
// optionally the projector's linear_1 / linear_2, never the vision tower or lm_head. An adapter
// directory is what PEFT's save_pretrained writes:
//   adapter_config.json        peft_type LORA, r, lora_alpha, lora_dropout, target_modules (a
//                              regular expression over module names, so that PEFT does not also
//                              match the vision tower's q/k/v_proj), bias "none", ...
//   adapter_model.safetensors  base_model.model.<module>.lora_A.weight [r, in] and
//                              .lora_B.weight [out, r], <module> in transformers' legacy layout
//                              (language_model.model.layers.N.self_attn.q_proj); the newer
//                              layout (model.language_model.layers.N...) is accepted on load.
#ifndef MFPO_COMMON_LORA_H_
#define MFPO_COMMON_LORA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/llava_model.h"
#include "common/safetensors.h"

namespace mfpo {

struct LoraConfig {
  int64_t rank = 16;
  double alpha = 32;
  double dropout = 0.05;
  std::vector<std::string> target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  // PEFT's other form: a regular expression that module names must match whole (legacy or newer
  // transformers layout); used instead of target_modules when set.
  std::string target_regex;
  std::string base_model;  // base_model_name_or_path in adapter_config.json
  double scaling() const { return alpha / static_cast<double>(rank); }
};

// Adds adapters to every matching layer: A drawn as PEFT does (Kaiming-uniform, a = sqrt(5),
// from a private generator seeded with `seed`), B zero. Returns the number of layers adapted;
// an error when a target name is unknown, matches no layer, or the model already has adapters.
absl::StatusOr<int> AttachLora(LlavaModel& model, const LoraConfig& config, uint64_t seed);
bool HasLora(LlavaModel& model);

// The adapter parameters under the model's own names (`...q_proj.lora_A.weight`).
NamedTensors LoraParameters(LlavaModel& model);
// Is `name` an adapter parameter (of LoraParameters / ModelTensors' complement)?
bool IsLoraParameterName(const std::string& name);

// Switches every adapter on or off; while off the model computes the base model exactly.
void SetLoraEnabled(LlavaModel& model, bool enabled);
class LoraDisabled {
 public:
  explicit LoraDisabled(LlavaModel& model) : model_(model) { SetLoraEnabled(model_, false); }
  ~LoraDisabled() { SetLoraEnabled(model_, true); }
  LoraDisabled(const LoraDisabled&) = delete;
  LoraDisabled& operator=(const LoraDisabled&) = delete;

 private:
  LlavaModel& model_;
};

// Writes `dir`/adapter_config.json and `dir`/adapter_model.safetensors (fp32 adapter weights).
absl::Status SaveAdapter(const std::string& dir, LlavaModel& model, const LoraConfig& config);
// Reads adapter_config.json; errors name the file and the field (PEFT features this
// implementation does not honour are refused: DoRA, rsLoRA, bias, modules_to_save, ...).
absl::StatusOr<LoraConfig> LoadAdapterConfig(const std::string& dir);
// Attaches the adapter of `dir` (as LoadAdapterConfig reads it) to `model` and loads its weights;
// every adapted layer must get both of its tensors with the right shapes, and no tensor may be
// left over.
absl::StatusOr<LoraConfig> LoadAdapter(const std::string& dir, LlavaModel& model);
// Loads adapter weights of `dir` into the adapters `model` already has (resume).
absl::Status LoadAdapterWeights(const std::string& dir, LlavaModel& model);
// W += scaling * B A for every adapted layer, then B is zeroed and the adapters switched off (their
// tensors stay but add nothing, also if switched on again or merged twice; ModelTensors never
// writes them).
absl::Status MergeLora(LlavaModel& model);

}  // namespace mfpo

#endif  // MFPO_COMMON_LORA_H_
