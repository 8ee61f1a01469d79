// Named model sizes and fresh, randomly initialised checkpoint directories.
#ifndef MFPO_COMMON_PRESETS_H_
#define MFPO_COMMON_PRESETS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/image.h"
#include "common/llava_config.h"
#include "common/llava_model.h"
#include "common/tiny_corpus.h"

namespace mfpo {

struct ModelPreset {
  std::string name;
  LlavaConfig config;
  int tokenizer_vocab = kTinyTokenizerVocab;  // SentencePiece pieces; <image>, <pad> follow
};

// "tiny": ~4.1M parameters, 64 px images in 8 px patches (the world's own size), 64 image tokens (tests, CI, the embedded demo).
// "tiny-next": the tiny model as LLaVA-1.6 (llava_next): 32 px tiles on a 2x2-max grid, 88 tokens for a 64 px image.
// "medium": hidden 512, 4 vision + 4 text layers, 64 px images (benchmarks).
absl::StatusOr<ModelPreset> GetPreset(const std::string& name);
std::vector<std::string> PresetNames();

// Normal(0, std) for matrices and embeddings, zero biases, unit norm weights; deterministic
// for a seed (a private generator: the global RNG is untouched).
void InitializeWeights(LlavaModel& model, double std, uint64_t seed);

struct InitModelOptions {
  std::string preset = "tiny";
  uint64_t seed = 0;
  double init_std = 0.02;
  bool overwrite = false;  // replace the weights of a model already in `dir` (refused otherwise)
};

// Writes a complete Hugging Face LLaVA directory: config.json, model.safetensors,
// tokenizer.model (trained by TrainTinyTokenizer), preprocessor_config.json, added_tokens.json.
// A `dir` that is not empty is refused (FAILED_PRECONDITION) unless options.overwrite is set.
absl::Status InitModelDir(const std::string& dir, const InitModelOptions& options);

int64_t CountParameters(LlavaModel& model);

}  // namespace mfpo

#endif  // MFPO_COMMON_PRESETS_H_
