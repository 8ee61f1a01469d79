#include "worker/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/device.h"
#include "common/file_util.h"
#include "common/image.h"
#include "common/jsonl.h"
#include "common/lora.h"
#include "common/model_dir.h"
#include "common/safetensors.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"
#include "datagen/diffusion_noise.h"
#include "datagen/preference_formats.h"
#include "worker/grad_reducer.h"
#include "worker/job_spec.h"
#include "worker/mfpo_objective.h"
#include "worker/optimizer_state.h"
#include "worker/preference_step.h"

namespace mfpo {
namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double ScheduledLearningRate(double peak, double warmup_ratio, int64_t step, int64_t total) {
  if (total <= 0) return peak;
  const int64_t warmup = static_cast<int64_t>(std::ceil(warmup_ratio * total));
  if (step < warmup) return peak * (step + 1) / static_cast<double>(warmup);
  const double progress = static_cast<double>(step - warmup) / std::max<int64_t>(1, total - warmup);
  return peak * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
}

namespace {

uint64_t Fnv(uint64_t h, absl::string_view bytes) {
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Identifies a model directory: its config, tokenizer, every safetensors file's size and a
// strided sample of its bytes. Cheap even for a 7B checkpoint.
absl::StatusOr<uint64_t> ModelHash(const std::string& dir) {
  uint64_t h = 1469598103934665603ull;
  for (const char* f : {"config.json", "tokenizer.model"}) {
    MFPO_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString((fs::path(dir) / f).string()));
    h = Fnv(h, bytes);
  }
  // The files that choose the chat template (and so the token ids), when the directory has them.
  for (const char* f : {"chat_template.jinja", "chat_template.json", "tokenizer_config.json"}) {
    std::error_code ec;
    if (!fs::exists(fs::path(dir) / f, ec)) continue;
    MFPO_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString((fs::path(dir) / f).string()));
    h = Fnv(h, absl::StrCat(f, bytes));
  }
  MFPO_ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::Open(dir));
  for (const std::string& path : ckpt.files()) {
    std::ifstream in(path, std::ios::binary);
    std::error_code ec;
    const uint64_t size = fs::file_size(path, ec);
    h = Fnv(h, std::to_string(size));
    std::string buf(1 << 16, '\0');
    for (uint64_t off = 0; off < size; off += 64ull << 20) {
      in.seekg(static_cast<std::streamoff>(off));
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      h = Fnv(h, absl::string_view(buf.data(), static_cast<size_t>(in.gcount())));
      in.clear();
    }
  }
  return h;
}

// What the reference log-probs depend on: the reference weights and tokenizer, and how the
// perturbed images are made.
absl::StatusOr<std::string> ReferenceFingerprint(const std::string& dir, const std::string& perturbation) {
  MFPO_ASSIGN_OR_RETURN(uint64_t h, ModelHash(dir));
  return absl::StrFormat("%016x", Fnv(h, perturbation));
}

// Identifies what training sees of the data: each example's id, token ids, labels and a strided
// sample of its image tensors (the preprocessed pixels, so an image file edited in place counts).
std::string DataFingerprint(const std::vector<PreferenceExample>& examples) {
  uint64_t h = 1469598103934665603ull;
  auto bytes = [&](const void* p, size_t n) { h = Fnv(h, absl::string_view(static_cast<const char*>(p), n)); };
  auto ints = [&](const std::vector<int64_t>& v) {
    const uint64_t n = v.size();
    bytes(&n, sizeof(n));
    bytes(v.data(), v.size() * sizeof(int64_t));
  };
  auto pixels = [&](const torch::Tensor& t) {
    if (!t.defined()) return bytes("-", 1);
    const torch::Tensor f = t.to(torch::kFloat32).contiguous();
    const float* p = f.data_ptr<float>();
    const int64_t n = f.numel();
    bytes(&n, sizeof(n));
    for (int64_t i = 0; i < n; i += 61) bytes(p + i, sizeof(float));
  };
  for (const auto& ex : examples) {
    bytes(ex.id.data(), ex.id.size() + 1);
    ints(ex.chosen.ids);
    ints(ex.chosen.labels);
    ints(ex.rejected.ids);
    ints(ex.rejected.labels);
    pixels(ex.image.pixel_values);
    pixels(ex.perturbed_image.pixel_values);
  }
  return absl::StrFormat("%016x", h);
}

// Fields of the spec that a rerun in the same output_dir may change: they do not alter what is
// trained (evaluation, checkpoint retention, thread count, the display name, where the directory is).
bool MayChangeOnResume(const std::string& path) {
  for (const char* prefix :
       {"evaluation", "checkpoint.keep_last", "checkpoint.every_steps", "resources.threads", "name", "output_dir",
        // How the step's batch is spread over ranks and where the optimizer state lives: a run may
        // continue on another number of ranks as long as the global batch stays (checked apart).
        "resources.workers", "optimizer.grad_accum", "optimizer.shard_state", "resources.collective_timeout_s",
        // The job service's scheduling knobs.
        "resources.min_workers", "resources.max_restarts"})
    if (path == prefix || absl::StartsWith(path, absl::StrCat(prefix, "."))) return true;
  return false;
}

void Flatten(const json& j, const std::string& prefix, std::map<std::string, std::string>* out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) Flatten(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
  } else {
    (*out)[prefix] = j.dump();
  }
}

// output_dir/run.json records the spec and the starting model of the run that owns the
// directory. A rerun continues it only when nothing that shapes training differs; otherwise it
// would silently resume the old run (or reuse its caches) under the new job's name.
absl::Status CheckRunRecord(const fs::path& out_dir, const v1::JobSpec& spec, const std::string& model_fingerprint,
                            const std::string& data_fingerprint) {
  const fs::path record_path = out_dir / "run.json";
  json current = {{"spec", json::parse(JobSpecToJson(spec))},
                  {"model_fingerprint", model_fingerprint},
                  {"data_fingerprint", data_fingerprint}};
  std::error_code ec;
  // State that a rerun would reuse: checkpoints and the reference cache. Without any, the
  // directory is free (e.g. an earlier attempt failed before training) and the record is rewritten.
  bool has_state = fs::exists(out_dir / "reference_logps.safetensors", ec);
  if (fs::is_directory(out_dir / "checkpoints", ec))
    for (const auto& e : fs::directory_iterator(out_dir / "checkpoints", ec))
      has_state = has_state || absl::StartsWith(e.path().filename().string(), "step-");
  if (!has_state) return WriteFileAtomically(record_path.string(), current.dump(2) + "\n");
  if (!fs::exists(record_path, ec))
    return absl::FailedPreconditionError(absl::StrCat(
        out_dir.string(), " holds checkpoints or a reference cache but no run.json saying which job made them; "
        "use a new output_dir, or delete ", out_dir.string(), " to start over"));
  json recorded;
  MFPO_RETURN_IF_ERROR(ReadJsonFile(record_path.string(), &recorded));
  if (!recorded.is_object() || !recorded.contains("spec"))
    return absl::DataLossError(absl::StrCat(record_path.string(), ": not a run record (delete the output_dir to start over)"));
  std::map<std::string, std::string> before, after, defaults;
  Flatten(recorded["spec"], "", &before);
  Flatten(current["spec"], "", &after);
  // A field the recorded spec lacks (a newer version added it) reads as today's default, which
  // new fields are chosen to keep the old behaviour with.
  Flatten(json::parse(JobSpecToJson(DefaultJobSpec())), "", &defaults);
  for (const auto& [path, value] : defaults)
    if (!before.count(path) && after.count(path)) before[path] = value;
  std::vector<std::string> diffs;
  for (const auto* side : {&before, &after})
    for (const auto& [path, value] : *side) {
      if (MayChangeOnResume(path)) continue;
      const auto b = before.find(path), a = after.find(path);
      const std::string old_v = b == before.end() ? "(default)" : b->second, new_v = a == after.end() ? "(default)" : a->second;
      if (old_v != new_v && (side == &after || a == after.end()))
        diffs.push_back(absl::StrCat(path, ": ", old_v, " -> ", new_v));
    }
  {
    // The global batch: resources.workers x optimizer.grad_accum micro-batches per step.
    auto count = [](const std::map<std::string, std::string>& m, const std::string& key) {
      int64_t v = 1;
      auto it = m.find(key);
      if (it != m.end() && !absl::SimpleAtoi(it->second, &v)) v = -1;
      return v;
    };
    const int64_t was = count(before, "resources.workers") * count(before, "optimizer.grad_accum");
    const int64_t now = count(after, "resources.workers") * count(after, "optimizer.grad_accum");
    if (was != now)
      diffs.push_back(absl::StrCat("the micro-batches per optimizer step (resources.workers x optimizer.grad_accum): ",
                                   was, " -> ", now, " (a run may change either as long as the product stays)"));
  }
  if (recorded.value("model_fingerprint", "") != model_fingerprint)
    diffs.push_back(absl::StrCat("the starting model's weights (", spec.model().path(), "): fingerprint ",
                                 recorded.value("model_fingerprint", "?"), " -> ", model_fingerprint));
  if (recorded.value("data_fingerprint", "") != data_fingerprint)
    diffs.push_back(absl::StrCat("the training data's content (", spec.data().train(),
                                 ": records, their text or images): fingerprint ", recorded.value("data_fingerprint", "?"),
                                 " -> ", data_fingerprint));
  if (diffs.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      out_dir.string(), " holds a run of a different job, so it cannot be resumed with this spec:\n  ",
      absl::StrJoin(diffs, "\n  "), "\nTo continue that run, rerun it with its own spec (recorded in ", record_path.string(),
      "); to train this job, choose a new output_dir or delete ", out_dir.string(), "."));
}

