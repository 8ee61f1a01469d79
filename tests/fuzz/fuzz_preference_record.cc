// Fuzz target: the native preference record. The input is one JSONL line: parsed as JSON by
// ParseJson (nlohmann, no exceptions, nesting bounded as for every JSON input), validated by
// ParsePreferenceRecord, written back with PreferenceRecordToJson and dumped as the importer
// does. The same bytes also go through ReadJsonl (as a file, via a path) so that its line
// handling and limits are exercised.
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "common/jsonl.h"
#include "datagen/preference_formats.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void RoundTrip(const nlohmann::json& j) {
  auto record = mfpo::ParsePreferenceRecord(j);
  if (!record.ok()) return;
  const nlohmann::json out = mfpo::PreferenceRecordToJson(*record);
  const std::string text = out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  // What the importer writes must read back as a valid record.
  absl::StatusOr<nlohmann::json> again = mfpo::ParseJson(text);
  if (!again.ok()) __builtin_trap();
  if (!mfpo::ParsePreferenceRecord(*again).ok()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view line(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<nlohmann::json> j = mfpo::ParseJson(line);
  if (j.ok()) RoundTrip(*j);

  mfpo::fuzz::MemFile file(data, size);
  if (!file.ok()) return 0;
  (void)mfpo::ReadJsonl(
      file.path(),
      [](int, const nlohmann::json& obj) {
        RoundTrip(obj);
        return absl::OkStatus();
      },
      [](int, const std::string&) {});
  return 0;
}
