#include "common/sentencepiece_model.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <queue>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mfpo {
namespace {

constexpr char kSpace[] = "\xE2\x96\x81";  // U+2581 '▁'

// Minimal protobuf wire-format reader over a byte range.
class WireReader {
 public:
  WireReader(const char* p, size_t n) : p_(reinterpret_cast<const uint8_t*>(p)), end_(p_ + n) {}
  bool done() const { return p_ >= end_; }
  bool ok() const { return ok_; }

  bool ReadVarint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) return ok_ = false;
      const uint8_t b = *p_++;
      *v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return ok_ = false;
  }
  // Reads the next field's tag; false at the end or on error.
  bool Next(uint32_t* field, uint32_t* wire) {
    if (done()) return false;
    uint64_t tag;
    if (!ReadVarint(&tag)) return false;
    *field = static_cast<uint32_t>(tag >> 3);
    *wire = static_cast<uint32_t>(tag & 7);
    return true;
  }
  bool ReadBytes(std::string* out) {
    uint64_t n;
    if (!ReadVarint(&n) || n > static_cast<uint64_t>(end_ - p_)) return ok_ = false;
    out->assign(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return true;
  }
  bool ReadFixed32(uint32_t* v) {
    if (end_ - p_ < 4) return ok_ = false;
    *v = p_[0] | (p_[1] << 8) | (p_[2] << 16) | (uint32_t(p_[3]) << 24);
    p_ += 4;
    return true;
  }
  bool Skip(uint32_t wire) {
    uint64_t v;
    std::string s;
    uint32_t f;
    switch (wire) {
      case 0: return ReadVarint(&v);
      case 1: if (end_ - p_ < 8) return ok_ = false; p_ += 8; return true;
      case 2: return ReadBytes(&s);
      case 5: return ReadFixed32(&f);
      default: return ok_ = false;
    }
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
  bool ok_ = true;
};

size_t Utf8Length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;  // malformed: one byte at a time, as SentencePiece does
}

// Appends `bytes` to `out`, replacing each byte that does not start a valid UTF-8 sequence with
// U+FFFD, as SentencePiece does when byte pieces decode to invalid text.
void AppendValidUtf8(const std::string& bytes, std::string* out) {
  size_t i = 0;
  while (i < bytes.size()) {
    const unsigned char c = bytes[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = len > 0 && i + len <= bytes.size();
    for (size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(bytes[i + k]) >> 6) == 0x2;
    if (ok && len == 2) ok = c >= 0xC2;  // no overlong forms
    if (ok && len == 3) {
      const unsigned char c1 = bytes[i + 1];
      ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);  // overlong, surrogates
    }
    if (ok && len == 4) {
      const unsigned char c1 = bytes[i + 1];
      ok = c <= 0xF4 && !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90);
    }
    if (ok) {
      out->append(bytes, i, len);
      i += len;
    } else {
      out->append("\xEF\xBF\xBD");
      ++i;
    }
  }
}

}  // namespace

