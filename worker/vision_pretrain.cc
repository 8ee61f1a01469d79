#include "worker/vision_pretrain.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <array>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/image.h"
#include "common/jsonl.h"
#include "common/model_dir.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"
#include "worker/trainer.h"

namespace mfpo {
namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::vector<std::string> CaptionWords(const std::string& caption) {
  std::vector<std::string> words;
  std::string cur;
  for (char ch : caption) {
    if (std::isalpha(static_cast<unsigned char>(ch))) {
      cur.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(ch))));
    } else if (!cur.empty()) {
      words.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) words.push_back(std::move(cur));
  return words;
}

namespace {

struct LabelledBox {
  std::string label;
  std::array<double, 4> box;  // x0, y0, x1, y1 in image pixels
};

struct CaptionRecord {
  std::string image;                // resolved path
  std::set<std::string> words;      // union over the image's captions
  bool has_boxes = false;           // the line had a "boxes" field (possibly empty)
  std::vector<LabelledBox> boxes;
};

// Parses the optional "boxes": [{"label": str, "box": [x0, y0, x1, y1]}, ...] field.
absl::Status ParseBoxes(const json& j, CaptionRecord* r) {
  if (!j.contains("boxes")) return absl::OkStatus();
  if (!j["boxes"].is_array()) return absl::InvalidArgumentError("field 'boxes' must be an array");
  r->has_boxes = true;
  for (size_t i = 0; i < j["boxes"].size(); ++i) {
    const json& b = j["boxes"][i];
    const std::string where = absl::StrCat("field 'boxes[", i, "]'");
    if (!b.is_object() || !b.contains("label") || !b["label"].is_string() || !b.contains("box") ||
        !b["box"].is_array() || b["box"].size() != 4)
      return absl::InvalidArgumentError(absl::StrCat(where, " must be {\"label\": str, \"box\": [x0, y0, x1, y1]}"));
    LabelledBox lb;
    lb.label = b["label"].get<std::string>();
    for (int k = 0; k < 4; ++k) {
      if (!b["box"][k].is_number()) return absl::InvalidArgumentError(absl::StrCat(where, ".box: not a number"));
      lb.box[k] = b["box"][k].get<double>();
    }
    if (!(lb.box[2] > lb.box[0] && lb.box[3] > lb.box[1]))
      return absl::InvalidArgumentError(absl::StrCat(where, ".box: needs x1 > x0 and y1 > y0"));
    r->boxes.push_back(std::move(lb));
  }
  return absl::OkStatus();
}

struct CaptionSplits {
  std::vector<CaptionRecord> train, eval;
  std::vector<std::string> errors;
};

absl::StatusOr<CaptionSplits> ReadCaptions(const VisionPretrainOptions& o) {
  fs::path file(o.data);
  std::error_code ec;
  if (fs::is_directory(file, ec)) file /= "annotations.jsonl";
  if (!fs::exists(file, ec)) return absl::NotFoundError(absl::StrCat(file.string(), ": no such captions file"));
  const fs::path root = file.parent_path();
  CaptionSplits s;
  auto on_bad_line = [&](int line, const std::string& why) {
    s.errors.push_back(absl::StrCat(file.string(), ":", line, ": ", why));
  };
  MFPO_RETURN_IF_ERROR(ReadJsonl(
      file.string(),
      [&](int line, const json& j) -> absl::Status {
        const std::string split = j.contains("split") && j["split"].is_string() ? j["split"].get<std::string>() : "train";
        const bool train = split == o.train_split, eval = !o.eval_split.empty() && split == o.eval_split;
        if (!train && !eval) return absl::OkStatus();
        if (!j.contains("image") || !j["image"].is_string() || j["image"].get<std::string>().empty()) {
          on_bad_line(line, "field 'image' must be a non-empty string");
          return absl::OkStatus();
        }
        if (!j.contains("captions") || !j["captions"].is_array() || j["captions"].empty()) {
          on_bad_line(line, "field 'captions' must be a non-empty array of strings");
          return absl::OkStatus();
        }
        CaptionRecord r;
        const fs::path img(j["image"].get<std::string>());
        r.image = (img.is_absolute() ? img : root / img).string();
        for (const auto& c : j["captions"]) {
          if (!c.is_string()) {
            on_bad_line(line, "field 'captions' must be a non-empty array of strings");
            return absl::OkStatus();
          }
          for (std::string& w : CaptionWords(c.get<std::string>())) r.words.insert(std::move(w));
        }
        if (absl::Status boxes = ParseBoxes(j, &r); !boxes.ok()) {
          on_bad_line(line, std::string(boxes.message()));
          return absl::OkStatus();
        }
        if (eval) s.eval.push_back(r);  // eval_split == train_split scores the fit itself
        if (train) s.train.push_back(std::move(r));
        return absl::OkStatus();
      },
      on_bad_line));
  if (s.train.empty()) {
    std::string reasons;
    for (size_t i = 0; i < s.errors.size() && i < 5; ++i) absl::StrAppend(&reasons, "\n  ", s.errors[i]);
    return absl::InvalidArgumentError(absl::StrCat(file.string(), ": no usable records in split '", o.train_split, "'",
                                                   reasons.empty() ? "" : "; the first errors:", reasons));
  }
  return s;
}

// Decodes and preprocesses every image (in parallel); records whose image fails are dropped with
// an error line. Returns [N, 3, H, W] and fills `kept` with the surviving records' indices.
torch::Tensor LoadPixels(const std::vector<CaptionRecord>& records, const ImageProcessorConfig& proc,
                         std::vector<int64_t>* kept, std::vector<std::array<int64_t, 2>>* sizes,
                         std::vector<std::string>* errors) {
  std::vector<absl::StatusOr<torch::Tensor>> out(records.size(), absl::UnknownError("not loaded"));
  std::vector<std::array<int64_t, 2>> size(records.size());
  at::parallel_for(0, static_cast<int64_t>(records.size()), 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      absl::StatusOr<cv::Mat> rgb = ReadImageFile(records[i].image);
      if (rgb.ok()) size[i] = {rgb->cols, rgb->rows};
      out[i] = rgb.ok() ? PreprocessImage(*rgb, proc) : absl::StatusOr<torch::Tensor>(rgb.status());
    }
  });
  std::vector<torch::Tensor> pixels;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!out[i].ok()) {
      errors->push_back(absl::StrCat(records[i].image, ": ", out[i].status().message()));
      continue;
    }
    kept->push_back(static_cast<int64_t>(i));
    sizes->push_back(size[i]);
    pixels.push_back(*out[i]);
  }
  return pixels.empty() ? torch::Tensor() : torch::stack(pixels);
}

