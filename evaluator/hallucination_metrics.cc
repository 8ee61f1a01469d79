#include "evaluator/hallucination_metrics.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"

namespace mfpo {

void ChairMetrics::Add(const ChairSample& s) {
  responses += 1;
  hallucinated_responses += s.hallucinated.empty() ? 0 : 1;
  empty_responses += s.mentions.empty() ? 1 : 0;
  mentions += static_cast<int64_t>(s.mentions.size());
  hallucinated_mentions += static_cast<int64_t>(s.hallucinated.size());
  truth_objects += s.truth_objects;
  covered_objects += s.covered;
}

ChairSample ScoreChair(const ObjectVocabulary& vocab, const std::string& answer,
                       const ChairTruth& truth) {
  // One ground truth for hallucination and recall, as Rohrbach et al.'s CHAIR code and its
  // ports with recall build it: the annotated objects plus every object the reference captions
  // name.
  std::set<std::string> truth_set;
  for (const std::string& o : truth.objects) {
    const std::string c = vocab.Canonical(o);
    if (!c.empty()) truth_set.insert(c);
  }
  for (const std::string& caption : truth.captions)
    for (const auto& m : vocab.Extract(caption)) truth_set.insert(m.canonical);
  ChairSample s;
  s.mentions = vocab.Extract(answer);
  std::set<std::string> said;
  for (const auto& m : s.mentions) {
    said.insert(m.canonical);
    if (!truth_set.count(m.canonical)) s.hallucinated.push_back(m.canonical);
  }
  s.truth_objects = static_cast<int>(truth_set.size());
  for (const std::string& o : truth_set) s.covered += said.count(o) ? 1 : 0;
  return s;
}

const char* PopeSettingName(PopeSetting s) {
  switch (s) {
    case PopeSetting::kRandom: return "random";
    case PopeSetting::kPopular: return "popular";
    default: return "adversarial";
  }
}

std::vector<PopeQuestion> BuildPopeQuestions(const std::vector<PopeImage>& images,
                                             const std::vector<std::string>& vocabulary,
                                             PopeSetting setting, int positives, uint64_t seed) {
  std::map<std::string, int> frequency;
  std::map<std::string, std::map<std::string, int>> cooccur;
  for (const auto& img : images) {
    std::set<std::string> objs(img.objects.begin(), img.objects.end());
    for (const auto& a : objs) {
      frequency[a]++;
      for (const auto& b : objs)
        if (a != b) cooccur[a][b]++;
    }
  }
  // Ranked candidates: by score, descending, ties by name for determinism.
  auto ranked = [&](const std::map<std::string, int>& score) {
    std::vector<std::string> v = vocabulary;
    std::stable_sort(v.begin(), v.end(), [&](const std::string& a, const std::string& b) {
      const int sa = score.count(a) ? score.at(a) : 0, sb = score.count(b) ? score.at(b) : 0;
      return sa != sb ? sa > sb : a < b;
    });
    return v;
  };
  const std::vector<std::string> popular = ranked(frequency);
  std::mt19937_64 rng(seed);
  std::vector<PopeQuestion> out;
  for (const auto& img : images) {
    std::vector<std::string> present(img.objects.begin(), img.objects.end());
    std::sort(present.begin(), present.end());
    present.erase(std::unique(present.begin(), present.end()), present.end());
    std::vector<std::string> absent;
    for (const auto& o : vocabulary)
      if (!std::binary_search(present.begin(), present.end(), o)) absent.push_back(o);
    std::shuffle(present.begin(), present.end(), rng);
    if (static_cast<int>(present.size()) > positives) present.resize(positives);
    std::vector<std::string> negatives;
    if (setting == PopeSetting::kRandom) {
      negatives = absent;
      std::shuffle(negatives.begin(), negatives.end(), rng);
    } else {
      std::map<std::string, int> score;
      if (setting == PopeSetting::kPopular) {
        score = frequency;
      } else {
        for (const auto& o : img.objects)
          for (const auto& [other, n] : cooccur[o]) score[other] += n;
      }
      for (const auto& o : ranked(score))
        if (std::find(absent.begin(), absent.end(), o) != absent.end()) negatives.push_back(o);
    }
    for (size_t i = 0; i < present.size(); ++i) {
      out.push_back({absl::StrCat(img.image_id, "-", PopeSettingName(setting), "-", 2 * i), img.image_id,
                     present[i], true});
      if (i < negatives.size())
        out.push_back({absl::StrCat(img.image_id, "-", PopeSettingName(setting), "-", 2 * i + 1),
                       img.image_id, negatives[i], false});
    }
  }
  return out;
}

bool PopeAnswerIsYes(const std::string& answer) {
  const size_t dot = answer.find('.');
  const std::string first = answer.substr(0, dot);
  for (const std::string& w : TokenizeWords(first))
    if (w == "no" || w == "not") return false;
  return true;
}

void PopeMetrics::Add(bool label_yes, bool answered_yes) {
  if (label_yes && answered_yes) ++tp;
  else if (!label_yes && answered_yes) ++fp;
  else if (!label_yes) ++tn;
  else ++fn;
}

AmberScorer::AmberScorer(std::map<std::string, std::vector<std::string>> association,
                         std::set<std::string> safe_words, const std::vector<AmberTruth>& all_truth)
    : association_(std::move(association)), safe_words_(std::move(safe_words)) {
  auto add = [&](const std::string& w) {
    vocabulary_.insert(w);
    if (w.find(' ') != std::string::npos) double_words_.insert(w);
  };
  for (const auto& t : all_truth) {
    for (const auto& w : t.truth) add(w);
    for (const auto& w : t.hallu) add(w);
  }
  for (const auto& [w, related] : association_) {
    add(w);
    for (const auto& r : related) add(r);
  }
  for (const auto& w : safe_words_) add(w);  // mentioned, never hallucinated
}

std::vector<std::string> AmberScorer::Nouns(const std::string& answer) const {
  std::vector<std::string> words;
  for (const std::string& t : TokenizeWords(answer)) words.push_back(Singularize(t));
  std::vector<std::string> nouns;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i + 1 < words.size() && double_words_.count(words[i] + " " + words[i + 1])) {
      nouns.push_back(words[i] + " " + words[i + 1]);
      ++i;
    } else if (vocabulary_.count(words[i])) {
      nouns.push_back(words[i]);
    }
  }
  return nouns;
}

