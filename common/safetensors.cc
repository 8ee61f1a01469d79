#include "common/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "common/file_util.h"
#include "common/jsonl.h"
#include "common/torch_seam.h"

namespace mfpo {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct DtypeInfo {
  StDtype dtype;
  const char* name;
  int64_t size;
  torch::ScalarType scalar;
};

constexpr DtypeInfo kDtypes[] = {
    {StDtype::kF64, "F64", 8, torch::kFloat64},  {StDtype::kF32, "F32", 4, torch::kFloat32},
    {StDtype::kF16, "F16", 2, torch::kFloat16},  {StDtype::kBF16, "BF16", 2, torch::kBFloat16},
    {StDtype::kI64, "I64", 8, torch::kInt64},    {StDtype::kI32, "I32", 4, torch::kInt32},
    {StDtype::kI16, "I16", 2, torch::kInt16},    {StDtype::kI8, "I8", 1, torch::kInt8},
    {StDtype::kU8, "U8", 1, torch::kUInt8},      {StDtype::kBool, "BOOL", 1, torch::kBool},
};

const DtypeInfo& Info(StDtype d) {
  for (const auto& i : kDtypes)
    if (i.dtype == d) return i;
  return kDtypes[0];  // unreachable: every enumerator is in the table
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status ParseEntry(const std::string& name, const json& v, uint64_t data_size,
                        TensorEntry* out) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': ", why));
  };
  if (!v.is_object()) return bad("header entry is not an object");
  if (!v.contains("dtype") || !v["dtype"].is_string()) return bad("missing string 'dtype'");
  auto dtype = ParseStDtype(v["dtype"].get<std::string>());
  if (!dtype.ok()) return bad(dtype.status().message());
  out->name = name;
  out->dtype = *dtype;
  if (!v.contains("shape") || !v["shape"].is_array()) return bad("missing array 'shape'");
  uint64_t numel = 1;
  for (const auto& d : v["shape"]) {
    if (!d.is_number_unsigned()) return bad("shape has a non-integer or negative dimension");
    const uint64_t dim = d.get<uint64_t>();
    if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / dim)
      return bad("shape overflows");
    numel *= dim;
    out->shape.push_back(static_cast<int64_t>(dim));
  }
  const auto& offs = v.contains("data_offsets") ? v["data_offsets"] : json();
  if (!offs.is_array() || offs.size() != 2 || !offs[0].is_number_unsigned() ||
      !offs[1].is_number_unsigned())
    return bad("'data_offsets' must be two non-negative integers");
  out->begin = offs[0].get<uint64_t>();
  out->end = offs[1].get<uint64_t>();
  if (out->begin > out->end) return bad("data_offsets begin > end");
  if (out->end > data_size)
    return bad(absl::StrFormat("data_offsets [%d, %d] out of range: the data section has %d bytes",
                               out->begin, out->end, data_size));
  const uint64_t expected = numel * static_cast<uint64_t>(StDtypeSize(out->dtype));
  if (out->end - out->begin != expected)
    return bad(absl::StrFormat("%d bytes for shape %s of %s (expected %d)", out->end - out->begin,
                               ShapeString(out->shape), StDtypeName(out->dtype), expected));
  return absl::OkStatus();
}

// Large destinations are backed by transparent huge pages where the kernel allows it: first
// touch then faults once per 2 MiB instead of once per 4 KiB, which is most of the cost of
// loading from a warm page cache.
void AdviseHugePages(void* p, uint64_t n) {
  constexpr uintptr_t kHuge = 2u << 20;
  if (n < 2 * kHuge) return;
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + n) & ~(kHuge - 1);
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
}


}  // namespace

