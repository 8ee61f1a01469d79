#include "datagen/preference_formats.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/image.h"
#include "common/jsonl.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"
#include "datagen/diffusion_noise.h"

namespace mfpo {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

absl::Status Bad(absl::string_view why) { return absl::InvalidArgumentError(why); }

// Region coordinates are pixels: finite and far inside int range (a cast of 1e300 is undefined).
constexpr double kMaxCoordinate = 1 << 20;
bool IsCoordinate(const json& v) {
  return v.is_number() && std::isfinite(v.get<double>()) && std::abs(v.get<double>()) <= kMaxCoordinate;
}

absl::StatusOr<std::string> RequiredString(const json& j, const char* key) {
  if (!j.contains(key)) return Bad(absl::StrCat("missing field '", key, "'"));
  if (!j[key].is_string()) return Bad(absl::StrCat("field '", key, "' must be a string"));
  std::string v = j[key].get<std::string>();
  if (absl::StripAsciiWhitespace(v).empty()) return Bad(absl::StrCat("field '", key, "' is empty"));
  return v;
}

std::string RecordId(const json& j, const std::string& fallback) {
  for (const char* k : {"id", "idx", "question_id", "sample_id"}) {
    if (!j.contains(k)) continue;
    if (j[k].is_string() && !j[k].get<std::string>().empty()) return j[k].get<std::string>();
    if (j[k].is_number_integer()) return std::to_string(j[k].get<int64_t>());
  }
  return fallback;
}

// Text of a chat-style value: a string, a {content} message, or a list of messages whose
// content is a string or a list of {type: text, text} parts (images skipped).
std::string TextOf(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object()) {
    if (v.contains("text") && v["text"].is_string()) return v["text"].get<std::string>();
    if (v.contains("content")) return TextOf(v["content"]);
    return "";
  }
  if (v.is_array()) {
    std::string out;
    for (const auto& part : v) {
      if (part.is_object() && part.contains("role") && part["role"] == "system") continue;
      const std::string t = TextOf(part);
      if (!t.empty()) out += (out.empty() ? "" : "\n") + t;
    }
    return out;
  }
  return "";
}

// The text of the messages with `role` in a chat list (all of it when no message has that role,
// or when `v` is not a list): a conversational `chosen` repeats the user's turn before the
// assistant's answer, and only the answer is the response.
absl::StatusOr<std::string> TextOfRole(const json& v, const char* role) {
  if (v.is_array()) {
    json picked = json::array();
    bool has_roles = false;
    for (const auto& m : v) {
      has_roles = has_roles || (m.is_object() && m.contains("role"));
      if (m.is_object() && m.contains("role") && m["role"] == role) picked.push_back(m);
    }
    if (has_roles && picked.empty()) return Bad(absl::StrCat("the conversation has no '", role, "' turn"));
    if (picked.size() > 1) return Bad(absl::StrCat("the conversation has ", picked.size(), " '", role,
                                                   "' turns; only single-turn pairs are supported"));
    if (!picked.empty()) return TextOf(picked);
  }
  return TextOf(v);
}

// LLaVA-style prompts carry an "<image>" placeholder; the native record's question must not
// (the tokenizer places the image itself).
std::string WithoutImagePlaceholder(std::string s) {
  for (size_t at; (at = s.find("<image>")) != std::string::npos;) s.erase(at, 7);
  return std::string(absl::StripAsciiWhitespace(s));
}

const char* ExtensionFor(const std::string& bytes) {
  if (bytes.size() > 4 && bytes.compare(1, 3, "PNG") == 0) return ".png";
  if (bytes.size() > 2 && static_cast<unsigned char>(bytes[0]) == 0xFF && static_cast<unsigned char>(bytes[1]) == 0xD8) return ".jpg";
  if (bytes.size() > 12 && bytes.compare(8, 4, "WEBP") == 0) return ".webp";
  return nullptr;
}

// A line's converted record, with the image bytes to write when the input carried them.
struct Converted {
  PreferenceRecord record;
  std::string image_bytes;  // empty: record.image is an existing file
  const char* extension = nullptr;
};

bool LooksLikeBase64(const std::string& s) {
  if (s.size() < 64) return false;
  for (unsigned char c : s)
    if (!std::isalnum(c) && c != '+' && c != '/' && c != '=' && c != '\n' && c != '\r') return false;
  return true;
}

