#include "evaluator/evaluation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/generation.h"
#include "common/image.h"
#include "common/jsonl.h"
#include "common/model_dir.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"
#include "datagen/diffusion_noise.h"
#include "evaluator/eval_stats.h"
#include "evaluator/hallucination_metrics.h"

namespace mfpo {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string IdOf(const json& j) {
  for (const char* k : {"id", "question_id"}) {
    if (!j.contains(k)) continue;
    if (j[k].is_string()) return j[k].get<std::string>();
    if (j[k].is_number_integer()) return std::to_string(j[k].get<int64_t>());
  }
  return "";
}

std::vector<std::string> Strings(const json& j, const char* key) {
  std::vector<std::string> out;
  if (j.contains(key) && j[key].is_array())
    for (const auto& v : j[key])
      if (v.is_string()) out.push_back(v.get<std::string>());
  return out;
}

// A truth id seen twice would count its answer twice.
absl::Status CheckUniqueTruthId(std::set<std::string>* seen, const std::string& id) {
  if (!seen->insert(id).second) return absl::InvalidArgumentError(absl::StrCat("duplicate truth id '", id, "'"));
  return absl::OkStatus();
}

// Scores over no matched answer would read as perfect (CHAIR 0): refuse them.
absl::Status CheckMatched(int64_t matched, size_t answers, size_t truth, const std::string& answers_path,
                          const std::string& truth_path) {
  if (matched > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("no answer in ", answers_path, " (", answers, " answers) has an id of ",
                                                 truth_path, " (", truth, " records): nothing to score"));
}

// answers: JSONL of {id, answer|response|text}, or a JSON array of the same (AMBER's format).
absl::StatusOr<std::map<std::string, std::string>> ReadAnswers(const std::string& path) {
  std::map<std::string, std::string> answers;
  auto take = [&](const json& j) -> absl::Status {
    const std::string id = IdOf(j);
    if (id.empty()) return absl::InvalidArgumentError("missing 'id'");
    for (const char* k : {"answer", "response", "text"})
      if (j.contains(k) && j[k].is_string()) {
        if (!answers.emplace(id, j[k].get<std::string>()).second)
          return absl::InvalidArgumentError(absl::StrCat("duplicate id '", id, "'"));
        return absl::OkStatus();
      }
    return absl::InvalidArgumentError(absl::StrCat("record '", id, "' has no 'answer' string"));
  };
  MFPO_RETURN_IF_ERROR(CheckRegularFile(path, "answers file"));
  std::ifstream probe(path);
  if (!probe) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  char first = 0;
  probe >> first;
  if (first == '[') {
    json all;
    MFPO_RETURN_IF_ERROR(ReadJsonFile(path, &all));
    for (size_t i = 0; i < all.size(); ++i) {
      absl::Status s = all[i].is_object() ? take(all[i]) : absl::InvalidArgumentError("not an object");
      if (!s.ok()) return Annotate(s, absl::StrCat(path, ": element ", i));
    }
  } else {
    MFPO_RETURN_IF_ERROR(ReadJsonl(path, [&](int, const json& j) { return take(j); }));
  }
  if (answers.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no answers in the file"));
  return answers;
}

void PrintTable(std::ostream& out, const std::vector<std::pair<std::string, std::string>>& rows) {
  size_t w = 0;
  for (const auto& r : rows) w = std::max(w, r.first.size());
  for (const auto& [k, v] : rows) out << absl::StrFormat("  %-*s  %s\n", static_cast<int>(w), k, v);
}

json ChairJson(const ChairMetrics& m) {
  return {{"chair_s", m.chair_s()}, {"chair_i", m.chair_i()}, {"recall", m.recall()},
          {"responses", m.responses}, {"hallucinated_responses", m.hallucinated_responses},
          {"mentions", m.mentions}, {"hallucinated_mentions", m.hallucinated_mentions},
          {"truth_objects", m.truth_objects}, {"covered_objects", m.covered_objects},
          {"empty", m.empty()}, {"empty_responses", m.empty_responses}};
}
json PopeJson(const PopeMetrics& m) {
  return {{"accuracy", m.accuracy()}, {"precision", m.precision()}, {"recall", m.recall()},
          {"f1", m.f1()}, {"yes_ratio", m.yes_ratio()}, {"questions", m.total()}};
}
void AddAmber(const AmberMetrics& one, AmberMetrics* total) {
  total->mentioned += one.mentioned;
  total->hallucinated += one.hallucinated;
  total->truth_total += one.truth_total;
  total->truth_covered += one.truth_covered;
  total->responses += one.responses;
  total->responses_without_hallucination += one.responses_without_hallucination;
  total->hallu_total += one.hallu_total;
  total->hallu_mentioned += one.hallu_mentioned;
}

json AmberJson(const AmberMetrics& m) {
  return {{"chair", m.chair()}, {"cover", m.cover()}, {"hal", m.hal()}, {"cog", m.cog()},
          {"responses", m.responses}, {"mentioned", m.mentioned}};
}

absl::Status ScoreChairFile(const ScoreCommandOptions& o, const std::map<std::string, std::string>& answers,
                            json* result) {
  MFPO_ASSIGN_OR_RETURN(ObjectVocabulary vocab,
                        o.synonyms_path.empty() ? ObjectVocabulary::FromText(CocoSynonymTable(), "COCO table")
                                                : ObjectVocabulary::FromFile(o.synonyms_path));
  ChairMetrics m;
  int64_t missing = 0;
  std::set<std::string> seen;
  MFPO_RETURN_IF_ERROR(ReadJsonl(o.truth_path, [&](int, const json& j) -> absl::Status {
    const std::string id = IdOf(j);
    if (id.empty()) return absl::InvalidArgumentError("missing 'id'");
    if (!j.contains("objects") || !j["objects"].is_array())
      return absl::InvalidArgumentError(absl::StrCat("record '", id, "': 'objects' must be a list of names"));
    MFPO_RETURN_IF_ERROR(CheckUniqueTruthId(&seen, id));
    auto it = answers.find(id);
    if (it == answers.end()) {
      ++missing;
      return absl::OkStatus();
    }
    m.Add(ScoreChair(vocab, it->second, {Strings(j, "objects"), Strings(j, "captions")}));
    return absl::OkStatus();
  }));
  MFPO_RETURN_IF_ERROR(CheckMatched(m.responses, answers.size(), seen.size(), o.answers_path, o.truth_path));
  *result = ChairJson(m);
  (*result)["truth_without_answer"] = missing;
  int64_t extra = 0;
  for (const auto& [id, _] : answers) extra += seen.count(id) ? 0 : 1;
  (*result)["answers_without_truth"] = extra;
  return absl::OkStatus();
}

absl::Status ScorePopeFile(const ScoreCommandOptions& o, const std::map<std::string, std::string>& answers,
                           json* result) {
  std::map<std::string, PopeMetrics> by_setting;
  int64_t missing = 0, matched = 0;
  std::set<std::string> seen;
  MFPO_RETURN_IF_ERROR(ReadJsonl(o.truth_path, [&](int, const json& j) -> absl::Status {
    const std::string id = IdOf(j);
    if (id.empty()) return absl::InvalidArgumentError("missing 'id'");
    MFPO_RETURN_IF_ERROR(CheckUniqueTruthId(&seen, id));
    if (!j.contains("label") || !j["label"].is_string())
      return absl::InvalidArgumentError(absl::StrCat("record '", id, "': 'label' must be \"yes\" or \"no\""));
    const std::string label = absl::AsciiStrToLower(j["label"].get<std::string>());
    if (label != "yes" && label != "no")
      return absl::InvalidArgumentError(absl::StrCat("record '", id, "': label '", label, "' is not yes/no"));
    auto it = answers.find(id);
    if (it == answers.end()) {
      ++missing;
      return absl::OkStatus();
    }
    const std::string setting = j.contains("setting") && j["setting"].is_string() ? j["setting"].get<std::string>() : "all";
    by_setting[setting].Add(label == "yes", PopeAnswerIsYes(it->second));
    ++matched;
    return absl::OkStatus();
  }));
  MFPO_RETURN_IF_ERROR(CheckMatched(matched, answers.size(), seen.size(), o.answers_path, o.truth_path));
  *result = json::object();
  for (const auto& [setting, m] : by_setting) (*result)[setting] = PopeJson(m);
  (*result)["truth_without_answer"] = missing;
  return absl::OkStatus();
}

absl::Status ScoreAmberFile(const ScoreCommandOptions& o, const std::map<std::string, std::string>& answers,
                            json* result) {
  json annotations;
  MFPO_RETURN_IF_ERROR(ReadJsonFile(o.truth_path, &annotations));
  if (!annotations.is_array())
    return absl::InvalidArgumentError(absl::StrCat(o.truth_path, ": expected AMBER's JSON array of annotations"));
  std::map<std::string, std::vector<std::string>> association;
  if (!o.association_path.empty()) {
    json rel;
    MFPO_RETURN_IF_ERROR(ReadJsonFile(o.association_path, &rel));
    if (!rel.is_object()) return absl::InvalidArgumentError(absl::StrCat(o.association_path, ": expected an object"));
    for (auto it = rel.begin(); it != rel.end(); ++it) association[it.key()] = Strings(rel, it.key().c_str());
  }
  std::set<std::string> safe;
  if (!o.safe_words_path.empty()) {
    MFPO_RETURN_IF_ERROR(CheckRegularFile(o.safe_words_path, "safe words file"));
    std::ifstream in(o.safe_words_path);
    if (!in) return absl::NotFoundError(absl::StrCat(o.safe_words_path, ": cannot open"));
    for (std::string l; std::getline(in, l);)
      if (!absl::StripAsciiWhitespace(l).empty()) safe.insert(std::string(absl::StripAsciiWhitespace(l)));
  }
  std::vector<std::pair<std::string, AmberTruth>> items;
  std::set<std::string> seen;
  for (size_t i = 0; i < annotations.size(); ++i) {
    const json& a = annotations[i];
    if (!a.is_object()) return absl::InvalidArgumentError(absl::StrCat(o.truth_path, ": element ", i, " is not an object"));
    if (a.contains("type") && a["type"] != "generative") continue;  // discriminative items: not this metric
    const std::string id = IdOf(a);
    if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(o.truth_path, ": element ", i, ": missing 'id'"));
    if (absl::Status s = CheckUniqueTruthId(&seen, id); !s.ok()) return Annotate(s, o.truth_path);
    items.emplace_back(id, AmberTruth{Strings(a, "truth"), Strings(a, "hallu")});
  }
  std::vector<AmberTruth> all;
  for (const auto& [_, t] : items) all.push_back(t);
  AmberScorer scorer(association, safe, all);
  AmberMetrics m;
  int64_t missing = 0;
  for (const auto& [id, t] : items) {
    auto it = answers.find(id);
    if (it == answers.end()) {
      ++missing;
      continue;
    }
    scorer.Add(it->second, t, &m);
  }
  MFPO_RETURN_IF_ERROR(CheckMatched(m.responses, answers.size(), items.size(), o.answers_path, o.truth_path));
  *result = AmberJson(m);
  (*result)["truth_without_answer"] = missing;
  return absl::OkStatus();
}

// ---- mfpo eval ----------------------------------------------------------------------------

struct Query {
  std::string id, image_id, image_path, question;
  bool noised = false;  // reliance: the same image with global diffusion noise
};

struct WorldImage {
  std::string id, image;
  std::vector<std::string> objects;
  std::vector<std::string> captions;
};

class Answerer {
 public:
  Answerer(LoadedModel& m, const EvalCommandOptions& o) : m_(m), o_(o) {}

