#include "worker/grad_reducer.h"

#include <gtest/gtest.h>

#include "worker/optimizer_state.h"

namespace mfpo {
namespace {

// Buckets are cut in reverse parameter order (backward's order): a small first bucket, then up
// to the cap; frozen parameters are left out; every parameter lands in exactly one bucket.
TEST(GradientReducer, BucketsInReverseOrderWithASmallFirstOne) {
  auto group = Collective::Join(GroupOptions{}, torch::kCPU);
  ASSERT_TRUE(group.ok()) << group.status();
  std::vector<torch::Tensor> params = {
      torch::zeros({300000}, torch::requires_grad()),   // 1.2 MB
      torch::zeros({10}, torch::requires_grad()),       // 40 B
      torch::zeros({5}),                                // frozen
      torch::zeros({2000000}, torch::requires_grad()),  // 8 MB
  };
  GradientReducer reducer(group->get(), params, /*bucket_bytes=*/4 << 20, /*first_bucket_bytes=*/1 << 20);
  EXPECT_EQ(reducer.BucketLayout(), (std::vector<std::vector<int>>{{3}, {1, 0}}));
}

// Nothing is launched by an unarmed (accumulation) backward; buckets go out in order, so a
// parameter without gradient whose bucket comes first holds the others back until Finish; Finish
// writes the (here: one-rank) average back, zeros for a parameter that got no gradient.
TEST(GradientReducer, HooksLaunchDuringTheArmedBackwardOnly) {
  auto group = Collective::Join(GroupOptions{}, torch::kCPU);
  ASSERT_TRUE(group.ok());
  torch::Tensor a = torch::ones({1000}, torch::requires_grad());
  torch::Tensor b = torch::ones({1000}, torch::requires_grad());
  torch::Tensor unused = torch::ones({3}, torch::requires_grad());
  GradientReducer reducer(group->get(), {a, b, unused}, /*bucket_bytes=*/4000, /*first_bucket_bytes=*/4000);
  ASSERT_EQ(reducer.buckets(), 3);
  // Not armed (an accumulation micro-batch): nothing is launched.
  (a * 2 + b * 3).sum().backward();
  ReduceStats stats;
  (a * 2 + b * 3).sum().backward();
  reducer.Arm();
  ASSERT_TRUE(reducer.Finish(&stats).ok());
  EXPECT_EQ(stats.launched_in_backward, 0);
  EXPECT_TRUE(torch::equal(a.grad(), torch::full({1000}, 4.0)));
  EXPECT_TRUE(torch::equal(unused.grad(), torch::zeros({3})));
  // Armed: the buckets of a and b complete inside backward; the unused one waits for Finish.
  reducer.Arm();
  (a * 2 + b * 3).sum().backward();
  ASSERT_TRUE(reducer.Finish(&stats).ok());
  EXPECT_EQ(stats.buckets, 3);
  EXPECT_EQ(stats.launched_in_backward, 0) << "the unused parameter's bucket comes first in launch order";
  EXPECT_TRUE(torch::equal(b.grad(), torch::full({1000}, 9.0)));
}

// The overlap itself: with the unused parameter registered first (so its bucket launches last),
// both used buckets go out inside the armed backward, before Finish.
TEST(GradientReducer, CompleteBucketsLaunchInsideBackward) {
  auto group = Collective::Join(GroupOptions{}, torch::kCPU);
  ASSERT_TRUE(group.ok());
  torch::Tensor unused = torch::ones({3}, torch::requires_grad());
  torch::Tensor a = torch::ones({1000}, torch::requires_grad());
  torch::Tensor b = torch::ones({1000}, torch::requires_grad());
  GradientReducer reducer(group->get(), {unused, a, b}, /*bucket_bytes=*/4000, /*first_bucket_bytes=*/4000);
  ASSERT_EQ(reducer.BucketLayout(), (std::vector<std::vector<int>>{{2}, {1}, {0}}));
  reducer.Arm();
  (a * 2 + b * 3).sum().backward();
  ReduceStats stats;
  ASSERT_TRUE(reducer.Finish(&stats).ok());
  EXPECT_EQ(stats.launched_in_backward, 2);
  EXPECT_TRUE(torch::equal(a.grad(), torch::full({1000}, 2.0)));
  EXPECT_TRUE(torch::equal(unused.grad(), torch::zeros({3})));
}

TEST(OptimizerState, PartitionIsBalancedAndCoversEveryParameter) {
  const std::vector<int64_t> numels = {100, 90, 80, 10, 10, 5, 5};
  const std::vector<int> owner = OwnerOfParams(numels, 2);
  std::vector<int64_t> load(2, 0);
  for (size_t k = 0; k < numels.size(); ++k) load[owner[k]] += numels[k];
  EXPECT_EQ(load[0] + load[1], 300);
  // Greedy largest-first: at most 1/N of the total plus the largest parameter per rank.
  EXPECT_LE(std::max(load[0], load[1]), 300 / 2 + 100);
  EXPECT_GE(std::min(load[0], load[1]), 100);
  EXPECT_EQ(OwnerOfParams(numels, 1), std::vector<int>(numels.size(), 0));
}

}  // namespace
}  // namespace mfpo
