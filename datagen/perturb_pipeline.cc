#include "datagen/perturb_pipeline.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/photo.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/jsonl.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"
#include "datagen/diffusion_noise.h"

namespace mfpo {
namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

absl::StatusOr<std::string> EncodePng(const cv::Mat& image) {
  return CatchAll("PNG encoding", [&]() -> absl::StatusOr<std::string> {
    cv::Mat out = image;
    if (image.channels() == 3) cv::cvtColor(image, out, cv::COLOR_RGB2BGR);
    std::vector<uint8_t> bytes;
    // Level 1: lossless like any level, and several times faster to write than the default 3.
    if (!cv::imencode(".png", out, bytes, {cv::IMWRITE_PNG_COMPRESSION, 1}))
      return absl::InternalError("PNG encoding failed");
    return std::string(bytes.begin(), bytes.end());
  });
}

struct Job {
  int line = 0;
  json record;
  std::string id;   // the record's id, or "line-N" when it has no usable string id
  std::string key;  // RecordKey(id): names its output files
};

Job MakeJob(int line, json record) {
  Job job{line, std::move(record), "", ""};
  const json* id = job.record.is_object() && job.record.contains("id") ? &job.record["id"] : nullptr;
  job.id = id != nullptr && id->is_string() ? id->get<std::string>() : absl::StrCat("line-", line);
  job.key = RecordKey(job.id);
  return job;
}

// The settings that decide a record's output. A rerun into the same --out continues only with
// the same settings and input (finished records are skipped, so different settings would mix two
// configurations in one manifest without a word).
json ShardSettings(const ShardOptions& shard, const PerturbOptions& o, const Grounder& grounder) {
  std::error_code ec;
  json settings = {{"manifest", fs::absolute(shard.manifest, ec).lexically_normal().string()},
          {"grounder", grounder.name()},
          {"configuration", shard.configuration},
          {"top_k", o.keywords.top_k},
          {"alpha", o.keywords.alpha},
          {"sigma", o.keywords.sigma},
          {"gamma", o.keywords.gamma},
          {"keywords_from_question", o.keywords_from_question},
          {"noise_step", o.noise_step},
          {"feather", o.feather},
          {"seed", o.seed},
          {"max_pixels", o.limits.max_pixels}};
  // Absent means noise, so directories made before the option existed stay valid for a rerun.
  if (o.fill != PerturbFill::kNoise) settings["fill"] = PerturbFillName(o.fill);
  return settings;
}

// Settings recorded only when they differ from their default, with that default.
const json& OptionalSettingDefaults() {
  static const json* defaults = new json{{"fill", "noise"}};
  return *defaults;
}

// What a finished record was made with, stored in the record ("settings_hash"): every setting
// but the input manifest's path. A record is skipped on a rerun only when its input line and
// this hash are unchanged, so outputs stay consistent even when perturb.json was deleted.
std::string SettingsHash(const ShardOptions& shard, const PerturbOptions& o, const Grounder& grounder) {
  json settings = ShardSettings(shard, o, grounder);
  settings.erase("manifest");
  return absl::StrFormat("%016x", SampleSeed(0, settings.dump()));
}

// `rgb` with the mask's pixels filled from their surroundings (Telea); a soft (feathered) mask
// blends the filled image in by its weight, so pixels where the mask is 0 stay bit-identical.
cv::Mat InpaintMasked(const cv::Mat& rgb, const cv::Mat& mask) {
  cv::Mat filled;
  cv::inpaint(rgb, mask > 0, filled, /*inpaintRadius=*/3, cv::INPAINT_TELEA);
  cv::Mat out = rgb.clone();
  for (int y = 0; y < rgb.rows; ++y) {
    const uint8_t* m = mask.ptr<uint8_t>(y);
    const cv::Vec3b* f = filled.ptr<cv::Vec3b>(y);
    cv::Vec3b* o = out.ptr<cv::Vec3b>(y);
    for (int x = 0; x < rgb.cols; ++x) {
      if (m[x] == 0) continue;
      const double w = m[x] / 255.0;
      for (int c = 0; c < 3; ++c)
        o[x][c] = cv::saturate_cast<uint8_t>((1.0 - w) * o[x][c] + w * f[x][c]);
    }
  }
  return out;
}

absl::Status CheckShardRecord(const ShardOptions& shard, const PerturbOptions& options, const Grounder& grounder) {
  const fs::path path = fs::path(shard.out_dir) / "perturb.json";
  const json current = ShardSettings(shard, options, grounder);
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    fs::create_directories(shard.out_dir, ec);
    if (ec) return absl::InternalError(absl::StrCat(shard.out_dir, ": ", ec.message()));
    return WriteFileAtomically(path.string(), current.dump(2) + "\n");
  }
  json recorded;
  MFPO_RETURN_IF_ERROR(ReadJsonFile(path.string(), &recorded));
  // An optional setting absent on either side is its default ("fill": "noise").
  auto setting = [](const json& settings, const std::string& key) -> std::string {
    if (settings.is_object() && settings.contains(key)) return settings[key].dump();
    return OptionalSettingDefaults().contains(key) ? OptionalSettingDefaults()[key].dump() : "(none)";
  };
  std::vector<std::string> diffs;
  for (auto it = current.begin(); it != current.end(); ++it) {
    const std::string before = setting(recorded, it.key());
    if (before != it.value().dump()) diffs.push_back(absl::StrCat(it.key(), ": ", before, " -> ", it.value().dump()));
  }
  // A setting recorded only when it is not the default ("fill") and now left at the default.
  if (recorded.is_object())
    for (auto it = recorded.begin(); it != recorded.end(); ++it)
      if (!current.contains(it.key()) && it.value().dump() != setting(current, it.key()))
        diffs.push_back(absl::StrCat(it.key(), ": ", it.value().dump(), " -> ", setting(current, it.key())));
  if (diffs.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      shard.out_dir, " holds outputs made with other settings or input (", path.string(), "):\n  ",
      absl::StrJoin(diffs, "\n  "), "\nUse a new --out, or delete ", shard.out_dir, " to start over."));
}

}  // namespace

