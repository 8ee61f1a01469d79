// safetensors reading (mmap, zero-copy, validated) and writing (atomic, optionally sharded).
//
// Format: u64 little-endian header length N, N bytes of JSON
// `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`, then
// the raw little-endian data; offsets are relative to the first byte after the header.
#ifndef MFPO_COMMON_SAFETENSORS_H_
#define MFPO_COMMON_SAFETENSORS_H_

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mfpo {

// The safetensors dtype names this project reads and writes.
enum class StDtype { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

absl::StatusOr<StDtype> ParseStDtype(const std::string& name);
const char* StDtypeName(StDtype dtype);
int64_t StDtypeSize(StDtype dtype);
torch::ScalarType ToScalarType(StDtype dtype);
absl::StatusOr<StDtype> FromScalarType(torch::ScalarType type);

struct TensorEntry {
  std::string name;
  StDtype dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // relative to the data section
  uint64_t end = 0;
  int64_t numel() const;
};

// Largest JSON header accepted (the reference implementation's limit).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100u << 20;

// One memory-mapped safetensors file. The header is validated completely at Open(): every
// malformed case (truncated file, oversized or non-JSON header, unknown dtype, offsets out of
// range, byte size not matching the shape, overlapping tensors) is an error naming the file
// and, where there is one, the tensor.
//
// The file is mapped private and writable: tensors can adopt their bytes in place (Adopt), so a
// checkpoint loads with no copy, shares the page cache with other readers, and a write to an
// adopted tensor (an optimiser step) copies just that page. The file itself is never modified.
// Writers in this project replace files by rename, never in place, so a mapping stays valid.
class SafetensorsFile : public std::enable_shared_from_this<SafetensorsFile> {
 public:
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorEntry* Find(const std::string& name) const;

  // A tensor viewing the mapped bytes (no copy; valid while this file is open; read-only).
  torch::Tensor View(const TensorEntry& entry) const;
  // Copies the tensor into `dst` (same shape; dtype converted). Same-dtype CPU destinations are
  // filled with pread(); conversions read the mapping and then drop its pages from this
  // process's resident set. Either way loading a checkpoint never holds the file and the model
  // in memory at once.
  absl::Status CopyInto(const TensorEntry& entry, torch::Tensor& dst) const;
  // Zero-copy load: when `dst` is a contiguous CPU tensor of the entry's dtype and shape, points
  // its storage at the mapped bytes (pre-faulted from the page cache; the tensor keeps this file
  // open) and returns true. Returns false, changing nothing, when a copy is needed instead.
  // `dst` must not require grad tracking of the swap (call under NoGradGuard for parameters).
  bool Adopt(const TensorEntry& entry, torch::Tensor& dst) const;
  // A new owning tensor of `dtype` with the entry's contents.
  absl::StatusOr<torch::Tensor> Load(const std::string& name, torch::ScalarType dtype) const;

 private:
  SafetensorsFile() = default;
  uint8_t* MutableData(const TensorEntry& entry) const;
  void ReleasePages(const TensorEntry& entry) const;

  std::string path_;
  int fd_ = -1;
  uint8_t* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // map_ + 8 + header length
  std::vector<TensorEntry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint directory: either one `model.safetensors` or shards named by
// `model.safetensors.index.json`'s weight_map. Tensors are looked up by name across shards.
class SafetensorsCheckpoint {
 public:
  static absl::StatusOr<SafetensorsCheckpoint> Open(const std::string& dir);

  struct Located {
    const SafetensorsFile* file;
    const TensorEntry* entry;
  };
  // All tensor names in the checkpoint, in file order.
  const std::vector<std::string>& names() const { return names_; }
  const Located* Find(const std::string& name) const;
  uint64_t total_bytes() const { return total_bytes_; }
  std::vector<std::string> files() const;

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::vector<std::string> names_;
  std::map<std::string, Located> by_name_;
  uint64_t total_bytes_ = 0;
};

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Writes one safetensors file atomically (to `path + ".tmp"`, then rename). Tensors are written
// contiguous, in the given order, in their own dtype; the header is padded to 8 bytes.
absl::Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata = {});

struct CheckpointWriteOptions {
  // Shards above this many bytes into model-0000i-of-0000n.safetensors plus
  // model.safetensors.index.json, as Hugging Face's save_pretrained does.
  uint64_t max_shard_bytes = 5ull << 30;
  // Converts floating-point tensors to this dtype when set (e.g. kBFloat16); others untouched.
  std::optional<torch::ScalarType> dtype;
};

// Writes `tensors` as a Hugging Face checkpoint into `dir` (which must exist).
absl::Status WriteCheckpoint(const std::string& dir, const NamedTensors& tensors,
                             const CheckpointWriteOptions& options = {});

}  // namespace mfpo

#endif  // MFPO_COMMON_SAFETENSORS_H_
