#include "evaluator/eval_stats.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace mfpo {
namespace {

ImageScores Chair(const std::vector<std::pair<int, int>>& hallucinated_and_mentions) {
  ImageScores s;
  for (size_t i = 0; i < hallucinated_and_mentions.size(); ++i) {
    const auto [h, m] = hallucinated_and_mentions[i];
    s.ids.push_back("img-" + std::to_string(i));
    s.counts.push_back({{"chair.responses", 1},
                        {"chair.hallucinated_responses", h > 0 ? 1.0 : 0.0},
                        {"chair.mentions", static_cast<double>(m)},
                        {"chair.hallucinated_mentions", static_cast<double>(h)},
                        {"chair.truth_objects", 2},
                        {"chair.covered_objects", 1}});
  }
  return s;
}

TEST(EvalStats, MetricsFromSummedCountsByHand) {
  const Counts c = SumCounts(Chair({{1, 4}, {0, 2}, {2, 3}}));
  EXPECT_DOUBLE_EQ(MetricFromCounts("chair_s", c), 2.0 / 3);
  EXPECT_DOUBLE_EQ(MetricFromCounts("chair_i", c), 3.0 / 9);
  EXPECT_DOUBLE_EQ(MetricFromCounts("chair_recall", c), 3.0 / 6);
  // POPE F1 = 2tp / (2tp + fp + fn): tp 3, fp 1, fn 2 -> 6 / 9.
  const Counts p = {{"pope.adversarial.tp", 3}, {"pope.adversarial.fp", 1}, {"pope.adversarial.tn", 4},
                    {"pope.adversarial.fn", 2}};
  EXPECT_DOUBLE_EQ(MetricFromCounts("pope_f1_adversarial", p), 6.0 / 9);
  EXPECT_DOUBLE_EQ(MetricFromCounts("pope_acc_adversarial", p), 7.0 / 10);
  EXPECT_TRUE(std::isnan(MetricFromCounts("pope_f1_random", p)));  // suite not run
  const Counts r = {{"reliance.questions", 8}, {"reliance.clean_ok", 6}, {"reliance.noised_ok", 2}};
  EXPECT_DOUBLE_EQ(MetricFromCounts("reliance_gap", r), 0.5);
  EXPECT_TRUE(LowerIsBetter("chair_i"));
  EXPECT_FALSE(LowerIsBetter("chair_recall"));
  EXPECT_FALSE(LowerIsBetter("reliance_gap"));
}

TEST(EvalStats, IdenticalImagesGiveAPointInterval) {
  const auto ci = BootstrapIntervals(Chair(std::vector<std::pair<int, int>>(50, {1, 4})), {"chair_i"}, 500, 1);
  EXPECT_DOUBLE_EQ(ci.at("chair_i").value, 0.25);
  EXPECT_DOUBLE_EQ(ci.at("chair_i").lo, 0.25);
  EXPECT_DOUBLE_EQ(ci.at("chair_i").hi, 0.25);
}

TEST(EvalStats, IntervalCoversTheEstimateAndNarrowsWithMoreImages) {
  std::vector<std::pair<int, int>> few, many;
  for (int i = 0; i < 20; ++i) few.push_back({i % 3 == 0 ? 1 : 0, 3});
  for (int i = 0; i < 500; ++i) many.push_back({i % 3 == 0 ? 1 : 0, 3});
  const Interval a = BootstrapIntervals(Chair(few), {"chair_s"}, 2000, 7).at("chair_s");
  const Interval b = BootstrapIntervals(Chair(many), {"chair_s"}, 2000, 7).at("chair_s");
  EXPECT_LT(a.lo, a.value);
  EXPECT_GT(a.hi, a.value);
  EXPECT_LT(b.hi - b.lo, (a.hi - a.lo) / 2);  // ~ 1/sqrt(n): 5x narrower for 25x the images
  // Binomial standard error at n = 500, p = 0.34: 0.021; the 95% width is about 4 of them.
  EXPECT_NEAR(b.hi - b.lo, 4 * std::sqrt(0.34 * 0.66 / 500), 0.02);
  // Deterministic for a seed.
  const Interval again = BootstrapIntervals(Chair(few), {"chair_s"}, 2000, 7).at("chair_s");
  EXPECT_EQ(again.lo, a.lo);
  EXPECT_EQ(again.hi, a.hi);
}

TEST(EvalStats, PairedDifferenceSeesAConsistentImprovement) {
  // B removes one hallucinated mention on every image: a difference of -1/4 per image, with no
  // spread, while each model's own interval is wide (images differ a lot).
  std::vector<std::pair<int, int>> a, b;
  for (int i = 0; i < 40; ++i) {
    a.push_back({1 + (i % 3), 4});
    b.push_back({i % 3, 4});
  }
  auto diff = PairedDifferences(Chair(a), Chair(b), {"chair_i"}, 1000, 3);
  ASSERT_TRUE(diff.ok()) << diff.status();
  EXPECT_DOUBLE_EQ(diff->at("chair_i").value, -0.25);
  EXPECT_DOUBLE_EQ(diff->at("chair_i").lo, -0.25);
  EXPECT_DOUBLE_EQ(diff->at("chair_i").hi, -0.25);
  auto same = PairedDifferences(Chair(a), Chair(a), {"chair_i"}, 1000, 3);
  ASSERT_TRUE(same.ok());
  EXPECT_DOUBLE_EQ(same->at("chair_i").lo, 0);
  EXPECT_DOUBLE_EQ(same->at("chair_i").hi, 0);
  ImageScores other = Chair(a);
  for (auto& id : other.ids) id = "other-" + id;
  EXPECT_FALSE(PairedDifferences(Chair(a), other, {"chair_i"}, 1000, 3).ok());
}

TEST(EvalStats, ScoresFileRoundTripsAndBadLinesAreRefused) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / "eval_stats_test";
  std::filesystem::create_directories(dir);
  const ImageScores s = Chair({{1, 2}, {0, 3}});
  const std::string path = (dir / "scores.jsonl").string();
  std::ofstream(path) << ImageScoresJsonl(s);
  auto back = ReadImageScores(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ids, s.ids);
  EXPECT_EQ(back->counts, s.counts);
  std::ofstream(path) << ImageScoresJsonl(s) << ImageScoresJsonl(s);
  EXPECT_NE(ReadImageScores(path).status().message().find("duplicate image id 'img-0'"), std::string::npos);
  std::ofstream(path) << "{\"id\": \"x\", \"counts\": {\"chair.mentions\": -1}}\n";
  EXPECT_NE(ReadImageScores(path).status().message().find("counts.chair.mentions"), std::string::npos);
  std::ofstream(path) << "";
  EXPECT_FALSE(ReadImageScores(path).ok());
}

}  // namespace
}  // namespace mfpo
