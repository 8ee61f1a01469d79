#include "common/file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace mfpo {

absl::Status ErrnoStatus(int err, const std::string& path, const std::string& action) {
  const std::string message = absl::StrCat(path, ": ", action, ": ", std::strerror(err));
  switch (err) {
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return absl::ResourceExhaustedError(message);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(message);
    case ENOENT:
      return absl::NotFoundError(message);
    case EISDIR:
    case ENOTDIR:
    case ENAMETOOLONG:
    case EEXIST:
    case ELOOP:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

bool IsStorageWideError(const absl::Status& status) {
  return absl::IsResourceExhausted(status) || absl::IsPermissionDenied(status) || absl::IsInternal(status);
}

namespace {

const char* FileKind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISREG(mode)) return "a regular file";
  return "not a regular file";
}

}  // namespace

absl::Status CheckRegularFile(const std::string& path, const std::string& what) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat("no ", what, " path given (empty)"));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, path, absl::StrCat("cannot open ", what));
  if (!S_ISREG(st.st_mode))
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what, " is ", FileKind(st.st_mode), ", not a file"));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path, const std::string& what, int64_t max_bytes) {
  if (absl::Status s = CheckRegularFile(path, what); !s.ok()) return s;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return ErrnoStatus(errno, path, absl::StrCat("cannot open ", what));
  std::string out;
  struct stat st;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    if (st.st_size > max_bytes) {
      ::close(fd);
      return absl::ResourceExhaustedError(
          absl::StrCat(path, ": ", what, " is ", st.st_size, " bytes, above the limit of ", max_bytes));
    }
    if (st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  }
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return ErrnoStatus(err, path, absl::StrCat("cannot read ", what));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (static_cast<int64_t>(out.size()) > max_bytes) {  // the file grew while being read
      ::close(fd);
      return absl::ResourceExhaustedError(absl::StrCat(path, ": ", what, " is above the limit of ", max_bytes, " bytes"));
    }
  }
  ::close(fd);
  return out;
}

absl::StatusOr<std::unique_ptr<DirectoryLock>> DirectoryLock::Acquire(const std::string& dir) {
  const std::string path = dir + "/.lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, path, "cannot create the lock file");
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK)
      return absl::FailedPreconditionError(
          absl::StrCat(dir, ": another process is writing this directory (", path, " is locked); wait for it or use another"));
    return ErrnoStatus(err, path, "cannot lock");
  }
  return std::unique_ptr<DirectoryLock>(new DirectoryLock(fd));
}

DirectoryLock::~DirectoryLock() { ::close(fd_); }  // closing releases the lock

absl::Status CheckNewOutputDir(const std::string& dir, bool overwrite) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return absl::OkStatus();
  if (!S_ISDIR(st.st_mode))
    return absl::FailedPreconditionError(absl::StrCat(dir, ": exists and is ", FileKind(st.st_mode), ", not a directory"));
  if (overwrite) return absl::OkStatus();
  DIR* d = ::opendir(dir.c_str());
  bool empty = true;
  if (d != nullptr) {
    while (dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) empty = false;
    ::closedir(d);
  }
  if (empty) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(dir, ": directory is not empty; choose a new --out or pass --overwrite"));
}

absl::Status WriteDirectoryWhole(const std::string& dir, const std::function<absl::Status(const std::string&)>& write) {
  struct stat st;
  const bool fresh = ::stat(dir.c_str(), &st) != 0 || CheckNewOutputDir(dir, /*overwrite=*/false).ok();
  if (!fresh) return write(dir);
  const std::string tmp = absl::StrCat(dir, ".tmp-", ::getpid());
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  absl::Status written = write(tmp);
  if (written.ok()) {
    ::rmdir(dir.c_str());  // empty, if it exists
    if (std::rename(tmp.c_str(), dir.c_str()) != 0) written = ErrnoStatus(errno, dir, "cannot rename");
  }
  if (!written.ok()) std::filesystem::remove_all(tmp, ec);
  return written;
}