struct Dataset {
  std::vector<PreferenceExample> examples;
  std::vector<std::string> errors;  // "id: reason"
  int64_t truncated = 0;            // pairs cut to the context (data.truncate)
  int64_t without_image_pair = 0;   // datagen fallbacks whose image term is left out
};

// Fits one tokenised answer into the model's context: cut when `truncate` (returns true if it
// was), otherwise an error that says the lengths.
absl::StatusOr<bool> FitContext(TokenizedExample* ex, int64_t prompt_tokens, int64_t context, bool truncate,
                                const char* which) {
  const int64_t n = static_cast<int64_t>(ex->ids.size());
  if (n <= context) return false;
  if (!truncate || prompt_tokens >= context)
    return absl::InvalidArgumentError(absl::StrCat(
        which, " sequence is ", n, " tokens (image tokens included), longer than the model's context of ", context,
        truncate ? " even without its answer" : "; set data.truncate: true to cut it"));
  ex->ids.resize(context);
  ex->labels.resize(context);
  return true;
}

// mDPO's corrupted image: a random crop keeping 20-50% of each side, resized back (seeded).
cv::Mat RandomCrop(const cv::Mat& rgb, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> keep(0.2, 0.5);
  const int w = std::max(1, static_cast<int>(rgb.cols * keep(rng)));
  const int h = std::max(1, static_cast<int>(rgb.rows * keep(rng)));
  const int x = std::uniform_int_distribution<int>(0, rgb.cols - w)(rng);
  const int y = std::uniform_int_distribution<int>(0, rgb.rows - h)(rng);
  return ResizeBicubicPil(rgb(cv::Rect(x, y, w, h)).clone(), rgb.cols, rgb.rows);
}

}  // namespace

PerturbedImageSource PerturbedImageSourceFor(const std::string& variant, bool record_has_rejected_image) {
  // mDPO's corruption is its own random crop, so that mDPO and MFPO train on the same manifest
  // and differ only in m'.
  if (variant == "mdpo") return PerturbedImageSource::kRandomCrop;
  return record_has_rejected_image ? PerturbedImageSource::kRejectedImage : PerturbedImageSource::kGlobalNoise;
}

