// `mfpo score` (metrics for answers from any system) and `mfpo eval` (generate + score).
#ifndef MFPO_EVALUATOR_EVALUATION_H_
#define MFPO_EVALUATOR_EVALUATION_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"

namespace mfpo {

struct ScoreCommandOptions {
  std::string suite;         // chair | pope | amber
  std::string answers_path;  // JSONL {id, answer} (amber also: a JSON array with "response")
  std::string truth_path;    // chair: JSONL {id, objects, captions?}; pope: JSONL {id, label,
                             // setting?}; amber: AMBER annotations JSON array
  std::string synonyms_path;  // chair: table file (default: the compiled-in COCO table)
  std::string association_path;  // amber: relation.json (word -> related words)
  std::string safe_words_path;   // amber: safe words, one a line
  bool json = false;
};
absl::Status RunScore(const ScoreCommandOptions& options, std::ostream& out);

struct EvalCommandOptions {
  std::string model_dir;
  std::string data_dir;  // an embedded-world directory (mfpo world)
  std::vector<std::string> suites = {"chair", "pope", "amber", "reliance"};
  std::string out_dir;
  std::string split = "test";
  int64_t limit = 0;  // images per suite (0: all)
  int64_t batch_size = 16;
  int64_t max_new_tokens = 48;
  // Budget of the short-answer suites (POPE, reliance: "Yes, there is a red ball."); their
  // parsers read the first sentence only.
  int64_t short_answer_tokens = 12;
  int bootstrap_resamples = 2000;  // 95% intervals over the images
  int noise_step = 500;  // reliance: DDPM step of the global noise
  uint64_t seed = 0;
  std::string dtype = "float32";
  std::string adapter_dir;    // a LoRA adapter run with model_dir (unmerged)
  std::string chat_template;  // empty: the model directory's (ModelChatTemplate)
  bool overwrite = false;  // write into an out_dir that is not empty (refused otherwise)
};
absl::Status RunEval(const EvalCommandOptions& options, std::ostream& out);
// Everything that decides an evaluation's numbers (report.json "options"): an evaluation whose
// report holds the same options need not run again.
nlohmann::json EvalOptionsJson(const EvalCommandOptions& options);

}  // namespace mfpo

#endif  // MFPO_EVALUATOR_EVALUATION_H_
