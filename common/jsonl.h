// JSON and line-oriented JSON reading with errors that name the file and line.
//
// Every JSON document read from user input goes through ParseJson, which refuses nesting deeper
// than kMaxJsonDepth before the parser sees it: nlohmann's copy, dump and comparison recurse,
// so a line of 100,000 '[' would otherwise overflow the stack far from where it was read.
#ifndef MFPO_COMMON_JSONL_H_
#define MFPO_COMMON_JSONL_H_

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mfpo {

inline constexpr int kMaxJsonDepth = 64;

// Parses one JSON document. INVALID_ARGUMENT "not valid JSON" or "nested deeper than 64
// levels" (no file name: callers add where it came from).
absl::StatusOr<nlohmann::json> ParseJson(absl::string_view text, int max_depth = kMaxJsonDepth);

// Calls `fn(line_number, object)` for every non-blank line of `path`. A line that is not a JSON
// object is passed to `on_error(line_number, reason)` when given (and reading continues), and
// otherwise ends reading with an INVALID_ARGUMENT naming `path:line`. An error returned by `fn`
// is prefixed with `path:line` and ends reading. `path` must be a regular file.
absl::Status ReadJsonl(const std::string& path,
                       const std::function<absl::Status(int, const nlohmann::json&)>& fn,
                       const std::function<void(int, const std::string&)>& on_error = nullptr);

// Reads a whole JSON document (a regular file).
absl::Status ReadJsonFile(const std::string& path, nlohmann::json* out);

}  // namespace mfpo

#endif  // MFPO_COMMON_JSONL_H_