absl::StatusOr<StDtype> ParseStDtype(const std::string& name) {
  for (const auto& i : kDtypes)
    if (name == i.name) return i.dtype;
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", name, "'"));
}
const char* StDtypeName(StDtype d) { return Info(d).name; }
int64_t StDtypeSize(StDtype d) { return Info(d).size; }
torch::ScalarType ToScalarType(StDtype d) { return Info(d).scalar; }
absl::StatusOr<StDtype> FromScalarType(torch::ScalarType t) {
  for (const auto& i : kDtypes)
    if (i.scalar == t) return i.dtype;
  return absl::InvalidArgumentError(
      absl::StrCat("dtype ", c10::toString(t), " has no safetensors equivalent"));
}

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  auto fail = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", why));
  };
  MFPO_RETURN_IF_ERROR(CheckRegularFile(path, "safetensors file"));
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
  struct stat st;
  if (::fstat(f->fd_, &st) != 0) return fail(std::strerror(errno));
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) return fail(absl::StrCat("truncated: ", file_size, " bytes, no header length"));
  f->map_size_ = file_size;
  // Private and writable: see the class comment (Adopt). Nothing is ever written back.
  void* m = ::mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, f->fd_, 0);
  if (m == MAP_FAILED) return fail(absl::StrCat("mmap failed: ", std::strerror(errno)));
  f->map_ = static_cast<uint8_t*>(m);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | f->map_[i];
  if (header_len > kMaxSafetensorsHeaderBytes)
    return fail(absl::StrCat("header length ", header_len, " exceeds the limit of ",
                             kMaxSafetensorsHeaderBytes, " bytes"));
  if (header_len > file_size - 8)
    return fail(absl::StrCat("truncated: header length ", header_len, " but only ",
                             file_size - 8, " bytes follow"));
  const char* hdr = reinterpret_cast<const char*>(f->map_ + 8);
  absl::StatusOr<json> parsed = ParseJson(absl::string_view(hdr, header_len));
  if (!parsed.ok()) return fail(absl::StrCat("header is not a JSON object: ", parsed.status().message()));
  json header = std::move(*parsed);
  if (!header.is_object()) return fail("header is not a JSON object");
  f->data_ = f->map_ + 8 + header_len;
  const uint64_t data_size = file_size - 8 - header_len;

  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) return fail("__metadata__ is not an object");
      for (auto m2 = it.value().begin(); m2 != it.value().end(); ++m2) {
        if (!m2.value().is_string())
          return fail(absl::StrCat("__metadata__ value '", m2.key(), "' is not a string"));
        f->metadata_[m2.key()] = m2.value().get<std::string>();
      }
      continue;
    }
    TensorEntry e;
    MFPO_RETURN_IF_ERROR(Annotate(ParseEntry(it.key(), it.value(), data_size, &e), path));
    f->entries_.push_back(std::move(e));
  }
  // File order (by offset), and no two tensors may share bytes.
  std::sort(f->entries_.begin(), f->entries_.end(),
            [](const TensorEntry& a, const TensorEntry& b) { return a.begin < b.begin; });
  for (size_t i = 0; i < f->entries_.size(); ++i) {
    if (i > 0 && f->entries_[i].begin < f->entries_[i - 1].end && f->entries_[i].numel() > 0)
      return fail(absl::StrCat("tensor '", f->entries_[i].name, "' overlaps tensor '",
                               f->entries_[i - 1].name, "'"));
    f->index_[f->entries_[i].name] = i;
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
  if (fd_ >= 0) ::close(fd_);
}

const TensorEntry* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

uint8_t* SafetensorsFile::MutableData(const TensorEntry& e) const {
  return const_cast<uint8_t*>(data_) + e.begin;  // data_ points into map_, which is writable
}

torch::Tensor SafetensorsFile::View(const TensorEntry& e) const {
  return torch::from_blob(MutableData(e), e.shape, torch::TensorOptions().dtype(ToScalarType(e.dtype)));
}

bool SafetensorsFile::Adopt(const TensorEntry& e, torch::Tensor& dst) const {
  if (!dst.device().is_cpu() || !dst.is_contiguous() || dst.scalar_type() != ToScalarType(e.dtype) ||
      dst.sizes().vec() != e.shape || e.numel() == 0)
    return false;
  uint8_t* p = MutableData(e);
  // Map the pages now, read-only, straight from the page cache (reading the file if it is
  // cold); a later write copies the page it touches. MADV_POPULATE_READ needs Linux 5.14;
  // older kernels fault the pages in on first use instead.
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t lo = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t hi = reinterpret_cast<uintptr_t>(p) + (e.end - e.begin);
  ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_POPULATE_READ);
  std::shared_ptr<const SafetensorsFile> keep = shared_from_this();
  torch::Tensor view = torch::from_blob(
      p, e.shape, [keep](void*) mutable { keep.reset(); },
      torch::TensorOptions().dtype(ToScalarType(e.dtype)));
  dst.set_(view);
  return true;
}

