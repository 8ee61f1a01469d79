// Comparing two checkpoints tensor by tensor (tests only).
#ifndef MFPO_TESTS_CHECKPOINT_DIFF_H_
#define MFPO_TESTS_CHECKPOINT_DIFF_H_

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "common/safetensors.h"

namespace mfpo {

// Largest absolute difference between two checkpoints' tensors (+inf when their names differ).
inline double MaxDiff(const std::filesystem::path& a, const std::filesystem::path& b) {
  auto ca = SafetensorsCheckpoint::Open(a.string());
  auto cb = SafetensorsCheckpoint::Open(b.string());
  if (!ca.ok() || !cb.ok() || ca->names() != cb->names()) return INFINITY;
  double worst = 0;
  for (const std::string& name : ca->names()) {
    const auto* x = ca->Find(name);
    const auto* y = cb->Find(name);
    const torch::Tensor tx = x->file->View(*x->entry).to(torch::kFloat64);
    const torch::Tensor ty = y->file->View(*y->entry).to(torch::kFloat64);
    if (!tx.sizes().equals(ty.sizes())) return INFINITY;
    if (tx.numel() > 0) worst = std::max(worst, (tx - ty).abs().max().item<double>());
  }
  return worst;
}

}  // namespace mfpo

#endif  // MFPO_TESTS_CHECKPOINT_DIFF_H_