absl::StatusOr<std::string> ResolveOutputFile(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("no output path given (empty)");
  std::string target = path;
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    char* real = ::realpath(path.c_str(), nullptr);  // the link's target when it exists
    if (real != nullptr) {
      target = real;
      std::free(real);
    } else {
      return absl::FailedPreconditionError(absl::StrCat(path, ": a symbolic link to nothing that exists"));
    }
  }
  if (::stat(target.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": is ", FileKind(st.st_mode), "; refusing to replace it with a file"));
  return target;
}

namespace {

// This machine's name as it appears in temporary file names (no '.' or '/').
const std::string& HostTag() {
  static const std::string* tag = [] {
    char buf[256] = {0};
    if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == 0) std::strcpy(buf, "host");
    auto* s = new std::string(buf);
    for (char& c : *s)
      if (c == '.' || c == '/') c = '_';
    return s;
  }();
  return *tag;
}

std::string TemporaryName(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(path, ".tmp.", HostTag(), "-", ::getpid(), ".", counter.fetch_add(1));
}

// Closes `fd`, then renames `tmp` to `target`; removes `tmp` when anything failed (`status`
// included).
absl::Status Finish(int fd, const std::string& tmp, const std::string& target, absl::Status status) {
  if (::close(fd) != 0 && status.ok()) status = ErrnoStatus(errno, tmp, "write failed");
  if (status.ok() && std::rename(tmp.c_str(), target.c_str()) != 0) status = ErrnoStatus(errno, target, "cannot replace");
  if (!status.ok()) ::unlink(tmp.c_str());
  return status;
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes) {
  absl::StatusOr<std::string> target = ResolveOutputFile(path);
  if (!target.ok()) return target.status();
  const std::string tmp = TemporaryName(*target);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, tmp, "cannot create");
  size_t done = 0;
  absl::Status status;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      status = ErrnoStatus(n == 0 ? EIO : errno, tmp, "write failed");
      break;
    }
    done += static_cast<size_t>(n);
  }
  return Finish(fd, tmp, *target, status);
}

absl::Status WriteFileStreamed(const std::string& path, const std::function<absl::Status(const PieceWriter&)>& produce) {
  absl::StatusOr<std::string> target = ResolveOutputFile(path);
  if (!target.ok()) return target.status();
  const std::string tmp = TemporaryName(*target);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, tmp, "cannot create");
  int error = 0;
  const PieceWriter write = [&](const void* data, size_t n) -> size_t {
    const char* p = static_cast<const char*>(data);
    for (size_t done = 0; error == 0 && done < n;) {
      const ssize_t k = ::write(fd, p + done, n - done);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) error = k == 0 ? EIO : errno;
      else done += static_cast<size_t>(k);
    }
    return n;
  };
  absl::Status status = produce(write);
  if (status.ok() && error != 0) status = ErrnoStatus(error, tmp, "write failed");
  if (status.ok() && ::fsync(fd) != 0) status = ErrnoStatus(errno, tmp, "fsync failed");
  return Finish(fd, tmp, *target, status);
}

int RemoveStaleTemporaryFiles(const std::string& dir, double min_age_seconds) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  int removed = 0;
  const time_t now = ::time(nullptr);
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    const size_t at = name.rfind(".tmp.");
    if (at == std::string::npos) continue;
    // <name>.tmp.<host>-<pid>.<n>
    const std::string rest = name.substr(at + 5);
    const size_t dot = rest.rfind('.'), dash = rest.rfind('-', dot);
    long pid = 0;
    if (dot == std::string::npos || dash == std::string::npos || !absl::SimpleAtoi(rest.substr(dash + 1, dot - dash - 1), &pid) ||
        pid <= 0)
      continue;
    const std::string full = dir + "/" + name;
    struct stat st;
    if (::lstat(full.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    const bool ours = rest.substr(0, dash) == HostTag();
    const bool dead = ours && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
    // Another machine's file (a shared volume) only once it is old: its writer may be alive.
    if (!dead && !(!ours && difftime(now, st.st_mtime) >= min_age_seconds)) continue;
    if (::unlink(full.c_str()) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

}  // namespace mfpo