  // Greedy answers, at most `max_new_tokens` each (0: the options' budget).
  absl::StatusOr<std::vector<std::string>> Run(const std::vector<Query>& queries, const std::string& what,
                                               int64_t max_new_tokens = 0) {
    std::vector<std::string> answers;
    const auto t0 = std::chrono::steady_clock::now();
    auto last_log = t0;
    for (size_t start = 0; start < queries.size(); start += o_.batch_size) {
      const size_t end = std::min(queries.size(), start + static_cast<size_t>(o_.batch_size));
      std::vector<std::vector<int64_t>> prompts;
      std::vector<PixelInput> pixels;
      for (size_t i = start; i < end; ++i) {
        MFPO_ASSIGN_OR_RETURN(std::vector<int64_t> ids, m_.tokenizer.PromptIds(queries[i].question));
        MFPO_ASSIGN_OR_RETURN(PixelInput px, Pixels(queries[i]));
        ExpandImageTokens(m_.config.image_token_index, m_.model->ImageTokens(px), &ids);
        prompts.push_back(std::move(ids));
        pixels.push_back(px);
      }
      GenerationOptions g;
      g.max_new_tokens = max_new_tokens > 0 ? std::min(max_new_tokens, o_.max_new_tokens) : o_.max_new_tokens;
      g.eos_id = m_.tokenizer.eos_id();
      MFPO_ASSIGN_OR_RETURN(auto out, GreedyGenerate(m_.model, prompts, pixels, g));
      for (const auto& ids : out) answers.push_back(m_.tokenizer.Decode(ids));
      const auto now = std::chrono::steady_clock::now();
      if (std::chrono::duration<double>(now - last_log).count() > 5 || end == queries.size()) {
        const double secs = std::chrono::duration<double>(now - t0).count();
        const double rate = end / std::max(secs, 1e-9);
        spdlog::info("eval {}: {}/{} answers ({:.1f}/s, ETA {:.0f} s)", what, end, queries.size(), rate,
                     (queries.size() - end) / rate);
        last_log = now;
      }
    }
    return answers;
  }

