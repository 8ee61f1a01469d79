// Gradient averaging across a data-parallel group, overlapped with backward as PyTorch DDP does.
//
// The trainable parameters are cut into buckets in reverse registration order (the order in
// which backward produces their gradients): a small first bucket so that communication starts
// early, then buckets of about `bucket_bytes`. Every rank builds the same buckets from the same
// parameter list. A post-hook on each parameter's gradient accumulator counts the parameter
// ready; when a bucket is complete, it is flattened and its all-reduce launched at once, in
// bucket order on every rank (a later bucket waits for the earlier ones to launch, so the
// collectives match across ranks). Finish() launches what backward did not (parameters that
// got no gradient contribute zeros), waits, and writes the averages back into `.grad`; its
// wait is the communication that backward did not hide.
//
// With gradient accumulation only the step's last backward communicates: Arm() before it.
// Frozen parameters (requires_grad false) are never in a bucket.
#ifndef MFPO_WORKER_GRAD_REDUCER_H_
#define MFPO_WORKER_GRAD_REDUCER_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "worker/collective.h"

namespace mfpo {

struct ReduceStats {
  double wait_seconds = 0;  // time Finish() blocked on communication (not hidden by backward)
  int64_t bytes = 0;        // bytes all-reduced by this rank
  int buckets = 0;
  int launched_in_backward = 0;  // buckets whose all-reduce started before backward ended
};

class GradientReducer {
 public:
  static constexpr int64_t kDefaultBucketBytes = 25ll << 20;
  static constexpr int64_t kDefaultFirstBucketBytes = 1ll << 20;

  GradientReducer(Collective* group, std::vector<torch::Tensor> params, int64_t bucket_bytes = kDefaultBucketBytes,
                  int64_t first_bucket_bytes = kDefaultFirstBucketBytes);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // The next backward is the step's last: its hooks launch the buckets.
  void Arm();
  // Completes the step's reduction (also when this rank ran no backward this step): every
  // trainable parameter's .grad is the average over ranks afterwards.
  absl::Status Finish(ReduceStats* stats);

  int buckets() const { return static_cast<int>(buckets_.size()); }
  // Parameter indices (into the constructor's list) of each bucket, in launch order.
  std::vector<std::vector<int>> BucketLayout() const;

 private:
  struct Bucket {
    std::vector<int> params;
    torch::Tensor flat;  // allocated at the first launch
    int64_t numel = 0;
  };
  void OnGradReady(int param);
  absl::Status LaunchReadyBuckets() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Launch(int bucket) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Collective* group_;
  std::vector<torch::Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;                        // param -> bucket
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;  // kept alive for the hooks
  std::vector<uintptr_t> hook_keys_;

  absl::Mutex mu_;  // the autograd engine may run hooks on its own threads
  bool armed_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<int> pending_ ABSL_GUARDED_BY(mu_);    // per bucket: params not yet ready
  std::vector<bool> ready_ ABSL_GUARDED_BY(mu_);     // per param, this step
  int next_launch_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::unique_ptr<Collective::Pending>> works_ ABSL_GUARDED_BY(mu_);
  absl::Status hook_error_ ABSL_GUARDED_BY(mu_);
  int launched_in_backward_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace mfpo

#endif  // MFPO_WORKER_GRAD_REDUCER_H_
