// Fuzz target: the safetensors reader. The input is a whole .safetensors file (u64 header
// length, JSON header, data); it is opened through a path, as checkpoints are, and when the
// header validates every tensor is loaded as float32.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mfpo::fuzz::MemFile file(data, size);
  if (!file.ok()) return 0;
  auto opened = mfpo::SafetensorsFile::Open(file.path());
  if (!opened.ok()) return 0;
  const std::shared_ptr<mfpo::SafetensorsFile>& st = *opened;
  for (const mfpo::TensorEntry& e : st->entries()) {
    if (st->Find(e.name) == nullptr) __builtin_trap();  // every entry must be findable
    auto t = st->Load(e.name, torch::kFloat32);
    if (t.ok() && t->numel() != e.numel()) __builtin_trap();  // shape must survive the load
  }
  return 0;
}