namespace {

absl::StatusOr<Dataset> LoadDataset(const v1::JobSpec& spec, const LoadedModel& m, const ObjectiveConfig& objective) {
  Dataset d;
  const fs::path manifest(spec.data().train());
  const fs::path root = manifest.parent_path();
  std::map<std::string, PixelInput> image_cache;
  auto pixels = [&](const std::string& rel, const std::function<absl::StatusOr<cv::Mat>(cv::Mat)>& transform,
                    const std::string& key) -> absl::StatusOr<PixelInput> {
    auto it = image_cache.find(key);
    if (it != image_cache.end()) return it->second;
    const fs::path p = fs::path(rel).is_absolute() ? fs::path(rel) : root / rel;
    MFPO_ASSIGN_OR_RETURN(cv::Mat rgb, ReadImageFile(p.string()));
    MFPO_ASSIGN_OR_RETURN(rgb, CatchAll(p.string(), [&] { return transform(rgb); }));
    absl::StatusOr<PixelInput> t = PreprocessForModel(rgb, m.image);
    if (!t.ok()) return Annotate(t.status(), p.string());
    image_cache.emplace(key, *t);
    return *t;
  };
  const auto identity = [](cv::Mat x) -> absl::StatusOr<cv::Mat> { return x; };
  int64_t read = 0;
  MFPO_RETURN_IF_ERROR(ReadJsonl(manifest.string(), [&](int line, const json& j) -> absl::Status {
    if (spec.data().max_samples() > 0 && read >= spec.data().max_samples()) return absl::OkStatus();
    ++read;
    auto fail = [&](const std::string& id, absl::string_view why) {
      d.errors.push_back(absl::StrCat(manifest.string(), ":", line, ": ", id, ": ", why));
      return absl::OkStatus();
    };
    absl::StatusOr<PreferenceRecord> r = ParsePreferenceRecord(j);
    if (!r.ok()) return fail("-", r.status().message());
    PreferenceExample ex;
    ex.id = r->id;
    auto chosen = m.tokenizer.Example(r->question, r->chosen);
    auto rejected = m.tokenizer.Example(r->question, r->rejected);
    if (!chosen.ok()) return fail(r->id, chosen.status().message());
    if (!rejected.ok()) return fail(r->id, rejected.status().message());
    ex.chosen = *chosen;
    ex.rejected = *rejected;
    auto image = pixels(r->image, identity, r->image);
    if (!image.ok()) return fail(r->id, image.status().message());
    ex.image = *image;
    // LLaVA-1.5: a fixed count; LLaVA-NeXT: what the image's size tiles into.
    const int64_t n_image = m.config.ImageTokensFor(ex.image.height, ex.image.width);
    ExpandImageTokens(m.config.image_token_index, n_image, &ex.chosen.ids, &ex.chosen.labels);
    ExpandImageTokens(m.config.image_token_index, n_image, &ex.rejected.ids, &ex.rejected.labels);
    {
      // Prompt tokens: those before the first answer label.
      auto prompt_tokens = [](const TokenizedExample& t) {
        int64_t k = 0;
        while (k < static_cast<int64_t>(t.labels.size()) && t.labels[k] == kIgnoreLabel) ++k;
        return k;
      };
      const int64_t context = m.config.text.max_position_embeddings;
      absl::StatusOr<bool> cut_c = FitContext(&ex.chosen, prompt_tokens(ex.chosen), context, spec.data().truncate(), "chosen");
      if (!cut_c.ok()) return fail(r->id, cut_c.status().message());
      absl::StatusOr<bool> cut_r =
          FitContext(&ex.rejected, prompt_tokens(ex.rejected), context, spec.data().truncate(), "rejected");
      if (!cut_r.ok()) return fail(r->id, cut_r.status().message());
      if (*cut_c || *cut_r) ++d.truncated;
    }
    if (objective.needs_perturbed()) {
      const uint64_t seed = SampleSeed(spec.seed(), r->id);
      absl::StatusOr<PixelInput> perturbed;
      const PerturbedImageSource source =
          PerturbedImageSourceFor(ObjectiveVariantName(objective.variant), !r->rejected_image.empty());
      if (source == PerturbedImageSource::kRandomCrop) {
        perturbed = pixels(r->image, [&](cv::Mat x) -> absl::StatusOr<cv::Mat> { return RandomCrop(x, seed); },
                           absl::StrCat(r->image, "#crop#", r->id));
      } else if (source == PerturbedImageSource::kRejectedImage) {
        perturbed = pixels(r->rejected_image, identity, r->rejected_image);
      } else {
        // Global noise depends only on the image and the seed: one per image, shared by its questions.
        const std::string image_key = j.value("image_id", r->image);
        perturbed = pixels(r->image, [&](cv::Mat x) {
          return AddDiffusionNoise(x, cv::Mat(), spec.objective().noise_step(), SampleSeed(spec.seed(), image_key));
        }, absl::StrCat(r->image, "#noise#", image_key));
      }
      if (!perturbed.ok()) return fail(r->id, perturbed.status().message());
      // (m', y_w) reuses the chosen sequence: m' must expand to as many image tokens as m.
      const int64_t n_perturbed = m.config.ImageTokensFor(perturbed->height, perturbed->width);
      if (n_perturbed != n_image)
        return fail(r->id, absl::StrCat("rejected image is ", perturbed->width, "x", perturbed->height, " (", n_perturbed,
                                        " image tokens), the image ", ex.image.width, "x", ex.image.height, " (", n_image,
                                        "): they must match"));
      ex.perturbed_image = *perturbed;
      // A datagen record whose keywords had no region has no image-preference pair.
      const bool fallback = source == PerturbedImageSource::kRejectedImage && j.contains("perturbation") &&
                            j["perturbation"].is_object() && j["perturbation"].contains("fallback") &&
                            j["perturbation"]["fallback"].is_boolean() && j["perturbation"]["fallback"].get<bool>();
      ex.image_pair = !fallback || spec.objective().image_term_on_fallback();
      if (!ex.image_pair) ++d.without_image_pair;
    }
    d.examples.push_back(std::move(ex));
    return absl::OkStatus();
  }, [&](int line, const std::string& why) { d.errors.push_back(absl::StrCat(manifest.string(), ":", line, ": ", why)); }));
  std::set<std::string> ids;
  for (const auto& ex : d.examples)
    if (!ids.insert(ex.id).second) return absl::InvalidArgumentError(absl::StrCat(manifest.string(), ": duplicate id '", ex.id, "'"));
  if (d.truncated > 0)
    spdlog::warn("{} pairs cut to the model's context of {} tokens (data.truncate)", d.truncated,
                 m.config.text.max_position_embeddings);
  if (d.without_image_pair > 0)
    spdlog::info("{} of {} records had no region for their keywords (datagen's global-noise fallback): no image "
                 "term for them (objective.image_term_on_fallback: false)",
                 d.without_image_pair, d.examples.size());
  return d;
}

// Runs `model` over all examples (no grad) in micro-batches: per example its reference
// log-probs [N, 3] (chosen, rejected, chosen on m'; unused columns 0) and chosen entropy [N].
absl::Status ScoreAll(LlavaModel& model, int64_t pad_id, const std::vector<PreferenceExample>& examples,
                      const ObjectiveConfig& objective, int64_t micro, bool bf16, const char* what,
                      torch::Tensor* logps, torch::Tensor* entropy) {
  const torch::Device device = model->parameters().front().device();
  torch::NoGradGuard no_grad;
  const int64_t n = static_cast<int64_t>(examples.size());
  *logps = torch::zeros({n, 3}, torch::kFloat32);
  *entropy = torch::zeros({n}, torch::kFloat32);
  ObjectiveConfig all = objective;
  if (all.variant == ObjectiveVariant::kSft) all.variant = ObjectiveVariant::kDpo;  // entropy + rejected are cheap
  const auto t0 = Clock::now();
  auto last = t0;
  for (int64_t s = 0; s < n; s += micro) {
    const int64_t e = std::min(n, s + micro);
    std::vector<PreferenceExample> batch(examples.begin() + s, examples.begin() + e);
    absl::StatusOr<StepLogps> scored;
    {
      AutocastRegion autocast(device, bf16);
      scored = ComputeStepLogps(model, pad_id, batch, all);
    }
    MFPO_RETURN_IF_ERROR(scored.status());
    const StepLogps& out = *scored;
    logps->slice(0, s, e).select(1, 0).copy_(out.logps.chosen.to(torch::kFloat32).cpu());
    if (out.logps.rejected.defined()) logps->slice(0, s, e).select(1, 1).copy_(out.logps.rejected.to(torch::kFloat32).cpu());
    if (out.logps.chosen_perturbed.defined())
      logps->slice(0, s, e).select(1, 2).copy_(out.logps.chosen_perturbed.to(torch::kFloat32).cpu());
    entropy->slice(0, s, e).copy_(out.chosen_entropy.to(torch::kFloat32).cpu());
    const auto now = Clock::now();
    if (std::chrono::duration<double>(now - last).count() > 5 || e == n) {
      const double rate = e / std::max(1e-9, std::chrono::duration<double>(now - t0).count());
      spdlog::info("{}: {}/{} samples ({:.1f}/s, ETA {:.0f} s)", what, e, n, rate, (n - e) / rate);
      last = now;
    }
  }
  return absl::OkStatus();
}

// ScoreAll on this rank's contiguous shard of the examples, all-reduced so that every rank
// holds every row (rows of other shards are zero before the sum, so the sum is exact). With
// one rank it is ScoreAll itself.
absl::Status ShardedScoreAll(Collective& g, LlavaModel& model, int64_t pad_id, const std::vector<PreferenceExample>& examples,
                             const ObjectiveConfig& objective, int64_t micro, bool bf16, const char* what,
                             torch::Tensor* logps, torch::Tensor* entropy) {
  if (g.size() == 1) return ScoreAll(model, pad_id, examples, objective, micro, bf16, what, logps, entropy);
  const int64_t n = static_cast<int64_t>(examples.size());
  const int64_t b = n * g.rank() / g.size(), e = n * (g.rank() + 1) / g.size();
  const std::vector<PreferenceExample> shard(examples.begin() + b, examples.begin() + e);
  torch::Tensor shard_logps, shard_entropy;
  absl::Status scored = ScoreAll(model, pad_id, shard, objective, micro, bf16,
                                 absl::StrCat(what, " (rank ", g.rank(), ": samples ", b, "-", e, ")").c_str(),
                                 &shard_logps, &shard_entropy);
  MFPO_RETURN_IF_ERROR(g.Agree(scored, what));
  *logps = torch::zeros({n, 3}, torch::kFloat32);
  *entropy = torch::zeros({n}, torch::kFloat32);
  logps->slice(0, b, e).copy_(shard_logps);
  entropy->slice(0, b, e).copy_(shard_entropy);
  MFPO_RETURN_IF_ERROR(g.AllReduceSum(*logps, absl::StrCat("all-reduce of the ", what, " log-probs")));
  return g.AllReduceSum(*entropy, absl::StrCat("all-reduce of the ", what, " entropy"));
}

// DDP's precondition: every rank starts from the same weights and trains on the same data.
// Checked by an all-gather of per-parameter checksums (sum and sum of squares in float64) and
// the data fingerprint; every rank sees the same gathered table, so all refuse together.
absl::Status SameStartOnEveryRank(Collective& g, LlavaModel& model, const std::string& data_fingerprint,
                                  const v1::JobSpec& spec) {
  std::vector<std::string> names;
  std::vector<torch::Tensor> params;
  for (auto& item : model->named_parameters(true)) {
    names.push_back(item.key());
    params.push_back(item.value());
  }
  const int64_t n = static_cast<int64_t>(params.size());
  torch::Tensor sums = torch::zeros({n + 2, 2}, torch::kFloat64);
  MFPO_RETURN_IF_ERROR(CatchAll("checksumming the weights", [&] {
    torch::NoGradGuard no_grad;
    for (int64_t i = 0; i < n; ++i) {
      const torch::Tensor f = params[i].detach().to(torch::kCPU).to(torch::kFloat64);
      sums[i][0] = f.sum();
      sums[i][1] = f.square().sum();
    }
  }));
  uint64_t h = 0;
  if (!absl::SimpleHexAtoi(data_fingerprint, &h)) h = 0;
  sums[n][0] = static_cast<double>(h >> 32);
  sums[n][1] = static_cast<double>(h & 0xffffffffu);
  // The spec, but for the thread count (each machine's own).
  v1::JobSpec same = spec;
  same.mutable_resources()->clear_threads();
  const uint64_t spec_hash = Fnv(1469598103934665603ull, JobSpecToJson(same));
  sums[n + 1][0] = static_cast<double>(spec_hash >> 32);
  sums[n + 1][1] = static_cast<double>(spec_hash & 0xffffffffu);
  MFPO_ASSIGN_OR_RETURN(torch::Tensor all, g.AllGather(sums, "all-gather of the spec, weight and data checksums"));
  for (int r = 1; r < g.size(); ++r) {
    if (torch::equal(all[r], all[0])) continue;
    if (!torch::equal(all[r][n + 1], all[0][n + 1]))
      return absl::FailedPreconditionError(absl::StrCat(
          "rank ", r, "'s job spec differs from rank 0's: every rank must run the same spec (output_dir, data, "
          "objective, optimizer... all but resources.threads); compare the spec files given to the ranks"));
    if (!torch::equal(all[r][n], all[0][n]))
      return absl::FailedPreconditionError(absl::StrCat(
          "rank ", r, " read other training data than rank 0 (", spec.data().train(),
          " differs between the ranks' machines): every rank must see the same data.train"));
    for (int64_t i = 0; i < n; ++i)
      if (!torch::equal(all[r][i], all[0][i]))
        return absl::FailedPreconditionError(absl::StrCat(
            "rank ", r, " loaded other weights than rank 0 (first difference: ", names[i], ") from ",
            spec.model().path(), ": every rank must start from the same model"));
  }
  return absl::OkStatus();
}

// Names of every metric ComputeObjective can report, in a fixed order: each step all-reduces
// their sums and counts (a rank that had no micro-batch contributes nothing).
const std::vector<std::string>& StepMetricNames() {
  static const auto* names = new std::vector<std::string>{
      "logp_chosen", "loss_sft", "loss", "logp_rejected", "reward_chosen", "reward_rejected", "margin_text",
      "reward_acc_text", "loss_text", "image_pairs", "logp_chosen_perturbed", "reward_chosen_perturbed",
      "margin_image", "reward_acc_image", "loss_image", "loss_margin"};
  return *names;
}

LoadModelOptions LoadOptionsFor(const v1::JobSpec& spec, const torch::Device& device) {
  LoadModelOptions load;
  load.dtype = spec.model().dtype() == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
  load.device = device;
  load.chat_template = spec.model().chat_template();
  return load;
}

LoraConfig LoraConfigOf(const v1::JobSpec& spec) {
  const auto& l = spec.optimizer().lora();
  LoraConfig c;
  c.rank = l.rank();
  c.alpha = l.alpha();
  c.dropout = l.dropout();
  c.target_modules.assign(l.target_modules().begin(), l.target_modules().end());
  c.base_model = spec.model().path();
  return c;
}

// output_dir/checkpoints/step-NNNNNN: the one place the directory name is made.
fs::path CheckpointDir(const fs::path& root, int64_t step) { return root / absl::StrFormat("step-%06d", step); }

struct Checkpoint {
  fs::path dir;
  int64_t step = -1;
};

std::vector<Checkpoint> ListCheckpoints(const fs::path& root) {
  std::vector<Checkpoint> out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || !absl::StartsWith(name, "step-") || absl::EndsWith(name, ".tmp")) continue;
    int64_t step = 0;
    if (!absl::SimpleAtoi(name.substr(5), &step)) continue;
    out.push_back({e.path(), step});
  }
  std::sort(out.begin(), out.end(), [](const Checkpoint& a, const Checkpoint& b) { return a.step < b.step; });
  return out;
}

// A rank's optimizer state file in a checkpoint.
std::string OptimizerFileName(int rank, int world) { return absl::StrFormat("rank-%05d-of-%05d.safetensors", rank, world); }

}  // namespace