 private:
  absl::StatusOr<PixelInput> Pixels(const Query& q) {
    const std::string key = absl::StrCat(q.image_path, q.noised ? "#noised" : "");
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    MFPO_ASSIGN_OR_RETURN(cv::Mat rgb, ReadImageFile(q.image_path));
    if (q.noised) {
      MFPO_ASSIGN_OR_RETURN(rgb, AddDiffusionNoise(rgb, cv::Mat(), o_.noise_step, SampleSeed(o_.seed, q.image_id)));
    }
    absl::StatusOr<PixelInput> pre = PreprocessForModel(rgb, m_.image);
    if (!pre.ok()) return Annotate(pre.status(), q.image_path);
    pre->pixel_values = pre->pixel_values.to(m_.model->language_model()->parameters()[0].scalar_type());
    cache_.emplace(key, *pre);
    return *pre;
  }

  LoadedModel& m_;
  const EvalCommandOptions& o_;
  std::map<std::string, PixelInput> cache_;
};

// Whether a free-form answer gives the short answer `key` (yes/no, a colour, a count word).
bool AnswerMatches(const std::string& answer, const std::string& key) {
  if (key == "yes" || key == "no") return PopeAnswerIsYes(answer) == (key == "yes");
  const std::string first = answer.substr(0, answer.find('.'));
  static const std::vector<std::string> kNumbers = {"zero", "one", "two", "three", "four", "five",
                                                    "six", "seven", "eight", "nine", "ten"};
  for (const std::string& w : TokenizeWords(first)) {
    if (w == key) return true;
    for (size_t n = 0; n < kNumbers.size(); ++n)
      if (kNumbers[n] == key && w == std::to_string(n)) return true;
  }
  return false;
}

}  // namespace

