// Whole-file reads and atomic writes with errors that name the file and say what the OS said.
#ifndef MFPO_COMMON_FILE_UTIL_H_
#define MFPO_COMMON_FILE_UTIL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mfpo {

// The status for an OS error `err` (errno) on `path`: "<path>: <action>: <strerror>", with a code
// that says what kind of failure it is, so callers can tell a record's problem from a shard's:
//   ENOSPC, EDQUOT, EFBIG       -> RESOURCE_EXHAUSTED (disk full: every later write fails too)
//   EACCES, EPERM, EROFS        -> PERMISSION_DENIED
//   ENOENT                      -> NOT_FOUND
//   EISDIR, ENOTDIR, ENAMETOOLONG, EEXIST, ELOOP -> FAILED_PRECONDITION (this path is blocked)
//   EIO and anything else       -> INTERNAL
absl::Status ErrnoStatus(int err, const std::string& path, const std::string& action);

// True for errors that concern the whole output location rather than one path in it (disk full,
// no permission, read-only file system, I/O error): a batch job should stop on them.
bool IsStorageWideError(const absl::Status& status);

// OK when `path` names a regular file (following symlinks). A directory, FIFO, socket or device
// is refused (INVALID_ARGUMENT "<path>: <what> is a directory, not a file"), so that reading it
// can neither block forever (FIFO, /dev/zero) nor read as empty (/dev/null).
absl::Status CheckRegularFile(const std::string& path, const std::string& what = "file");

// The bytes of `path` (a regular file, see CheckRegularFile). NOT_FOUND "<path>: cannot open
// <what>: ..." when it does not exist.
absl::StatusOr<std::string> ReadFileToString(const std::string& path, const std::string& what = "file");

// Writes `bytes` to `path` atomically: to a unique temporary name in the same directory, then
// renamed over `path`. Readers, and a rerun after a crash, see the old file or the whole new one,
// never a part; on failure the temporary file is removed and the status comes from ErrnoStatus.
// (No fsync: atomic against process crashes, not durable against power loss.)
absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes);

}  // namespace mfpo

#endif  // MFPO_COMMON_FILE_UTIL_H_