struct TrainingJob::State {
  std::unique_ptr<Collective> group;  // first: destroyed last (the reducer uses it)
  v1::JobSpec spec;
  torch::Device device{torch::kCPU};
  bool bf16 = false;
  ObjectiveConfig objective;
  LoadedModel policy;
  Dataset data;
  fs::path out_dir, ckpt_root;
  std::unique_ptr<DirectoryLock> lock;
  std::string data_fingerprint;
  int64_t micro = 0;
  // ReferencePass.
  bool referenced = false;
  std::string fingerprint;  // of the reference model, tokenizer, perturbation and data
  torch::Tensor ref_logps, entropy;
  std::optional<LoadedModel> online_reference;
  // optimizer.lora: the adapters' settings. The reference is then the policy with its adapters
  // off whenever the reference model is the base model (no second copy); online, that is
  // `online_reference_is_policy` instead of a second model in `online_reference`.
  std::optional<LoraConfig> lora;
  bool online_reference_is_policy = false;
  // TrainPhase: built at the first phase; `step` is the optimizer step the policy in memory is at.
  std::vector<torch::Tensor> params;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  int64_t step = 0;
  bool metrics_trimmed = false;  // metrics.jsonl cut to `step` once; later phases only append
  // Data parallel.
  int64_t micro_batches_per_step = 1;  // over all ranks: resources.workers x optimizer.grad_accum
  int64_t accum = 1;                   // this rank's share of them
  NamedParams named_params;            // the trainable parameters, with names
  NamedParams owned;                   // those whose AdamW state this rank keeps (their fp32 masters
                                       // when the weights are not fp32)
  std::vector<int> owned_index;        // per owned entry: its index in `params`
  bool masters = false;                // `owned` holds fp32 master copies of bf16/fp16 weights
  std::vector<int> owner;              // per trainable parameter: the rank keeping its state
  std::unique_ptr<GradientReducer> reducer;
};

TrainingJob::TrainingJob(std::unique_ptr<State> state) : s_(std::move(state)) {}
TrainingJob::~TrainingJob() = default;
int64_t TrainingJob::samples() const { return static_cast<int64_t>(s_->data.examples.size()); }
int TrainingJob::rank() const { return s_->group->rank(); }

absl::StatusOr<std::unique_ptr<TrainingJob>> TrainingJob::Open(const v1::JobSpec& spec, const GroupOptions& group) {
  MFPO_RETURN_IF_ERROR(ValidateJobSpec(spec));
  auto s = std::make_unique<State>();
  s->spec = spec;
  // The step's micro-batches over all ranks; each rank accumulates its share.
  s->micro_batches_per_step = static_cast<int64_t>(spec.resources().workers()) * spec.optimizer().grad_accum();
  if (s->micro_batches_per_step % group.world_size != 0)
    return absl::InvalidArgumentError(absl::StrCat(
        "world size ", group.world_size, " does not divide the ", s->micro_batches_per_step,
        " micro-batches of an optimizer step (resources.workers ", spec.resources().workers(), " x optimizer.grad_accum ",
        spec.optimizer().grad_accum(), "): the global batch could not be kept"));
  s->accum = s->micro_batches_per_step / group.world_size;
  absl::StatusOr<torch::Device> resolved = ResolveDevice(spec.resources().device());
  if (!resolved.ok()) return Annotate(resolved.status(), "resources.device");
  s->device = *resolved;
  if (s->device.is_cuda() && group.world_size > 1) s->device = torch::Device(torch::kCUDA, group.local_rank);
  MFPO_ASSIGN_OR_RETURN(s->bf16, ResolveBf16Autocast(spec.resources().precision(), s->device));
  SetComputeThreads(spec.resources().threads());
  s->out_dir = fs::path(spec.output_dir());
  s->ckpt_root = s->out_dir / "checkpoints";
  const fs::path& out_dir = s->out_dir;
  std::error_code ec;
  // The run's files must not land among its inputs.
  for (const auto& [what, dir] : std::vector<std::pair<std::string, std::string>>{
           {"model.path", spec.model().path()},
           {"model.reference_path", spec.model().reference_path()},
           {"the directory of data.train", fs::path(spec.data().train()).parent_path().string()}})
    if (!dir.empty() && fs::equivalent(out_dir, dir, ec))
      return absl::InvalidArgumentError(absl::StrCat("output_dir: ", out_dir.string(), " is ", what, "; use a directory of its own"));

  ObjectiveConfig& objective = s->objective;
  MFPO_ASSIGN_OR_RETURN(objective.variant, ParseObjectiveVariant(spec.objective().variant()));
  objective.beta = spec.objective().beta();
  objective.delta = spec.objective().delta();
  objective.w_text = spec.objective().w_text();
  objective.w_image = spec.objective().w_image();
  objective.w_margin = spec.objective().w_margin();
  if (objective.variant != ObjectiveVariant::kMdpo && objective.variant != ObjectiveVariant::kMfpo) {
    objective.w_image = objective.w_margin = 0;
  }

  GroupOptions options = group;
  options.timeout_ms = static_cast<int64_t>(spec.resources().collective_timeout_s()) * 1000;
  MFPO_ASSIGN_OR_RETURN(s->group, Collective::Join(options, s->device));
  Collective& g = *s->group;
  // LibTorch seeds its default generator from the OS: the draws a run makes (LoRA's adapter
  // dropout) must come from the job's seed instead, one stream per rank. A resumed run replaces
  // this state with the checkpoint's.
  torch::manual_seed(SampleSeed(spec.seed(), absl::StrCat("torch-rng/rank", g.rank())));
  const bool writer = g.rank() == 0;

  // Every rank loads the policy and the data; a failure on any rank stops all of them.
  absl::Status loaded = [&]() -> absl::Status {
    MFPO_ASSIGN_OR_RETURN(s->policy, LoadModelDir(spec.model().path(), LoadOptionsFor(spec, s->device)));
    if (spec.optimizer().has_lora()) {
      s->lora = LoraConfigOf(spec);
      // Seeded: every rank (and every stage process of the job) starts from the same adapters.
      MFPO_ASSIGN_OR_RETURN(int layers, AttachLora(s->policy.model, *s->lora, spec.seed()));
      spdlog::info("LoRA: rank {}, alpha {}, {} adapted layers ({}); base weights frozen", s->lora->rank,
                   s->lora->alpha, layers, absl::StrJoin(s->lora->target_modules, ", "));
    }
    s->policy.model->SetActivationCheckpointing(spec.optimizer().activation_checkpointing());
    MFPO_ASSIGN_OR_RETURN(s->data, LoadDataset(spec, s->policy, objective));
    if (s->data.examples.empty()) {
      std::string reasons;
      for (size_t i = 0; i < s->data.errors.size() && i < 5; ++i) absl::StrAppend(&reasons, "\n  ", s->data.errors[i]);
      return absl::InvalidArgumentError(absl::StrCat(spec.data().train(), ": no usable records",
                                                     reasons.empty() ? "" : ":", reasons,
                                                     s->data.errors.size() > 5 ? "\n  ..." : ""));
    }
    s->data_fingerprint = DataFingerprint(s->data.examples);
    return absl::OkStatus();
  }();
  MFPO_RETURN_IF_ERROR(g.Agree(loaded, "loading the model and the data"));
  if (g.size() > 1) MFPO_RETURN_IF_ERROR(SameStartOnEveryRank(g, s->policy.model, s->data_fingerprint, spec));
  const Dataset& data = s->data;

  // Only now, with everything read, is output_dir touched (by rank 0): the run record first.
  absl::Status taken = [&]() -> absl::Status {
    if (!writer) return absl::OkStatus();
    fs::create_directories(out_dir, ec);
    if (ec) return absl::InternalError(absl::StrCat(out_dir.string(), ": ", ec.message()));
    MFPO_ASSIGN_OR_RETURN(s->lock, DirectoryLock::Acquire(out_dir.string()));
    {
      MFPO_ASSIGN_OR_RETURN(uint64_t model_hash, ModelHash(spec.model().path()));
      MFPO_RETURN_IF_ERROR(CheckRunRecord(out_dir, spec, absl::StrFormat("%016x", model_hash), s->data_fingerprint));
    }
    fs::create_directories(s->ckpt_root, ec);
    if (ec) return absl::InternalError(absl::StrCat(s->ckpt_root.string(), ": ", ec.message()));
    // Incomplete checkpoints (a crash while writing) are removed at start-up.
    for (const auto& e : fs::directory_iterator(s->ckpt_root, ec))
      if (absl::EndsWith(e.path().filename().string(), ".tmp")) fs::remove_all(e.path(), ec);
    if (!data.errors.empty()) {
      MFPO_RETURN_IF_ERROR(WriteFileAtomically((out_dir / "data_errors.txt").string(), absl::StrJoin(data.errors, "\n") + "\n"));
      spdlog::warn("{} records rejected (see {})", data.errors.size(), (out_dir / "data_errors.txt").string());
    }
    return absl::OkStatus();
  }();
  MFPO_RETURN_IF_ERROR(g.Agree(taken, absl::StrCat("taking ", out_dir.string())));
  if (g.size() > 1)
    spdlog::info("rank {} of {}: {} examples, {} micro-batches of {} per optimizer step ({} on this rank)", g.rank(),
                 g.size(), data.examples.size(), s->micro_batches_per_step, spec.optimizer().micro_batch(), s->accum);
  s->micro = spec.optimizer().micro_batch();
  return std::unique_ptr<TrainingJob>(new TrainingJob(std::move(s)));
}

