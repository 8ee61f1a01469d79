#include "common/device.h"

#include <dlfcn.h>

#include <algorithm>
#include <thread>

#include <ATen/autocast_mode.h>

#include "absl/strings/str_cat.h"
#include "common/torch_seam.h"

namespace mfpo {

void SetComputeThreads(int threads) {
  const int n = threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
  // Looked up at run time: the project does not link OpenBLAS itself.
  using SetThreads = void (*)(int);
  if (auto* set_openblas = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
    set_openblas(n);
}


absl::StatusOr<torch::Device> ResolveDevice(const std::string& name) {
  absl::StatusOr<torch::Device> device = CatchAll("device", [&] { return torch::Device(name); });
  if (!device.ok())
    return absl::InvalidArgumentError(absl::StrCat("device '", name, "': expected cpu, cuda or cuda:N"));
  if (device->is_cpu()) return device;
  if (!device->is_cuda()) return absl::InvalidArgumentError(absl::StrCat("device '", name, "': only cpu and cuda are supported"));
  if (!torch::cuda::is_available())
    return absl::FailedPreconditionError(absl::StrCat(
        "device '", name, "': this LibTorch has no CUDA support or no GPU is visible (Debian's libtorch is CPU-only; "
        "build against a CUDA LibTorch with -DMFPO_WITH_CUDA=ON)"));
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (device->has_index() && device->index() >= count)
    return absl::FailedPreconditionError(absl::StrCat("device '", name, "': only ", count, " GPU(s) visible"));
  return device;
}

absl::StatusOr<bool> ResolveBf16Autocast(const std::string& precision, const torch::Device& device) {
  if (precision == "auto") return device.is_cuda();
  if (precision == "bf16") return true;
  if (precision == "fp32") return false;
  return absl::InvalidArgumentError(absl::StrCat("precision '", precision, "': expected auto, fp32 or bf16"));
}

AutocastRegion::AutocastRegion(const torch::Device& device, bool enabled) {
  if (!enabled) return;
  active_ = true;
  cuda_ = device.is_cuda();
  if (cuda_) {
    previous_enabled_ = at::autocast::is_enabled();
    previous_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
  } else {
    previous_enabled_ = at::autocast::is_cpu_enabled();
    previous_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(true);
  }
  at::autocast::increment_nesting();
}

AutocastRegion::~AutocastRegion() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  if (cuda_) {
    at::autocast::set_enabled(previous_enabled_);
    at::autocast::set_autocast_gpu_dtype(previous_dtype_);
  } else {
    at::autocast::set_cpu_enabled(previous_enabled_);
    at::autocast::set_autocast_cpu_dtype(previous_dtype_);
  }
}

}  // namespace mfpo
