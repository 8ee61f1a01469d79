#include "common/jsonl.h"

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"

namespace mfpo {

absl::StatusOr<nlohmann::json> ParseJson(absl::string_view text, int max_depth) {
  // Bracket depth outside strings; the parser rejects what is unbalanced or malformed.
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth)
        return absl::InvalidArgumentError(absl::StrCat("JSON nested deeper than ", max_depth, " levels"));
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  return j;
}

absl::Status ReadJsonl(const std::string& path,
                       const std::function<absl::Status(int, const nlohmann::json&)>& fn,
                       const std::function<void(int, const std::string&)>& on_error) {
  if (absl::Status s = CheckRegularFile(path); !s.ok()) return s;
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    absl::StatusOr<nlohmann::json> j = ParseJson(line);
    if (!j.ok() || !j->is_object()) {
      const std::string why = !j.ok() ? std::string(j.status().message()) : "not a JSON object";
      if (on_error) {
        on_error(n, why);
        continue;
      }
      return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": ", why));
    }
    absl::Status s = fn(n, *j);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(path, ":", n, ": ", s.message()));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return absl::OkStatus();
}

absl::Status ReadJsonFile(const std::string& path, nlohmann::json* out) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<nlohmann::json> j = ParseJson(*text);
  if (!j.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", j.status().message()));
  *out = std::move(*j);
  return absl::OkStatus();
}

}  // namespace mfpo