absl::Status TrainingJob::ReferencePass() {
  State& st = *s_;
  Collective& g = *st.group;
  const v1::JobSpec& spec = st.spec;
  const ObjectiveConfig& objective = st.objective;
  LoadedModel& policy = st.policy;
  const int64_t n = samples();
  std::error_code ec;
  const std::string reference_dir = spec.model().reference_path().empty() ? spec.model().path() : spec.model().reference_path();
  const std::string perturbation = absl::StrCat(ObjectiveVariantName(objective.variant), "/t=", spec.objective().noise_step(),
                                                "/seed=", spec.seed(), "/n=", n, "/data=", st.data_fingerprint);
  MFPO_ASSIGN_OR_RETURN(st.fingerprint, ReferenceFingerprint(reference_dir, perturbation));
  const fs::path cache_path = st.out_dir / "reference_logps.safetensors";
  const LoadModelOptions load = LoadOptionsFor(spec, st.device);
  const bool writer = g.rank() == 0;
  // Online reference: a second, frozen copy of the reference model scores every micro-batch
  // during training (zero-copy loading shares its pages with the policy's until the policy
  // writes them). Only the policy's entropy is computed up front, for the curriculum.
  if (spec.objective().online_reference() && objective.needs_reference()) {
    st.online_reference_is_policy = st.lora.has_value() && reference_dir == spec.model().path();
    if (!st.online_reference_is_policy) {
      absl::Status loaded = [&]() -> absl::Status {
        MFPO_ASSIGN_OR_RETURN(st.online_reference, LoadModelDir(reference_dir, load));
        return absl::OkStatus();
      }();
      MFPO_RETURN_IF_ERROR(g.Agree(loaded, "loading the online reference model"));
      st.online_reference->model->eval();
      for (auto& prm : st.online_reference->model->parameters()) prm.set_requires_grad(false);
    }
    st.ref_logps = torch::zeros({n, 3});
    st.entropy = torch::zeros({n});
    if (spec.curriculum().mode() == "easy_to_hard") {
      torch::Tensor unused;
      MFPO_RETURN_IF_ERROR(ShardedScoreAll(g, policy.model, policy.config.pad_token_id, st.data.examples, objective,
                                           st.micro, st.bf16, "difficulty scoring", &unused, &st.entropy));
    }
    st.referenced = true;
    return absl::OkStatus();
  }
  if (!objective.needs_reference() && spec.curriculum().mode() == "end_to_end") {
    // Plain SFT: neither reference log-probs nor difficulty are needed.
    st.ref_logps = torch::zeros({n, 3});
    st.entropy = torch::zeros({n});
    st.referenced = true;
    return absl::OkStatus();
  }
  // Rank 0 reads the cache (the other ranks may not share its disk) and sends it.
  torch::Tensor cached = torch::zeros({1}, torch::kFloat32);
  absl::Status read = [&]() -> absl::Status {
    if (!writer || !fs::exists(cache_path, ec)) return absl::OkStatus();
    MFPO_ASSIGN_OR_RETURN(auto cache, SafetensorsFile::Open(cache_path.string()));
    auto it = cache->metadata().find("fingerprint");
    if (it == cache->metadata().end() || it->second != st.fingerprint)
      return absl::FailedPreconditionError(absl::StrCat(
          cache_path.string(), ": reference cache fingerprint ", it == cache->metadata().end() ? "(none)" : it->second,
          " does not match the reference model / tokenizer / data of this job (", st.fingerprint,
          "); the output_dir belongs to another run: choose a new output_dir"));
    MFPO_ASSIGN_OR_RETURN(st.ref_logps, cache->Load("logps", torch::kFloat32));
    MFPO_ASSIGN_OR_RETURN(st.entropy, cache->Load("entropy", torch::kFloat32));
    if (st.ref_logps.size(0) != n || st.entropy.size(0) != n)
      return absl::FailedPreconditionError(absl::StrCat(cache_path.string(), ": wrong sample count"));
    cached.fill_(1);
    spdlog::info("reference log-probs: using the cache {} ({})", cache_path.string(), st.fingerprint);
    return absl::OkStatus();
  }();
  MFPO_RETURN_IF_ERROR(g.Agree(read, "reading the reference cache"));
  MFPO_RETURN_IF_ERROR(g.Broadcast(cached, 0, "broadcast of whether the reference cache is used"));
  if (cached.item<float>() > 0) {
    if (!writer) {
      st.ref_logps = torch::zeros({n, 3}, torch::kFloat32);
      st.entropy = torch::zeros({n}, torch::kFloat32);
    }
    MFPO_RETURN_IF_ERROR(g.Broadcast(st.ref_logps, 0, "broadcast of the cached reference log-probs"));
    MFPO_RETURN_IF_ERROR(g.Broadcast(st.entropy, 0, "broadcast of the cached entropy"));
    st.referenced = true;
    return absl::OkStatus();
  }
  if (reference_dir == spec.model().path()) {
    std::optional<LoraDisabled> base_only;  // LoRA: the reference is the base model
    if (st.lora) base_only.emplace(policy.model);
    MFPO_RETURN_IF_ERROR(ShardedScoreAll(g, policy.model, policy.config.pad_token_id, st.data.examples, objective,
                                         st.micro, st.bf16, "reference pass", &st.ref_logps, &st.entropy));
  } else {
    std::optional<LoadedModel> reference;
    absl::Status loaded = [&]() -> absl::Status {
      MFPO_ASSIGN_OR_RETURN(reference, LoadModelDir(reference_dir, load));
      return absl::OkStatus();
    }();
    MFPO_RETURN_IF_ERROR(g.Agree(loaded, "loading the reference model"));
    torch::Tensor unused;
    MFPO_RETURN_IF_ERROR(ShardedScoreAll(g, reference->model, reference->config.pad_token_id, st.data.examples,
                                         objective, st.micro, st.bf16, "reference pass", &st.ref_logps, &unused));
    MFPO_RETURN_IF_ERROR(ShardedScoreAll(g, policy.model, policy.config.pad_token_id, st.data.examples, objective,
                                         st.micro, st.bf16, "difficulty scoring", &unused, &st.entropy));
  }
  absl::Status written = absl::OkStatus();
  if (writer) {
    json ids = json::array();
    for (const auto& ex : st.data.examples) ids.push_back(ex.id);
    written = WriteSafetensors(cache_path.string(), {{"logps", st.ref_logps}, {"entropy", st.entropy}},
                               {{"fingerprint", st.fingerprint}, {"ids", ids.dump()}});
  }
  MFPO_RETURN_IF_ERROR(g.Agree(written, "writing the reference cache"));
  st.referenced = true;
  return absl::OkStatus();
}

absl::StatusOr<Curriculum> TrainingJob::ScoreDifficulty() {
  State& st = *s_;
  if (!st.referenced) return absl::FailedPreconditionError("ScoreDifficulty needs ReferencePass first");
  const v1::JobSpec& spec = st.spec;
  const int64_t n = samples();
  Curriculum c;
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  if (spec.curriculum().mode() == "easy_to_hard") {
    auto e = st.entropy.accessor<float, 1>();
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return e[a] < e[b]; });
    const int tiers = spec.curriculum().tiers();
    for (int t = 0; t < tiers; ++t) {
      c.phases.emplace_back(order.begin() + n * t / tiers, order.begin() + n * (t + 1) / tiers);
      c.phase_names.push_back(tiers == 3 ? std::vector<std::string>{"easy", "medium", "hard"}[t] : absl::StrCat("tier", t));
    }
  } else {
    c.phases.push_back(order);
    c.phase_names.push_back("all");
  }
  // The optimizer step's batch: the same for any number of ranks.
  const int64_t per_step = st.micro * st.micro_batches_per_step;
  for (const auto& p : c.phases) {
    const int64_t steps = (static_cast<int64_t>(p.size()) + per_step - 1) / per_step * spec.optimizer().epochs();
    c.phase_steps.push_back(steps);
    c.total_steps += steps;
  }
  json phases = json::array();
  for (size_t p = 0; p < c.phases.size(); ++p) {
    json ids = json::array();
    for (int64_t i : c.phases[p]) ids.push_back(st.data.examples[i].id);
    phases.push_back({{"name", c.phase_names[p]}, {"steps", c.phase_steps[p]}, {"ids", ids}});
  }
  absl::Status written = absl::OkStatus();
  if (st.group->rank() == 0)
    written = WriteFileAtomically(
        (st.out_dir / "curriculum.json").string(),
        json{{"fingerprint", st.fingerprint}, {"mode", spec.curriculum().mode()}, {"total_steps", c.total_steps},
             {"phases", phases}}.dump(1) + "\n");
  MFPO_RETURN_IF_ERROR(st.group->Agree(written, "writing curriculum.json"));
  return c;
}

