// Line-oriented JSON reading with errors that name the file and line.
#ifndef MFPO_COMMON_JSONL_H_
#define MFPO_COMMON_JSONL_H_

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"

namespace mfpo {

// Calls `fn(line_number, object)` for every non-blank line of `path`. A line that is not a JSON
// object is passed to `on_error(line_number, reason)` when given (and reading continues), and
// otherwise ends reading with an INVALID_ARGUMENT naming `path:line`. An error returned by `fn`
// is prefixed with `path:line` and ends reading.
absl::Status ReadJsonl(const std::string& path,
                       const std::function<absl::Status(int, const nlohmann::json&)>& fn,
                       const std::function<void(int, const std::string&)>& on_error = nullptr);

// Reads a whole JSON document.
absl::Status ReadJsonFile(const std::string& path, nlohmann::json* out);

}  // namespace mfpo

#endif  // MFPO_COMMON_JSONL_H_
