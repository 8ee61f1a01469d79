// LLaVA tokenizer: a SentencePiece `tokenizer.model` plus the added `<image>` and `<pad>` tokens,
// and the conversation templates of LLaVA-1.5 and of LLaVA-1.6's Vicuna and Mistral variants.
//
// Text is split around the literal "<image>"; each text chunk is encoded by SentencePiece (which
// adds its dummy-prefix space, as the slow Hugging Face tokenizer does) and the image id is
// spliced in between; BOS is prepended by the prompt builders, not by Encode().
#ifndef MFPO_COMMON_TOKENIZER_H_
#define MFPO_COMMON_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mfpo {

class SentencePieceModel;

inline constexpr char kImagePlaceholder[] = "<image>";
inline constexpr int64_t kIgnoreLabel = -100;

// A tokenised training/scoring example: ids with labels (-100 except the answer and </s>).
struct TokenizedExample {
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;
};

// The single-turn conversation templates (llava-hf's chat templates, one image, one question):
//   llava-1.5: "USER: <image>\n{question} ASSISTANT:"
//   vicuna:    "A chat between a curious human and an artificial intelligence assistant. The
//               assistant gives helpful, detailed, and polite answers to the human's questions.
//               USER: <image>\n{question} ASSISTANT:"   (llava-v1.6-vicuna-*)
//   mistral:   "[INST] <image>\n{question} [/INST]"    (llava-v1.6-mistral-*)
// The answer follows after one space and ends with </s>.
enum class ChatTemplate { kLlava15, kVicuna, kMistral };
std::string ChatTemplateName(ChatTemplate t);
absl::StatusOr<ChatTemplate> ParseChatTemplate(const std::string& name);
// Which template a Hugging Face chat template (the jinja text of chat_template.json or
// tokenizer_config.json) is; NOT_FOUND when it is none of the three.
absl::StatusOr<ChatTemplate> DetectChatTemplate(const std::string& jinja);
// A jinja chat template of `t` in the form llava-hf writes (what DetectChatTemplate recognises).
std::string ChatTemplateJinja(ChatTemplate t);

class Tokenizer {
 public:
  // `image_token_id` / `pad_token_id` are the added tokens (LLaVA-1.5: 32000 / 32001); they must
  // lie at or beyond the SentencePiece vocabulary.
  static absl::StatusOr<Tokenizer> FromFile(const std::string& model_path, int64_t image_token_id,
                                            int64_t pad_token_id);
  static absl::StatusOr<Tokenizer> FromSerialized(const std::string& model_bytes,
                                                  int64_t image_token_id, int64_t pad_token_id,
                                                  const std::string& source);

  // Ids of `text` without BOS; every "<image>" becomes image_token_id.
  absl::StatusOr<std::vector<int64_t>> Encode(const std::string& text) const;
  // Decodes, skipping BOS/EOS/pad/image ids and ids outside the SentencePiece vocabulary.
  std::string Decode(const std::vector<int64_t>& ids) const;

  // The prompt of the chat template with BOS and one image id.
  absl::StatusOr<std::vector<int64_t>> PromptIds(const std::string& question) const;
  // Prompt + " {answer}</s>"; labels only on the answer tokens and </s>.
  absl::StatusOr<TokenizedExample> Example(const std::string& question,
                                           const std::string& answer) const;

  int64_t bos_id() const { return bos_id_; }
  int64_t eos_id() const { return eos_id_; }
  int64_t pad_id() const { return pad_id_; }
  int64_t image_id() const { return image_id_; }
  int64_t sp_vocab_size() const { return sp_vocab_; }
  std::string IdToPiece(int64_t id) const;

  ChatTemplate chat_template() const { return template_; }
  void set_chat_template(ChatTemplate t) { template_ = t; }

 private:
  ChatTemplate template_ = ChatTemplate::kLlava15;
  std::shared_ptr<const SentencePieceModel> sp_;
  int64_t bos_id_ = 1, eos_id_ = 2, pad_id_ = -1, image_id_ = -1, sp_vocab_ = 0;
};

// Replaces each image id with `n` copies (and the label alongside it with -100).
void ExpandImageTokens(int64_t image_id, int64_t n, std::vector<int64_t>* ids,
                       std::vector<int64_t>* labels = nullptr);

// The user-turn text of a question in a template (LLaVA-1.5: "USER: <image>\n{question} ASSISTANT:").
std::string PromptText(ChatTemplate t, const std::string& question);

// The tiny BPE tokenizer of the embedded default world (a serialized SentencePiece model).
// It is trained at build time by mfpo-spm-train (common/spm_train_main.cc) with the real
// SentencePiece trainer on the built-in corpus of common/tiny_corpus.cc, Llama-like settings
// (byte fallback, split digits, identity normalisation, unk/bos/eos = 0/1/2), and compiled in.
std::string TinyTokenizerModelBytes();

}  // namespace mfpo

#endif  // MFPO_COMMON_TOKENIZER_H_
