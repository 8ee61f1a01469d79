#include "common/text/object_text.h"

#include <cctype>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "common/file_util.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

extern "C" const unsigned char kCocoSynonyms[];
extern "C" const unsigned long kCocoSynonymsSize;

namespace mfpo {

std::string CocoSynonymTable() {
  return std::string(reinterpret_cast<const char*>(kCocoSynonyms), kCocoSynonymsSize);
}

namespace {

bool EndsWith(const std::string& w, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return w.size() >= n && w.compare(w.size() - n, n, suffix) == 0;
}

}  // namespace

std::vector<std::string> TokenizeWords(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    while (!cur.empty() && (cur.back() == '-' || cur.back() == '\'')) cur.pop_back();
    if (!cur.empty()) out.push_back(cur);
    cur.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (std::isalnum(c)) {
      cur.push_back(static_cast<char>(std::tolower(c)));
    } else if (c == '\'' && !cur.empty()) {
      flush();  // "there's" -> "there" + "'s" (dropped: never an object)
      while (i + 1 < text.size() && std::isalpha(static_cast<unsigned char>(text[i + 1]))) ++i;
    } else if (c == '-' && !cur.empty() && i + 1 < text.size() &&
               std::isalnum(static_cast<unsigned char>(text[i + 1]))) {
      flush();  // "hot-dog" -> "hot" "dog", so that two-word merging sees it
    } else {
      flush();
    }
  }
  flush();
  return out;
}

std::string Singularize(const std::string& w) {
  static const std::map<std::string, std::string> kIrregular = {
      {"people", "person"}, {"men", "man"},       {"women", "woman"},   {"children", "child"},
      {"mice", "mouse"},    {"geese", "goose"},   {"teeth", "tooth"},   {"feet", "foot"},
      {"knives", "knife"},  {"wives", "wife"},    {"leaves", "leaf"},   {"shelves", "shelf"},
      {"wolves", "wolf"},   {"calves", "calf"},   {"halves", "half"},   {"loaves", "loaf"},
      {"scarves", "scarf"}, {"oxen", "ox"},       {"buses", "bus"},     {"tomatoes", "tomato"},
      {"potatoes", "potato"}, {"heroes", "hero"}, {"dice", "die"},      {"skis", "ski"},
      {"ties", "tie"},      {"pies", "pie"},      {"sheep", "sheep"},   {"fish", "fish"},
      {"deer", "deer"},     {"species", "species"}, {"series", "series"}, {"glasses", "glass"},
      {"cacti", "cactus"},  {"octopi", "octopus"},
  };
  auto it = kIrregular.find(w);
  if (it != kIrregular.end()) return it->second;
  if (w.size() <= 3) return w;
  if (EndsWith(w, "ss") || EndsWith(w, "us") || EndsWith(w, "is")) return w;
  if (EndsWith(w, "ies") && w.size() > 4) return w.substr(0, w.size() - 3) + "y";
  if (EndsWith(w, "sses") || EndsWith(w, "ches") || EndsWith(w, "shes") || EndsWith(w, "xes") ||
      EndsWith(w, "zzes"))
    return w.substr(0, w.size() - 2);
  if (EndsWith(w, "s")) return w.substr(0, w.size() - 1);
  return w;
}

absl::StatusOr<ObjectVocabulary> ObjectVocabulary::FromFile(const std::string& path) {
  auto text = ReadFileToString(path, "synonym table");
  if (!text.ok()) return text.status();
  return FromText(*text, path);
}

absl::StatusOr<ObjectVocabulary> ObjectVocabulary::FromText(const std::string& text,
                                                            const std::string& source) {
  ObjectVocabulary v;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    std::vector<std::string> entries;
    for (absl::string_view e : absl::StrSplit(line, ',')) {
      std::string entry = absl::AsciiStrToLower(absl::StripAsciiWhitespace(e));
      if (!entry.empty()) entries.push_back(entry);
    }
    if (entries.empty())
      return absl::InvalidArgumentError(absl::StrCat(source, ":", line_no, ": no category name"));
    const std::string& canonical = entries[0];
    v.categories_.push_back(canonical);
    for (const std::string& e : entries) {
      if (!v.synonym_to_canonical_.emplace(e, canonical).second &&
          v.synonym_to_canonical_[e] != canonical)
        return absl::InvalidArgumentError(absl::StrCat(source, ":", line_no, ": '", e,
                                                       "' is already a synonym of '",
                                                       v.synonym_to_canonical_[e], "'"));
      if (e.find(' ') != std::string::npos) v.double_words_[e] = e;
    }
  }
  if (v.categories_.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": empty synonym table"));
  // CHAIR's special cases, applied to whatever of them this table has.
  for (const char* animal : {"bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear",
                             "zebra", "giraffe", "animal", "cub"}) {
    if (!v.synonym_to_canonical_.count(animal)) continue;
    v.double_words_[absl::StrCat("baby ", animal)] = animal;
    v.double_words_[absl::StrCat("adult ", animal)] = animal;
  }
  for (const char* vehicle : {"jet", "train"})
    if (v.synonym_to_canonical_.count(vehicle)) v.double_words_[absl::StrCat("passenger ", vehicle)] = vehicle;
  if (v.synonym_to_canonical_.count("tie")) v.double_words_["bow tie"] = "tie";
  if (v.synonym_to_canonical_.count("toilet")) v.double_words_["toilet seat"] = "toilet";
  return v;
}

std::vector<ObjectMention> ObjectVocabulary::Extract(const std::string& text) const {
  std::vector<std::string> words;
  for (const std::string& t : TokenizeWords(text)) words.push_back(Singularize(t));
  // Greedy two-word merge, left to right.
  std::vector<std::pair<std::string, int>> merged;
  for (size_t i = 0; i < words.size();) {
    if (i + 1 < words.size()) {
      auto it = double_words_.find(words[i] + " " + words[i + 1]);
      if (it != double_words_.end()) {
        merged.emplace_back(it->second, static_cast<int>(i));
        i += 2;
        continue;
      }
    }
    merged.emplace_back(words[i], static_cast<int>(i));
    ++i;
  }
  bool has_toilet = false;
  for (const auto& [w, _] : merged) has_toilet = has_toilet || w == "toilet";
  std::vector<ObjectMention> out;
  for (const auto& [w, index] : merged) {
    if (has_toilet && w == "seat") continue;  // "the seat of the toilet" is not a chair
    auto it = synonym_to_canonical_.find(w);
    if (it != synonym_to_canonical_.end()) out.push_back({w, it->second, index});
  }
  return out;
}

std::vector<std::string> ObjectVocabulary::Synonyms(const std::string& canonical) const {
  std::vector<std::string> out;
  for (const auto& [synonym, name] : synonym_to_canonical_)
    if (name == canonical && synonym != canonical) out.push_back(synonym);
  return out;
}

std::string ObjectVocabulary::Canonical(const std::string& phrase) const {
  std::vector<ObjectMention> m = Extract(phrase);
  return m.size() == 1 ? m[0].canonical : (m.empty() ? "" : m.back().canonical);
}

}  // namespace mfpo