void SafetensorsFile::ReleasePages(const TensorEntry& e) const {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(data_ + e.begin) + page - 1) & ~(page - 1);
  const uintptr_t hi = reinterpret_cast<uintptr_t>(data_ + e.end) & ~(page - 1);
  // Pages shared with a neighbour stay; they are released with that neighbour or at munmap.
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

absl::Status SafetensorsFile::CopyInto(const TensorEntry& e, torch::Tensor& dst) const {
  if (dst.sizes().vec() != e.shape)
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": tensor '", e.name, "' has shape ", ShapeString(e.shape),
                     ", the model expects ", ShapeString(dst.sizes().vec())));
  // Same dtype into contiguous CPU memory: read the bytes straight into the destination (one
  // copy, no page-table work for the mapping, nothing of the file left resident).
  if (dst.device().is_cpu() && dst.is_contiguous() && dst.scalar_type() == ToScalarType(e.dtype)) {
    char* out = static_cast<char*>(dst.data_ptr());
    AdviseHugePages(out, e.end - e.begin);
    const uint64_t file_offset = static_cast<uint64_t>(data_ - map_) + e.begin;
    uint64_t done = 0;
    const uint64_t total = e.end - e.begin;
    while (done < total) {
      const ssize_t n = ::pread(fd_, out + done, std::min<uint64_t>(total - done, 64ull << 20),
                                static_cast<off_t>(file_offset + done));
      if (n <= 0)
        return absl::DataLossError(absl::StrCat(path_, ": tensor '", e.name,
                                                "': read failed: ", n == 0 ? "end of file" : std::strerror(errno)));
      done += static_cast<uint64_t>(n);
    }
    return absl::OkStatus();
  }
  // Otherwise convert from the mapping, then drop its pages from this process's resident set.
  MFPO_RETURN_IF_ERROR(CatchAll(absl::StrCat(path_, ": tensor '", e.name, "'"), [&] {
    torch::NoGradGuard no_grad;
    dst.copy_(View(e));
  }));
  ReleasePages(e);
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> SafetensorsFile::Load(const std::string& name,
                                                    torch::ScalarType dtype) const {
  const TensorEntry* e = Find(name);
  if (e == nullptr)
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor named '", name, "'"));
  return CatchAll(absl::StrCat(path_, ": tensor '", name, "'"),
                  [&] { return View(*e).to(dtype, /*non_blocking=*/false, /*copy=*/true); });
}