absl::Status RunScore(const ScoreCommandOptions& o, std::ostream& out) {
  if (o.answers_path.empty()) return absl::InvalidArgumentError("--answers is required");
  if (o.truth_path.empty()) return absl::InvalidArgumentError("--truth is required");
  MFPO_ASSIGN_OR_RETURN(auto answers, ReadAnswers(o.answers_path));
  json result;
  if (o.suite == "chair") {
    MFPO_RETURN_IF_ERROR(ScoreChairFile(o, answers, &result));
  } else if (o.suite == "pope") {
    MFPO_RETURN_IF_ERROR(ScorePopeFile(o, answers, &result));
  } else if (o.suite == "amber") {
    MFPO_RETURN_IF_ERROR(ScoreAmberFile(o, answers, &result));
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--suite: '", o.suite, "' is not chair, pope or amber"));
  }
  if (o.json) {
    out << result.dump() << "\n";
    return absl::OkStatus();
  }
  std::vector<std::pair<std::string, std::string>> rows;
  std::function<void(const std::string&, const json&)> flatten = [&](const std::string& prefix, const json& j) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string key = prefix.empty() ? it.key() : absl::StrCat(prefix, ".", it.key());
      if (it->is_object()) flatten(key, *it);
      else rows.emplace_back(key, it->is_number_float() ? absl::StrFormat("%.4f", it->get<double>()) : it->dump());
    }
  };
  flatten("", result);
  out << o.suite << " (" << answers.size() << " answers)\n";
  PrintTable(out, rows);
  return absl::OkStatus();
}

