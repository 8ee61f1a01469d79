// Shared by the benchmarks: the baseline they report ratios against.
#ifndef MFPO_BENCH_BENCH_UTIL_H_
#define MFPO_BENCH_BENCH_UTIL_H_

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "common/llava_config.h"
#include "common/tokenizer.h"

namespace mfpo::bench {

// This LibTorch's fp32 matmul FLOP/s on a 1024^3 product (after a warm-up).
inline double MatmulFlops() {
  const int64_t n = 1024;
  torch::Tensor a = torch::randn({n, n}), b = torch::randn({n, n});
  for (int i = 0; i < 3; ++i) (void)torch::matmul(a, b);
  const int iters = 20;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) (void)torch::matmul(a, b);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * n * n * n * iters / secs;
}

// A synthetic training sequence: BOS, the image tokens, `prompt` prompt tokens and `answer`
// labelled answer tokens (ids varied by `seed`).
inline mfpo::TokenizedExample Sequence(const mfpo::LlavaConfig& c, int64_t prompt, int64_t answer, int64_t seed) {
  mfpo::TokenizedExample t;
  t.ids.push_back(1);
  for (int64_t i = 0; i < c.image_tokens(); ++i) t.ids.push_back(c.image_token_index);
  for (int64_t i = 0; i < prompt; ++i) t.ids.push_back(3 + (seed * 31 + i * 7) % 900);
  t.labels.assign(t.ids.size(), mfpo::kIgnoreLabel);
  for (int64_t i = 0; i < answer; ++i) {
    const int64_t id = 3 + (seed * 17 + i * 13) % 900;
    t.ids.push_back(id);
    t.labels.push_back(id);
  }
  return t;
}

// One machine-readable line per measured ratio, collected by scripts/bench-all.sh into one table:
// RESULT<TAB>benchmark<TAB>what<TAB>ratio<TAB>baseline<TAB>target ("-" when none).
inline void Result(const std::string& bench, const std::string& what, double ratio, const std::string& baseline,
                   const std::string& target = "-") {
  std::printf("RESULT\t%s\t%s\t%.2f\t%s\t%s\n", bench.c_str(), what.c_str(), ratio, baseline.c_str(), target.c_str());
  std::fflush(stdout);
}

}  // namespace mfpo::bench

#endif  // MFPO_BENCH_BENCH_UTIL_H_
