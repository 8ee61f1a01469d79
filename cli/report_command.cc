#include "cli/report_command.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/jsonl.h"
#include "common/status_macros.h"
#include "cli/charts.h"
#include "evaluator/eval_stats.h"

namespace mfpo {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct LoadedRun {
  ReportRun run;
  std::string eval_dir;
  ImageScores scores;
  std::map<std::string, Interval> ci;
  std::vector<json> steps;  // metrics.jsonl of a training run (empty for an eval-only run)
  json world;               // the evaluated world's world.json (null for evaluations older than it)
};

// The table's columns: heading and the metrics shown in it (" / " between several).
const std::vector<std::pair<std::string, std::vector<std::string>>>& Columns() {
  static const auto* columns = new std::vector<std::pair<std::string, std::vector<std::string>>>{
      {"CHAIRs", {"chair_s"}},
      {"CHAIRi", {"chair_i"}},
      {"recall", {"chair_recall"}},
      {"POPE F1 (rand / pop / adv)", {"pope_f1_random", "pope_f1_popular", "pope_f1_adversarial"}},
      {"AMBER Hal", {"amber_hal"}},
      {"reliance gap", {"reliance_gap"}},
      {"no object named", {"chair_empty"}}};
  return *columns;
}
// The metrics compared pairwise and drawn as bars.
const std::vector<std::string> kKeyMetrics = {"chair_s", "chair_i", "chair_recall", "pope_f1_adversarial",
                                              "amber_hal", "reliance_gap", "chair_empty"};
const std::map<std::string, std::string> kShortName = {
    {"chair_s", "CHAIRs"},       {"chair_i", "CHAIRi"},       {"chair_recall", "recall"},
    {"pope_f1_random", "POPE F1 rand"}, {"pope_f1_popular", "POPE F1 pop"}, {"pope_f1_adversarial", "POPE F1 adv"},
    {"amber_hal", "AMBER Hal"},  {"reliance_gap", "reliance gap"}, {"chair_empty", "no object named"}};
std::string ShortName(const std::string& m) {
  auto it = kShortName.find(m);
  return it == kShortName.end() ? m : it->second;
}

std::string PctCi(const Interval& iv) {
  if (!std::isfinite(iv.value)) return "-";
  return absl::StrFormat("%.1f [%.1f, %.1f]", 100 * iv.value, 100 * iv.lo, 100 * iv.hi);
}
std::string SignedCi(const Interval& iv) {
  if (!std::isfinite(iv.value)) return "-";
  const bool excludes_zero = iv.lo > 0 || iv.hi < 0;
  return absl::StrFormat("%+.1f [%+.1f, %+.1f]%s", 100 * iv.value, 100 * iv.lo, 100 * iv.hi, excludes_zero ? " *" : "");
}
json IntervalJson(const Interval& iv) {
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  return {{"value", num(iv.value)}, {"lo", num(iv.lo)}, {"hi", num(iv.hi)}};
}

absl::StatusOr<LoadedRun> LoadRun(const ReportRun& r, const ReportCommandOptions& o) {
  LoadedRun l;
  l.run = r;
  std::error_code ec;
  const fs::path dir(r.dir);
  if (!fs::is_directory(dir, ec))
    return absl::NotFoundError(absl::StrCat(r.dir, ": not a directory (run '", r.label, "')"));
  if (fs::exists(dir / "scores.jsonl", ec)) {
    l.eval_dir = r.dir;
  } else if (fs::exists(dir / "eval" / "scores.jsonl", ec)) {
    l.eval_dir = (dir / "eval").string();
  } else {
    return absl::NotFoundError(absl::StrCat(r.dir, ": neither scores.jsonl nor eval/scores.jsonl (run '", r.label,
                                            "'; `mfpo eval` writes it)"));
  }
  // report.json is the evaluation's last file: without it the evaluation did not finish.
  const fs::path eval_report = fs::path(l.eval_dir) / "report.json";
  if (!fs::exists(eval_report, ec))
    return absl::FailedPreconditionError(absl::StrCat(l.eval_dir, ": scores.jsonl without report.json: the evaluation "
                                                      "did not finish (run '", r.label, "'); rerun it"));
  json eval_json;
  MFPO_RETURN_IF_ERROR(ReadJsonFile(eval_report.string(), &eval_json));
  if (eval_json.is_object() && eval_json.contains("world")) l.world = eval_json["world"];
  MFPO_ASSIGN_OR_RETURN(l.scores, ReadImageScores((fs::path(l.eval_dir) / "scores.jsonl").string()));
  l.ci = BootstrapIntervals(l.scores, ReportMetrics(), o.resamples, o.seed);
  if (fs::exists(dir / "metrics.jsonl", ec)) {
    MFPO_RETURN_IF_ERROR(ReadJsonl((dir / "metrics.jsonl").string(), [&](int, const json& j) {
      if (j.contains("step") && j["step"].is_number()) l.steps.push_back(j);
      return absl::OkStatus();
    }));
  }
  return l;
}

std::vector<double> Column(const std::vector<json>& steps, const std::string& key) {
  std::vector<double> v;
  for (const json& j : steps) v.push_back(j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN);
  return v;
}

// Writes the charts; `written` gets the file names (the line charts only when some run has
// metrics.jsonl).
absl::Status WritePlots(const fs::path& out, const std::vector<const LoadedRun*>& runs, const std::string& seed_note,
                        std::vector<std::string>* written) {
  std::vector<LinePanel> loss_panels, acc_panels;
  for (const LoadedRun* r : runs) {
    if (r->steps.empty()) continue;
    const std::vector<double> x = Column(r->steps, "step");
    const int window = std::max<int>(1, static_cast<int>(x.size()) / 25);
    LinePanel loss{absl::StrCat(r->run.label, " (moving average of ", window, ")"), "loss", {}};
    for (const char* k : {"loss", "loss_text", "loss_image", "loss_margin", "loss_sft"}) {
      std::vector<double> y = Column(r->steps, k);
      if (std::none_of(y.begin(), y.end(), [](double v) { return std::isfinite(v); })) continue;
      loss.series.push_back({k, x, MovingAverage(y, window)});
    }
    LinePanel acc{absl::StrCat(r->run.label, " (moving average of ", window, ")"), "reward accuracy", {}};
    for (const char* k : {"reward_acc_text", "reward_acc_image"}) {
      std::vector<double> y = Column(r->steps, k);
      if (std::none_of(y.begin(), y.end(), [](double v) { return std::isfinite(v); })) continue;
      acc.series.push_back({k == std::string("reward_acc_text") ? "text (r_w > r_l)" : "image (r_w > r_w')", x,
                            MovingAverage(y, window)});
    }
    if (!loss.series.empty()) loss_panels.push_back(loss);
    if (!acc.series.empty()) acc_panels.push_back(acc);
  }
  if (!loss_panels.empty()) {
    MFPO_RETURN_IF_ERROR(WriteLineChart((out / "loss_terms.png").string(), absl::StrCat("Loss terms per step", seed_note),
                                        loss_panels));
    written->push_back("loss_terms.png");
  }
  if (!acc_panels.empty()) {
    MFPO_RETURN_IF_ERROR(WriteLineChart((out / "reward_accuracy.png").string(),
                                        absl::StrCat("Text and image reward accuracy per step", seed_note), acc_panels));
    written->push_back("reward_accuracy.png");
  }
  std::vector<std::string> labels;
  for (const LoadedRun* r : runs) labels.push_back(r->run.label);
  std::vector<BarGroup> groups;
  for (const std::string& m : kKeyMetrics) {
    BarGroup g{ShortName(m), {}, {}, {}};
    for (const LoadedRun* r : runs) {
      const Interval& iv = r->ci.at(m);
      g.value.push_back(100 * iv.value);
      g.lo.push_back(100 * iv.lo);
      g.hi.push_back(100 * iv.hi);
    }
    groups.push_back(g);
  }
  MFPO_RETURN_IF_ERROR(WriteBarChart((out / "table.png").string(), absl::StrCat("Hallucination metrics (%)", seed_note),
                                     "%", labels, groups));
  written->insert(written->begin(), "table.png");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ReportRun> ParseReportRun(const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size())
    return absl::InvalidArgumentError(absl::StrCat("--runs: '", text, "' is not LABEL=DIR or LABEL@SEED=DIR"));
  ReportRun r;
  r.label = text.substr(0, eq);
  r.dir = text.substr(eq + 1);
  const size_t at = r.label.rfind('@');
  if (at != std::string::npos) {
    r.seed = r.label.substr(at + 1);
    r.label = r.label.substr(0, at);
    if (r.seed.empty() || r.label.empty())
      return absl::InvalidArgumentError(absl::StrCat("--runs: '", text, "': empty label or seed around '@'"));
    if (r.seed.size() > 9 || r.seed.find_first_not_of("0123456789") != std::string::npos)
      return absl::InvalidArgumentError(
          absl::StrCat("--runs: '", text, "': the seed after '@' must be a non-negative integer (at most 9 digits)"));
  }
  for (unsigned char ch : r.label)
    if (ch == '|' || ch < 0x20 || ch == 0x7f)
      return absl::InvalidArgumentError(
          absl::StrCat("--runs: '", text, "': a label may not contain '|' or control characters (it heads a table row)"));
  return r;
}

absl::Status RunReport(const ReportCommandOptions& o, std::ostream& out) {
  if (o.runs.empty()) return absl::InvalidArgumentError("--runs is required (LABEL=DIR,...)");
  if (o.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  if (o.resamples < 100 || o.resamples > 100000)
    return absl::InvalidArgumentError("--bootstrap-resamples must be in [100, 100000]");
  if (o.claim.empty()) return absl::InvalidArgumentError("--claim names no metric (e.g. --claim chair_s,chair_i)");
  for (const std::string& m : o.claim)
    if (std::find(ReportMetrics().begin(), ReportMetrics().end(), m) == ReportMetrics().end())
      return absl::InvalidArgumentError(absl::StrCat("--claim: unknown metric '", m, "' (one of ",
                                                     absl::StrJoin(ReportMetrics(), ", "), ")"));
  // Labels and seeds in order of first appearance; one run per (label, seed).
  std::vector<std::string> labels, seeds;
  std::set<std::pair<std::string, std::string>> seen;
  for (const ReportRun& r : o.runs) {
    if (!seen.insert({r.label, r.seed}).second)
      return absl::InvalidArgumentError(absl::StrCat("--runs: '", r.label, r.seed.empty() ? "" : "@", r.seed,
                                                     "' is given twice"));
    if (std::find(labels.begin(), labels.end(), r.label) == labels.end()) labels.push_back(r.label);
    if (std::find(seeds.begin(), seeds.end(), r.seed) == seeds.end()) seeds.push_back(r.seed);
  }
  if (seeds.size() > 1 && std::find(seeds.begin(), seeds.end(), "") != seeds.end())
    return absl::InvalidArgumentError(
        "--runs: either every run names its seed (LABEL@SEED=DIR) or none does; a run without a seed "
        "(e.g. the SFT model's evaluation) is given once per seed, as SFT@1=DIR,SFT@2=DIR");
  const std::string focus = o.focus.empty() ? labels.back() : o.focus;
  if (std::find(labels.begin(), labels.end(), focus) == labels.end())
    return absl::InvalidArgumentError(absl::StrCat("--focus: '", focus, "' is not one of the labels of --runs"));
  std::vector<std::string> named = o.claim_against;
  if (!o.claim_gap_over.empty()) named.push_back(o.claim_gap_over);
  for (const std::string& l : named)
    if (l == focus || std::find(labels.begin(), labels.end(), l) == labels.end())
      return absl::InvalidArgumentError(
          absl::StrCat("--claim_against/--claim_gap_over: '", l, "' is not one of the other labels of --runs"));
  std::string notes;
  if (!o.notes_path.empty()) {
    MFPO_ASSIGN_OR_RETURN(notes, ReadFileToString(o.notes_path, "notes file", 1 << 20));
  }
  {
    std::error_code ec;
    for (const ReportRun& r : o.runs)
      for (const fs::path& d : {fs::path(r.dir), fs::path(r.dir) / "eval"})
        if (fs::equivalent(o.out_dir, d, ec))
          return absl::InvalidArgumentError(absl::StrCat("--out ", o.out_dir, " is the directory of run '", r.label,
                                                         "' (", d.string(), "): the report would overwrite its files"));
  }
  MFPO_RETURN_IF_ERROR(CheckNewOutputDir(o.out_dir, o.overwrite));

  std::vector<LoadedRun> runs;
  for (const ReportRun& r : o.runs) {
    MFPO_ASSIGN_OR_RETURN(LoadedRun l, LoadRun(r, o));
    runs.push_back(std::move(l));
  }
  // Every run must be scored on the same test images: paired differences match images by id.
  {
    auto sorted_ids = [](const LoadedRun& r) {
      std::vector<std::string> ids = r.scores.ids;
      std::sort(ids.begin(), ids.end());
      return ids;
    };
    const std::vector<std::string> first_ids = sorted_ids(runs.front());
    const LoadedRun* with_world = nullptr;
    for (const LoadedRun& r : runs) {
      if (r.world.is_null()) continue;
      if (!with_world) with_world = &r;
      if (r.world != with_world->world)
        return absl::FailedPreconditionError(absl::StrCat(
            "run '", r.run.label, "' was evaluated on world ", r.world.dump(), " but run '", with_world->run.label,
            "' on world ", with_world->world.dump(), ": evaluate every run on the same world"));
    }
    for (const LoadedRun& r : runs) {
      const std::vector<std::string> ids = sorted_ids(r);
      if (ids == first_ids) continue;
      std::vector<std::string> only;
      std::set_symmetric_difference(ids.begin(), ids.end(), first_ids.begin(), first_ids.end(), std::back_inserter(only));
      return absl::FailedPreconditionError(absl::StrCat(
          "run '", r.run.label, "' (", r.eval_dir, ", ", ids.size(), " images) and run '", runs.front().run.label, "' (",
          runs.front().eval_dir, ", ", first_ids.size(), " images) were not scored on the same test images (e.g. '",
          only.front(), "' is in only one of them): evaluate every run on the same world and --limit"));
    }
  }
  auto find = [&](const std::string& label, const std::string& seed) -> const LoadedRun* {
    for (const auto& r : runs)
      if (r.run.label == label && r.run.seed == seed) return &r;
    return nullptr;
  };

  std::ostringstream md;
  json report = {{"title", o.title}, {"focus", focus}, {"bootstrap", {{"resamples", o.resamples}, {"seed", o.seed},
                                                                       {"unit", "test image"}, {"level", 0.95}}}};
  json jruns = json::array(), jclaims = json::object();
  md << "# " << o.title << "\n\n"
     << "Values in %, with 95% percentile-bootstrap intervals over the test images (" << o.resamples
     << " resamples). Lower is better for CHAIR and AMBER Hal; higher for recall, POPE F1 and the reliance gap "
        "(accuracy on clean images minus accuracy on globally noised ones: how much the answers depend on the "
        "image).\n";
  int claim_holds = 0, claim_seeds = 0;  // seeds where the claim holds / could be checked
  for (const std::string& seed : seeds) {
    md << "\n## " << (seed.empty() ? "Results" : absl::StrCat("Seed ", seed)) << "\n\n| model |";
    for (const auto& [h, _] : Columns()) md << " " << h << " |";
    md << "\n|---|";
    for (size_t i = 0; i < Columns().size(); ++i) md << "---|";
    md << "\n";
    for (const std::string& label : labels) {
      const LoadedRun* r = find(label, seed);
      if (!r) continue;
      md << "| " << label << " |";
      for (const auto& [_, metrics] : Columns()) {
        std::vector<std::string> cells;
        for (const auto& m : metrics) cells.push_back(PctCi(r->ci.at(m)));
        md << " " << absl::StrJoin(cells, " / ") << " |";
      }
      md << "\n";
      json jm = json::object();
      for (const auto& [m, iv] : r->ci) jm[m] = IntervalJson(iv);
      jruns.push_back({{"label", label}, {"seed", seed}, {"dir", r->run.dir}, {"eval_dir", r->eval_dir},
                       {"images", r->scores.ids.size()}, {"steps", r->steps.size()}, {"metrics", jm}});
    }
    // The focus model against each other model of this seed, on the same images.
    const LoadedRun* f = find(focus, seed);
    if (!f) {
      md << "\nClaim: n/a (no " << focus << " run for this seed)\n";
      jclaims[seed.empty() ? "all" : seed] = {{"holds", nullptr}};
      continue;
    }
    md << "\nPaired differences " << focus << " minus each other model (same images resampled for both; * = the "
       << "interval excludes 0):\n\n| vs |";
    for (const auto& m : kKeyMetrics) md << " " << ShortName(m) << " |";
    md << "\n|---|";
    for (size_t i = 0; i < kKeyMetrics.size(); ++i) md << "---|";
    md << "\n";
    bool holds = true;
    int compared = 0;  // models the claim was checked against
    json jseed = json::object();
    // The models the claim needs in this seed (every other one when --claim_against is empty).
    std::vector<std::string> missing;
    for (const std::string& l : named)
      if (!find(l, seed)) missing.push_back(l);
    for (const std::string& label : labels) {
      const LoadedRun* r = find(label, seed);
      if (!r || label == focus) continue;
      auto paired = PairedDifferences(r->scores, f->scores, kKeyMetrics, o.resamples, o.seed);
      if (!paired.ok()) return Annotate(paired.status(), absl::StrCat(focus, " vs ", label));
      const auto& diff = *paired;
      md << "| " << label << " |";
      json jd = json::object();
      for (const auto& m : kKeyMetrics) {
        md << " " << SignedCi(diff.at(m)) << " |";
        jd[m] = IntervalJson(diff.at(m));
      }
      md << "\n";
      // The claim: better than this model on each claim metric with disjoint intervals.
      const bool against = o.claim_against.empty() ||
                           std::find(o.claim_against.begin(), o.claim_against.end(), label) != o.claim_against.end();
      json jc = json::object();
      if (label == o.claim_gap_over) {
        const double a = f->ci.at("reliance_gap").value, b = r->ci.at("reliance_gap").value;
        const bool above = std::isfinite(a) && std::isfinite(b) && a > b;
        jc["reliance_gap_above"] = above;
        holds = holds && above;
      }
      if (!against) {
        jseed[label] = {{"differences", jd}, {"claim", jc}};
        continue;
      }
      ++compared;
      for (const std::string& m : o.claim) {
        const Interval &a = f->ci.at(m), &b = r->ci.at(m);
        const bool lower = LowerIsBetter(m);
        const bool better = lower ? a.value < b.value : a.value > b.value;
        const bool disjoint = lower ? a.hi < b.lo : a.lo > b.hi;
        const Interval& d = diff.at(m);
        const bool paired = lower ? d.hi < 0 : d.lo > 0;
        jc[m] = {{"better", better}, {"intervals_disjoint", disjoint}, {"paired_interval_excludes_zero", paired}};
        holds = holds && better && disjoint;
      }
      const double recall_drop = r->ci.at("chair_recall").value - f->ci.at("chair_recall").value;
      jc["recall_drop_points"] = std::isfinite(recall_drop) ? json(100 * recall_drop) : json(nullptr);
      holds = holds && !(recall_drop > 0.02);
      jseed[label] = {{"differences", jd}, {"claim", jc}};
    }
    const bool decidable = compared > 0 && missing.empty();
    jseed["holds"] = decidable ? json(holds) : json(nullptr);
    if (decidable) {
      ++claim_seeds;
      claim_holds += holds;
    }
    jclaims[seed.empty() ? "all" : seed] = jseed;
    std::vector<std::string> metric_words;
    for (const std::string& m : o.claim)
      metric_words.push_back(absl::StrCat(ShortName(m), LowerIsBetter(m) ? " (lower)" : " (higher)"));
    md << "\nClaim (" << focus << " better than "
       << (o.claim_against.empty() ? std::string("every other model") : absl::StrJoin(o.claim_against, " and "))
       << " on " << absl::StrJoin(metric_words, ", ") << " with disjoint intervals, recall at most 2 points lower"
       << (o.claim_gap_over.empty() ? std::string() : absl::StrCat(", reliance gap above ", o.claim_gap_over))
       << "): "
       << (!decidable ? absl::StrCat("n/a (", missing.empty() ? std::string("no other model")
                                                             : absl::StrCat("no run of ", absl::StrJoin(missing, ", ")),
                                     " in this seed)")
                      : std::string(holds ? "holds" : "does not hold"))
       << "\n";
  }
  report["runs"] = jruns;
  report["claim"] = jclaims;
  report["claim_holds_seeds"] = claim_holds;
  report["claim_checked_seeds"] = claim_seeds;
  // Means over seeds.
  if (seeds.size() > 1) {
    md << "\n## Mean over " << seeds.size() << " seeds (standard deviation across seeds)\n\n| model |";
    for (const auto& m : kKeyMetrics) md << " " << ShortName(m) << " |";
    md << "\n|---|";
    for (size_t i = 0; i < kKeyMetrics.size(); ++i) md << "---|";
    md << "\n";
    json jmean = json::object();
    for (const std::string& label : labels) {
      md << "| " << label << " |";
      for (const auto& m : kKeyMetrics) {
        std::vector<double> v;
        for (const std::string& seed : seeds)
          if (const LoadedRun* r = find(label, seed); r && std::isfinite(r->ci.at(m).value)) v.push_back(r->ci.at(m).value);
        double mean = 0, sd = 0;
        for (double x : v) mean += x / v.size();
        for (double x : v) sd += (x - mean) * (x - mean) / std::max<size_t>(1, v.size() - 1);
        sd = std::sqrt(sd);
        md << " " << (v.empty() ? "-" : absl::StrFormat("%.1f ± %.1f", 100 * mean, 100 * sd)) << " |";
        if (!v.empty()) jmean[label][m] = {{"mean", mean}, {"sd", sd}, {"seeds", v.size()}};
      }
      md << "\n";
    }
    report["mean_over_seeds"] = jmean;
    md << "\nThe claim holds in " << claim_holds << " of " << claim_seeds << " seeds where it could be checked.\n";
  }
  // Plots of the first seed.
  std::vector<const LoadedRun*> first;
  for (const std::string& label : labels)
    if (const LoadedRun* r = find(label, seeds.front())) first.push_back(r);
  const std::string seed_note = seeds.size() > 1 ? absl::StrCat(" (seed ", seeds.front(), ")") : "";
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(o.out_dir, ": ", ec.message()));
  std::vector<std::string> plots;
  MFPO_RETURN_IF_ERROR(WritePlots(o.out_dir, first, seed_note, &plots));
  md << "\nPlots" << seed_note << ": `" << absl::StrJoin(plots, "`, `") << "`"
     << (plots.size() == 1 ? " (no run has metrics.jsonl: no loss or reward-accuracy plots)" : "") << ".\n";
  if (!notes.empty()) md << "\n" << notes << (notes.back() == '\n' ? "" : "\n");
  MFPO_RETURN_IF_ERROR(WriteFileAtomically((fs::path(o.out_dir) / "report.json").string(), report.dump(2) + "\n"));
  MFPO_RETURN_IF_ERROR(WriteFileAtomically((fs::path(o.out_dir) / "report.md").string(), md.str()));
  out << md.str() << "\nwrote " << (fs::path(o.out_dir) / "report.md").string() << ", report.json, "
      << absl::StrJoin(plots, ", ") << "\n";
  return absl::OkStatus();
}

}  // namespace mfpo
