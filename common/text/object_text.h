// Object mentions in free text, as CHAIR (Rohrbach et al. 2018) and Object HalBench find them:
// lower-case, tokenise, singularise, merge two-word object names greedily left to right (with
// the special cases: baby/adult <animal> -> <animal>, passenger jet/train, bow tie -> tie,
// toilet seat -> toilet, and "seat" dropped when "toilet" is present), keep the words of the
// synonym table, map them to canonical names.
#ifndef MFPO_COMMON_TEXT_OBJECT_TEXT_H_
#define MFPO_COMMON_TEXT_OBJECT_TEXT_H_

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mfpo {

// Lower-cased word tokens (letters, digits and inner apostrophes/hyphens); "there's" ->
// "there", "'s" as in the Penn treebank tokeniser CHAIR uses.
std::vector<std::string> TokenizeWords(const std::string& text);
// Rule-based English singular (irregulars, -ies, -ches/-shes/-xes/-sses, -s), leaving words
// that end in -ss/-us/-is alone, close to pattern.en's singularize as CHAIR uses it.
std::string Singularize(const std::string& word);

struct ObjectMention {
  std::string word;       // the (singularised, merged) surface form
  std::string canonical;  // the table's canonical name
  int token = 0;          // index of the first token
};

// A synonym table: one category a line, entries separated by commas, the first entry canonical
// (the format of CHAIR's synonyms.txt). Entries are trimmed (the original COCO file has a few
// entries with a leading space that CHAIR itself never matched; Object HalBench trims them).
class ObjectVocabulary {
 public:
  static absl::StatusOr<ObjectVocabulary> FromFile(const std::string& path);
  static absl::StatusOr<ObjectVocabulary> FromText(const std::string& text, const std::string& source);

  std::vector<ObjectMention> Extract(const std::string& text) const;
  // Canonical name of a word or phrase (singularised first), or "" when not an object.
  std::string Canonical(const std::string& phrase) const;
  const std::vector<std::string>& categories() const { return categories_; }
  // Every table entry of `canonical` other than the name itself.
  std::vector<std::string> Synonyms(const std::string& canonical) const;

 private:
  std::map<std::string, std::string> synonym_to_canonical_;
  std::map<std::string, std::string> double_words_;  // two-word phrase -> word it stands for
  std::vector<std::string> categories_;
};

// The COCO table (common/text/coco_synonyms.txt, CHAIR's synonyms.txt), compiled in.
std::string CocoSynonymTable();

}  // namespace mfpo

#endif  // MFPO_COMMON_TEXT_OBJECT_TEXT_H_