torch::Tensor Targets(const std::vector<CaptionRecord>& records, const std::vector<int64_t>& kept,
                      const std::map<std::string, int64_t>& vocab) {
  torch::Tensor t = torch::zeros({static_cast<int64_t>(kept.size()), static_cast<int64_t>(vocab.size())});
  auto acc = t.accessor<float, 2>();
  for (size_t r = 0; r < kept.size(); ++r)
    for (const std::string& w : records[kept[r]].words) {
      auto it = vocab.find(w);
      if (it != vocab.end()) acc[r][it->second] = 1.0f;
    }
  return t;
}

// Per-patch class of the kept records: the label of the box covering at least half of the patch
// (the most, where boxes overlap), 0 = background; -100 (ignored) for records without boxes.
torch::Tensor PatchTargets(const std::vector<CaptionRecord>& records, const std::vector<int64_t>& kept,
                           const std::vector<std::array<int64_t, 2>>& sizes,
                           const std::map<std::string, int64_t>& labels, const ImageProcessorConfig& proc,
                           int64_t patch) {
  const int64_t grid = proc.crop_size / patch;
  torch::Tensor t = torch::full({static_cast<int64_t>(kept.size()), grid * grid}, -100, torch::kInt64);
  auto acc = t.accessor<int64_t, 2>();
  for (size_t r = 0; r < kept.size(); ++r) {
    const CaptionRecord& rec = records[kept[r]];
    if (!rec.has_boxes) continue;
    std::vector<std::pair<int64_t, std::array<double, 4>>> mapped;
    for (const LabelledBox& b : rec.boxes) {
      auto it = labels.find(b.label);
      if (it != labels.end())
        mapped.push_back({it->second, MapBoxToPixelValues(b.box, sizes[r][0], sizes[r][1], proc)});
    }
    for (int64_t gy = 0; gy < grid; ++gy)
      for (int64_t gx = 0; gx < grid; ++gx) {
        double best = 0.5;
        int64_t cls = 0;
        for (const auto& [label, m] : mapped) {
          const double ix = std::max(0.0, std::min<double>(m[2], (gx + 1) * patch) - std::max<double>(m[0], gx * patch));
          const double iy = std::max(0.0, std::min<double>(m[3], (gy + 1) * patch) - std::max<double>(m[1], gy * patch));
          const double frac = ix * iy / static_cast<double>(patch * patch);
          if (frac >= best) best = frac, cls = label;
        }
        acc[r][gy * grid + gx] = cls;
      }
  }
  return t;
}

