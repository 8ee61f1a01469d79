#include "worker/grad_reducer.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"

namespace mfpo {

GradientReducer::GradientReducer(Collective* group, std::vector<torch::Tensor> params, int64_t bucket_bytes,
                                 int64_t first_bucket_bytes)
    : group_(group), params_(std::move(params)), bucket_of_(params_.size(), -1) {
  int64_t bytes = 0;
  for (int i = static_cast<int>(params_.size()) - 1; i >= 0; --i) {
    const torch::Tensor& p = params_[i];
    if (!p.requires_grad()) continue;
    const int64_t n = p.numel() * static_cast<int64_t>(p.element_size());
    // The bucket being filled: the first one is small, so communication starts early.
    const int64_t cap = buckets_.size() == 1 ? first_bucket_bytes : bucket_bytes;
    const bool fits = !buckets_.empty() && bytes + n <= cap &&
                      params_[buckets_.back().params.front()].scalar_type() == p.scalar_type() &&
                      params_[buckets_.back().params.front()].device() == p.device();
    if (!fits) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().params.push_back(i);
    buckets_.back().numel += p.numel();
    bytes += n;
    bucket_of_[i] = static_cast<int>(buckets_.size()) - 1;
  }
  {
    absl::MutexLock lock(&mu_);
    pending_.resize(buckets_.size());
    for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = static_cast<int>(buckets_[b].params.size());
    ready_.assign(params_.size(), false);
    works_.resize(buckets_.size());
  }
  for (int i = 0; i < static_cast<int>(params_.size()); ++i) {
    if (bucket_of_[i] < 0) continue;
    std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(params_[i]);
    hook_keys_.push_back(acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          OnGradReady(i);
          return outputs;
        })));
    accumulators_.push_back(std::move(acc));
  }
}

GradientReducer::~GradientReducer() {
  for (size_t k = 0; k < accumulators_.size(); ++k) accumulators_[k]->del_post_hook(hook_keys_[k]);
}

std::vector<std::vector<int>> GradientReducer::BucketLayout() const {
  std::vector<std::vector<int>> out;
  for (const auto& b : buckets_) out.push_back(b.params);
  return out;
}

void GradientReducer::Arm() {
  absl::MutexLock lock(&mu_);
  armed_ = true;
}

void GradientReducer::OnGradReady(int param) {
  absl::MutexLock lock(&mu_);
  if (!armed_ || ready_[param]) return;
  ready_[param] = true;
  const int b = bucket_of_[param];
  if (--pending_[b] == 0) {
    const int before = next_launch_;
    absl::Status s = LaunchReadyBuckets();
    launched_in_backward_ += next_launch_ - before;
    if (!s.ok() && hook_error_.ok()) hook_error_ = s;
  }
}

absl::Status GradientReducer::LaunchReadyBuckets() {
  while (next_launch_ < static_cast<int>(buckets_.size()) && pending_[next_launch_] == 0) {
    MFPO_RETURN_IF_ERROR(Launch(next_launch_));
    ++next_launch_;
  }
  return absl::OkStatus();
}

absl::Status GradientReducer::Launch(int b) {
  Bucket& bucket = buckets_[b];
  return CatchAll(absl::StrCat("flattening gradient bucket ", b), [&]() -> absl::Status {
    torch::NoGradGuard no_grad;
    const torch::Tensor& first = params_[bucket.params.front()];
    if (!bucket.flat.defined()) bucket.flat = torch::empty({bucket.numel}, first.options().requires_grad(false));
    int64_t offset = 0;
    for (int i : bucket.params) {
      const torch::Tensor& p = params_[i];
      torch::Tensor slot = bucket.flat.slice(0, offset, offset + p.numel());
      if (p.grad().defined()) {
        slot.copy_(p.grad().reshape({-1}));
      } else {
        slot.zero_();  // no gradient on this rank this step
      }
      offset += p.numel();
    }
    MFPO_ASSIGN_OR_RETURN(
        works_[b], group_->AllReduceSumAsync(
                       bucket.flat, absl::StrFormat("all-reduce of gradient bucket %d of %d (%.1f MB)", b,
                                                    buckets_.size(), bucket.numel * first.element_size() / 1048576.0)));
    return absl::OkStatus();
  });
}

absl::Status GradientReducer::Finish(ReduceStats* stats) {
  absl::MutexLock lock(&mu_);
  armed_ = false;
  absl::Status status = hook_error_;
  hook_error_ = absl::OkStatus();
  stats->launched_in_backward = launched_in_backward_;
  // Buckets backward did not complete (params without a gradient on this rank): launch in order.
  if (status.ok()) {
    for (int b = next_launch_; b < static_cast<int>(buckets_.size()); ++b) pending_[b] = 0;
    status = LaunchReadyBuckets();
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& w : works_) {
    if (!w) continue;
    absl::Status s = w->Wait();
    if (status.ok()) status = s;
    w.reset();
  }
  stats->wait_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stats->buckets = static_cast<int>(buckets_.size());
  stats->bytes = 0;
  if (status.ok()) {
    status = CatchAll("writing the averaged gradients back", [&] {
      torch::NoGradGuard no_grad;
      const double scale = 1.0 / group_->size();
      for (Bucket& bucket : buckets_) {
        bucket.flat.mul_(scale);
        stats->bytes += bucket.numel * static_cast<int64_t>(bucket.flat.element_size());
        int64_t offset = 0;
        for (int i : bucket.params) {
          torch::Tensor& p = params_[i];
          torch::Tensor avg = bucket.flat.slice(0, offset, offset + p.numel()).view(p.sizes());
          if (p.grad().defined()) {
            p.mutable_grad().copy_(avg);
          } else {
            p.mutable_grad() = avg.clone();
          }
          offset += p.numel();
        }
      }
    });
  }
  // Ready for the next step.
  for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = static_cast<int>(buckets_[b].params.size());
  std::fill(ready_.begin(), ready_.end(), false);
  next_launch_ = 0;
  launched_in_backward_ = 0;
  return status;
}

}  // namespace mfpo
