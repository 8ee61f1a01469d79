#include "common/tokenizer.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/sentencepiece_model.h"
#include "common/status_macros.h"

// Generated at build time by mfpo-spm-train (common/spm_train_main.cc).
extern "C" const unsigned char kTinyTokenizerModel[];
extern "C" const unsigned long kTinyTokenizerModelSize;

namespace mfpo {

absl::StatusOr<Tokenizer> Tokenizer::FromFile(const std::string& path, int64_t image_token_id,
                                              int64_t pad_token_id) {
  MFPO_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path, "tokenizer model"));
  return FromSerialized(bytes, image_token_id, pad_token_id, path);
}

absl::StatusOr<Tokenizer> Tokenizer::FromSerialized(const std::string& bytes,
                                                    int64_t image_token_id, int64_t pad_token_id,
                                                    const std::string& source) {
  MFPO_ASSIGN_OR_RETURN(SentencePieceModel model, SentencePieceModel::Parse(bytes, source));
  Tokenizer t;
  t.sp_vocab_ = model.size();
  t.bos_id_ = model.bos_id();
  t.eos_id_ = model.eos_id();
  if (image_token_id < t.sp_vocab_)
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: image token id %d collides with the SentencePiece vocabulary (%d pieces)", source,
        image_token_id, t.sp_vocab_));
  t.image_id_ = image_token_id;
  t.pad_id_ = pad_token_id;
  t.sp_ = std::make_shared<const SentencePieceModel>(std::move(model));
  return t;
}

absl::StatusOr<std::vector<int64_t>> Tokenizer::Encode(const std::string& text) const {
  std::vector<int64_t> out;
  size_t start = 0;
  const std::string placeholder = kImagePlaceholder;
  while (true) {
    const size_t at = text.find(placeholder, start);
    const std::string chunk = text.substr(start, at == std::string::npos ? std::string::npos
                                                                         : at - start);
    if (!chunk.empty()) {
      const std::vector<int> ids = sp_->Encode(chunk);
      out.insert(out.end(), ids.begin(), ids.end());
    }
    if (at == std::string::npos) break;
    out.push_back(image_id_);
    start = at + placeholder.size();
  }
  return out;
}

std::string Tokenizer::Decode(const std::vector<int64_t>& ids) const {
  std::vector<int> kept;
  for (int64_t id : ids) {
    if (id == bos_id_ || id == eos_id_ || id == pad_id_ || id == image_id_) continue;
    if (id < 0 || id >= sp_vocab_) continue;
    kept.push_back(static_cast<int>(id));
  }
  return sp_->Decode(kept);
}

std::string Tokenizer::IdToPiece(int64_t id) const {
  if (id == image_id_) return kImagePlaceholder;
  if (id == pad_id_) return "<pad>";
  if (id < 0 || id >= sp_vocab_) return absl::StrCat("<id ", id, ">");
  return sp_->piece(static_cast<int>(id)).text;
}

std::string LlavaPromptText(const std::string& question) {
  return absl::StrCat("USER: ", kImagePlaceholder, "\n", question, " ASSISTANT:");
}

absl::StatusOr<std::vector<int64_t>> Tokenizer::PromptIds(const std::string& question) const {
  if (question.find(kImagePlaceholder) != std::string::npos)
    return absl::InvalidArgumentError("question must not contain the <image> placeholder");
  MFPO_ASSIGN_OR_RETURN(std::vector<int64_t> ids, Encode(LlavaPromptText(question)));
  ids.insert(ids.begin(), bos_id_);
  return ids;
}

absl::StatusOr<TokenizedExample> Tokenizer::Example(const std::string& question,
                                                    const std::string& answer) const {
  TokenizedExample ex;
  MFPO_ASSIGN_OR_RETURN(ex.ids, PromptIds(question));
  ex.labels.assign(ex.ids.size(), kIgnoreLabel);
  if (answer.find(kImagePlaceholder) != std::string::npos)
    return absl::InvalidArgumentError("answer must not contain the <image> placeholder");
  // SentencePiece's dummy prefix turns "answer" into "▁answer", i.e. " {answer}" after the
  // prompt's final ':'; whitespace is a piece boundary, so this equals encoding the whole text.
  MFPO_ASSIGN_OR_RETURN(std::vector<int64_t> answer_ids, Encode(answer));
  answer_ids.push_back(eos_id_);
  ex.ids.insert(ex.ids.end(), answer_ids.begin(), answer_ids.end());
  ex.labels.insert(ex.labels.end(), answer_ids.begin(), answer_ids.end());
  return ex;
}

void ExpandImageTokens(int64_t image_id, int64_t n, std::vector<int64_t>* ids,
                       std::vector<int64_t>* labels) {
  std::vector<int64_t> out_ids, out_labels;
  for (size_t i = 0; i < ids->size(); ++i) {
    if ((*ids)[i] == image_id) {
      out_ids.insert(out_ids.end(), n, image_id);
      if (labels != nullptr) out_labels.insert(out_labels.end(), n, kIgnoreLabel);
    } else {
      out_ids.push_back((*ids)[i]);
      if (labels != nullptr) out_labels.push_back((*labels)[i]);
    }
  }
  *ids = std::move(out_ids);
  if (labels != nullptr) *labels = std::move(out_labels);
}

std::string TinyTokenizerModelBytes() {
  return std::string(reinterpret_cast<const char*>(kTinyTokenizerModel), kTinyTokenizerModelSize);
}

}  // namespace mfpo
