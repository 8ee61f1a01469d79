// A native reader and encoder for SentencePiece BPE models (`tokenizer.model`).
//
// Why not libsentencepiece: Debian's libsentencepiece.so embeds and exports its own
// protobuf-lite 3.14, which interposes on LibTorch's libprotobuf 3.21 in the same process (a
// crash at start-up, or protobuf's version check aborting when loaded later), and its header
// redefines absl::string_view. So the model file is parsed here (protobuf wire format, the
// ModelProto fields Llama-style tokenizers use) and encoded with SentencePiece's BPE algorithm
// (bpe_model.cc: highest-score adjacent merge first, ties to the left; byte fallback for
// pieces outside the vocabulary). The real library is still used, out of process, by the
// build-time trainer tool and as the reference the tests compare against.
#ifndef MFPO_COMMON_SENTENCEPIECE_MODEL_H_
#define MFPO_COMMON_SENTENCEPIECE_MODEL_H_

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace mfpo {

class SentencePieceModel {
 public:
  enum class PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
  struct Piece {
    std::string text;
    float score = 0;
    PieceType type = PieceType::kNormal;
  };

  // Parses a serialized ModelProto; `source` names the file in errors. Only BPE models with an
  // identity normaliser (no precompiled character map) are accepted, as Llama's is.
  static absl::StatusOr<SentencePieceModel> Parse(const std::string& bytes, const std::string& source);

  std::vector<int> Encode(const std::string& text) const;
  std::string Decode(const std::vector<int>& ids) const;

  int size() const { return static_cast<int>(pieces_.size()); }
  const Piece& piece(int id) const { return pieces_[id]; }
  int unk_id() const { return unk_id_; }
  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  int pad_id() const { return pad_id_; }

 private:
  std::string Normalize(const std::string& text) const;
  int PieceId(const std::string& piece) const;

  std::vector<Piece> pieces_;
  std::unordered_map<std::string, int> vocab_;     // normal, user-defined and unused pieces
  std::unordered_map<std::string, int> reserved_;  // control, unknown and byte pieces
  std::vector<std::string> user_defined_;          // matched whole before BPE, longest first
  int byte_ids_[256];
  bool byte_fallback_ = false;
  bool add_dummy_prefix_ = true;
  bool remove_extra_whitespaces_ = true;
  bool escape_whitespaces_ = true;
  int unk_id_ = 0, bos_id_ = 1, eos_id_ = 2, pad_id_ = -1;
};

}  // namespace mfpo

#endif  // MFPO_COMMON_SENTENCEPIECE_MODEL_H_
