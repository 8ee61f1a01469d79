#include "common/jsonl.h"

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace mfpo {

absl::Status ReadJsonl(const std::string& path,
                       const std::function<absl::Status(int, const nlohmann::json&)>& fn,
                       const std::function<void(int, const std::string&)>& on_error) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      const std::string why = j.is_discarded() ? "not valid JSON" : "not a JSON object";
      if (on_error) {
        on_error(n, why);
        continue;
      }
      return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": ", why));
    }
    absl::Status s = fn(n, j);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(path, ":", n, ": ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status ReadJsonFile(const std::string& path, nlohmann::json* out) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  *out = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (out->is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  return absl::OkStatus();
}

}  // namespace mfpo