class Importer {
 public:
  Importer(ImportFormat format, const fs::path& in_dir, const ImageLimits& limits)
      : format_(format), in_dir_(in_dir), limits_(limits) {}

  // One input object -> native records (VLFeedback may yield none: ties).
  absl::StatusOr<std::vector<Converted>> Convert(const json& j, int line, const std::string& stem) {
    const std::string fallback_id = absl::StrCat(stem, "-", line);
    Converted out;
    PreferenceRecord& r = out.record;
    r.id = RecordId(j, fallback_id);
    const json* image = nullptr;
    switch (format_) {
      case ImportFormat::kNative: {
        MFPO_ASSIGN_OR_RETURN(r, ParsePreferenceRecord(j));
        image = &j["image"];
        break;
      }
      case ImportFormat::kRlhfV: {
        if (!j.contains("text")) return Bad("missing field 'text'");
        json text = j["text"];
        if (text.is_string()) {
          absl::StatusOr<json> inner = ParseJson(j["text"].get<std::string>());
          text = inner.ok() ? std::move(*inner) : json();
        }
        if (!text.is_object()) return Bad("field 'text' is not a JSON object (or a string holding one)");
        MFPO_ASSIGN_OR_RETURN(r.question, RequiredString(text, "question"));
        MFPO_ASSIGN_OR_RETURN(r.chosen, RequiredString(text, "chosen"));
        MFPO_ASSIGN_OR_RETURN(r.rejected, RequiredString(text, "rejected"));
        break;
      }
      case ImportFormat::kRlaifV: {
        MFPO_ASSIGN_OR_RETURN(r.question, RequiredString(j, "question"));
        MFPO_ASSIGN_OR_RETURN(r.chosen, RequiredString(j, "chosen"));
        MFPO_ASSIGN_OR_RETURN(r.rejected, RequiredString(j, "rejected"));
        for (const char* k : {"ds_name", "origin_dataset", "origin_split"})
          if (j.contains(k)) r.extra[k] = j[k];
        break;
      }
      case ImportFormat::kVlFeedback: {
        MFPO_ASSIGN_OR_RETURN(bool kept, ConvertVlFeedback(j, r));
        if (!kept) return std::vector<Converted>{};
        break;
      }
      case ImportFormat::kHuggingFace: {
        if (!j.contains("prompt")) return Bad("missing field 'prompt'");
        absl::StatusOr<std::string> prompt = TextOfRole(j["prompt"], "user");
        if (!prompt.ok()) return Annotate(prompt.status(), "field 'prompt'");
        r.question = WithoutImagePlaceholder(*prompt);
        if (r.question.empty()) return Bad("field 'prompt' has no text");
        for (auto [key, dst] : {std::pair<const char*, std::string*>{"chosen", &r.chosen}, {"rejected", &r.rejected}}) {
          if (!j.contains(key)) return Bad(absl::StrCat("missing field '", key, "'"));
          absl::StatusOr<std::string> text = TextOfRole(j[key], "assistant");
          if (!text.ok()) return Annotate(text.status(), absl::StrCat("field '", key, "'"));
          *dst = *text;
          if (absl::StripAsciiWhitespace(*dst).empty()) return Bad(absl::StrCat("field '", key, "' has no text"));
        }
        if (j.contains("images")) {
          if (!j["images"].is_array()) return Bad("field 'images' must be a list of images");
          if (j["images"].empty()) return Bad("field 'images' is an empty list");
          image = &j["images"][0];
        } else if (j.contains("image")) {
          image = &j["image"];
        } else {
          return Bad("missing field 'images' (or 'image')");
        }
        break;
      }
    }
    if (format_ != ImportFormat::kNative) {
      r.question = WithoutImagePlaceholder(r.question);
      if (r.question.empty()) return Bad("the question has no text besides the <image> placeholder");
    }
    if (r.chosen == r.rejected) return Bad("chosen and rejected are the same text: not a preference");
    if (image == nullptr) {
      if (!j.contains("image")) return Bad("missing field 'image'");
      image = &j["image"];
    }
    MFPO_RETURN_IF_ERROR(ResolveImage(*image, &out));
    std::vector<Converted> v;
    v.push_back(std::move(out));
    return v;
  }

  int64_t dropped_ties = 0;

