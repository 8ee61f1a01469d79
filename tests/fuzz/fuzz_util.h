// Helpers shared by the fuzz targets (tests/fuzz/README.md).
#ifndef MFPO_TESTS_FUZZ_FUZZ_UTIL_H_
#define MFPO_TESTS_FUZZ_FUZZ_UTIL_H_

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace mfpo::fuzz {

// An anonymous in-memory file (memfd) holding the fuzz input, reachable by path as
// /proc/self/fd/N for library code that opens a path. Nothing touches the file system; the
// file disappears when this object is destroyed.
class MemFile {
 public:
  MemFile(const uint8_t* data, size_t size) {
    fd_ = ::memfd_create("mfpo-fuzz", MFD_CLOEXEC);
    if (fd_ < 0) return;
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::write(fd_, data + done, size - done);
      if (n <= 0) {
        ::close(fd_);
        fd_ = -1;
        return;
      }
      done += static_cast<size_t>(n);
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;

  bool ok() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace mfpo::fuzz

#endif  // MFPO_TESTS_FUZZ_FUZZ_UTIL_H_