absl::Status TrainingJob::SaveCheckpoint(const Curriculum& c, int64_t step, int phase) {
  State& st = *s_;
  Collective& g = *st.group;
  const bool writer = g.rank() == 0;
  std::error_code ec;
  const fs::path final_dir = CheckpointDir(st.ckpt_root, step);
  const fs::path tmp = fs::path(final_dir.string() + ".tmp");
  const std::string what = absl::StrCat("the checkpoint of step ", step);
  // Rank 0 decides whether it exists and prepares step-N.tmp; the ranks write into it (a
  // multi-machine run keeps output_dir on a volume every rank mounts).
  torch::Tensor exists = torch::zeros({1});
  absl::Status prepared = absl::OkStatus();
  if (writer) {
    if (fs::exists(final_dir, ec)) {
      exists.fill_(1);
    } else {
      fs::remove_all(tmp, ec);
      fs::create_directories(tmp / "optimizer", ec);
      if (ec) prepared = absl::InternalError(absl::StrCat((tmp / "optimizer").string(), ": ", ec.message()));
    }
  }
  MFPO_RETURN_IF_ERROR(g.Agree(prepared, absl::StrCat("preparing ", what)));
  MFPO_RETURN_IF_ERROR(g.Broadcast(exists, 0, absl::StrCat("broadcast of whether ", what, " exists")));
  if (exists.item<float>() > 0) return absl::OkStatus();
  // Written whole under step-N.tmp and renamed; every file goes through a path that reports the
  // OS error. Each rank writes optimizer/rank-R-of-N.safetensors: the AdamW state of the
  // parameters it keeps (rank 0: all of them unless optimizer.shard_state) and its RNG state.
  // On failure the partial directory is removed and the earlier checkpoints stay.
  absl::Status written = [&]() -> absl::Status {
    absl::Status mine = CatchAll("collecting the optimizer state", [&]() -> absl::Status {
      NamedTensors tensors;
      if (writer || st.spec.optimizer().shard_state()) {
        tensors = AdamWStateTensors(*st.optimizer, st.owned);
        if (st.masters)
          for (const auto& [name, master] : st.owned) tensors.emplace_back(name + ".master", master);
      }
      {
        at::Generator gen = at::detail::getDefaultCPUGenerator();
        std::lock_guard<std::mutex> lock(gen.mutex());
        tensors.emplace_back("rng_state.cpu", gen.get_state());
      }
      return WriteSafetensors((tmp / "optimizer" / OptimizerFileName(g.rank(), g.size())).string(), tensors,
                              {{"rank", std::to_string(g.rank())}, {"world_size", std::to_string(g.size())},
                               {"shard_state", st.spec.optimizer().shard_state() ? "true" : "false"}});
    });
    MFPO_RETURN_IF_ERROR(g.Agree(mine, absl::StrCat("writing the optimizer state of ", what)));
    absl::Status rest = absl::OkStatus();
    if (writer) {
      rest = [&]() -> absl::Status {
        if (st.lora) {
          // The adapter alone, in PEFT's layout; the base model stays spec.model.path.
          MFPO_RETURN_IF_ERROR(SaveAdapter(tmp.string(), st.policy.model, *st.lora));
        } else {
          MFPO_RETURN_IF_ERROR(SaveModelWeights(tmp.string(), st.policy.model));
          MFPO_RETURN_IF_ERROR(CopyModelSideFiles(st.spec.model().path(), tmp.string()));
        }
        MFPO_RETURN_IF_ERROR(WriteFileAtomically(
            (tmp / "trainer_state.json").string(),
            json{{"global_step", step}, {"phase", c.phase_names[phase]}, {"total_steps", c.total_steps},
                 {"fingerprint", st.fingerprint}, {"world_size", g.size()},
                 {"micro_batches_per_step", st.micro_batches_per_step},
                 {"shard_state", st.spec.optimizer().shard_state()}}
                    .dump(2) + "\n"));
        MFPO_RETURN_IF_ERROR(WriteFileAtomically((tmp / "job_spec.json").string(), JobSpecToJson(st.spec)));
        if (std::rename(tmp.c_str(), final_dir.c_str()) != 0) return ErrnoStatus(errno, final_dir.string(), "cannot rename");
        return absl::OkStatus();
      }();
    }
    return g.Agree(rest, absl::StrCat("writing ", what));
  }();
  if (!written.ok()) {
    if (!writer) return written;
    fs::remove_all(tmp, ec);
    const auto kept = ListCheckpoints(st.ckpt_root);
    return Annotate(written, absl::StrCat("writing the checkpoint of step ", step, " (",
                                          kept.empty() ? std::string("no earlier checkpoint")
                                                       : absl::StrCat("kept ", kept.back().dir.string()),
                                          "; rerun the same command to resume once the cause is fixed)"));
  }
  if (!writer) return absl::OkStatus();
  const int keep = st.spec.checkpoint().keep_last();
  auto all = ListCheckpoints(st.ckpt_root);
  for (size_t i = 0; keep > 0 && i + keep < all.size(); ++i) fs::remove_all(all[i].dir, ec);
  return absl::OkStatus();
}

absl::Status TrainingJob::BuildOptimizer() {
  State& st = *s_;
  Collective& g = *st.group;
  const v1::JobSpec& spec = st.spec;
  // Trainable parameters. The vision tower runs without autograd unless some of it trains.
  // With LoRA only the adapters train (optimizer.trainable is empty then).
  bool vision_trains = false;
  for (const auto& prefix : spec.optimizer().trainable()) vision_trains = vision_trains || absl::StartsWith(prefix, "vision_tower");
  st.policy.model->FreezeVisionTower(!vision_trains);
  for (auto& item : st.policy.model->named_parameters(true)) {
    bool train = st.lora.has_value() && IsLoraParameterName(item.key());
    for (const auto& prefix : spec.optimizer().trainable()) train = train || absl::StartsWith(item.key(), prefix);
    item.value().set_requires_grad(train);
    if (train) {
      st.params.push_back(item.value());
      st.named_params.emplace_back(item.key(), item.value());
    }
  }
  if (st.params.empty()) return absl::InvalidArgumentError("optimizer.trainable selects no parameters");
  // DDP: every rank trains from rank 0's weights (already checked equal in Open).
  if (g.size() > 1) {
    torch::NoGradGuard no_grad;
    for (const auto& [name, prm] : st.named_params)
      MFPO_RETURN_IF_ERROR(g.Broadcast(prm.detach(), 0, absl::StrCat("broadcast of parameter ", name)));
  }
  // ZeRO-1: each rank keeps the AdamW state of its share of the parameters.
  const bool shard = spec.optimizer().shard_state() && g.size() > 1;
  std::vector<int64_t> numels;
  for (const auto& prm : st.params) numels.push_back(prm.numel());
  st.owner = shard ? OwnerOfParams(numels, g.size()) : std::vector<int>(st.params.size(), g.rank());
  // Weights held in bf16 (model.dtype bfloat16) are updated through fp32 master copies: an AdamW
  // step of lr 1e-5 is below bf16's resolution for most weights and would be rounded away.
  st.masters = false;
  for (const auto& prm : st.params) st.masters = st.masters || prm.scalar_type() != torch::kFloat32;
  std::vector<torch::Tensor> owned;
  for (size_t k = 0; k < st.params.size(); ++k)
    if (st.owner[k] == g.rank()) {
      torch::Tensor t = st.params[k];
      if (st.masters) {
        torch::NoGradGuard no_grad;
        t = st.params[k].detach().to(torch::kFloat32).clone();
      }
      st.owned.emplace_back(st.named_params[k].first, t);
      st.owned_index.push_back(static_cast<int>(k));
      owned.push_back(t);
    }
  if (owned.empty())
    return absl::InvalidArgumentError(absl::StrCat("optimizer.shard_state: rank ", g.rank(), " of ", g.size(),
                                                   " would keep no parameters (", st.params.size(),
                                                   " trainable tensors): use fewer workers or no sharding"));
  st.optimizer = std::make_unique<torch::optim::AdamW>(owned, torch::optim::AdamWOptions(spec.optimizer().lr())
                                                                  .betas({spec.optimizer().beta1(), spec.optimizer().beta2()})
                                                                  .eps(spec.optimizer().eps())
                                                                  .weight_decay(spec.optimizer().weight_decay()));
  return absl::OkStatus();
}

absl::Status TrainingJob::Resume(const TrainControl& control) {
  State& st = *s_;
  Collective& g = *st.group;
  // Rank 0 names the newest checkpoint; every rank loads it (from the shared output_dir).
  torch::Tensor newest = torch::full({1}, -1.0, torch::kFloat64);
  if (control.resume && g.rank() == 0) {
    auto ckpts = ListCheckpoints(st.ckpt_root);
    if (!ckpts.empty()) newest.fill_(static_cast<double>(ckpts.back().step));
  }
  MFPO_RETURN_IF_ERROR(g.Broadcast(newest, 0, "broadcast of the checkpoint to resume from"));
  const int64_t step = static_cast<int64_t>(newest.item<double>());
  if (step <= st.step) return absl::OkStatus();
  const fs::path dir = CheckpointDir(st.ckpt_root, step);
  absl::Status loaded = [&]() -> absl::Status {
    if (st.lora) {
      MFPO_RETURN_IF_ERROR(LoadAdapterWeights(dir.string(), st.policy.model));
    } else {
      MFPO_ASSIGN_OR_RETURN(SafetensorsCheckpoint weights, SafetensorsCheckpoint::Open(dir.string()));
      MFPO_RETURN_IF_ERROR(LoadWeights(weights, *st.policy.model).status());
    }
    std::error_code ec;
    const fs::path optimizer_dir = dir / "optimizer";
    if (fs::is_directory(optimizer_dir, ec)) {
      std::vector<std::shared_ptr<SafetensorsFile>> files;
      std::vector<fs::path> paths;
      for (const auto& e : fs::directory_iterator(optimizer_dir, ec))
        if (e.path().extension() == ".safetensors") paths.push_back(e.path());
      std::sort(paths.begin(), paths.end());
      // Every writer's file must be there (rank-R-of-N for each R < N).
      int writers = 0;
      for (const auto& path : paths) {
        int rank = 0, of = 0;
        if (std::sscanf(path.filename().c_str(), "rank-%d-of-%d.safetensors", &rank, &of) == 2) writers = std::max(writers, of);
      }
      for (int r = 0; r < writers; ++r)
        if (!fs::exists(optimizer_dir / OptimizerFileName(r, writers), ec))
          return absl::DataLossError(absl::StrCat((optimizer_dir / OptimizerFileName(r, writers)).string(),
                                                  " is missing: the checkpoint is incomplete (remove ", dir.string(),
                                                  " to resume from the one before it)"));
      for (const auto& path : paths) {
        MFPO_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(path.string()));
        files.push_back(std::move(f));
      }
      MFPO_RETURN_IF_ERROR(LoadAdamWState(*st.optimizer, st.owned, files));
      if (st.masters) MFPO_RETURN_IF_ERROR(LoadMasters(files));
      // This rank's RNG state, when the checkpoint was written by as many ranks.
      const fs::path own = optimizer_dir / OptimizerFileName(g.rank(), g.size());
      if (fs::exists(own, ec)) {
        MFPO_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(own.string()));
        if (f->Find("rng_state.cpu")) {
          MFPO_ASSIGN_OR_RETURN(torch::Tensor rng, f->Load("rng_state.cpu", torch::kUInt8));
          MFPO_RETURN_IF_ERROR(CatchAll(absl::StrCat(own.string(), ": restoring the RNG state"), [&] {
            at::Generator gen = at::detail::getDefaultCPUGenerator();
            std::lock_guard<std::mutex> lock(gen.mutex());
            gen.set_state(rng);
          }));
        }
      }
    } else {
      // A checkpoint of an earlier version: the whole AdamW state in LibTorch's format.
      const std::string optimizer_path = (dir / "optimizer.pt").string();
      if (st.spec.optimizer().shard_state() && g.size() > 1)
        return absl::FailedPreconditionError(absl::StrCat(
            optimizer_path, ": a checkpoint from before sharded optimizer state; resume it without optimizer.shard_state"));
      MFPO_RETURN_IF_ERROR(CheckRegularFile(optimizer_path, "optimizer state"));
      MFPO_RETURN_IF_ERROR(CatchAll(absl::StrCat(optimizer_path, ": loading optimizer state"),
                                    [&] { torch::load(*st.optimizer, optimizer_path); }));
      if (st.masters) MFPO_RETURN_IF_ERROR(LoadMasters({}));
    }
    return absl::OkStatus();
  }();
  MFPO_RETURN_IF_ERROR(g.Agree(loaded, absl::StrCat("resuming from ", dir.string())));
  st.step = step;
  if (g.rank() == 0) spdlog::info("resumed from {} (step {})", dir.string(), st.step);
  return absl::OkStatus();
}