 private:
  // False when the sample is dropped (all rated completions tie).
  absl::StatusOr<bool> ConvertVlFeedback(const json& j, PreferenceRecord& r) {
    MFPO_ASSIGN_OR_RETURN(r.question, RequiredString(j, "prompt"));
    if (!j.contains("completions") || !j["completions"].is_array())
      return Bad("field 'completions' must be a list");
    double best = 0, worst = 0;
    std::string best_text, worst_text;
    int rated = 0;
    for (size_t i = 0; i < j["completions"].size(); ++i) {
      const json& c = j["completions"][i];
      if (!c.is_object() || !c.contains("response") || !c["response"].is_string())
        return Bad(absl::StrCat("completion ", i, " has no 'response' string"));
      double sum = 0;
      int n = 0;
      if (c.contains("annotations") && c["annotations"].is_object()) {
        for (const auto& aspect : c["annotations"]) {
          const json rating = aspect.is_object() && aspect.contains("Rating") ? aspect["Rating"] : aspect;
          double v;
          if (rating.is_number()) v = rating.get<double>();
          else if (rating.is_string() && absl::SimpleAtod(rating.get<std::string>(), &v)) {
          } else {
            continue;  // "N/A" and the like
          }
          if (!std::isfinite(v)) return Bad(absl::StrCat("completion ", i, " has a non-finite rating"));
          sum += v;
          ++n;
        }
      }
      if (n == 0) continue;
      const std::string text = c["response"].get<std::string>();
      if (absl::StripAsciiWhitespace(text).empty()) return Bad(absl::StrCat("completion ", i, " has an empty response"));
      const double mean = sum / n;
      if (rated == 0 || mean > best) best = mean, best_text = text;
      if (rated == 0 || mean < worst) worst = mean, worst_text = text;
      ++rated;
    }
    if (rated < 2) return Bad("fewer than two rated completions");
    if (best == worst) {
      ++dropped_ties;
      return false;
    }
    r.chosen = best_text;
    r.rejected = worst_text;
    r.extra["chosen_rating"] = best;
    r.extra["rejected_rating"] = worst;
    return true;
  }

  // An image as a path (relative to the input), {"path"} or {"bytes": base64}, a data: URI or
  // bare base64 text. Either way it must decode; bytes are kept for the caller to write.
  absl::Status ResolveImage(const json& v, Converted* out) {
    std::string path, b64;
    if (v.is_object()) {
      if (v.contains("bytes") && v["bytes"].is_string()) b64 = v["bytes"].get<std::string>();
      else if (v.contains("path") && v["path"].is_string()) path = v["path"].get<std::string>();
      else return Bad("image object has neither 'bytes' nor 'path'");
    } else if (v.is_string()) {
      const std::string s = v.get<std::string>();
      const size_t comma = s.find(";base64,");
      if (absl::StartsWith(s, "data:") && comma != std::string::npos) b64 = s.substr(comma + 8);
      else if (LooksLikeBase64(s) && !fs::exists(in_dir_ / s, ec_)) b64 = s;
      else path = s;
    } else {
      return Bad("field 'image' must be a path, an object or base64 text");
    }
    if (!b64.empty()) {
      std::string bytes;
      if (!absl::Base64Unescape(b64, &bytes) || bytes.empty()) return Bad("image bytes are not valid base64");
      out->extension = ExtensionFor(bytes);
      if (out->extension == nullptr) return Bad("image bytes are not a PNG, JPEG or WebP file");
      MFPO_RETURN_IF_ERROR(DecodeImage(bytes, "image bytes", limits_).status());
      out->image_bytes = std::move(bytes);
      return absl::OkStatus();
    }
    if (path.empty()) return Bad("field 'image' is empty");
    const fs::path p = fs::path(path).is_absolute() ? fs::path(path) : in_dir_ / path;
    // ReadImageFile refuses what is missing, not a file, too large or undecodable, by name.
    MFPO_RETURN_IF_ERROR(ReadImageFile(p.string(), limits_).status());
    out->record.image = fs::absolute(p, ec_).lexically_normal().string();
    return absl::OkStatus();
  }

  ImportFormat format_;
  fs::path in_dir_;
  ImageLimits limits_;
  std::error_code ec_;
};

