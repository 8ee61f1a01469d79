// Offline hallucination metrics: CHAIR (Object HalBench), POPE and AMBER (generative,
// exact-match mode). Pure functions over answers and ground truth; the `mfpo score` and
// `mfpo eval` commands feed them.
#ifndef MFPO_EVALUATOR_HALLUCINATION_METRICS_H_
#define MFPO_EVALUATOR_HALLUCINATION_METRICS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/text/object_text.h"

namespace mfpo {

// ---- CHAIR ---------------------------------------------------------------------------------
struct ChairTruth {
  std::vector<std::string> objects;   // any synonym
  std::vector<std::string> captions;  // reference captions; their mentions are truth too
};
struct ChairSample {
  std::vector<ObjectMention> mentions;
  std::vector<std::string> hallucinated;  // canonical names of hallucinated mentions
  int truth_objects = 0, covered = 0;
};
struct ChairMetrics {
  int64_t responses = 0, hallucinated_responses = 0, mentions = 0, hallucinated_mentions = 0;
  int64_t truth_objects = 0, covered_objects = 0;
  int64_t empty_responses = 0;  // descriptions that name no object at all (a degenerate model scores CHAIR 0)
  double chair_s() const { return responses ? double(hallucinated_responses) / responses : 0; }
  double chair_i() const { return mentions ? double(hallucinated_mentions) / mentions : 0; }
  double recall() const { return truth_objects ? double(covered_objects) / truth_objects : 0; }
  double empty() const { return responses ? double(empty_responses) / responses : 0; }
  void Add(const ChairSample& s);
};
ChairSample ScoreChair(const ObjectVocabulary& vocab, const std::string& answer, const ChairTruth& truth);

// ---- POPE ----------------------------------------------------------------------------------
enum class PopeSetting { kRandom, kPopular, kAdversarial };
const char* PopeSettingName(PopeSetting s);

struct PopeImage {
  std::string image_id;
  std::vector<std::string> objects;  // canonical, ground truth
};
struct PopeQuestion {
  std::string id, image_id, object;
  bool label_yes = false;
  std::string text() const { return "Is there a " + object + " in the image?"; }
};
// Up to `positives` ground-truth objects per image (sampled), each paired with one absent
// object: uniformly at random, the most frequent in the dataset, or the most co-occurring with
// the image's objects. Deterministic for `seed`.
std::vector<PopeQuestion> BuildPopeQuestions(const std::vector<PopeImage>& images,
                                             const std::vector<std::string>& vocabulary,
                                             PopeSetting setting, int positives, uint64_t seed);
// POPE's rule: "no" when the first sentence has the token no or not.
bool PopeAnswerIsYes(const std::string& answer);
struct PopeMetrics {
  int64_t tp = 0, fp = 0, tn = 0, fn = 0;
  int64_t total() const { return tp + fp + tn + fn; }
  double accuracy() const { return total() ? double(tp + tn) / total() : 0; }
  double precision() const { return tp + fp ? double(tp) / (tp + fp) : 0; }
  double recall() const { return tp + fn ? double(tp) / (tp + fn) : 0; }
  double f1() const {
    const double p = precision(), r = recall();
    return p + r > 0 ? 2 * p * r / (p + r) : 0;
  }
  double yes_ratio() const { return total() ? double(tp + fp) / total() : 0; }
  void Add(bool label_yes, bool answered_yes);
};

// ---- AMBER (generative, exact match) ---------------------------------------------------------
struct AmberTruth {
  std::vector<std::string> truth;  // objects in the image
  std::vector<std::string> hallu;  // plausible objects that are not
};
struct AmberMetrics {
  int64_t mentioned = 0, hallucinated = 0;  // CHAIR
  int64_t truth_total = 0, truth_covered = 0;  // Cover
  int64_t responses = 0, responses_without_hallucination = 0;  // Hal
  int64_t hallu_total = 0, hallu_mentioned = 0;  // Cog
  double chair() const { return mentioned ? double(hallucinated) / mentioned : 0; }
  double cover() const { return truth_total ? double(truth_covered) / truth_total : 0; }
  double hal() const { return responses ? 1.0 - double(responses_without_hallucination) / responses : 0; }
  double cog() const { return hallu_total ? double(hallu_mentioned) / hallu_total : 0; }
};
// `vocabulary`: every object word AMBER knows (its annotation words and their associations);
// `association`: word -> related words that count as the same object; `safe_words`: words
// never counted as hallucinations. Nouns are matched exactly (singularised, two-word merged).
class AmberScorer {
 public:
  AmberScorer(std::map<std::string, std::vector<std::string>> association,
              std::set<std::string> safe_words, const std::vector<AmberTruth>& all_truth);
  void Add(const std::string& answer, const AmberTruth& truth, AmberMetrics* m) const;

 private:
  std::vector<std::string> Nouns(const std::string& answer) const;
  std::map<std::string, std::vector<std::string>> association_;
  std::set<std::string> safe_words_, vocabulary_, double_words_;
};

}  // namespace mfpo

#endif  // MFPO_EVALUATOR_HALLUCINATION_METRICS_H_