void AmberScorer::Add(const std::string& answer, const AmberTruth& truth, AmberMetrics* m) const {
  // Each truth / hallu object is covered when it or one of its associated words is mentioned.
  auto expand = [&](const std::string& w) {
    std::vector<std::string> out = {w};
    auto it = association_.find(w);
    if (it != association_.end()) out.insert(out.end(), it->second.begin(), it->second.end());
    return out;
  };
  std::vector<bool> truth_hit(truth.truth.size(), false), hallu_hit(truth.hallu.size(), false);
  int hallucinated = 0;
  const std::vector<std::string> nouns = Nouns(answer);
  for (const std::string& noun : nouns) {
    if (safe_words_.count(noun)) continue;
    bool safe = false;
    for (size_t i = 0; i < truth.truth.size(); ++i)
      for (const auto& w : expand(truth.truth[i]))
        if (w == noun) safe = truth_hit[i] = true;
    if (safe) continue;
    for (size_t i = 0; i < truth.hallu.size(); ++i)
      for (const auto& w : expand(truth.hallu[i]))
        if (w == noun) hallu_hit[i] = true;
    ++hallucinated;
  }
  m->mentioned += static_cast<int64_t>(nouns.size());
  m->hallucinated += hallucinated;
  m->truth_total += static_cast<int64_t>(truth.truth.size());
  m->truth_covered += std::count(truth_hit.begin(), truth_hit.end(), true);
  m->hallu_total += static_cast<int64_t>(truth.hallu.size());
  m->hallu_mentioned += std::count(hallu_hit.begin(), hallu_hit.end(), true);
  m->responses += 1;
  m->responses_without_hallucination += hallucinated == 0 ? 1 : 0;
}

}  // namespace mfpo