// Removes what an import run wrote when it cannot finish: nothing half-done stays behind.
class ImportOutputs {
 public:
  ~ImportOutputs() {
    if (committed_) return;
    std::error_code ec;
    for (const auto& f : files_) fs::remove(f, ec);
    if (made_dir_) fs::remove(dir_, ec);  // only if empty
  }
  void Add(const fs::path& f) { files_.push_back(f); }
  void SetImageDir(const fs::path& dir, bool made) { dir_ = dir, made_dir_ = made; }
  void Commit() { committed_ = true; }

 private:
  std::vector<fs::path> files_;
  fs::path dir_;
  bool made_dir_ = false, committed_ = false;
};

}  // namespace

absl::StatusOr<PreferenceRecord> ParsePreferenceRecord(const json& j) {
  if (!j.is_object()) return Bad("record is not a JSON object");
  PreferenceRecord r;
  MFPO_ASSIGN_OR_RETURN(r.id, RequiredString(j, "id"));
  MFPO_ASSIGN_OR_RETURN(r.image, RequiredString(j, "image"));
  MFPO_ASSIGN_OR_RETURN(r.question, RequiredString(j, "question"));
  MFPO_ASSIGN_OR_RETURN(r.chosen, RequiredString(j, "chosen"));
  MFPO_ASSIGN_OR_RETURN(r.rejected, RequiredString(j, "rejected"));
  if (j.contains("rejected_image")) {
    MFPO_ASSIGN_OR_RETURN(r.rejected_image, RequiredString(j, "rejected_image"));
  }
  if (j.contains("regions")) {
    if (!j["regions"].is_array()) return Bad("field 'regions' must be a list");
    for (size_t i = 0; i < j["regions"].size(); ++i) {
      const json& g = j["regions"][i];
      PreferenceRegion region;
      if (!g.is_object() || (!g.contains("box") && !g.contains("polygon")))
        return Bad(absl::StrCat("regions[", i, "] needs a box [x0, y0, x1, y1] or a polygon [[x, y], ...]"));
      if (g.contains("polygon")) {
        const json& poly = g["polygon"];
        if (!poly.is_array() || poly.size() < 3)
          return Bad(absl::StrCat("regions[", i, "].polygon must be a list of at least 3 [x, y] points"));
        for (size_t k = 0; k < poly.size(); ++k) {
          if (!poly[k].is_array() || poly[k].size() != 2 || !IsCoordinate(poly[k][0]) || !IsCoordinate(poly[k][1]))
            return Bad(absl::StrCat("regions[", i, "].polygon[", k, "] must be [x, y] with |x|, |y| <= ", kMaxCoordinate));
          region.polygon.push_back({static_cast<int>(poly[k][0].get<double>()), static_cast<int>(poly[k][1].get<double>())});
        }
        region.box = {region.polygon[0][0], region.polygon[0][1], region.polygon[0][0], region.polygon[0][1]};
        for (const auto& pt : region.polygon) {
          region.box[0] = std::min(region.box[0], pt[0]);
          region.box[1] = std::min(region.box[1], pt[1]);
          region.box[2] = std::max(region.box[2], pt[0] + 1);
          region.box[3] = std::max(region.box[3], pt[1] + 1);
        }
      } else {
        if (!g["box"].is_array() || g["box"].size() != 4)
          return Bad(absl::StrCat("regions[", i, "].box must be [x0, y0, x1, y1]"));
        for (int k = 0; k < 4; ++k) {
          if (!IsCoordinate(g["box"][k]))
            return Bad(absl::StrCat("regions[", i, "].box must hold numbers with absolute value <= ", kMaxCoordinate));
          region.box[k] = static_cast<int>(g["box"][k].get<double>());
        }
      }
      if (region.box[2] <= region.box[0] || region.box[3] <= region.box[1])
        return Bad(absl::StrCat("regions[", i, "].box is empty or inverted"));
      if (g.contains("label") && g["label"].is_string()) region.label = g["label"].get<std::string>();
      r.regions.push_back(region);
    }
  }
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!std::set<std::string>{"id", "image", "question", "chosen", "rejected", "rejected_image", "regions"}.count(it.key()))
      r.extra[it.key()] = it.value();
  return r;
}

json PreferenceRecordToJson(const PreferenceRecord& r) {
  json j = r.extra;
  j["id"] = r.id;
  j["image"] = r.image;
  j["question"] = r.question;
  j["chosen"] = r.chosen;
  j["rejected"] = r.rejected;
  if (!r.rejected_image.empty()) j["rejected_image"] = r.rejected_image;
  if (!r.regions.empty()) {
    json regions = json::array();
    for (const auto& g : r.regions) {
      json region = {{"label", g.label}, {"box", g.box}};
      if (!g.polygon.empty()) region["polygon"] = g.polygon;
      regions.push_back(region);
    }
    j["regions"] = regions;
  }
  return j;
}

