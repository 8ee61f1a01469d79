#include "datagen/keywords.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "common/text/object_text.h"

namespace mfpo {
namespace {

const std::set<std::string>& NonContentWords() {
  // Function words (a standard English stop list), auxiliaries and generic verbs, number and
  // quantity words, and attribute words (colours, sizes, shapes-as-adjectives, positions):
  // none of them names a region a grounder can find on its own.
  static const std::set<std::string> words = {
      // determiners, pronouns, prepositions, conjunctions, particles
      "a", "an", "the", "this", "that", "these", "those", "there", "here", "it", "its", "they",
      "them", "their", "he", "she", "his", "her", "we", "you", "i", "me", "my", "our", "your",
      "of", "in", "on", "at", "by", "for", "with", "from", "to", "into", "onto", "over", "under",
      "above", "below", "near", "next", "beside", "behind", "between", "among", "around", "and",
      "or", "but", "nor", "so", "as", "than", "then", "if", "no", "not", "yes", "also", "only",
      "very", "too", "just", "what", "which", "who", "whom", "whose", "where", "when", "why",
      "how", "all", "any", "each", "every", "both", "either", "neither", "some", "such", "other",
      "another", "same", "own", "up", "down", "out", "off", "about", "against", "through",
      "during", "before", "after", "while", "because", "until", "again", "further", "once",
      "s", "t", "can", "will", "would", "should", "could", "may", "might", "must", "shall",
      // auxiliaries and generic verbs
      "is", "are", "was", "were", "be", "been", "being", "am", "has", "have", "had", "having",
      "do", "does", "did", "doing", "see", "seen", "shows", "show", "showing", "shown", "appear",
      "appears", "contain", "contains", "containing", "depict", "depicts", "feature", "features",
      "visible", "look", "looks", "seems", "seem", "sit", "sits", "sitting", "stand", "stands",
      "standing", "located", "placed", "lying",
      // generic nouns of image descriptions
      "image", "picture", "photo", "photograph", "scene", "view", "background", "foreground",
      "side", "corner", "part", "thing", "object", "item", "kind", "type", "color", "colour",
      // numbers and quantities
      "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
      "single", "several", "many", "few", "more", "most", "much", "lot", "pair", "couple",
      "first", "second", "third", "number",
      // colours
      "red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white",
      "gray", "grey", "silver", "gold", "golden", "beige", "tan", "dark", "light", "bright",
      "colorful", "colored", "coloured",
      // sizes, shapes as adjectives, positions
      "small", "large", "big", "little", "tiny", "huge", "tall", "short", "long", "wide",
      "narrow", "round", "square", "left", "right", "top", "bottom", "middle", "center",
      "centre", "front", "back", "upper", "lower", "other", "open", "closed", "empty", "full",
      "old", "new", "young"};
  return words;
}

class GloveVectors : public WordVectors {
 public:
  std::unordered_map<std::string, std::vector<float>> table;
  std::vector<float> Vector(const std::string& word) const override {
    auto it = table.find(word);
    return it == table.end() ? std::vector<float>() : it->second;
  }
};

class EmbeddingVectors : public WordVectors {
 public:
  EmbeddingVectors(const Tokenizer& tokenizer, torch::Tensor embed)
      : tokenizer_(tokenizer), embed_(embed.detach().to(torch::kCPU, torch::kFloat32).contiguous()) {}
  std::vector<float> Vector(const std::string& word) const override {
    auto ids = tokenizer_.Encode(" " + word);
    if (!ids.ok() || ids->empty()) return {};
    torch::NoGradGuard no_grad;
    torch::Tensor v = embed_.index_select(0, torch::tensor(*ids, torch::kInt64)).mean(0);
    return std::vector<float>(v.data_ptr<float>(), v.data_ptr<float>() + v.numel());
  }

 private:
  Tokenizer tokenizer_;
  torch::Tensor embed_;
};

double Cosine(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.empty() || a.size() != b.size()) return 0.0;
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    dot += static_cast<double>(a[i]) * b[i];
    na += static_cast<double>(a[i]) * a[i];
    nb += static_cast<double>(b[i]) * b[i];
  }
  return na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 0.0;
}

bool HasLetter(const std::string& w) {
  return std::any_of(w.begin(), w.end(), [](unsigned char c) { return std::isalpha(c); });
}

}  // namespace

absl::StatusOr<std::unique_ptr<WordVectors>> LoadGloveVectors(const std::string& path) {
  MFPO_RETURN_IF_ERROR(CheckRegularFile(path, "word-vector file"));
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open word-vector file"));
  auto out = std::make_unique<GloveVectors>();
  size_t dim = 0;
  int line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (parts.empty()) continue;
    if (parts.size() < 2) return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": a word without a vector"));
    std::vector<float> v(parts.size() - 1);
    for (size_t i = 1; i < parts.size(); ++i)
      if (!absl::SimpleAtof(parts[i], &v[i - 1]))
        return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": '", parts[i], "' is not a number"));
    if (dim == 0) dim = v.size();
    if (v.size() != dim)
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": ", v.size(), " components, the file's vectors have ", dim));
    std::string word(parts[0]);
    std::transform(word.begin(), word.end(), word.begin(), [](unsigned char c) { return std::tolower(c); });
    out->table.emplace(std::move(word), std::move(v));
  }
  if (out->table.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no word vectors"));
  return std::unique_ptr<WordVectors>(std::move(out));
}

