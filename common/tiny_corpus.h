// The built-in corpus the tiny tokenizer is trained on. Standard library only: it is linked
// into mfpo-spm-train, which must not see Abseil (see sentencepiece_model.h).
#ifndef MFPO_COMMON_TINY_CORPUS_H_
#define MFPO_COMMON_TINY_CORPUS_H_

#include <string>
#include <vector>

namespace mfpo {

// Scene descriptions, questions and answers over the embedded world's vocabulary (objects,
// colours, sizes, positions, counts), deterministic.
std::vector<std::string> TinyTokenizerCorpus();

// The SentencePiece trainer flags of the tiny tokenizer (Llama-like), without input/output.
std::string TinyTokenizerTrainerArgs(int vocab_size);

inline constexpr int kTinyTokenizerVocab = 1000;

}  // namespace mfpo

#endif  // MFPO_COMMON_TINY_CORPUS_H_