absl::StatusOr<ImportFormat> ParseImportFormat(const std::string& name) {
  if (name == "native") return ImportFormat::kNative;
  if (name == "rlhf-v") return ImportFormat::kRlhfV;
  if (name == "rlaif-v") return ImportFormat::kRlaifV;
  if (name == "vlfeedback") return ImportFormat::kVlFeedback;
  if (name == "hf") return ImportFormat::kHuggingFace;
  return Bad(absl::StrCat("--format: '", name, "' is not one of native, rlhf-v, rlaif-v, vlfeedback, hf"));
}

std::string RecordKey(const std::string& id) {
  std::string safe;
  for (char c : id) safe.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '_');
  if (safe.size() > 80) safe.resize(80);
  return absl::StrFormat("%s-%08x", safe, static_cast<uint32_t>(SampleSeed(0, id)));
}

absl::StatusOr<ImportReport> ImportPreferences(ImportFormat format, const std::string& in_path,
                                               const std::string& out_path, const ImageLimits& limits) {
  MFPO_RETURN_IF_ERROR(CheckRegularFile(in_path, "input"));
  std::error_code ec;
  if (fs::is_directory(out_path, ec))
    return absl::InvalidArgumentError(absl::StrCat(out_path, ": is a directory; give the output JSONL file"));
  if (fs::equivalent(in_path, out_path, ec))
    return absl::InvalidArgumentError(absl::StrCat(out_path, ": is the input file; write the output elsewhere"));
  MFPO_RETURN_IF_ERROR(ResolveOutputFile(out_path).status());  // not a device / FIFO / directory
  std::ifstream in(in_path);
  if (!in) return absl::NotFoundError(absl::StrCat(in_path, ": cannot open"));
  const fs::path out_dir = fs::absolute(out_path, ec).parent_path();
  const std::string stem = fs::path(out_path).stem().string();
  const fs::path image_dir = out_dir / (stem + "_images");
  ImportOutputs outputs;  // removed again unless the import completes
  const std::string tmp = out_path + ".tmp";
  outputs.Add(tmp);
  std::string text;  // the output, written once at the end
  Importer importer(format, fs::absolute(in_path, ec).parent_path(), limits);
  ImportReport report;
  std::set<std::string> ids;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    absl::StatusOr<json> j = ParseJson(line);
    if (!j.ok() || !j->is_object()) {
      report.errors.push_back({n, absl::StrCat("malformed JSON (", j.ok() ? "not an object on one line" : j.status().message(), ")")});
      continue;
    }
    absl::StatusOr<std::vector<Converted>> records = CatchAll("line", [&] { return importer.Convert(*j, n, stem); });
    if (!records.ok()) {
      report.errors.push_back({n, std::string(records.status().message())});
      continue;
    }
    for (Converted& c : *records) {
      PreferenceRecord& r = c.record;
      if (!ids.insert(r.id).second) {
        report.errors.push_back({n, absl::StrCat("duplicate id '", r.id, "'")});
        continue;
      }
      if (!c.image_bytes.empty()) {
        if (!fs::is_directory(image_dir, ec)) {
          fs::create_directories(image_dir, ec);
          if (ec) return absl::InternalError(absl::StrCat(image_dir.string(), ": ", ec.message()));
          outputs.SetImageDir(image_dir, true);
        }
        const fs::path file = image_dir / (RecordKey(r.id) + c.extension);
        absl::Status written = WriteFileAtomically(file.string(), c.image_bytes);
        if (!written.ok()) {
          if (IsStorageWideError(written)) return written;
          report.errors.push_back({n, std::string(written.message())});
          continue;
        }
        outputs.Add(file);
        r.image = fs::relative(file, out_dir, ec).string();
      }
      text += PreferenceRecordToJson(r).dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
      ++report.imported;
    }
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(in_path, ": read failed"));
  report.dropped_ties = importer.dropped_ties;
  MFPO_RETURN_IF_ERROR(WriteFileAtomically(out_path, text));
  outputs.Commit();
  return report;
}

}  // namespace mfpo