absl::StatusOr<SafetensorsCheckpoint> SafetensorsCheckpoint::Open(const std::string& dir) {
  SafetensorsCheckpoint ckpt;
  std::vector<std::string> shard_names;
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  std::error_code exists_ec;
  if (fs::exists(index_path, exists_ec)) {
    json index;
    MFPO_RETURN_IF_ERROR(ReadJsonFile(index_path.string(), &index));
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), ": not a JSON object with a 'weight_map' object"));
    std::map<std::string, std::string> expected;  // tensor -> shard
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        return absl::InvalidArgumentError(absl::StrCat(
            index_path.string(), ": weight_map entry '", it.key(), "' is not a file name"));
      const std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard.find("..") != std::string::npos)
        return absl::InvalidArgumentError(absl::StrCat(index_path.string(),
                                                       ": shard name '", shard,
                                                       "' must be a plain file name"));
      expected[it.key()] = shard;
      if (std::find(shard_names.begin(), shard_names.end(), shard) == shard_names.end())
        shard_names.push_back(shard);
    }
    if (expected.empty())
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), ": 'weight_map' is empty (it must map every tensor to its shard)"));
    std::sort(shard_names.begin(), shard_names.end());
    for (const auto& s : shard_names) {
      MFPO_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open((fs::path(dir) / s).string()));
      ckpt.files_.push_back(std::move(f));
    }
    // Every tensor the index names must be in the shard it names.
    for (const auto& [name, shard] : expected) {
      bool found = false;
      for (const auto& f : ckpt.files_)
        if (fs::path(f->path()).filename() == shard && f->Find(name) != nullptr) found = true;
      if (!found)
        return absl::NotFoundError(absl::StrCat(index_path.string(), ": tensor '", name,
                                                "' is listed for ", shard,
                                                " but that shard does not contain it"));
    }
  } else {
    const fs::path single = fs::path(dir) / "model.safetensors";
    if (!fs::exists(single, exists_ec))
      return absl::NotFoundError(absl::StrCat(
          dir, ": no model.safetensors or model.safetensors.index.json in this directory"));
    MFPO_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(single.string()));
    ckpt.files_.push_back(std::move(f));
  }
  for (const auto& f : ckpt.files_) {
    for (const auto& e : f->entries()) {
      if (ckpt.by_name_.count(e.name))
        return absl::InvalidArgumentError(
            absl::StrCat(f->path(), ": tensor '", e.name, "' also appears in ",
                         ckpt.by_name_[e.name].file->path()));
      ckpt.by_name_[e.name] = Located{f.get(), &e};
      ckpt.names_.push_back(e.name);
      ckpt.total_bytes_ += e.end - e.begin;
    }
  }
  return ckpt;
}

const SafetensorsCheckpoint::Located* SafetensorsCheckpoint::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &it->second;
}

std::vector<std::string> SafetensorsCheckpoint::files() const {
  std::vector<std::string> out;
  for (const auto& f : files_) out.push_back(f->path());
  return out;
}

absl::Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    absl::StatusOr<StDtype> dtype_or = FromScalarType(t.scalar_type());
    if (!dtype_or.ok()) return Annotate(dtype_or.status(), absl::StrCat(path, ": ", name));
    const StDtype dtype = *dtype_or;
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t n = static_cast<uint64_t>(c.numel()) * StDtypeSize(dtype);
    header[name] = {{"dtype", StDtypeName(dtype)},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + n}}};
    offset += n;
    contiguous.push_back(std::move(c));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(text.size() >> (8 * i));
  return WriteFileStreamed(path, [&](const PieceWriter& write) {
    write(len, 8);
    write(text.data(), text.size());
    for (const auto& c : contiguous) write(c.data_ptr(), static_cast<size_t>(c.numel() * c.element_size()));
    return absl::OkStatus();
  });
}

absl::Status WriteCheckpoint(const std::string& dir, const NamedTensors& tensors,
                             const CheckpointWriteOptions& options) {
  NamedTensors converted;
  uint64_t total = 0;
  for (const auto& [name, t] : tensors) {
    torch::Tensor c = t;
    if (options.dtype && c.is_floating_point()) c = c.to(*options.dtype);
    total += static_cast<uint64_t>(c.numel()) * c.element_size();
    converted.emplace_back(name, std::move(c));
  }
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  // Stale single-file or sharded outputs from an earlier write would confuse readers.
  std::error_code ec;
  fs::remove(fs::path(dir) / "model.safetensors.index.json", ec);
  if (total <= options.max_shard_bytes) {
    return WriteSafetensors((fs::path(dir) / "model.safetensors").string(), converted, meta);
  }
  fs::remove(fs::path(dir) / "model.safetensors", ec);
  std::vector<NamedTensors> shards(1);
  uint64_t current = 0;
  for (auto& nt : converted) {
    const uint64_t n = static_cast<uint64_t>(nt.second.numel()) * nt.second.element_size();
    if (current > 0 && current + n > options.max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(nt);
    current += n;
  }
  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name =
        absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    MFPO_RETURN_IF_ERROR(WriteSafetensors((fs::path(dir) / name).string(), shards[i], meta));
    for (const auto& nt : shards[i]) weight_map[nt.first] = name;
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  return WriteFileAtomically((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2) + "\n");
}

}  // namespace mfpo