const char* PerturbFillName(PerturbFill fill) { return fill == PerturbFill::kInpaint ? "inpaint" : "noise"; }

absl::StatusOr<PerturbFill> ParsePerturbFill(absl::string_view name) {
  if (name == "noise") return PerturbFill::kNoise;
  if (name == "inpaint") return PerturbFill::kInpaint;
  return absl::InvalidArgumentError(absl::StrCat("--fill '", name, "': expected noise or inpaint"));
}

absl::Status CheckShardProducedRecords(const ShardReport& r) {
  if (r.done > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(r.records == 0 ? "the shard has no records"
                                                   : absl::StrCat("no record could be processed (", r.errors,
                                                                  " errors, see ", r.errors_path, ")"));
}

std::string ShardReportText(const ShardReport& r) {
  // `done` counts every record in the manifest, `skipped` those an earlier run had already written.
  return absl::StrCat("records ", r.records, ", written ", r.done - r.skipped, ", skipped ", r.skipped,
                      " (already done)", ", errors ", r.errors, ", global fallbacks ", r.fallbacks,
                      r.noise_fills > 0 ? absl::StrCat(", noised instead of inpainted ", r.noise_fills) : "",
                      "\nmanifest ", r.manifest_path, "\nerrors ", r.errors_path, "\n");
}

absl::StatusOr<PerturbedImage> PerturbImage(const cv::Mat& rgb, const std::string& text,
                                            const std::vector<PreferenceRegion>& regions, const std::string& seed_key,
                                            const PerturbOptions& options, Grounder& grounder,
                                            const WordVectors* vectors) {
  PerturbedImage out;
  out.keywords = ExtractKeywords(text, vectors, options.keywords);
  std::vector<std::string> words;
  for (const auto& k : out.keywords) words.push_back(k.word);
  MFPO_ASSIGN_OR_RETURN(GroundedMask grounded, GroundKeywords(grounder, rgb, words, regions));
  out.found = grounded.found;
  out.fallback = grounded.mask.empty();
  // The feathered edge lies outside the region: inside it the weight stays 255, so the object is
  // noised (or removed) whole however wide the feather (a plain blur is below 255 inside the
  // region's border, and with a feather wider than the object nothing is left of it).
  out.mask = out.fallback ? cv::Mat(rgb.size(), CV_8UC1, cv::Scalar(255))
                          : cv::Mat(cv::max(FeatherMask(grounded.mask, options.feather), grounded.mask));
  out.seed = SampleSeed(options.seed, seed_key);
  // Inpainting needs known pixels around the region and an image of at least 2 x 2 (OpenCV's
  // Telea reads outside a single row or column); otherwise (and for fallbacks) noise. A feather
  // that would reach every pixel is dropped for inpainting (nothing would be left to fill from).
  const auto partial = [](const cv::Mat& m) { return cv::countNonZero(m) < static_cast<int>(m.total()); };
  if (options.fill == PerturbFill::kInpaint && !out.fallback && rgb.rows >= 2 && rgb.cols >= 2 &&
      partial(grounded.mask)) {
    out.fill = PerturbFill::kInpaint;
    if (!partial(out.mask)) out.mask = grounded.mask.clone();
  }
  out.coverage = static_cast<double>(cv::countNonZero(out.mask)) / (static_cast<double>(rgb.rows) * rgb.cols);
  if (out.fill == PerturbFill::kInpaint) {
    out.rejected = InpaintMasked(rgb, out.mask);
    return out;
  }
  MFPO_ASSIGN_OR_RETURN(out.rejected, AddDiffusionNoise(rgb, out.fallback ? cv::Mat() : out.mask, options.noise_step, out.seed));
  return out;
}

absl::StatusOr<ShardReport> RunPerturbShard(const ShardOptions& shard, const PerturbOptions& options,
                                            Grounder& grounder, const WordVectors* vectors,
                                            PerturbCounters* counters) {
  PerturbCounters local;
  PerturbCounters& c = counters != nullptr ? *counters : local;
  const fs::path out(shard.out_dir);
  const fs::path input_root = fs::path(shard.manifest).parent_path();
  std::error_code ec;
  if (shard.begin < 0) return absl::InvalidArgumentError(absl::StrCat("--begin ", shard.begin, ": must be >= 0"));
  if (shard.end != -1 && shard.end <= shard.begin)
    return absl::InvalidArgumentError(
        absl::StrCat("--end ", shard.end, ": must be greater than --begin ", shard.begin, " (or -1: to the end)"));

  // Read the shard's records; lines that are not JSON objects are record errors too.
  // Record ids name the output files: two records with one id would write one file twice and
  // lose the other, so a duplicate anywhere in the manifest is an error of the whole input.
  std::vector<Job> jobs;
  std::vector<json> early_errors;
  std::map<std::string, int> first_line;  // id -> line
  int64_t index = 0;
  MFPO_RETURN_IF_ERROR(ReadJsonl(
      shard.manifest,
      [&](int line, const json& j) -> absl::Status {
        const int64_t i = index++;
        Job job = MakeJob(line, j);
        auto [it, fresh] = first_line.emplace(job.id, line);
        if (!fresh)
          return absl::InvalidArgumentError(absl::StrCat("duplicate record id '", job.id, "' (first at line ", it->second,
                                                         "); ids name the output files and must be unique"));
        if (i >= shard.begin && (shard.end < 0 || i < shard.end)) jobs.push_back(std::move(job));
        return absl::OkStatus();
      },
      [&](int line, const std::string& why) {
        const int64_t i = index++;
        if (i >= shard.begin && (shard.end < 0 || i < shard.end))
          early_errors.push_back({{"id", absl::StrCat("line-", line)}, {"line", line}, {"reason", why}});
      }));
  if (shard.begin > 0 && shard.begin >= index)
    return absl::InvalidArgumentError(absl::StrCat("--begin ", shard.begin, ": past the end of ", shard.manifest, " (",
                                                   index, " records)"));
  MFPO_RETURN_IF_ERROR(CheckShardRecord(shard, options, grounder));
  for (const char* sub : {"rejected", "masks", "records"}) {
    fs::create_directories(out / sub, ec);
    if (ec) return absl::InternalError(absl::StrCat((out / sub).string(), ": ", ec.message()));
    // What a killed run was writing when it died.
    RemoveStaleTemporaryFiles((out / sub).string());
  }
  const std::string name = !shard.manifest_name.empty() ? shard.manifest_name
                           : shard.begin == 0 && shard.end < 0
                               ? "manifest"
                               : absl::StrCat("manifest-", shard.begin, "-", shard.end < 0 ? index : shard.end);
  ShardReport report;
  report.records = static_cast<int64_t>(jobs.size() + early_errors.size());
  c.total = static_cast<int64_t>(jobs.size());
  report.manifest_path = (out / (name + ".jsonl")).string();
  report.errors_path = (out / (name + ".errors.jsonl")).string();
  const std::string settings_hash = SettingsHash(shard, options, grounder);

  // One record: everything in memory, then the files, the record file last.
  auto process = [&](const Job& job) -> absl::Status {
    const std::string& id = job.id;
    const std::string& key = job.key;
    const fs::path done_file = out / "records" / (key + ".json");
    const fs::path error_file = out / "records" / (key + ".error.json");
    std::error_code ec;
    // Finished records are skipped when their input line is unchanged (a record edited in the
    // manifest is made again); failed ones are tried again (their input may have been fixed).
    // Records written before settings_hash existed are matched on their input alone.
    const std::string input_hash = absl::StrFormat("%016x", SampleSeed(0, job.record.dump()));
    if (fs::is_regular_file(done_file, ec)) {
      absl::StatusOr<std::string> done_text = ReadFileToString(done_file.string());
      absl::StatusOr<json> done = done_text.ok() ? ParseJson(*done_text) : absl::StatusOr<json>(done_text.status());
      const json* made = done.ok() && done->is_object() && done->contains("perturbation") &&
                                 (*done)["perturbation"].is_object()
                             ? &(*done)["perturbation"]
                             : nullptr;
      // ... and only when its images are still there (a deleted or emptied one is made again).
      auto nonempty = [](const fs::path& path) {
        std::error_code e;
        return fs::is_regular_file(path, e) && fs::file_size(path, e) > 0 && !e;
      };
      if (made != nullptr && made->value("input_hash", "") == input_hash &&
          made->value("settings_hash", settings_hash) == settings_hash &&
          nonempty(out / "rejected" / (key + ".png")) && nonempty(out / "masks" / (key + ".png"))) {
        ++c.skipped;
        return absl::OkStatus();
      }
    }
    auto fail = [&](absl::string_view reason) {
      ++c.errors;
      return WriteFileAtomically(error_file.string(),
                                 json{{"id", id}, {"line", job.line}, {"reason", std::string(reason)}}
                                         .dump(-1, ' ', false, json::error_handler_t::replace) +
                                     "\n");
    };
    // A failed write is this record's error when only its own path is blocked (a directory in
    // the way, a name too long); a full disk or a read-only / forbidden output directory would
    // fail every record, so it ends the shard.
    auto write = [&](const fs::path& path, const std::string& bytes) -> absl::Status {
      absl::Status s = WriteFileAtomically(path.string(), bytes);
      if (s.ok() || IsStorageWideError(s)) return s;
      MFPO_RETURN_IF_ERROR(fail(s.message()));
      return absl::CancelledError("record failed");  // recorded; stops this record only
    };
    absl::StatusOr<PreferenceRecord> parsed = ParsePreferenceRecord(job.record);
    if (!parsed.ok()) return fail(parsed.status().message());
    const fs::path image_path = fs::path(parsed->image).is_absolute() ? fs::path(parsed->image) : input_root / parsed->image;
    absl::StatusOr<cv::Mat> rgb = ReadImageFile(image_path.string(), options.limits);
    if (!rgb.ok()) return fail(rgb.status().message());
    const std::string text = options.keywords_from_question ? parsed->question + "\n" + parsed->chosen : parsed->chosen;
    // An exception here (OpenCV, LibTorch in a grounder) is this record's error, not the shard's.
    absl::StatusOr<PerturbedImage> p = CatchAll(absl::StrCat(image_path.string(), ": perturbing"), [&] {
      return PerturbImage(*rgb, text, parsed->regions, id, options, grounder, vectors);
    });
    if (!p.ok()) return fail(p.status().message());
    absl::StatusOr<std::string> rejected_png = EncodePng(p->rejected);
    if (!rejected_png.ok()) return fail(rejected_png.status().message());
    absl::StatusOr<std::string> mask_png = EncodePng(p->mask);
    if (!mask_png.ok()) return fail(mask_png.status().message());
    const std::string rejected_rel = "rejected/" + key + ".png", mask_rel = "masks/" + key + ".png";
    MFPO_RETURN_IF_ERROR(write(out / rejected_rel, *rejected_png));
    MFPO_RETURN_IF_ERROR(write(out / mask_rel, *mask_png));
    PreferenceRecord r = *parsed;
    // Paths in the output manifest are relative to the output directory, like its own files.
    r.image = fs::relative(fs::absolute(image_path, ec), fs::absolute(out, ec), ec).string();
    if (ec || r.image.empty()) return fail(absl::StrCat(image_path.string(), ": cannot express relative to ", out.string()));
    r.rejected_image = rejected_rel;
    json line = PreferenceRecordToJson(r);
    for (auto it = parsed->extra.begin(); it != parsed->extra.end(); ++it)
      if (!line.contains(it.key())) line[it.key()] = it.value();
    json keywords = json::array();
    for (const auto& k : p->keywords) keywords.push_back({{"word", k.word}, {"score", k.score}});
    line["perturbation"] = {{"keywords", keywords},   {"found", p->found},       {"grounder", grounder.name()},
                            {"coverage", p->coverage}, {"fallback", p->fallback}, {"seed", p->seed},
                            {"feather", options.feather}, {"mask", mask_rel},    {"input_hash", input_hash},
                            {"settings_hash", settings_hash}};
    // The noise step says nothing about an inpainted image.
    if (p->fill == PerturbFill::kNoise) line["perturbation"]["t"] = options.noise_step;
    if (options.fill != PerturbFill::kNoise) line["perturbation"]["fill"] = PerturbFillName(p->fill);
    if (p->fallback) ++c.fallbacks;
    MFPO_RETURN_IF_ERROR(write(done_file, line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n"));
    fs::remove(error_file, ec);  // an earlier attempt's error
    ++c.done;
    return absl::OkStatus();
  };

  // Workers pull record indices; a failure of the shard itself (disk full, output not writable)
  // stops everyone, and the wait below ends when the last worker has left, whatever the reason.
  const int threads = shard.threads > 0 ? shard.threads : std::max(1u, std::thread::hardware_concurrency());
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex error_mu;
  absl::Status shard_error;  // guarded by error_mu
  const auto t0 = Clock::now();
  auto worker = [&] {
    for (size_t i = next++; i < jobs.size() && !stop.load() && !c.cancel.load(); i = next++) {
      ++c.in_flight;
      const auto r0 = Clock::now();
      absl::Status s = CatchAll("record", [&] { return process(jobs[i]); });
      if (c.observe_record) c.observe_record(std::chrono::duration<double>(Clock::now() - r0).count());
      --c.in_flight;
      if (!s.ok() && !absl::IsCancelled(s)) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (shard_error.ok()) shard_error = Annotate(s, absl::StrCat("record '", jobs[i].id, "'"));
        stop = true;
      }
    }
  };
  const int n_workers = std::min<int>(threads, std::max<size_t>(1, jobs.size()));
  std::vector<std::thread> pool;
  std::atomic<int> running{n_workers};
  for (int t = 0; t < n_workers; ++t)
    pool.emplace_back([&] {
      worker();
      --running;
    });
  // Progress: a log line every 5 s with rates and ETA.
  auto last = Clock::now();
  while (running.load() > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (std::chrono::duration<double>(Clock::now() - last).count() >= 5) {
      last = Clock::now();
      const double secs = std::chrono::duration<double>(last - t0).count();
      const int64_t fresh = c.done + c.errors;
      const int64_t finished_n = fresh + c.skipped;
      const double rate = fresh / std::max(secs, 1e-9);
      spdlog::info("datagen: {}/{} records ({} new, {} skipped, {} errors, {} global fallbacks), {:.1f} images/s, ETA {:.0f} s",
                   finished_n, jobs.size(), fresh, c.skipped.load(), c.errors.load(), c.fallbacks.load(), rate,
                   rate > 0 ? (jobs.size() - finished_n) / rate : 0.0);
    }
  }
  for (auto& t : pool) t.join();
  {
    std::lock_guard<std::mutex> lock(error_mu);
    if (!shard_error.ok()) {
      spdlog::error("datagen: shard stopped: {}", std::string(shard_error.message()));
      return Annotate(shard_error, "shard stopped (finished records are kept; rerun to continue)");
    }
  }
  if (c.cancel.load()) return absl::CancelledError("shard cancelled (finished records are kept)");
  report.seconds = std::chrono::duration<double>(Clock::now() - t0).count();

  // Assemble the shard's manifest and error list in input order from the per-record files.
  std::string manifest_text, errors_text;
  for (const json& e : early_errors) {
    errors_text += e.dump() + "\n";
    ++report.errors;
  }
  for (const Job& job : jobs) {
    const fs::path base = out / "records" / job.key;
    std::error_code ec;
    if (fs::is_regular_file(base.string() + ".json", ec)) {
      MFPO_ASSIGN_OR_RETURN(std::string line, ReadFileToString(base.string() + ".json"));
      absl::StatusOr<json> record = ParseJson(line);
      if (!record.ok() || !record->is_object())
        return absl::DataLossError(absl::StrCat(base.string(), ".json: corrupt record file (delete it to redo the record)"));
      manifest_text += line;
      ++report.done;
      const json* made = record->contains("perturbation") ? &(*record)["perturbation"] : nullptr;
      if (made != nullptr && made->is_object()) {
        report.fallbacks += made->value("fallback", false) ? 1 : 0;
        report.noise_fills += made->value("fill", "") == "noise" ? 1 : 0;
      }
    } else if (fs::is_regular_file(base.string() + ".error.json", ec)) {
      MFPO_ASSIGN_OR_RETURN(std::string line, ReadFileToString(base.string() + ".error.json"));
      errors_text += line;
      ++report.errors;
    }
  }
  report.skipped = c.skipped;
  MFPO_RETURN_IF_ERROR(WriteFileAtomically(report.manifest_path, manifest_text));
  MFPO_RETURN_IF_ERROR(WriteFileAtomically(report.errors_path, errors_text));
  spdlog::info("datagen: shard done: {} records, {} written, {} skipped as already done, {} errors, {} global "
               "fallbacks{}, {:.1f} s",
               report.records, report.done - report.skipped, report.skipped, report.errors, report.fallbacks,
               report.noise_fills > 0 ? absl::StrCat(", ", report.noise_fills, " noised instead of inpainted") : "",
               report.seconds);
  return report;
}

}  // namespace mfpo
