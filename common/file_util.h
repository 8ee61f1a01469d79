// Whole-file reads and atomic writes with errors that name the file and say what the OS said.
#ifndef MFPO_COMMON_FILE_UTIL_H_
#define MFPO_COMMON_FILE_UTIL_H_

#include <cstdint>
#include <functional>
#include <memory>
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
// <what>: ..." when it does not exist; RESOURCE_EXHAUSTED, before anything is read, when it is
// larger than `max_bytes`.
absl::StatusOr<std::string> ReadFileToString(const std::string& path, const std::string& what = "file",
                                             int64_t max_bytes = int64_t{1} << 30);

// An exclusive lock on `<dir>/.lock` (flock), held until destroyed: two processes writing one
// output directory would interleave their files. FAILED_PRECONDITION when another process holds
// it. The lock file stays; the lock dies with the process, even on kill -9.
class DirectoryLock {
 public:
  static absl::StatusOr<std::unique_ptr<DirectoryLock>> Acquire(const std::string& dir);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

 private:
  explicit DirectoryLock(int fd) : fd_(fd) {}
  int fd_;
};

// OK when `dir` does not exist or is an empty directory, or `overwrite` is set and it is a
// directory. Otherwise FAILED_PRECONDITION naming it and the --overwrite flag: commands that
// write a directory of outputs never mix them silently with what is already there.
absl::Status CheckNewOutputDir(const std::string& dir, bool overwrite);

// Fills the output directory `dir` with `write(target)`. A new (missing or empty) `dir` is
// written under `<dir>.tmp-<pid>` and renamed when `write` succeeds, so that a failed or killed
// run leaves nothing that would block the same command's rerun; an existing non-empty `dir`
// (the caller allowed --overwrite) is written in place.
absl::Status WriteDirectoryWhole(const std::string& dir, const std::function<absl::Status(const std::string&)>& write);

// Where a write to `path` must land: `path` itself, or the file a symlink there points to (the
// link is written through, not replaced). FAILED_PRECONDITION when that exists and is not a
// regular file (a directory, FIFO or device is never replaced by a file: `--out /dev/null` must
// not delete the device).
absl::StatusOr<std::string> ResolveOutputFile(const std::string& path);

// Writes `bytes` to `path` (see ResolveOutputFile) atomically: to a unique temporary name
// `<path>.tmp.<host>-<pid>.<n>` in the same directory, then renamed over `path`. Readers, and a rerun
// after a crash, see the old file or the whole new one, never a part; on failure the temporary
// file is removed and the status comes from ErrnoStatus. (No fsync: atomic against process
// crashes, not durable against power loss.)
absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes);

// The same for content produced in pieces (too large to hold twice in memory, e.g. optimizer
// state): `produce(write)` calls `write(data, n)` for each piece. `write` always reports success
// to the producer, so that a library that throws on short writes (from a destructor, even) never
// sees one; the first OS error is returned after `produce` finishes, and nothing is renamed.
// The file is fsync'ed before the rename (these are checkpoints).
using PieceWriter = std::function<size_t(const void*, size_t)>;
absl::Status WriteFileStreamed(const std::string& path, const std::function<absl::Status(const PieceWriter&)>& produce);

// Removes the temporary files of WriteFileAtomically that a killed process left in `dir`: this
// machine's whose process is gone, and another machine's (a shared volume) older than
// `min_age_seconds`. Returns how many were removed.
int RemoveStaleTemporaryFiles(const std::string& dir, double min_age_seconds = 3600);

}  // namespace mfpo

#endif  // MFPO_COMMON_FILE_UTIL_H_
