// Batched greedy decoding with a KV cache.
#ifndef MFPO_COMMON_GENERATION_H_
#define MFPO_COMMON_GENERATION_H_

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/llava_model.h"

namespace mfpo {

struct GenerationOptions {
  int64_t max_new_tokens = 64;
  int64_t eos_id = 2;
};

// `prompts[b]` are token ids with the image placeholder already expanded; `images` has one
// image per prompt, or is empty for text-only prompts. Prompts are left-padded
// (positions count real tokens only, so padding does not change any row's result); each row
// stops at EOS (included in its output) or after max_new_tokens.
absl::StatusOr<std::vector<std::vector<int64_t>>> GreedyGenerate(
    LlavaModel& model, const std::vector<std::vector<int64_t>>& prompts,
    const std::vector<PixelInput>& images, const GenerationOptions& options);

}  // namespace mfpo

#endif  // MFPO_COMMON_GENERATION_H_