absl::Status TrainingJob::LoadMasters(const std::vector<std::shared_ptr<SafetensorsFile>>& files) {
  State& st = *s_;
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < st.owned.size(); ++k) {
    auto& [name, master] = st.owned[k];
    const std::string key = name + ".master";
    const SafetensorsFile* file = nullptr;
    for (const auto& f : files)
      if (f->Find(key)) file = f.get();
    if (file == nullptr) {
      // A checkpoint of fp32 weights or from before master copies: the weights are the masters.
      master.copy_(st.params[st.owned_index[k]].detach());
      continue;
    }
    MFPO_ASSIGN_OR_RETURN(torch::Tensor t, file->Load(key, torch::kFloat32));
    if (!t.sizes().equals(master.sizes()))
      return absl::DataLossError(absl::StrCat(file->path(), ": '", key, "' has the wrong shape"));
    master.copy_(t);
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainResult> TrainingJob::TrainPhase(const Curriculum& c, int p, const TrainControl& control,
                                                    std::ostream& progress) {
  State& st = *s_;
  Collective& g = *st.group;
  const bool writer = g.rank() == 0;
  const v1::JobSpec& spec = st.spec;
  LoadedModel& policy = st.policy;
  if (!st.referenced) return absl::FailedPreconditionError("TrainPhase needs ReferencePass first");
  if (p < 0 || p >= static_cast<int>(c.phases.size()))
    return absl::InvalidArgumentError(absl::StrCat("phase ", p, " is not one of the curriculum's ", c.phases.size()));
  std::error_code ec;
  if (!st.optimizer) MFPO_RETURN_IF_ERROR(BuildOptimizer());
  torch::optim::AdamW& optimizer = *st.optimizer;
  const std::vector<torch::Tensor>& params = st.params;
  // Resume from the newest checkpoint when it is ahead of the policy in memory.
  MFPO_RETURN_IF_ERROR(Resume(control));
  // A real process group, also of one rank (scripts/gpu-check.sh on one GPU), reduces gradients.
  // Made after loading: loading weights may give a parameter a new gradient accumulator, and the
  // reducer's hooks sit on the accumulators (hooks on the old ones would never fire).
  if (g.backend() != "none") st.reducer = std::make_unique<GradientReducer>(&g, st.params);
  int64_t first = 0;  // the phase's first global step
  for (int q = 0; q < p; ++q) first += c.phase_steps[q];
  const int64_t end = first + c.phase_steps[p];
  if (st.step >= end) return TrainResult{CheckpointDir(st.ckpt_root, end).string(), end, true};

  // metrics.jsonl holds one line per step: lines of steps from the resume point on (a run killed
  // between checkpoints) are dropped before training repeats those steps. Once per job: the
  // phases after it in this process append to a file that is already in step. Rank 0's file.
  const fs::path metrics_path = st.out_dir / "metrics.jsonl";
  std::ofstream metrics_out;
  absl::Status opened = [&]() -> absl::Status {
    if (!writer) return absl::OkStatus();
    if (!st.metrics_trimmed && fs::exists(metrics_path, ec)) {
      std::string kept;
      MFPO_RETURN_IF_ERROR(ReadJsonl(metrics_path.string(), [&](int, const json& j) -> absl::Status {
        if (j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() < st.step)
          kept += j.dump() + "\n";
        return absl::OkStatus();
      }, [](int, const std::string&) {}));
      MFPO_RETURN_IF_ERROR(WriteFileAtomically(metrics_path.string(), kept));
    }
    st.metrics_trimmed = true;
    metrics_out.open(metrics_path, std::ios::app);
    if (!metrics_out) return ErrnoStatus(errno, metrics_path.string(), "cannot open for appending");
    return absl::OkStatus();
  }();
  MFPO_RETURN_IF_ERROR(g.Agree(opened, absl::StrCat("opening ", metrics_path.string())));
  const int64_t micro = st.micro;
  const int64_t per_step = micro * st.micro_batches_per_step;  // the step's batch over all ranks
  const std::vector<std::string>& metric_names = StepMetricNames();
  const int64_t k_metrics = static_cast<int64_t>(metric_names.size());
  const auto t0 = Clock::now();
  int64_t samples_done = 0;  // all ranks
  policy.model->train();
  for (int64_t s = 0; s < c.phase_steps[p]; ++s) {
    const int64_t step = first + s;
    if (step < st.step) continue;  // done before the resume point
    if (control.stop_after_steps > 0 && step >= control.stop_after_steps) {
      MFPO_RETURN_IF_ERROR(SaveCheckpoint(c, step, p));
      if (writer) progress << "\nstopped after " << step << " steps (checkpoint written)\n";
      return TrainResult{CheckpointDir(st.ckpt_root, step).string(), step, false};
    }
    const auto step_start = Clock::now();
    // The data order is a pure function of (seed, phase, epoch): resuming needs no cursor state.
    const int64_t steps_per_epoch = c.phase_steps[p] / spec.optimizer().epochs();
    const int64_t epoch = s / steps_per_epoch;
    std::vector<int64_t> idx = c.phases[p];
    std::mt19937_64 rng(SampleSeed(spec.seed(), absl::StrCat("phase", p, "epoch", epoch)));
    std::shuffle(idx.begin(), idx.end(), rng);
    const int64_t begin = (s % steps_per_epoch) * per_step;
    const double lr = ScheduledLearningRate(spec.optimizer().lr(), spec.optimizer().warmup_ratio(), step, c.total_steps);
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    {
      torch::NoGradGuard no_grad;
      for (const auto& prm : params)
        if (prm.grad().defined()) {
          prm.grad().detach_();
          prm.grad().zero_();
        }
    }
    // The step's batch is idx[begin, begin + per_step), cut into micro-batches of `micro`; rank r
    // takes micro-batches r*accum .. r*accum+accum-1 (one rank: all of them, in order), so any
    // number of ranks trains on exactly the batch one process would.
    std::vector<int64_t> starts;
    for (int64_t a = 0; a < st.accum; ++a) {
      const int64_t mb = begin + (g.rank() * st.accum + a) * micro;
      if (mb < static_cast<int64_t>(idx.size())) starts.push_back(mb);
    }
    // Metric sums, their counts, then samples and tokens (the sequences' lengths as forwarded).
    std::vector<double> local_sums(2 * k_metrics + 2, 0.0);
    double t_data = 0, t_forward = 0, t_backward = 0;
    auto lap = [](Clock::time_point& since) {
      const auto now = Clock::now();
      const double d = std::chrono::duration<double>(now - since).count();
      since = now;
      return d;
    };
    absl::Status local = [&]() -> absl::Status {
      for (size_t k = 0; k < starts.size(); ++k) {
        auto since = Clock::now();
        const int64_t mb = starts[k];
        std::vector<PreferenceExample> batch;
        std::vector<int64_t> rows;
        for (int64_t q = mb; q < std::min<int64_t>(mb + micro, idx.size()); ++q) {
          batch.push_back(st.data.examples[idx[q]]);
          rows.push_back(idx[q]);
        }
        ResponseLogps ref;
        const bool online = st.online_reference.has_value() || st.online_reference_is_policy;
        if (!online) {
          torch::Tensor r = st.ref_logps.index_select(0, torch::tensor(rows, torch::kInt64)).to(st.device);
          ref.chosen = r.select(1, 0);
          ref.rejected = r.select(1, 1);
          ref.chosen_perturbed = r.select(1, 2);
        }
        t_data += lap(since);
        absl::StatusOr<StepLogps> policy_out, reference_out;
        {
          AutocastRegion autocast(st.device, st.bf16);
          // The reference first: its activations are freed before the policy's graph is built, so
          // the two never peak together.
          if (st.online_reference) {
            torch::NoGradGuard no_grad;
            reference_out = ComputeStepLogps(st.online_reference->model, st.online_reference->config.pad_token_id,
                                             batch, st.objective);
          } else if (online) {  // LoRA: the same model with its adapters off
            torch::NoGradGuard no_grad;
            LoraDisabled base_only(policy.model);
            reference_out = ComputeStepLogps(policy.model, policy.config.pad_token_id, batch, st.objective);
          }
          policy_out = ComputeStepLogps(policy.model, policy.config.pad_token_id, batch, st.objective);
        }
        MFPO_RETURN_IF_ERROR(policy_out.status());
        const StepLogps& out = *policy_out;
        if (online) {
          MFPO_RETURN_IF_ERROR(reference_out.status());
          ref = reference_out->logps;
        }
        ObjectiveOutput obj = ComputeObjective(st.objective, out.logps, ref, out.chosen_tokens);
        t_forward += lap(since);
        // The step's last backward on this rank launches the gradient all-reduce.
        if (st.reducer && k + 1 == starts.size()) st.reducer->Arm();
        MFPO_RETURN_IF_ERROR(CatchAll("backward", [&] { (obj.loss / st.accum).backward(); }));
        t_backward += lap(since);
        for (int64_t m = 0; m < k_metrics; ++m) {
          auto it = obj.metrics.find(metric_names[m]);
          if (it == obj.metrics.end()) continue;
          local_sums[m] += it->second;
          local_sums[k_metrics + m] += 1;
        }
        local_sums[2 * k_metrics] += static_cast<double>(batch.size());
        for (const auto& ex : batch)
          local_sums[2 * k_metrics + 1] +=
              static_cast<double>(ex.chosen.ids.size()) * (st.objective.needs_perturbed() ? 2 : 1) +
              (st.objective.variant == ObjectiveVariant::kSft ? 0.0 : static_cast<double>(ex.rejected.ids.size()));
      }
      return absl::OkStatus();
    }();
    // Every rank completes the step's collectives, also after a failure (the others are in
    // them), then all learn whether any rank failed.
    auto since = Clock::now();
    ReduceStats reduce;
    absl::Status reduced = st.reducer ? st.reducer->Finish(&reduce) : absl::OkStatus();
    const double t_wait = lap(since);
    torch::Tensor sums = torch::tensor(local_sums, torch::kFloat64);  // summed over the ranks by Agree
    MFPO_RETURN_IF_ERROR(g.Agree(local.ok() ? reduced : local, absl::StrCat("step ", step), &sums));
    double grad_norm = 0;
    {
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> norms;
      for (const auto& prm : params)
        if (prm.grad().defined()) norms.push_back(prm.grad().norm(2).to(torch::kFloat64));
      grad_norm = norms.empty() ? 0.0 : torch::stack(norms).norm(2).item<double>();
      if (spec.optimizer().max_grad_norm() > 0 && grad_norm > spec.optimizer().max_grad_norm()) {
        const double scale = spec.optimizer().max_grad_norm() / (grad_norm + 1e-6);
        for (const auto& prm : params)
          if (prm.grad().defined()) prm.grad().mul_(scale);
      }
    }
    if (st.masters) {
      torch::NoGradGuard no_grad;
      for (size_t k = 0; k < st.owned.size(); ++k) {
        const torch::Tensor& grad = params[st.owned_index[k]].grad();
        if (grad.defined()) st.owned[k].second.mutable_grad() = grad.to(torch::kFloat32);
      }
    }
    optimizer.step();
    if (st.masters) {
      torch::NoGradGuard no_grad;
      for (size_t k = 0; k < st.owned.size(); ++k) params[st.owned_index[k]].detach().copy_(st.owned[k].second);
    }
    if (spec.optimizer().shard_state() && g.size() > 1) MFPO_RETURN_IF_ERROR(ShareUpdatedShards());
    const double t_optimizer = lap(since);
    st.step = step + 1;
    const int64_t step_samples = static_cast<int64_t>(sums[2 * k_metrics].item<double>());
    samples_done += step_samples;
    json line = {{"step", step}, {"phase", c.phase_names[p]}, {"lr", lr}, {"grad_norm", grad_norm}};
    for (int64_t m = 0; m < k_metrics; ++m) {
      const double count = sums[k_metrics + m].item<double>();
      if (count > 0) line[metric_names[m]] = sums[m].item<double>() / count;
    }
    if (line.contains("loss") && !std::isfinite(line["loss"].get<double>()))
      return absl::DataLossError(absl::StrCat(
          "step ", step, ": the loss is not finite (", line["loss"].dump(), "), gradient norm ", grad_norm,
          ": stopped before writing a checkpoint from it (a corrupt resumed checkpoint, bad data or a too high "
          "learning rate; the last good checkpoint is kept)"));
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    const double rate = samples_done / std::max(secs, 1e-9);
    line["samples_per_second"] = rate;
    line["samples"] = step_samples;
    line["tokens"] = sums[2 * k_metrics + 1].item<double>();
    line["time"] = {{"data_s", t_data},           {"forward_s", t_forward}, {"backward_s", t_backward},
                    {"allreduce_wait_s", t_wait}, {"optimizer_s", t_optimizer},
                    {"step_s", std::chrono::duration<double>(Clock::now() - step_start).count()}};
    if (g.size() > 1) {
      line["world_size"] = g.size();
      line["bytes_reduced"] = reduce.bytes;
      line["buckets_launched_in_backward"] = reduce.launched_in_backward;
    }
    if (writer) {
      metrics_out << line.dump() << "\n";
      metrics_out.flush();
    }
    MFPO_RETURN_IF_ERROR(g.Agree(writer && !metrics_out ? ErrnoStatus(errno, metrics_path.string(), "write failed")
                                                        : absl::OkStatus(),
                                 "writing metrics.jsonl"));
    if (writer && control.on_step) control.on_step(line.dump());
    const double eta = (c.total_steps - step - 1) * per_step / std::max(rate, 1e-9);
    std::string rewards;
    if (line.contains("reward_acc_text"))
      rewards += absl::StrFormat(" acc_text %.2f", line["reward_acc_text"].get<double>());
    if (line.contains("reward_acc_image"))
      rewards += absl::StrFormat(" acc_image %.2f", line["reward_acc_image"].get<double>());
    if (writer)
      progress << absl::StrFormat("\r[%s] step %d/%d loss %.4f%s  %.1f samples/s  ETA %.0f s   ", c.phase_names[p],
                                  step + 1, c.total_steps, line.value("loss", 0.0), rewards, rate, eta)
               << std::flush;
    const int every = spec.checkpoint().every_steps();
    if ((every > 0 && (step + 1) % every == 0) || s + 1 == c.phase_steps[p]) {
      const auto c0 = Clock::now();
      MFPO_RETURN_IF_ERROR(SaveCheckpoint(c, step + 1, p));
      if (writer && control.on_checkpoint)
        control.on_checkpoint(step + 1, std::chrono::duration<double>(Clock::now() - c0).count());
    }
  }
  return TrainResult{CheckpointDir(st.ckpt_root, end).string(), end, true};
}

absl::Status TrainingJob::ShareUpdatedShards() {
  State& st = *s_;
  Collective& g = *st.group;
  torch::NoGradGuard no_grad;
  // One broadcast per owner: its updated parameters, flattened (parameters of one dtype).
  for (int r = 0; r < g.size(); ++r) {
    std::vector<torch::Tensor> mine;
    for (size_t k = 0; k < st.params.size(); ++k)
      if (st.owner[k] == r) mine.push_back(st.params[k]);
    MFPO_RETURN_IF_ERROR(CatchAll(absl::StrCat("sharing rank ", r, "'s updated parameters"), [&]() -> absl::Status {
      std::vector<torch::Tensor> flat_views;
      for (const auto& prm : mine) flat_views.push_back(prm.detach().reshape({-1}));
      torch::Tensor flat = torch::cat(flat_views);
      MFPO_RETURN_IF_ERROR(g.Broadcast(flat, r, absl::StrCat("broadcast of rank ", r, "'s updated parameters")));
      if (r != g.rank()) {
        int64_t offset = 0;
        for (auto& prm : mine) {
          prm.detach().copy_(flat.slice(0, offset, offset + prm.numel()).view(prm.sizes()));
          offset += prm.numel();
        }
      }
      return absl::OkStatus();
    }));
  }
  return absl::OkStatus();
}

std::string NewestCheckpoint(const std::string& output_dir) {
  const auto all = ListCheckpoints(fs::path(output_dir) / "checkpoints");
  return all.empty() ? std::string() : all.back().dir.string();
}

absl::StatusOr<TrainResult> RunTraining(const v1::JobSpec& spec, const TrainControl& control,
                                        std::ostream& progress, const GroupOptions& group) {
  MFPO_ASSIGN_OR_RETURN(std::unique_ptr<TrainingJob> job, TrainingJob::Open(spec, group));
  MFPO_RETURN_IF_ERROR(job->ReferencePass());
  MFPO_ASSIGN_OR_RETURN(Curriculum curriculum, job->ScoreDifficulty());
  TrainResult result;
  for (int p = 0; p < static_cast<int>(curriculum.phases.size()); ++p) {
    MFPO_ASSIGN_OR_RETURN(result, job->TrainPhase(curriculum, p, control, progress));
    if (!result.completed) return result;
  }
  if (job->rank() == 0) progress << "\ntrained " << curriculum.total_steps << " steps; checkpoints in " << spec.output_dir()
           << "/checkpoints\n";
  return result;
}

}  // namespace mfpo
