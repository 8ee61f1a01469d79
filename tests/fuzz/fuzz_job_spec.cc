// Fuzz target: job specifications. The first byte chooses the syntax (even: YAML, odd: JSON);
// the rest is the spec text, parsed by ParseJobSpec and, when it parses, validated again and
// written back as JSON.
#include <cstddef>
#include <cstdint>
#include <string>

#include "worker/job_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool yaml = (data[0] & 1) == 0;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  auto spec = mfpo::ParseJobSpec(text, yaml, yaml ? "fuzz.yaml" : "fuzz.json");
  if (!spec.ok()) return 0;
  (void)mfpo::ValidateJobSpec(*spec);
  (void)mfpo::JobSpecToJson(*spec);
  return 0;
}
