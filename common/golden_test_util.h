// Shared by the LLaVA golden tests: the reference's generation, token for token, batched and alone.
#ifndef MFPO_COMMON_GOLDEN_TEST_UTIL_H_
#define MFPO_COMMON_GOLDEN_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <vector>

#include "common/generation.h"

namespace mfpo {

// The rows of a [B, L] int64 tensor padded with negative ids, without the padding.
inline std::vector<std::vector<int64_t>> UnpaddedRows(const torch::Tensor& padded) {
  std::vector<std::vector<int64_t>> rows;
  for (int64_t b = 0; b < padded.size(0); ++b) {
    std::vector<int64_t> row;
    for (int64_t i = 0; i < padded.size(1); ++i)
      if (padded[b][i].item<int64_t>() >= 0) row.push_back(padded[b][i].item<int64_t>());
    rows.push_back(row);
  }
  return rows;
}

// Greedy generation from `prompts` ([B, L], -1 padded) with one image per row equals the
// reference's `want` ([B, max_new], -1 after EOS): the rows batched (left-padded, KV cache) and
// each row alone.
inline void ExpectGenerationMatches(LlavaModel& model, const torch::Tensor& prompts,
                                    const std::vector<PixelInput>& images, const torch::Tensor& want) {
  const std::vector<std::vector<int64_t>> rows = UnpaddedRows(prompts);
  ASSERT_NE(rows[0].size(), rows[1].size()) << "prompts must differ in length to test padding";
  GenerationOptions options;
  options.max_new_tokens = want.size(1);
  auto batched = GreedyGenerate(model, rows, images, options);
  ASSERT_TRUE(batched.ok()) << batched.status();
  const std::vector<std::vector<int64_t>> expected = UnpaddedRows(want);
  for (size_t b = 0; b < expected.size(); ++b) {
    EXPECT_EQ((*batched)[b], expected[b]) << "row " << b << " (batched, left-padded)";
    auto alone = GreedyGenerate(model, {rows[b]}, {images[b]}, options);
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ((*alone)[0], expected[b]) << "row " << b << " (alone)";
  }
}

}  // namespace mfpo

#endif  // MFPO_COMMON_GOLDEN_TEST_UTIL_H_
