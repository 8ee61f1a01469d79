// Preference data: the native JSONL record (docs/preference-format.md) and importers from the
// layouts people already have: RLHF-V, RLAIF-V, VLFeedback and Hugging Face preference sets
// exported to JSONL ({images, prompt, chosen, rejected}).
#ifndef MFPO_DATAGEN_PREFERENCE_FORMATS_H_
#define MFPO_DATAGEN_PREFERENCE_FORMATS_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/image.h"

namespace mfpo {

struct PreferenceRegion {
  std::string label;
  std::array<int, 4> box = {0, 0, 0, 0};  // x0, y0, x1, y1 in pixels (the polygon's bounds if one is given)
  std::vector<std::array<int, 2>> polygon;  // optional outline [[x, y], ...] (>= 3 points)
};

struct PreferenceRecord {
  std::string id;
  std::string image;  // path, relative to the manifest's directory or absolute
  std::string question, chosen, rejected;
  std::vector<PreferenceRegion> regions;  // optional
  std::string rejected_image;             // optional: a prepared perturbed image
  nlohmann::json extra = nlohmann::json::object();  // other fields, kept (type, answer, ...)
};

// Validates one native record (field names and types); errors name the field.
absl::StatusOr<PreferenceRecord> ParsePreferenceRecord(const nlohmann::json& j);
nlohmann::json PreferenceRecordToJson(const PreferenceRecord& r);

// The file-safe key of a record id, used to name the files made for it: the id with characters
// other than [A-Za-z0-9_-] replaced by '_', cut to 80 bytes, plus a hash of the whole id (ids
// may differ only in characters the replacement maps together, or after byte 80).
std::string RecordKey(const std::string& id);

enum class ImportFormat { kNative, kRlhfV, kRlaifV, kVlFeedback, kHuggingFace };
absl::StatusOr<ImportFormat> ParseImportFormat(const std::string& name);

struct ImportError {
  int line = 0;
  std::string reason;
};
struct ImportReport {
  int64_t imported = 0;
  int64_t dropped_ties = 0;  // VLFeedback samples whose completions all rate the same
  std::vector<ImportError> errors;
};

// Reads `in_path` (JSONL) in `format`, writes native records to `out_path` (JSONL). Every image
// is decoded (within `limits`). Images given as bytes (base64) are written to
// `<out_path without .jsonl>_images/<RecordKey(id)>.<ext>`; image files (relative paths resolve
// against the input's directory) are written as absolute paths. A bad line (malformed JSON,
// missing field, non-finite rating, missing or undecodable image, duplicate id) is recorded in
// the report and skipped; the other lines still import. Only failures of the output (disk full,
// not writable) are returned as errors, and then nothing of this run is left behind.
absl::StatusOr<ImportReport> ImportPreferences(ImportFormat format, const std::string& in_path,
                                               const std::string& out_path, const ImageLimits& limits = {});

}  // namespace mfpo

#endif  // MFPO_DATAGEN_PREFERENCE_FORMATS_H_
