// Whole-file reads with errors that name the file.
#ifndef MFPO_COMMON_FILE_UTIL_H_
#define MFPO_COMMON_FILE_UTIL_H_

#include <string>

#include "absl/status/statusor.h"

namespace mfpo {

// The bytes of `path`; NOT_FOUND "<path>: cannot open <what>" when it cannot be opened.
absl::StatusOr<std::string> ReadFileToString(const std::string& path, const std::string& what = "file");

// Writes `bytes` to `path` atomically: to a unique temporary name in the same directory, then
// renamed over `path`. Readers, and a rerun after a crash, see the old file or the whole new one,
// never a part. (No fsync: atomic against process crashes, not durable against power loss.)
absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes);

}  // namespace mfpo

#endif  // MFPO_COMMON_FILE_UTIL_H_