std::unique_ptr<WordVectors> EmbeddingWordVectors(const Tokenizer& tokenizer, torch::Tensor embed_tokens) {
  return std::make_unique<EmbeddingVectors>(tokenizer, std::move(embed_tokens));
}

std::vector<double> WeightedPageRank(const std::vector<double>& w, int n, const PageRankOptions& o,
                                     int* iterations) {
  std::vector<double> s(n, n > 0 ? 1.0 / n : 0.0), next(n), out_weight(n, 0.0);
  for (int j = 0; j < n; ++j)
    for (int k = 0; k < n; ++k) out_weight[j] += w[j * n + k];
  int it = 0;
  for (; it < o.max_iterations; ++it) {
    // Mass of nodes without edges is spread evenly (the random surfer jumps anywhere).
    double dangling = 0;
    for (int j = 0; j < n; ++j)
      if (out_weight[j] <= 0) dangling += s[j];
    double change = 0;
    for (int i = 0; i < n; ++i) {
      double in = 0;
      for (int j = 0; j < n; ++j)
        if (out_weight[j] > 0) in += w[j * n + i] / out_weight[j] * s[j];
      next[i] = (1.0 - o.damping) / n + o.damping * (in + dangling / n);
      change += std::abs(next[i] - s[i]);
    }
    s.swap(next);
    if (change < o.tolerance) {
      ++it;
      break;
    }
  }
  if (iterations != nullptr) *iterations = it;
  return s;
}

bool IsNonContentWord(const std::string& word) {
  return word.size() < 2 || !HasLetter(word) || NonContentWords().count(word) > 0;
}

std::vector<Keyword> ExtractKeywords(const std::string& text, const WordVectors* vectors,
                                     const KeywordOptions& options) {
  // Nodes: distinct singular content words, with every position they occur at.
  std::vector<std::string> nodes;
  std::vector<std::vector<int>> positions;
  std::map<std::string, int> index;
  const std::vector<std::string> tokens = TokenizeWords(text);
  for (int p = 0; p < static_cast<int>(tokens.size()); ++p) {
    if (IsNonContentWord(tokens[p])) continue;
    const std::string word = Singularize(tokens[p]);
    if (IsNonContentWord(word)) continue;
    auto [it, fresh] = index.emplace(word, static_cast<int>(nodes.size()));
    if (fresh) {
      nodes.push_back(word);
      positions.emplace_back();
    }
    positions[it->second].push_back(p);
  }
  const int n = static_cast<int>(nodes.size());
  if (n == 0) return {};

  std::vector<std::vector<float>> vecs(n);
  if (vectors != nullptr)
    for (int i = 0; i < n; ++i) vecs[i] = vectors->Vector(nodes[i]);
  std::vector<double> w(static_cast<size_t>(n) * n, 0.0);
  for (int i = 0; i < n; ++i)
    for (int j = i + 1; j < n; ++j) {
      double pos = 0;
      for (int a : positions[i])
        for (int b : positions[j]) pos += std::exp(-std::abs(a - b) / options.sigma);
      const double sem = std::max(0.0, Cosine(vecs[i], vecs[j]));
      w[i * n + j] = w[j * n + i] = options.alpha * pos + (1.0 - options.alpha) * sem;
    }
  if (options.gamma > 0 && n > 2) {
    std::vector<double> refined = w;
    for (int i = 0; i < n; ++i)
      for (int j = i + 1; j < n; ++j) {
        double context = 0;
        for (int k = 0; k < n; ++k)
          if (k != i && k != j) context += std::min(w[i * n + k], w[j * n + k]);
        context /= n - 2;
        refined[i * n + j] = refined[j * n + i] = w[i * n + j] * (1.0 + options.gamma * context);
      }
    w.swap(refined);
  }
  const std::vector<double> score = WeightedPageRank(w, n, options.pagerank);

  std::vector<Keyword> out;
  for (int i = 0; i < n; ++i) out.push_back({nodes[i], score[i], positions[i][0]});
  std::stable_sort(out.begin(), out.end(), [](const Keyword& a, const Keyword& b) {
    if (std::abs(a.score - b.score) > 1e-12) return a.score > b.score;
    return a.position < b.position;
  });
  if (options.top_k > 0 && static_cast<int>(out.size()) > options.top_k) out.resize(options.top_k);
  return out;
}

}  // namespace mfpo
