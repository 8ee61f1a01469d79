#include "evaluator/eval_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/jsonl.h"
#include "common/status_macros.h"

namespace mfpo {
using json = nlohmann::json;

namespace {

double Ratio(double num, double den) { return den > 0 ? num / den : std::numeric_limits<double>::quiet_NaN(); }
double Get(const Counts& c, const std::string& k) {
  auto it = c.find(k);
  return it == c.end() ? 0 : it->second;
}

// The 2.5th and 97.5th percentiles (linear interpolation) of finite values.
std::pair<double, double> Percentiles95(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); }), v.end());
  if (v.empty()) return {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    const double pos = q * (v.size() - 1);
    const size_t i = static_cast<size_t>(pos);
    const double f = pos - i;
    return i + 1 < v.size() ? v[i] * (1 - f) + v[i + 1] * f : v[i];
  };
  return {at(0.025), at(0.975)};
}

// Sums `rows` over a bootstrap resample of `n` indices (`draw` gives them).
template <typename Draw>
Counts Resample(const std::vector<const Counts*>& rows, Draw&& draw) {
  Counts sums;
  for (size_t k = 0; k < rows.size(); ++k) {
    const Counts& c = *rows[draw()];
    for (const auto& [name, v] : c) sums[name] += v;
  }
  return sums;
}

}  // namespace

const std::vector<std::string>& ReportMetrics() {
  static const std::vector<std::string> kMetrics = {
      "chair_s",         "chair_i",          "chair_recall",         "pope_f1_random", "pope_f1_popular",
      "pope_f1_adversarial", "pope_acc_random", "pope_acc_popular", "pope_acc_adversarial", "amber_chair",
      "amber_cover",     "amber_hal",        "amber_cog",            "reliance_gap",   "reliance_clean",
      "reliance_noised", "chair_empty"};
  return kMetrics;
}

bool LowerIsBetter(const std::string& metric) {
  return absl::StartsWith(metric, "chair_s") || absl::StartsWith(metric, "chair_i") || metric == "amber_chair" ||
         metric == "amber_hal" || metric == "amber_cog" || metric == "chair_empty";
}

double MetricFromCounts(const std::string& m, const Counts& c) {
  if (m == "chair_s") return Ratio(Get(c, "chair.hallucinated_responses"), Get(c, "chair.responses"));
  if (m == "chair_i") return Ratio(Get(c, "chair.hallucinated_mentions"), Get(c, "chair.mentions"));
  if (m == "chair_recall") return Ratio(Get(c, "chair.covered_objects"), Get(c, "chair.truth_objects"));
  if (m == "chair_empty") {  // scores written before this count existed: unknown, not 0
    if (!c.count("chair.empty_responses")) return std::numeric_limits<double>::quiet_NaN();
    return Ratio(Get(c, "chair.empty_responses"), Get(c, "chair.responses"));
  }
  for (const char* s : {"random", "popular", "adversarial"}) {
    const std::string p = absl::StrCat("pope.", s, ".");
    const double tp = Get(c, p + "tp"), fp = Get(c, p + "fp"), tn = Get(c, p + "tn"), fn = Get(c, p + "fn");
    if (m == absl::StrCat("pope_f1_", s)) {
      if (tp + fp + tn + fn == 0) return std::numeric_limits<double>::quiet_NaN();
      return 2 * tp + fp + fn > 0 ? 2 * tp / (2 * tp + fp + fn) : 0;
    }
    if (m == absl::StrCat("pope_acc_", s)) return Ratio(tp + tn, tp + fp + tn + fn);
  }
  if (m == "amber_chair") return Ratio(Get(c, "amber.hallucinated"), Get(c, "amber.mentioned"));
  if (m == "amber_cover") return Ratio(Get(c, "amber.truth_covered"), Get(c, "amber.truth_total"));
  if (m == "amber_hal") return Ratio(Get(c, "amber.responses_with_hallucination"), Get(c, "amber.responses"));
  if (m == "amber_cog") return Ratio(Get(c, "amber.hallu_mentioned"), Get(c, "amber.hallu_total"));
  if (m == "reliance_gap")
    return Ratio(Get(c, "reliance.clean_ok") - Get(c, "reliance.noised_ok"), Get(c, "reliance.questions"));
  if (m == "reliance_clean") return Ratio(Get(c, "reliance.clean_ok"), Get(c, "reliance.questions"));
  if (m == "reliance_noised") return Ratio(Get(c, "reliance.noised_ok"), Get(c, "reliance.questions"));
  return std::numeric_limits<double>::quiet_NaN();
}

