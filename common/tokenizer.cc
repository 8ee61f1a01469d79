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

namespace {
constexpr char kVicunaSystem[] =
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions.";
}  // namespace

std::string ChatTemplateName(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kVicuna: return "vicuna";
    case ChatTemplate::kMistral: return "mistral";
    case ChatTemplate::kLlava15: break;
  }
  return "llava-1.5";
}

absl::StatusOr<ChatTemplate> ParseChatTemplate(const std::string& name) {
  for (ChatTemplate t : {ChatTemplate::kLlava15, ChatTemplate::kVicuna, ChatTemplate::kMistral})
    if (name == ChatTemplateName(t)) return t;
  return absl::InvalidArgumentError(
      absl::StrCat("chat template '", name, "' is not one of llava-1.5, vicuna, mistral"));
}

absl::StatusOr<ChatTemplate> DetectChatTemplate(const std::string& jinja) {
  if (jinja.find("[INST]") != std::string::npos) return ChatTemplate::kMistral;
  if (jinja.find("USER:") != std::string::npos)
    return jinja.find("A chat between") != std::string::npos ? ChatTemplate::kVicuna : ChatTemplate::kLlava15;
  return absl::NotFoundError("the chat template is none of llava-1.5 (USER: ... ASSISTANT:), vicuna, mistral ([INST])");
}

std::string ChatTemplateJinja(ChatTemplate t) {
  const std::string loop =
      "{% for message in messages %}{% if message['role'] == 'user' %}";
  const std::string image = "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
                            "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}";
  switch (t) {
    case ChatTemplate::kMistral:
      return loop + "[INST] " + image + " [/INST]{% else %} {{ message['content'][0]['text'] }}</s>{% endif %}{% endfor %}";
    case ChatTemplate::kVicuna:
      return absl::StrCat(kVicunaSystem, " ", loop, "USER: ", image,
                          " ASSISTANT:{% else %} {{ message['content'][0]['text'] }}</s>{% endif %}{% endfor %}");
    case ChatTemplate::kLlava15: break;
  }
  return loop + "USER: " + image + " ASSISTANT:{% else %} {{ message['content'][0]['text'] }}</s>{% endif %}{% endfor %}";
}

std::string PromptText(ChatTemplate t, const std::string& question) {
  switch (t) {
    case ChatTemplate::kMistral: return absl::StrCat("[INST] ", kImagePlaceholder, "\n", question, " [/INST]");
    case ChatTemplate::kVicuna:
      return absl::StrCat(kVicunaSystem, " USER: ", kImagePlaceholder, "\n", question, " ASSISTANT:");
    case ChatTemplate::kLlava15: break;
  }
  return absl::StrCat("USER: ", kImagePlaceholder, "\n", question, " ASSISTANT:");
}

absl::StatusOr<std::vector<int64_t>> Tokenizer::PromptIds(const std::string& question) const {
  if (question.find(kImagePlaceholder) != std::string::npos)
    return absl::InvalidArgumentError("question must not contain the <image> placeholder");
  MFPO_ASSIGN_OR_RETURN(std::vector<int64_t> ids, Encode(PromptText(template_, question)));
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