nlohmann::json EvalOptionsJson(const EvalCommandOptions& o) {
  nlohmann::json j = {{"model", o.model_dir}, {"data", o.data_dir}, {"split", o.split}, {"suites", o.suites},
          {"limit", o.limit}, {"batch_size", o.batch_size}, {"max_new_tokens", o.max_new_tokens},
          {"short_answer_tokens", o.short_answer_tokens}, {"bootstrap_resamples", o.bootstrap_resamples},
          {"noise_step", o.noise_step}, {"seed", o.seed}, {"dtype", o.dtype}};
  // Only when given: the reports of runs without them keep matching.
  if (!o.adapter_dir.empty()) j["adapter"] = o.adapter_dir;
  if (!o.chat_template.empty()) j["chat_template"] = o.chat_template;
  return j;
}

absl::Status RunEval(const EvalCommandOptions& o, std::ostream& out) {
  if (o.model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  if (o.data_dir.empty()) return absl::InvalidArgumentError("--data is required");
  if (o.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  if (o.suites.empty()) return absl::InvalidArgumentError("--suite names no suite (chair,pope,amber,reliance)");
  for (const auto& s : o.suites)
    if (s != "chair" && s != "pope" && s != "amber" && s != "reliance")
      return absl::InvalidArgumentError(absl::StrCat("--suite: unknown suite '", s, "' (chair, pope, amber, reliance)"));
  if (o.batch_size <= 0) return absl::InvalidArgumentError("--batch-size must be positive");
  if (o.limit < 0) return absl::InvalidArgumentError("--limit must be >= 0 (0: every image of the split)");
  MFPO_RETURN_IF_ERROR(CheckNewOutputDir(o.out_dir, o.overwrite));
  auto wants = [&](const char* s) { return std::find(o.suites.begin(), o.suites.end(), s) != o.suites.end(); };
  const fs::path data(o.data_dir);
  MFPO_ASSIGN_OR_RETURN(ObjectVocabulary vocab, ObjectVocabulary::FromFile((data / "vocab.txt").string()));
  std::vector<WorldImage> images;
  MFPO_RETURN_IF_ERROR(ReadJsonl((data / "annotations.jsonl").string(), [&](int, const json& j) -> absl::Status {
    if (j.value("split", "") != o.split) return absl::OkStatus();
    if (o.limit > 0 && static_cast<int64_t>(images.size()) >= o.limit) return absl::OkStatus();
    WorldImage w{IdOf(j), (data / j.value("image", "")).string(), Strings(j, "objects"), Strings(j, "captions")};
    if (w.id.empty() || w.objects.empty()) return absl::InvalidArgumentError("record needs 'id' and 'objects'");
    images.push_back(std::move(w));
    return absl::OkStatus();
  }));
  if (images.empty())
    return absl::InvalidArgumentError(absl::StrCat(o.data_dir, ": no '", o.split, "' images in annotations.jsonl"));
  // An image that cannot be read fails that image, not the evaluation: it is left out of every
  // suite and listed in the report (`mfpo report` then refuses to pair this run with one that
  // scored it).
  json skipped = json::array();
  {
    std::vector<WorldImage> readable;
    for (auto& w : images) {
      absl::StatusOr<cv::Mat> decoded = ReadImageFile(w.image);
      if (decoded.ok()) {
        readable.push_back(std::move(w));
        continue;
      }
      spdlog::warn("eval: image {} left out: {}", w.id, std::string(decoded.status().message()));
      skipped.push_back({{"id", w.id}, {"error", std::string(decoded.status().message())}});
    }
    images = std::move(readable);
  }
  if (images.empty())
    return absl::InvalidArgumentError(absl::StrCat(o.data_dir, ": none of the '", o.split, "' images can be read"));
  LoadModelOptions load;
  if (o.dtype == "bfloat16") load.dtype = torch::kBFloat16;
  else if (o.dtype != "float32") return absl::InvalidArgumentError("--dtype: float32 or bfloat16");
  load.adapter_dir = o.adapter_dir;
  load.chat_template = o.chat_template;
  MFPO_ASSIGN_OR_RETURN(LoadedModel model, LoadModelDir(o.model_dir, load));
  model.model->eval();
  torch::NoGradGuard no_grad;
  Answerer answerer(model, o);
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(o.out_dir, ": ", ec.message()));
  std::ostringstream answers_out;  // written with the report at the end: a failed run leaves none
  json report = {{"model", o.model_dir}, {"adapter", o.adapter_dir.empty() ? json(nullptr) : json(o.adapter_dir)},
                 {"data", o.data_dir}, {"split", o.split}, {"images", images.size()},
                 {"skipped_images", skipped}, {"options", EvalOptionsJson(o)}};
  // The world's parameters (seed, sizes, priors): `mfpo report` refuses to pair runs of two worlds.
  if (std::error_code ec; fs::exists(fs::path(o.data_dir) / "world.json", ec)) {
    json world;
    MFPO_RETURN_IF_ERROR(ReadJsonFile((fs::path(o.data_dir) / "world.json").string(), &world));
    report["world"] = world;
  }
  std::vector<std::pair<std::string, std::string>> table;
  auto pct = [](double v) { return absl::StrFormat("%.1f", 100 * v); };
  // Each image's counts (scores.jsonl): the confidence intervals resample images.
  std::map<std::string, Counts> counts;
  for (const auto& img : images) counts[img.id];

  if (wants("chair") || wants("amber")) {
    std::vector<Query> qs;
    for (const auto& img : images) qs.push_back({img.id, img.id, img.image, "Describe the image."});
    MFPO_ASSIGN_OR_RETURN(auto answers, answerer.Run(qs, "describe"));
    ChairMetrics chair;
    AmberMetrics amber;
    // AMBER on the world: truth = present kinds, hallu = every absent kind, association = each
    // kind's synonyms (so "a sphere" covers a ball).
    std::map<std::string, std::vector<std::string>> association;
    for (const auto& k : vocab.categories()) association[k] = vocab.Synonyms(k);
    std::vector<AmberTruth> amber_truth;
    for (const auto& img : images) {
      std::set<std::string> present;
      for (const auto& obj : img.objects) present.insert(vocab.Canonical(obj));
      AmberTruth t;
      t.truth.assign(present.begin(), present.end());
      for (const auto& k : vocab.categories())
        if (!present.count(k)) t.hallu.push_back(k);
      amber_truth.push_back(t);
    }
    AmberScorer scorer(association, {}, amber_truth);
    for (size_t i = 0; i < images.size(); ++i) {
      ChairSample s = ScoreChair(vocab, answers[i], {images[i].objects, images[i].captions});
      chair.Add(s);
      AmberMetrics one;
      scorer.Add(answers[i], amber_truth[i], &one);
      AddAmber(one, &amber);
      Counts& c = counts[images[i].id];
      if (wants("chair")) {
        c["chair.responses"] = 1;
        c["chair.hallucinated_responses"] = s.hallucinated.empty() ? 0 : 1;
        c["chair.mentions"] = static_cast<double>(s.mentions.size());
        c["chair.hallucinated_mentions"] = static_cast<double>(s.hallucinated.size());
        c["chair.truth_objects"] = s.truth_objects;
        c["chair.covered_objects"] = s.covered;
        c["chair.empty_responses"] = s.mentions.empty() ? 1 : 0;
      }
      if (wants("amber")) {
        c["amber.responses"] = static_cast<double>(one.responses);
        c["amber.responses_with_hallucination"] = static_cast<double>(one.responses - one.responses_without_hallucination);
        c["amber.mentioned"] = static_cast<double>(one.mentioned);
        c["amber.hallucinated"] = static_cast<double>(one.hallucinated);
        c["amber.truth_total"] = static_cast<double>(one.truth_total);
        c["amber.truth_covered"] = static_cast<double>(one.truth_covered);
        c["amber.hallu_total"] = static_cast<double>(one.hallu_total);
        c["amber.hallu_mentioned"] = static_cast<double>(one.hallu_mentioned);
      }
      answers_out << json{{"suite", "chair"}, {"id", images[i].id}, {"question", qs[i].question},
                          {"answer", answers[i]}, {"hallucinated", s.hallucinated},
                          {"mentions", s.mentions.size()}}.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    }
    if (wants("chair")) {
      report["chair"] = ChairJson(chair);
      table.emplace_back("CHAIRs / CHAIRi / recall (%)",
                         absl::StrCat(pct(chair.chair_s()), " / ", pct(chair.chair_i()), " / ", pct(chair.recall())));
      table.emplace_back("descriptions naming no object (%)", pct(chair.empty()));
    }
    if (wants("amber")) {
      report["amber"] = AmberJson(amber);
      table.emplace_back("AMBER CHAIR / Cover / Hal / Cog (%)",
                         absl::StrCat(pct(amber.chair()), " / ", pct(amber.cover()), " / ", pct(amber.hal()), " / ",
                                      pct(amber.cog())));
    }
  }
  if (wants("pope")) {
    std::vector<PopeImage> pope_images;
    std::map<std::string, const WorldImage*> by_id;
    for (const auto& img : images) {
      PopeImage p{img.id, {}};
      for (const auto& obj : img.objects) p.objects.push_back(vocab.Canonical(obj));
      pope_images.push_back(p);
      by_id[img.id] = &img;
    }
    json pope = json::object();
    for (PopeSetting setting : {PopeSetting::kRandom, PopeSetting::kPopular, PopeSetting::kAdversarial}) {
      std::vector<PopeQuestion> questions = BuildPopeQuestions(pope_images, vocab.categories(), setting, 3, o.seed);
      std::vector<Query> qs;
      for (const auto& q : questions) qs.push_back({q.id, q.image_id, by_id[q.image_id]->image, q.text()});
      MFPO_ASSIGN_OR_RETURN(auto answers, answerer.Run(qs, absl::StrCat("pope-", PopeSettingName(setting)),
                                                       o.short_answer_tokens));
      PopeMetrics m;
      for (size_t i = 0; i < questions.size(); ++i) {
        const bool yes = PopeAnswerIsYes(answers[i]);
        m.Add(questions[i].label_yes, yes);
        const char* cell = questions[i].label_yes ? (yes ? "tp" : "fn") : (yes ? "fp" : "tn");
        counts[questions[i].image_id][absl::StrCat("pope.", PopeSettingName(setting), ".", cell)] += 1;
        answers_out << json{{"suite", "pope"}, {"setting", PopeSettingName(setting)}, {"id", questions[i].id},
                            {"question", qs[i].question}, {"answer", answers[i]},
                            {"label", questions[i].label_yes ? "yes" : "no"}, {"answered_yes", yes}}
                           .dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
      }
      pope[PopeSettingName(setting)] = PopeJson(m);
      table.emplace_back(absl::StrCat("POPE ", PopeSettingName(setting), " acc / F1 / yes (%)"),
                         absl::StrCat(pct(m.accuracy()), " / ", pct(m.f1()), " / ", pct(m.yes_ratio())));
    }
    report["pope"] = pope;
  }
  if (wants("reliance")) {
    std::vector<Query> qs;
    std::vector<std::string> keys, types;
    std::set<std::string> allowed;
    for (const auto& img : images) allowed.insert(img.id);
    MFPO_RETURN_IF_ERROR(ReadJsonl((data / (o.split + ".jsonl")).string(), [&](int, const json& j) -> absl::Status {
      if (!j.contains("answer") || !allowed.count(j.value("image_id", ""))) return absl::OkStatus();
      qs.push_back({IdOf(j), j.value("image_id", ""), (data / j.value("image", "")).string(), j.value("question", "")});
      keys.push_back(j.value("answer", ""));
      types.push_back(j.value("type", ""));
      return absl::OkStatus();
    }));
    if (qs.empty())
      return absl::InvalidArgumentError(absl::StrCat((data / (o.split + ".jsonl")).string(),
                                                     ": no questions with an answer for the evaluated images (the "
                                                     "reliance suite needs them; leave it out with --suite)"));
    std::vector<Query> noised = qs;
    for (auto& q : noised) q.noised = true;
    MFPO_ASSIGN_OR_RETURN(auto clean_answers, answerer.Run(qs, "reliance-clean", o.short_answer_tokens));
    MFPO_ASSIGN_OR_RETURN(auto noised_answers, answerer.Run(noised, "reliance-noised", o.short_answer_tokens));
    int64_t clean_ok = 0, noised_ok = 0;
    for (size_t i = 0; i < qs.size(); ++i) {
      const bool a = AnswerMatches(clean_answers[i], keys[i]), b = AnswerMatches(noised_answers[i], keys[i]);
      clean_ok += a;
      noised_ok += b;
      Counts& c = counts[qs[i].image_id];
      c["reliance.questions"] += 1;
      c["reliance.clean_ok"] += a;
      c["reliance.noised_ok"] += b;
      answers_out << json{{"suite", "reliance"}, {"id", qs[i].id}, {"type", types[i]}, {"question", qs[i].question},
                          {"expected", keys[i]}, {"answer_clean", clean_answers[i]}, {"correct_clean", a},
                          {"answer_noised", noised_answers[i]}, {"correct_noised", b}}
                         .dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    }
    const double n = std::max<size_t>(qs.size(), 1);
    report["reliance"] = {{"questions", qs.size()}, {"noise_step", o.noise_step},
                          {"accuracy_clean", clean_ok / n}, {"accuracy_noised", noised_ok / n},
                          {"gap", (clean_ok - noised_ok) / n}};
    table.emplace_back(absl::StrCat("Reliance acc clean / noised t=", o.noise_step, " / gap (%)"),
                       absl::StrCat(pct(clean_ok / n), " / ", pct(noised_ok / n), " / ", pct((clean_ok - noised_ok) / n)));
  }
  ImageScores scores;
  for (const auto& img : images) {
    scores.ids.push_back(img.id);
    scores.counts.push_back(counts[img.id]);
  }
  std::vector<std::string> measured;
  const Counts totals = SumCounts(scores);
  for (const std::string& m : ReportMetrics())
    if (std::isfinite(MetricFromCounts(m, totals))) measured.push_back(m);
  json intervals = json::object();
  for (const auto& [m, iv] : BootstrapIntervals(scores, measured, o.bootstrap_resamples, o.seed))
    intervals[m] = {{"value", iv.value}, {"lo", iv.lo}, {"hi", iv.hi}};
  report["ci95"] = intervals;
  report["bootstrap"] = {{"resamples", o.bootstrap_resamples}, {"seed", o.seed}, {"unit", "image"}};
  std::vector<std::pair<std::string, std::string>> ci_table;
  for (const auto& m : measured)
    ci_table.emplace_back(m, absl::StrFormat("%.1f [%.1f, %.1f]", 100 * intervals[m]["value"].get<double>(),
                                             100 * intervals[m]["lo"].get<double>(),
                                             100 * intervals[m]["hi"].get<double>()));
  std::ostringstream md;
  md << "# Hallucination evaluation\n\nModel `" << o.model_dir << "`"
     << (o.adapter_dir.empty() ? std::string() : absl::StrCat(" with the LoRA adapter `", o.adapter_dir, "`")) << ", data `" << o.data_dir << "` (" << o.split
     << " split, " << images.size() << " images)\n\n| Metric | Value |\n|---|---|\n";
  for (const auto& [k, v] : table) md << "| " << k << " | " << v << " |\n";
  md << "\n95% bootstrap intervals over the images (" << o.bootstrap_resamples << " resamples, %):\n\n"
     << "| Metric | Value [95% CI] |\n|---|---|\n";
  for (const auto& [k, v] : ci_table) md << "| " << k << " | " << v << " |\n";
  // The four files or none (report.json last: readers take it as the mark of a finished run): a
  // failed write (a full disk) removes what was written, so the same command can run again.
  {
    const std::vector<std::pair<std::string, std::string>> files = {{"scores.jsonl", ImageScoresJsonl(scores)},
                                                                    {"answers.jsonl", answers_out.str()},
                                                                    {"report.md", md.str()},
                                                                    {"report.json", report.dump(2) + "\n"}};
    for (size_t i = 0; i < files.size(); ++i) {
      absl::Status written = WriteFileAtomically((fs::path(o.out_dir) / files[i].first).string(), files[i].second);
      if (written.ok()) continue;
      for (size_t k = 0; k < i; ++k) fs::remove(fs::path(o.out_dir) / files[k].first, ec);
      return Annotate(written, "nothing of this evaluation was kept; rerun the same command once the cause is fixed");
    }
  }
  out << "evaluation of " << o.model_dir
      << (o.adapter_dir.empty() ? std::string() : absl::StrCat(" + adapter ", o.adapter_dir)) << " on " << images.size() << " " << o.split << " images\n";
  PrintTable(out, table);
  out << "95% bootstrap intervals over the images (%):\n";
  PrintTable(out, ci_table);
  out << "wrote " << (fs::path(o.out_dir) / "report.md").string() << ", report.json, answers.jsonl, scores.jsonl\n";
  return absl::OkStatus();
}

}  // namespace mfpo
