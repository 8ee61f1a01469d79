// The image-preference data pipeline of one shard (MFPO paper section 3.1): for every text
// preference record, keywords of the chosen response -> regions (a Grounder) -> DDPM noise inside
// them -> the rejected image. Shared by `mfpo perturb` (local) and `mfpo-datagen` (the worker).
//
// Output directory layout (all files written atomically; a rerun skips finished records):
//   rejected/<key>.png   the rejected image m' (lossless PNG, the input's size)
//   masks/<key>.png      the perturbed region (0 / 255, or soft with feathering)
//   records/<key>.json   the finished record: the input record with "rejected_image" set and a
//                        "perturbation" object (keywords with scores, grounder, found keywords,
//                        coverage, fallback, t, seed, mask). Written last: its presence marks the
//                        record done.
//   records/<key>.error.json   {id, line, reason} of a record that failed (tried again by a rerun)
//   perturb.json         the settings and input of the directory's outputs; a rerun with others
//                        is refused
//   <manifest name>.jsonl       the shard's finished records in input order (trainable by
//                               `mfpo train`: native records with rejected_image)
//   <manifest name>.errors.jsonl  the shard's failed records
// <key> is the record id made filesystem-safe plus a hash of the id (ids may repeat characters
// that the sanitising maps together).
#ifndef MFPO_DATAGEN_PERTURB_PIPELINE_H_
#define MFPO_DATAGEN_PERTURB_PIPELINE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/image.h"
#include "datagen/grounder.h"
#include "datagen/keywords.h"

namespace mfpo {

// What replaces the grounded region in m'. kNoise is the paper's: DDPM forward noise at step t.
// kInpaint is an ablation: the region is filled from its surroundings (OpenCV's Telea inpainting),
// so the object disappears without leaving a noise texture that a model could learn to detect.
// Global fallbacks, a region covering the whole image (nothing to fill from) and images one
// pixel high or wide get noise; the shard's report counts them.
enum class PerturbFill { kNoise, kInpaint };
const char* PerturbFillName(PerturbFill fill);                          // "noise" / "inpaint"
absl::StatusOr<PerturbFill> ParsePerturbFill(absl::string_view name);  // the flag's value

struct PerturbOptions {
  KeywordOptions keywords;             // top_k, graph and PageRank settings
  bool keywords_from_question = false;  // also rank the prompt's words (default: chosen response only)
  int noise_step = 500;                // DDPM t
  int feather = 0;                     // soft mask edge in pixels (0: hard edge)
  PerturbFill fill = PerturbFill::kNoise;
  uint64_t seed = 0;                   // base seed; per record SampleSeed(seed, image id or record id)
  ImageLimits limits;                  // oversized / undecodable images fail their record
};

// Counters a caller can export (e.g. as Prometheus metrics); updated as records finish.
struct PerturbCounters {
  std::atomic<int64_t> total{0};  // records of the shard (set once they are read)
  std::atomic<int64_t> done{0}, skipped{0}, errors{0}, fallbacks{0};
  std::atomic<int64_t> in_flight{0};
  std::atomic<bool> cancel{false};  // set by the caller: workers stop after their current record
  std::function<void(double seconds)> observe_record;  // optional: per-record latency
};

struct ShardOptions {
  std::string manifest;       // input: native preference JSONL
  std::string out_dir;
  int64_t begin = 0, end = -1;  // record range [begin, end) by line order; end -1 = to the end
  int threads = 0;             // 0: one per core
  std::string manifest_name;   // default "manifest" (whole file) or "manifest-<begin>-<end>"
  // The grounder's and word vectors' settings as the caller describes them; recorded with the
  // pipeline options in <out>/perturb.json, which a rerun into the same directory must match.
  nlohmann::json configuration = nlohmann::json::object();
};

struct ShardReport {
  int64_t records = 0, done = 0, skipped = 0, errors = 0, fallbacks = 0;
  int64_t noise_fills = 0;  // --fill inpaint: records noised instead (fallbacks, whole-image or 1-pixel-wide)
  double seconds = 0;
  std::string manifest_path, errors_path;
};

// Processes one shard with `threads` workers. Fails only for problems of the shard itself
// (unreadable manifest, unwritable output); a bad record goes to the errors file.
absl::StatusOr<ShardReport> RunPerturbShard(const ShardOptions& shard, const PerturbOptions& options,
                                            Grounder& grounder, const WordVectors* vectors,
                                            PerturbCounters* counters = nullptr);

// "records N, written N, skipped N, errors N, global fallbacks N[, noised instead of inpainted
// N]" and the output paths.
std::string ShardReportText(const ShardReport& report);

// INVALID_ARGUMENT when the shard has no usable record at all (an empty range, or every record
// failed): the commands then exit non-zero although the run itself worked.
absl::Status CheckShardProducedRecords(const ShardReport& report);

// One record's perturbation without writing anything: the keywords, the mask and m'.
struct PerturbedImage {
  std::vector<Keyword> keywords;
  std::vector<std::string> found;  // keywords the grounder located
  cv::Mat mask;                    // the perturbed region (full image when fallback)
  cv::Mat rejected;                // m'
  bool fallback = false;           // no region found: global noise
  PerturbFill fill = PerturbFill::kNoise;  // what was used (inpainting falls back to noise)
  double coverage = 0;             // fraction of pixels perturbed
  uint64_t seed = 0;
};
absl::StatusOr<PerturbedImage> PerturbImage(const cv::Mat& rgb, const std::string& text,
                                            const std::vector<PreferenceRegion>& regions, const std::string& seed_key,
                                            const PerturbOptions& options, Grounder& grounder,
                                            const WordVectors* vectors);

}  // namespace mfpo

#endif  // MFPO_DATAGEN_PERTURB_PIPELINE_H_