absl::StatusOr<SentencePieceModel> SentencePieceModel::Parse(const std::string& bytes,
                                                             const std::string& source) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a SentencePiece model: ", why));
  };
  SentencePieceModel m;
  int model_type = 1;  // UNIGRAM by default
  std::string normalizer_name, charsmap;
  WireReader top(bytes.data(), bytes.size());
  uint32_t field, wire;
  while (top.Next(&field, &wire)) {
    if (wire == 2 && (field == 1 || field == 2 || field == 3)) {
      std::string sub;
      if (!top.ReadBytes(&sub)) break;
      WireReader r(sub.data(), sub.size());
      uint32_t f, w;
      if (field == 1) {  // SentencePiece
        Piece piece;
        while (r.Next(&f, &w)) {
          uint64_t v;
          uint32_t x;
          if (f == 1 && w == 2) r.ReadBytes(&piece.text);
          else if (f == 2 && w == 5 && r.ReadFixed32(&x)) std::memcpy(&piece.score, &x, 4);
          else if (f == 3 && w == 0 && r.ReadVarint(&v)) piece.type = static_cast<PieceType>(v);
          else r.Skip(w);
        }
        if (!r.ok()) return bad(absl::StrCat("piece ", m.pieces_.size(), " is malformed"));
        m.pieces_.push_back(std::move(piece));
      } else if (field == 2) {  // TrainerSpec
        while (r.Next(&f, &w)) {
          uint64_t v;
          if (w != 0) { r.Skip(w); continue; }
          if (!r.ReadVarint(&v)) break;
          const int iv = static_cast<int>(static_cast<int32_t>(v));
          if (f == 3) model_type = iv;
          else if (f == 35) m.byte_fallback_ = v != 0;
          else if (f == 40) m.unk_id_ = iv;
          else if (f == 41) m.bos_id_ = iv;
          else if (f == 42) m.eos_id_ = iv;
          else if (f == 43) m.pad_id_ = iv;
          else if (f == 24 && v != 0) return bad("treat_whitespace_as_suffix is not supported");
        }
      } else {  // NormalizerSpec
        while (r.Next(&f, &w)) {
          uint64_t v;
          if (f == 1 && w == 2) r.ReadBytes(&normalizer_name);
          else if (f == 2 && w == 2) r.ReadBytes(&charsmap);
          else if (f == 3 && w == 0 && r.ReadVarint(&v)) m.add_dummy_prefix_ = v != 0;
          else if (f == 4 && w == 0 && r.ReadVarint(&v)) m.remove_extra_whitespaces_ = v != 0;
          else if (f == 5 && w == 0 && r.ReadVarint(&v)) m.escape_whitespaces_ = v != 0;
          else r.Skip(w);
        }
      }
      if (!r.ok()) return bad(absl::StrCat("field ", field, " is malformed"));
    } else if (!top.Skip(wire)) {
      break;
    }
  }
  if (!top.ok()) return bad("truncated or malformed protobuf");
  if (m.pieces_.empty()) return bad("no pieces");
  if (model_type != 2)
    return absl::UnimplementedError(absl::StrCat(
        source, ": SentencePiece model type ", model_type, " is not supported (only BPE, as Llama)"));
  if (!charsmap.empty())
    return absl::UnimplementedError(absl::StrCat(source, ": normaliser '", normalizer_name,
                                                 "' with a character map is not supported"));
  std::fill(std::begin(m.byte_ids_), std::end(m.byte_ids_), -1);
  for (int i = 0; i < m.size(); ++i) {
    const Piece& p = m.pieces_[i];
    switch (p.type) {
      case PieceType::kNormal:
      case PieceType::kUnused:
        m.vocab_.emplace(p.text, i);
        break;
      case PieceType::kUserDefined:
        m.vocab_.emplace(p.text, i);
        m.user_defined_.push_back(p.text);
        break;
      case PieceType::kByte: {
        m.reserved_.emplace(p.text, i);
        unsigned value;
        if (p.text.size() == 6 && std::sscanf(p.text.c_str(), "<0x%02X>", &value) == 1 && value < 256)
          m.byte_ids_[value] = i;
        break;
      }
      default:
        m.reserved_.emplace(p.text, i);
    }
  }
  std::sort(m.user_defined_.begin(), m.user_defined_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (int id : {m.unk_id_, m.bos_id_, m.eos_id_})
    if (id < 0 || id >= m.size()) return bad(absl::StrCat("special id ", id, " out of range"));
  if (m.byte_fallback_)
    for (int b = 0; b < 256; ++b)
      if (m.byte_ids_[b] < 0) return bad(absl::StrFormat("byte piece <0x%02X> missing", b));
  return m;
}

