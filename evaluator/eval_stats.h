// Confidence intervals for the hallucination metrics: every table metric is a ratio of counts
// summed over the evaluated images (CHAIRi = hallucinated mentions / mentions, POPE F1 =
// 2tp / (2tp + fp + fn), ...), so `mfpo eval` writes each image's counts (`scores.jsonl`) and
// the intervals come from resampling images with replacement (percentile bootstrap). Paired
// differences between two models resample the same images for both, which is the test of
// "model B hallucinates less than model A on these images".
#ifndef MFPO_EVALUATOR_EVAL_STATS_H_
#define MFPO_EVALUATOR_EVAL_STATS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mfpo {

// Count name -> value, e.g. "chair.mentions", "pope.adversarial.tp", "reliance.clean_ok".
using Counts = std::map<std::string, double>;

// One model's evaluation: per-image counts in image order (ids unique).
struct ImageScores {
  std::vector<std::string> ids;
  std::vector<Counts> counts;
};

// The metrics a report shows, as fractions in [0, 1] (reliance.gap in [-1, 1]):
// chair_s, chair_i, chair_recall, pope_f1_{random,popular,adversarial}, pope_acc_{...},
// amber_chair, amber_cover, amber_hal, amber_cog, reliance_gap, reliance_clean, reliance_noised.
const std::vector<std::string>& ReportMetrics();
// Whether lower is better (CHAIR, AMBER CHAIR/Hal/Cog) for `metric`.
bool LowerIsBetter(const std::string& metric);
// The metric from summed counts; NaN when its denominator is 0 (the suite was not run).
double MetricFromCounts(const std::string& metric, const Counts& sums);
Counts SumCounts(const ImageScores& scores);

struct Interval {
  double value = 0, lo = 0, hi = 0;  // point estimate and 95% percentile-bootstrap bounds
};
// 95% intervals of every metric in `metrics` (resamples >= 100). Deterministic for `seed`.
std::map<std::string, Interval> BootstrapIntervals(const ImageScores& scores, const std::vector<std::string>& metrics,
                                                   int resamples, uint64_t seed);
// b - a on the images both evaluated (matched by id), with a paired 95% interval. An error when
// they share no image.
absl::StatusOr<std::map<std::string, Interval>> PairedDifferences(const ImageScores& a, const ImageScores& b,
                                                                  const std::vector<std::string>& metrics,
                                                                  int resamples, uint64_t seed);

// scores.jsonl: one {"id": ..., "counts": {name: number}} per line.
absl::StatusOr<ImageScores> ReadImageScores(const std::string& path);
std::string ImageScoresJsonl(const ImageScores& scores);

}  // namespace mfpo

#endif  // MFPO_EVALUATOR_EVAL_STATS_H_
