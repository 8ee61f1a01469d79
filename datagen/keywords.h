// Keyword selection (MFPO paper section 3.1; DESIGN.md section 3): which words of a response name
// the things whose image regions the rejected image should corrupt.
//
// Words are graph nodes (stop words and non-content words dropped: function words, numbers,
// attribute words such as colours, sizes and positions, auxiliaries and generic verbs; plural
// nouns are singularised so "balls" and "ball" are one node). Between two nodes:
//   positional  P_ij = sum over occurrence pairs of exp(-|pos_i - pos_j| / sigma)
//   semantic    S_ij = max(0, cos(v_i, v_j))   (word vectors; 0 when a vector is unknown)
//   edge        W_ij = alpha * P_ij + (1 - alpha) * S_ij
//   contextual  W'_ij = W_ij * (1 + gamma * C_ij), C_ij = mean over the other nodes k of
//               min(W_ik, W_jk): two words that the same context words relate to are related.
// Then weighted PageRank (damping d): s_i = (1 - d) / N + d * sum_j W'_ji / (sum_k W'_jk) * s_j,
// iterated until the L1 change is below `tolerance`; a node without edges keeps (1 - d) / N plus
// its share of the dangling mass. Ties are broken by first position. Top-k by score.
#ifndef MFPO_DATAGEN_KEYWORDS_H_
#define MFPO_DATAGEN_KEYWORDS_H_

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "common/tokenizer.h"

namespace mfpo {

// Word vectors for the semantic edges.
class WordVectors {
 public:
  virtual ~WordVectors() = default;
  // The vector of a lower-case word, empty when unknown.
  virtual std::vector<float> Vector(const std::string& word) const = 0;
};

// GloVe text format: one "word v1 v2 ... vD" per line. A line with a different dimension or a
// non-number is an error naming file:line.
absl::StatusOr<std::unique_ptr<WordVectors>> LoadGloveVectors(const std::string& path);

// The model's own input embeddings (`embed_tokens` [V, D]), averaged over the word's sub-word
// pieces (encoded with a leading space, as the word appears mid-sentence).
std::unique_ptr<WordVectors> EmbeddingWordVectors(const Tokenizer& tokenizer, torch::Tensor embed_tokens);

// Weighted PageRank on a symmetric, non-negative weight matrix (row-major n x n, zero diagonal).
// Returns scores summing to 1.
struct PageRankOptions {
  double damping = 0.85;
  double tolerance = 1e-9;  // L1 change between iterations
  int max_iterations = 1000;
};
std::vector<double> WeightedPageRank(const std::vector<double>& weights, int n, const PageRankOptions& options,
                                     int* iterations = nullptr);

struct KeywordOptions {
  int top_k = 3;
  double alpha = 0.5;   // positional vs semantic
  double sigma = 3.0;   // positional decay in tokens
  double gamma = 1.0;   // contextual refinement strength (0 disables it)
  PageRankOptions pagerank;
};

struct Keyword {
  std::string word;  // singular, lower-case
  double score = 0;
  int position = 0;  // first token index in the text
};

// True for words that are never keywords (see the file comment).
bool IsNonContentWord(const std::string& word);

// Top-k keywords of `text`, best first. `vectors` may be null (positional edges only).
std::vector<Keyword> ExtractKeywords(const std::string& text, const WordVectors* vectors,
                                     const KeywordOptions& options);

}  // namespace mfpo

#endif  // MFPO_DATAGEN_KEYWORDS_H_