std::string SentencePieceModel::Normalize(const std::string& text) const {
  std::string s = text;
  if (remove_extra_whitespaces_) {
    std::string out;
    bool prev_space = true;  // drops leading spaces
    for (char c : s) {
      if (c == ' ' && prev_space) continue;
      out.push_back(c);
      prev_space = c == ' ';
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    s = std::move(out);
  }
  if (s.empty()) return s;
  if (add_dummy_prefix_) s.insert(s.begin(), ' ');
  if (!escape_whitespaces_) return s;
  std::string escaped;
  for (char c : s) {
    if (c == ' ') escaped += kSpace;
    else escaped.push_back(c);
  }
  return escaped;
}

int SentencePieceModel::PieceId(const std::string& piece) const {
  auto it = vocab_.find(piece);
  if (it != vocab_.end()) return it->second;
  auto r = reserved_.find(piece);
  return r != reserved_.end() ? r->second : -1;
}

std::vector<int> SentencePieceModel::Encode(const std::string& text) const {
  const std::string normalized = Normalize(text);
  struct Symbol {
    int prev, next;
    size_t begin, len;
    bool freeze;
  };
  std::vector<Symbol> symbols;
  for (size_t pos = 0; pos < normalized.size();) {
    size_t len = 0;
    bool freeze = false;
    for (const std::string& u : user_defined_) {
      if (normalized.compare(pos, u.size(), u) == 0) {
        len = u.size();
        freeze = true;
        break;
      }
    }
    if (len == 0) len = std::min(Utf8Length(normalized[pos]), normalized.size() - pos);
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({index - 1, pos + len < normalized.size() ? index + 1 : -1, pos, len, freeze});
    pos += len;
  }
  struct Pair {
    int left, right;
    float score;
    size_t len;
  };
  // Highest score first; on equal scores the leftmost pair.
  auto cmp = [](const Pair& a, const Pair& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Pair, std::vector<Pair>, decltype(cmp)> agenda(cmp);
  std::map<std::string, std::pair<std::string, std::string>> rev_merge;
  auto piece_of = [&](const Symbol& s) { return normalized.substr(s.begin, s.len); };
  auto maybe_add = [&](int left, int right) {
    if (left < 0 || right < 0 || symbols[left].freeze || symbols[right].freeze) return;
    const std::string merged = normalized.substr(symbols[left].begin, symbols[left].len + symbols[right].len);
    auto it = vocab_.find(merged);
    if (it == vocab_.end()) return;
    agenda.push({left, right, pieces_[it->second].score, merged.size()});
    if (pieces_[it->second].type == PieceType::kUnused)
      rev_merge[merged] = {piece_of(symbols[left]), piece_of(symbols[right])};
  };
  for (size_t i = 1; i < symbols.size(); ++i) maybe_add(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol& l = symbols[top.left];
    Symbol& r = symbols[top.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != top.len) continue;  // stale
    l.len += r.len;
    l.next = r.next;
    if (r.next >= 0) symbols[r.next].prev = top.left;
    r.len = 0;
    maybe_add(l.prev, top.left);
    maybe_add(top.left, l.next);
  }
  std::vector<int> ids;
  std::function<void(const std::string&)> emit = [&](const std::string& piece) {
    const int id = PieceId(piece);
    if (id >= 0 && pieces_[id].type == PieceType::kUnused) {
      auto it = rev_merge.find(piece);
      if (it != rev_merge.end()) {
        emit(it->second.first);
        emit(it->second.second);
        return;
      }
    }
    if (id >= 0) {
      ids.push_back(id);
    } else if (byte_fallback_) {
      for (unsigned char c : piece) ids.push_back(byte_ids_[c]);
    } else if (ids.empty() || ids.back() != unk_id_) {
      ids.push_back(unk_id_);  // consecutive unknowns collapse, as SentencePiece does
    }
  };
  for (int i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) emit(piece_of(symbols[i]));
  return ids;
}

std::string SentencePieceModel::Decode(const std::vector<int>& ids) const {
  std::string out;
  std::string pending_bytes;  // consecutive byte pieces form one UTF-8 run
  bool first = true;
  for (size_t idx = 0; idx <= ids.size(); ++idx) {
    const int id = idx < ids.size() ? ids[idx] : -1;
    const bool is_byte = id >= 0 && id < size() && pieces_[id].type == PieceType::kByte;
    if (is_byte) {
      unsigned value = 0;
      std::sscanf(pieces_[id].text.c_str(), "<0x%02X>", &value);
      pending_bytes.push_back(static_cast<char>(value));
      continue;
    }
    if (!pending_bytes.empty()) {
      AppendValidUtf8(pending_bytes, &out);
      pending_bytes.clear();
      first = first && out.empty();
    }
    if (id < 0 || id >= size()) continue;
    const Piece& p = pieces_[id];
    if (p.type == PieceType::kControl) continue;
    std::string text;
    if (p.type == PieceType::kUnknown) {
      text = " \xE2\x81\x87 ";  // " ⁇ "
    } else {
      text = p.text;
    }
    std::string plain;
    for (size_t i = 0; i < text.size();) {
      if (text.compare(i, 3, kSpace) == 0) {
        plain.push_back(' ');
        i += 3;
      } else {
        plain.push_back(text[i++]);
      }
    }
    if (first && add_dummy_prefix_ && !plain.empty() && plain[0] == ' ') plain.erase(0, 1);
    if (!plain.empty()) first = false;
    out += plain;
  }
  return out;
}

}  // namespace mfpo