// Image-level word logits: soft maximum over patches of the per-patch scores.
torch::Tensor PooledLogits(const torch::Tensor& scores) {  // [B, P, W] -> [B, W]
  return torch::logsumexp(scores, 1) - std::log(static_cast<double>(scores.size(1)));
}

}  // namespace

absl::StatusOr<VisionPretrainResult> RunVisionPretrain(const VisionPretrainOptions& o, std::ostream& progress) {
  if (o.out_dir.empty()) return absl::InvalidArgumentError("--out: the new model directory is required");
  if (std::error_code ec; fs::exists(o.out_dir, ec)) return absl::AlreadyExistsError(absl::StrCat(o.out_dir, ": already exists"));
  if (o.epochs < 1) return absl::InvalidArgumentError("--epochs must be >= 1");
  if (o.batch_size < 1) return absl::InvalidArgumentError("--images-per-step must be >= 1");
  if (!(o.lr > 0)) return absl::InvalidArgumentError("--lr must be > 0");
  MFPO_ASSIGN_OR_RETURN(CaptionSplits splits, ReadCaptions(o));
  MFPO_ASSIGN_OR_RETURN(LoadedModel m, LoadModelDir(o.model_dir));
  VisionPretrainResult result;
  result.record_errors = splits.errors;

  // Vocabulary: words in at least min_word_count train images.
  std::map<std::string, int64_t> df;
  for (const auto& r : splits.train)
    for (const auto& w : r.words) ++df[w];
  std::map<std::string, int64_t> vocab;
  for (const auto& [w, n] : df)
    if (n >= o.min_word_count) vocab.emplace(w, static_cast<int64_t>(vocab.size()));
  if (vocab.empty())
    return absl::InvalidArgumentError(absl::StrCat("no caption word occurs in at least ", o.min_word_count,
                                                   " train images: too few images or captions to learn from"));

  progress << "loading " << splits.train.size() << " train and " << splits.eval.size() << " eval images\n";
  // Box labels (when the captions file has boxes): 1..K, 0 = background.
  std::map<std::string, int64_t> labels;
  for (const auto& r : splits.train)
    for (const auto& b : r.boxes) labels.emplace(b.label, 0);
  int64_t next_label = 1;
  for (auto& [name, id] : labels) id = next_label++;
  const bool dense = o.dense_weight > 0 && !labels.empty();

  std::vector<int64_t> train_kept, eval_kept;
  std::vector<std::array<int64_t, 2>> train_sizes, eval_sizes;
  torch::Tensor train_x, eval_x;
  MFPO_RETURN_IF_ERROR(CatchAll("loading images", [&] {
    train_x = LoadPixels(splits.train, m.image, &train_kept, &train_sizes, &result.record_errors);
    eval_x = LoadPixels(splits.eval, m.image, &eval_kept, &eval_sizes, &result.record_errors);
  }));
  if (train_kept.empty()) return absl::InvalidArgumentError("no train image could be read");
  const int64_t patch = m.config.vision.patch_size;
  const torch::Tensor train_y = Targets(splits.train, train_kept, vocab);
  const torch::Tensor train_patch_y = PatchTargets(splits.train, train_kept, train_sizes, labels, m.image, patch);
  torch::Tensor eval_y, eval_patch_y;
  if (!eval_kept.empty()) {
    eval_y = Targets(splits.eval, eval_kept, vocab);
    eval_patch_y = PatchTargets(splits.eval, eval_kept, eval_sizes, labels, m.image, patch);
  }
  result.train_images = static_cast<int64_t>(train_kept.size());
  result.eval_images = static_cast<int64_t>(eval_kept.size());
  result.box_labels = static_cast<int64_t>(dense ? labels.size() : 0);

  const int64_t n = result.train_images;
  const int64_t steps_per_epoch = (n + o.batch_size - 1) / o.batch_size;
  const int64_t total_steps = steps_per_epoch * o.epochs;
  const auto t0 = Clock::now();
  torch::Tensor eval_pred, eval_patch_pred;
  MFPO_RETURN_IF_ERROR(CatchAll("vision pre-training", [&] {
    torch::manual_seed(o.seed);
    at::Generator gen = at::detail::createCPUGenerator(o.seed);
    m.model->FreezeVisionTower(false);
    m.model->train();
    const int64_t d = m.config.vision.hidden_size;
    torch::nn::Linear word_head(torch::nn::LinearOptions(d, static_cast<int64_t>(vocab.size())));
    torch::nn::Linear patch_head(torch::nn::LinearOptions(d, static_cast<int64_t>(labels.size()) + 1));
    std::vector<torch::Tensor> params = m.model->vision_tower()->parameters();
    for (const auto& p : word_head->parameters()) params.push_back(p);
    if (dense)
      for (const auto& p : patch_head->parameters()) params.push_back(p);
    torch::optim::AdamW opt(params, torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
    int64_t step = 0, images_done = 0;
    for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
      const torch::Tensor order = torch::randperm(n, gen, torch::kInt64);
      double loss_sum = 0;
      for (int64_t b = 0; b < n; b += o.batch_size, ++step) {
        const torch::Tensor idx = order.slice(0, b, std::min(n, b + o.batch_size));
        const double lr = ScheduledLearningRate(o.lr, o.warmup_ratio, step, total_steps);
        for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
        opt.zero_grad();
        const torch::Tensor feats = m.model->VisionFeatures(train_x.index_select(0, idx));  // [B, P, D]
        torch::Tensor loss = torch::binary_cross_entropy_with_logits(PooledLogits(word_head(feats)),
                                                                     train_y.index_select(0, idx));
        if (dense) {
          const torch::Tensor targets = train_patch_y.index_select(0, idx).reshape({-1});
          if ((targets >= 0).any().item<bool>())
            loss = loss + o.dense_weight * torch::nn::functional::cross_entropy(
                                               patch_head(feats).reshape({targets.size(0), -1}), targets,
                                               torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
        }
        loss.backward();
        opt.step();
        const double batch_loss = loss.item<double>();
        loss_sum += batch_loss * idx.size(0);
        images_done += idx.size(0);
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        const double rate = images_done / std::max(secs, 1e-9);
        progress << absl::StrFormat("\r[vision] epoch %d/%d step %d/%d loss %.4f  %.0f images/s  ETA %.0f s   ",
                                    epoch + 1, o.epochs, step + 1, total_steps, batch_loss, rate,
                                    (n * o.epochs - images_done) / std::max(rate, 1e-9))
                 << std::flush;
      }
      result.epoch_losses.push_back(loss_sum / n);
    }
    progress << "\n";
    m.model->eval();
    if (eval_x.defined()) {
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> preds, patch_preds;
      for (int64_t b = 0; b < eval_x.size(0); b += o.batch_size) {
        const torch::Tensor feats = m.model->VisionFeatures(eval_x.slice(0, b, b + o.batch_size));
        preds.push_back(PooledLogits(word_head(feats)) > 0);
        if (dense) patch_preds.push_back(patch_head(feats).argmax(-1));
      }
      eval_pred = torch::cat(preds);
      if (dense) eval_patch_pred = torch::cat(patch_preds);
    }
  }));
  if (eval_patch_pred.defined()) {
    const torch::Tensor object = eval_patch_y > 0;
    result.eval_object_patches = object.sum().item<int64_t>();
    if (result.eval_object_patches > 0)
      result.object_patch_accuracy =
          (eval_patch_pred.eq(eval_patch_y) & object).sum().item<double>() / result.eval_object_patches;
  }
  result.steps = total_steps;

  // Scores on the eval split.
  int64_t tp = 0, fp = 0, fn = 0;
  for (const auto& [w, col] : vocab) {
    WordScore s;
    s.train_frequency = static_cast<double>(df[w]) / static_cast<double>(splits.train.size());
    if (eval_pred.defined()) {
      const torch::Tensor p = eval_pred.select(1, col), t = eval_y.select(1, col) > 0.5;
      s.tp = (p & t).sum().item<int64_t>();
      s.fp = (p & ~t).sum().item<int64_t>();
      s.fn = (~p & t).sum().item<int64_t>();
      if (s.train_frequency < 0.5) {
        tp += s.tp;
        fp += s.fp;
        fn += s.fn;
      }
    }
    result.words.emplace(w, s);
  }
  result.informative_f1 = tp == 0 ? 0.0 : 2.0 * tp / (2.0 * tp + fp + fn);

  // Write the model directory under a temporary name, then rename.
  const fs::path out(o.out_dir), tmp(o.out_dir + ".tmp");
  std::error_code ec;
  fs::remove_all(tmp, ec);
  MFPO_RETURN_IF_ERROR(SaveModelWeights(tmp.string(), m.model));
  MFPO_RETURN_IF_ERROR(CopyModelSideFiles(o.model_dir, tmp.string()));
  json words = json::object();
  for (const auto& [w, s] : result.words)
    words[w] = {{"train_frequency", s.train_frequency}, {"tp", s.tp}, {"fp", s.fp}, {"fn", s.fn}, {"f1", s.F1()}};
  const json summary = {
      {"stage", "vision_pretrain"},
      {"objective", "caption words: BCE of logsumexp over patches of the LLaVA feature layer; boxes: per-patch CE"},
      {"base_model", o.model_dir},
      {"data", o.data},
      {"train_split", o.train_split},
      {"eval_split", o.eval_split},
      {"epochs", o.epochs},
      {"batch_size", o.batch_size},
      {"lr", o.lr},
      {"weight_decay", o.weight_decay},
      {"seed", o.seed},
      {"train_images", result.train_images},
      {"eval_images", result.eval_images},
      {"steps", result.steps},
      {"epoch_train_losses", result.epoch_losses},
      {"eval_informative_word_f1", result.informative_f1},
      {"dense_weight", o.dense_weight},
      {"box_labels", result.box_labels},
      {"eval_object_patches", result.eval_object_patches},
      {"eval_object_patch_accuracy", result.object_patch_accuracy},
      {"words", words},
      {"record_errors", result.record_errors},
  };
  MFPO_RETURN_IF_ERROR(WriteFileAtomically((tmp / "vision_pretrain.json").string(), summary.dump(2) + "\n"));
  fs::rename(tmp, out, ec);
  if (ec) return absl::InternalError(absl::StrCat(out.string(), ": ", ec.message()));
  return result;
}

std::string VisionPretrainSummary(const VisionPretrainResult& r) {
  std::string s = absl::StrFormat("trained on %d images (%d steps), train loss %.4f (first epoch) -> %.4f (last)\n",
                                  r.train_images, r.steps, r.epoch_losses.empty() ? 0.0 : r.epoch_losses.front(),
                                  r.epoch_losses.empty() ? 0.0 : r.epoch_losses.back());
  if (!r.record_errors.empty()) {
    absl::StrAppend(&s, r.record_errors.size(), " records skipped:\n");
    for (size_t i = 0; i < std::min<size_t>(r.record_errors.size(), 10); ++i)
      absl::StrAppend(&s, "  ", r.record_errors[i], "\n");
  }
  if (r.eval_images == 0) return s;
  absl::StrAppend(&s, absl::StrFormat("eval: %d images, micro F1 over informative words %.3f\n", r.eval_images,
                                      r.informative_f1));
  if (r.eval_object_patches > 0)
    absl::StrAppend(&s, absl::StrFormat("eval: %d object patches, %.1f%% given their box's label (%d labels)\n",
                                        r.eval_object_patches, 100 * r.object_patch_accuracy, r.box_labels));
  std::vector<std::pair<std::string, WordScore>> rows(r.words.begin(), r.words.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.train_frequency > b.second.train_frequency; });
  absl::StrAppend(&s, absl::StrFormat("  %-12s %8s %6s %6s %6s %6s\n", "word", "train%", "tp", "fp", "fn", "F1"));
  for (const auto& [w, ws] : rows) {
    if (ws.train_frequency >= 0.5) continue;
    absl::StrAppend(&s, absl::StrFormat("  %-12s %8.1f %6d %6d %6d %6.3f\n", w, 100 * ws.train_frequency, ws.tp,
                                        ws.fp, ws.fn, ws.F1()));
  }
  return s;
}

}  // namespace mfpo
