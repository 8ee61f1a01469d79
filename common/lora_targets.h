// The linear layers LoRA adapters may attach to (torch-free: the job-spec validation uses it).
#ifndef MFPO_COMMON_LORA_TARGETS_H_
#define MFPO_COMMON_LORA_TARGETS_H_

#include <algorithm>
#include <string>
#include <vector>

namespace mfpo {

// The language model's decoder layers (attention and MLP), then the projector's two layers.
inline const std::vector<std::string>& LoraTargetNames() {
  static const auto* names = new std::vector<std::string>{"q_proj",    "k_proj", "v_proj",   "o_proj",  "gate_proj",
                                                          "up_proj",   "down_proj", "linear_1", "linear_2"};
  return *names;
}
inline bool IsLoraTarget(const std::string& name) {
  const auto& n = LoraTargetNames();
  return std::find(n.begin(), n.end(), name) != n.end();
}

}  // namespace mfpo

#endif  // MFPO_COMMON_LORA_TARGETS_H_
