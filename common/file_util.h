// Whole-file reads with errors that name the file.
#ifndef MFPO_COMMON_FILE_UTIL_H_
#define MFPO_COMMON_FILE_UTIL_H_

#include <string>

#include "absl/status/statusor.h"

namespace mfpo {

// The bytes of `path`; NOT_FOUND "<path>: cannot open <what>" when it cannot be opened.
absl::StatusOr<std::string> ReadFileToString(const std::string& path, const std::string& what = "file");

}  // namespace mfpo

#endif  // MFPO_COMMON_FILE_UTIL_H_