Counts SumCounts(const ImageScores& scores) {
  Counts sums;
  for (const Counts& c : scores.counts)
    for (const auto& [k, v] : c) sums[k] += v;
  return sums;
}

std::map<std::string, Interval> BootstrapIntervals(const ImageScores& scores, const std::vector<std::string>& metrics,
                                                   int resamples, uint64_t seed) {
  std::map<std::string, Interval> out;
  const Counts total = SumCounts(scores);
  std::vector<const Counts*> rows;
  for (const Counts& c : scores.counts) rows.push_back(&c);
  std::map<std::string, std::vector<double>> draws;
  std::mt19937_64 rng(seed);
  if (!rows.empty()) {
    std::uniform_int_distribution<size_t> pick(0, rows.size() - 1);
    for (int b = 0; b < std::max(resamples, 100); ++b) {
      const Counts sums = Resample(rows, [&] { return pick(rng); });
      for (const auto& m : metrics) draws[m].push_back(MetricFromCounts(m, sums));
    }
  }
  for (const auto& m : metrics) {
    Interval iv;
    iv.value = MetricFromCounts(m, total);
    std::tie(iv.lo, iv.hi) = Percentiles95(draws[m]);
    out[m] = iv;
  }
  return out;
}

absl::StatusOr<std::map<std::string, Interval>> PairedDifferences(const ImageScores& a, const ImageScores& b,
                                                                  const std::vector<std::string>& metrics,
                                                                  int resamples, uint64_t seed) {
  std::map<std::string, const Counts*> in_b;
  for (size_t i = 0; i < b.ids.size(); ++i) in_b[b.ids[i]] = &b.counts[i];
  std::vector<const Counts*> ra, rb;
  for (size_t i = 0; i < a.ids.size(); ++i) {
    auto it = in_b.find(a.ids[i]);
    if (it == in_b.end()) continue;
    ra.push_back(&a.counts[i]);
    rb.push_back(it->second);
  }
  if (ra.empty()) return absl::InvalidArgumentError("the two evaluations share no image id");
  size_t ia = 0, ib = 0;
  const Counts sa = Resample(ra, [&] { return ia++; }), sb = Resample(rb, [&] { return ib++; });
  std::map<std::string, std::vector<double>> draws;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, ra.size() - 1);
  std::vector<size_t> idx(ra.size());
  for (int r = 0; r < std::max(resamples, 100); ++r) {
    for (auto& i : idx) i = pick(rng);
    size_t k = 0, l = 0;
    const Counts da = Resample(ra, [&] { return idx[k++]; }), db = Resample(rb, [&] { return idx[l++]; });
    for (const auto& m : metrics) draws[m].push_back(MetricFromCounts(m, db) - MetricFromCounts(m, da));
  }
  std::map<std::string, Interval> out;
  for (const auto& m : metrics) {
    Interval iv;
    iv.value = MetricFromCounts(m, sb) - MetricFromCounts(m, sa);
    std::tie(iv.lo, iv.hi) = Percentiles95(draws[m]);
    out[m] = iv;
  }
  return out;
}

absl::StatusOr<ImageScores> ReadImageScores(const std::string& path) {
  ImageScores s;
  std::set<std::string> seen;
  MFPO_RETURN_IF_ERROR(ReadJsonl(path, [&](int, const json& j) -> absl::Status {
    if (!j.is_object() || !j.contains("id") || !j["id"].is_string() || !j.contains("counts") ||
        !j["counts"].is_object())
      return absl::InvalidArgumentError("expected {\"id\": string, \"counts\": {name: number}}");
    const std::string id = j["id"].get<std::string>();
    if (!seen.insert(id).second) return absl::InvalidArgumentError(absl::StrCat("duplicate image id '", id, "'"));
    Counts c;
    for (auto it = j["counts"].begin(); it != j["counts"].end(); ++it) {
      if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() < 0)
        return absl::InvalidArgumentError(absl::StrCat("counts.", it.key(), ": expected a non-negative number"));
      c[it.key()] = it->get<double>();
    }
    s.ids.push_back(id);
    s.counts.push_back(std::move(c));
    return absl::OkStatus();
  }));
  if (s.ids.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no image scores"));
  return s;
}

std::string ImageScoresJsonl(const ImageScores& scores) {
  std::string out;
  for (size_t i = 0; i < scores.ids.size(); ++i) {
    json counts = json::object();
    for (const auto& [k, v] : scores.counts[i]) counts[k] = v;
    out += json{{"id", scores.ids[i]}, {"counts", counts}}.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  }
  return out;
}

}  // namespace mfpo
