// Where the model runs and in which precision: the device seam (cpu / cuda) and a scoped bf16
// autocast region (LibTorch's autocast: matmuls and convolutions in bfloat16, reductions and
// the log-softmax of the objective in float32).
#ifndef MFPO_COMMON_DEVICE_H_
#define MFPO_COMMON_DEVICE_H_

#include <torch/torch.h>

#include <string>

#include "absl/status/statusor.h"

namespace mfpo {

// "cpu" or "cuda" / "cuda:N". A CUDA device on a LibTorch build without CUDA, or on a machine
// without a GPU, is FAILED_PRECONDITION with the reason; anything else is INVALID_ARGUMENT.
absl::StatusOr<torch::Device> ResolveDevice(const std::string& name);

// "auto" (bf16 on cuda, fp32 on cpu), "fp32" or "bf16" -> whether to autocast to bfloat16.
absl::StatusOr<bool> ResolveBf16Autocast(const std::string& precision, const torch::Device& device);

// Caps the CPU threads of this process's tensor maths at `threads` (0: one per core): LibTorch's
// OpenMP pool and, when the BLAS is OpenBLAS's pthread build (Debian's), OpenBLAS's own pool,
// which torch::set_num_threads does not reach. Without the second cap, ranks or jobs sharing a
// machine each run one BLAS thread per core and slow each other down several times.
void SetComputeThreads(int threads);

// Enables bf16 autocast for `device`'s type while alive (no-op when `enabled` is false) and
// restores the previous state; clears the autocast weight cache when the outermost region ends.
class AutocastRegion {
 public:
  AutocastRegion(const torch::Device& device, bool enabled);
  ~AutocastRegion();
  AutocastRegion(const AutocastRegion&) = delete;
  AutocastRegion& operator=(const AutocastRegion&) = delete;

 private:
  bool active_ = false;
  bool cuda_ = false;
  bool previous_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kBFloat16;
};

}  // namespace mfpo

#endif  // MFPO_COMMON_DEVICE_H_
