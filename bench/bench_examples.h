// Synthetic preference examples for the training-step benchmarks.
#ifndef MFPO_BENCH_BENCH_EXAMPLES_H_
#define MFPO_BENCH_BENCH_EXAMPLES_H_

#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "worker/preference_step.h"

namespace mfpo::bench {

// `n` examples: 12 prompt + 24 answer tokens for chosen and rejected, random pixels for the image
// and its perturbed copy; `offset` varies the token ids (e.g. per rank).
inline std::vector<PreferenceExample> SyntheticExamples(const LlavaConfig& c, int64_t n, int64_t offset = 0) {
  std::vector<PreferenceExample> examples;
  for (int64_t i = 0; i < n; ++i) {
    PreferenceExample ex;
    ex.id = std::to_string(i);
    ex.chosen = Sequence(c, 12, 24, i + offset);
    ex.rejected = Sequence(c, 12, 24, i + 100 + offset);
    ex.image.pixel_values = torch::randn({3, c.vision.image_size, c.vision.image_size});
    ex.perturbed_image.pixel_values = torch::randn({3, c.vision.image_size, c.vision.image_size});
    examples.push_back(ex);
  }
  return examples;
}

}  // namespace mfpo::bench

#endif  // MFPO_BENCH_BENCH_EXAMPLES_H_
