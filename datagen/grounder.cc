#include "datagen/grounder.h"

#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <utility>

#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/image.h"
#include "common/model_dir.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"

namespace mfpo {
namespace {

class RegionsGrounder : public Grounder {
 public:
  explicit RegionsGrounder(std::optional<ObjectVocabulary> vocabulary) : vocabulary_(std::move(vocabulary)) {}
  std::string name() const override { return "regions"; }

  absl::StatusOr<cv::Mat> Ground(const cv::Mat& rgb, const std::string& keyword,
                                 const std::vector<PreferenceRegion>& regions) override {
    const std::string want = Key(keyword);
    std::vector<PreferenceRegion> hits;
    for (const auto& r : regions)
      if (!r.label.empty() && Key(r.label) == want) hits.push_back(r);
    if (hits.empty()) return cv::Mat();
    cv::Mat mask = RegionsMask(hits, rgb.size());
    if (cv::countNonZero(mask) == 0) return cv::Mat();  // boxes entirely outside the image
    return mask;
  }

 private:
  std::string Key(const std::string& word) const {
    std::string lower = word;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    if (vocabulary_) {
      std::string canonical = vocabulary_->Canonical(lower);
      if (!canonical.empty()) return canonical;
    }
    return Singularize(lower);
  }
  std::optional<ObjectVocabulary> vocabulary_;
};

// Heat map (float, image size) -> cleaned binary mask; empty when nothing survives.
cv::Mat HeatToMask(const cv::Mat& heat, double threshold, double min_area) {
  cv::Mat mask = heat > threshold;  // CV_8U 0/255
  const int k = std::max(3, (std::min(heat.rows, heat.cols) / 32) | 1);
  const cv::Mat kernel = cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(k, k));
  cv::morphologyEx(mask, mask, cv::MORPH_OPEN, kernel);
  cv::morphologyEx(mask, mask, cv::MORPH_CLOSE, kernel);
  cv::Mat labels, stats, centroids;
  const int n = cv::connectedComponentsWithStats(mask, labels, stats, centroids, 8, CV_32S);
  const double floor = min_area * heat.rows * heat.cols;
  cv::Mat out = cv::Mat::zeros(heat.size(), CV_8UC1);
  for (int c = 1; c < n; ++c)
    if (stats.at<int>(c, cv::CC_STAT_AREA) >= floor) out.setTo(255, labels == c);
  return cv::countNonZero(out) == 0 ? cv::Mat() : out;
}

class TorchScriptGrounder : public Grounder {
 public:
  explicit TorchScriptGrounder(torch::jit::script::Module module) : module_(std::move(module)) {}
  std::string name() const override { return "torchscript"; }

  absl::StatusOr<cv::Mat> Ground(const cv::Mat& rgb, const std::string& keyword,
                                 const std::vector<PreferenceRegion>&) override {
    absl::MutexLock lock(&mu_);
    return CatchAll("torchscript grounder", [&]() -> absl::StatusOr<cv::Mat> {
      torch::NoGradGuard no_grad;
      torch::Tensor image = torch::from_blob(const_cast<uint8_t*>(rgb.ptr<uint8_t>()), {rgb.rows, rgb.cols, 3},
                                             torch::kUInt8)
                                .permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32).div(255.0).contiguous();
      torch::jit::IValue out = module_.forward({image, keyword});
      if (!out.isTensor()) return absl::InvalidArgumentError("torchscript grounder: forward() must return a Tensor");
      torch::Tensor logits = out.toTensor().to(torch::kFloat32);
      while (logits.dim() > 2 && logits.size(0) == 1) logits = logits.squeeze(0);
      if (logits.dim() != 2)
        return absl::InvalidArgumentError(absl::StrCat("torchscript grounder: mask logits must be [H, W] (after "
                                                       "dropping leading 1s), got ", logits.dim(), " dims"));
      logits = torch::nn::functional::interpolate(
                   logits.view({1, 1, logits.size(0), logits.size(1)}),
                   torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{rgb.rows, rgb.cols})
                       .mode(torch::kBilinear).align_corners(false))
                   .view({rgb.rows, rgb.cols}).contiguous();
      cv::Mat mask(rgb.rows, rgb.cols, CV_8UC1);
      torch::Tensor inside = (logits > 0).to(torch::kUInt8).mul(255).contiguous();
      std::memcpy(mask.data, inside.data_ptr<uint8_t>(), static_cast<size_t>(rgb.rows) * rgb.cols);
      return cv::countNonZero(mask) == 0 ? cv::Mat() : mask;
    });
  }

 private:
  absl::Mutex mu_;  // a scripted module's forward is not re-entrant in general (state, caches)
  torch::jit::script::Module module_ ABSL_GUARDED_BY(mu_);
};

class ModelGrounder : public Grounder {
 public:
  ModelGrounder(LoadedModel model, const ModelGrounderOptions& options)
      : model_(std::move(model)), options_(options) {
    model_.model->eval();
    for (auto& p : model_.model->parameters()) p.set_requires_grad(false);  // gradients reach the features only
  }
  std::string name() const override { return "model"; }

  absl::StatusOr<cv::Mat> Ground(const cv::Mat& rgb, const std::string& keyword,
                                 const std::vector<PreferenceRegion>&) override {
    MFPO_ASSIGN_OR_RETURN(torch::Tensor heat, HeatMap(rgb, keyword));
    if (!heat.defined()) return cv::Mat();
    const double lo = heat.min().item<double>(), hi = heat.max().item<double>();
    if (hi - lo < (options_.heat == "cosine" ? options_.min_contrast : 1e-12)) return cv::Mat();
    torch::Tensor norm = ((heat - lo) / (hi - lo)).contiguous();
    cv::Mat heat_mat(rgb.rows, rgb.cols, CV_32F, norm.data_ptr<float>());
    return HeatToMask(heat_mat.clone(), options_.threshold, options_.min_area);
  }

  // The heat map upsampled to the image: [H, W] float; undefined when the keyword has no tokens.
  absl::StatusOr<torch::Tensor> HeatMap(const cv::Mat& rgb, const std::string& keyword) {
    MFPO_ASSIGN_OR_RETURN(std::vector<int64_t> word_ids, model_.tokenizer.Encode(" " + keyword));
    if (word_ids.empty()) return torch::Tensor();
    MFPO_ASSIGN_OR_RETURN(PixelInput pixels, PreprocessForModel(rgb, model_.image));
    // The gradient probe is POPE's question: "Is there a {keyword} in the image?" answered "Yes"
    // (and, for the presence check, "No"); only the answer's first token is scored.
    TokenizedExample yes, no;
    if (options_.heat == "gradient") {
      const std::string question = "Is there a " + keyword + " in the image?";
      MFPO_ASSIGN_OR_RETURN(yes, model_.tokenizer.Example(question, "Yes"));
      MFPO_ASSIGN_OR_RETURN(no, model_.tokenizer.Example(question, "No"));
      for (TokenizedExample* e : {&yes, &no}) {
        bool first = true;
        for (auto& label : e->labels)
          if (label != kIgnoreLabel) {
            if (!first) label = kIgnoreLabel;
            first = false;
          }
        ExpandImageTokens(model_.config.image_token_index, model_.model->ImageTokens(pixels), &e->ids, &e->labels);
      }
    }
    EncodedImages encoded;
    {
      torch::NoGradGuard no_grad;
      MFPO_ASSIGN_OR_RETURN(encoded, model_.model->Encode({pixels}));
    }
    return CatchAll("model grounder", [&]() -> torch::Tensor {
      const auto& vc = model_.config.vision;
      torch::Tensor feats = encoded.features.to(torch::kFloat32);  // [1, N, D]
      torch::Tensor per_patch;  // [N]
      if (options_.heat == "gradient") {
        auto score = [&](const TokenizedExample& e, const torch::Tensor& f) {
          LlavaBatch batch;
          batch.input_ids = torch::tensor(e.ids, torch::kInt64).unsqueeze(0);
          batch.image_features = f;
          return model_.model->ScoreResponses(batch, torch::tensor(e.labels, torch::kInt64).unsqueeze(0)).logp.sum();
        };
        if (options_.require_yes) {
          torch::NoGradGuard no_grad;
          if (score(yes, feats).item<double>() < score(no, feats).item<double>()) return torch::Tensor();  // absent
        }
        feats = feats.detach().requires_grad_(true);
        torch::Tensor grad = torch::autograd::grad({score(yes, feats)}, {feats})[0];
        per_patch = (grad * feats).sum(-1).squeeze(0).clamp_min(0).detach();
      } else {
        torch::NoGradGuard no_grad;
        torch::Tensor word = model_.model->language_model()->Embed(torch::tensor(word_ids, torch::kInt64))
                                 .to(torch::kFloat32).mean(0);  // [D]
        per_patch = torch::cosine_similarity(feats.squeeze(0), word.unsqueeze(0), 1);
      }
      const int64_t grid = vc.image_size / vc.patch_size;
      // The features of the whole image: LLaVA-1.5's grid (after a CLS under "full"); LLaVA-NeXT's
      // base image, which comes first and covers the whole image squashed to a square.
      const int64_t first = model_.config.is_next() ? 0 : per_patch.size(0) - grid * grid;
      torch::Tensor map = per_patch.slice(0, first, first + grid * grid).view({1, 1, grid, grid});
      return torch::nn::functional::interpolate(
                 map, torch::nn::functional::InterpolateFuncOptions()
                          .size(std::vector<int64_t>{rgb.rows, rgb.cols}).mode(torch::kBilinear).align_corners(false))
          .view({rgb.rows, rgb.cols});
    });
  }

 private:
  LoadedModel model_;
  ModelGrounderOptions options_;
};

class RandomGrounder : public Grounder {
 public:
  RandomGrounder(double fraction, uint64_t seed) : fraction_(fraction), seed_(seed) {}
  std::string name() const override { return "random"; }
  absl::StatusOr<cv::Mat> Ground(const cv::Mat& rgb, const std::string&,
                                 const std::vector<PreferenceRegion>&) override {
    // Seeded by the image bytes, so every keyword of a record (and a rerun) gets the same box.
    uint64_t h = seed_ ^ 0x9e3779b97f4a7c15ull;
    for (int y = 0; y < rgb.rows; ++y) {
      const uint8_t* row = rgb.ptr<uint8_t>(y);
      for (int x = 0; x < rgb.cols * rgb.channels(); ++x) h = (h ^ row[x]) * 1099511628211ull;
    }
    std::mt19937_64 rng(h);
    const double aspect = std::uniform_real_distribution<double>(0.5, 2.0)(rng);
    const double area = fraction_ * rgb.rows * rgb.cols;
    const int w = std::clamp(static_cast<int>(std::lround(std::sqrt(area * aspect))), 1, rgb.cols);
    const int h_px = std::clamp(static_cast<int>(std::lround(area / w)), 1, rgb.rows);
    const int x0 = std::uniform_int_distribution<int>(0, rgb.cols - w)(rng);
    const int y0 = std::uniform_int_distribution<int>(0, rgb.rows - h_px)(rng);
    cv::Mat mask = cv::Mat::zeros(rgb.size(), CV_8UC1);
    mask(cv::Rect(x0, y0, w, h_px)).setTo(255);
    return mask;
  }

 private:
  double fraction_;
  uint64_t seed_;
};

class GlobalGrounder : public Grounder {
 public:
  std::string name() const override { return "global"; }
  absl::StatusOr<cv::Mat> Ground(const cv::Mat&, const std::string&, const std::vector<PreferenceRegion>&) override {
    return cv::Mat();
  }
};

}  // namespace

std::unique_ptr<Grounder> MakeRandomGrounder(double fraction, uint64_t seed) {
  return std::make_unique<RandomGrounder>(fraction, seed);
}

std::unique_ptr<Grounder> MakeGlobalGrounder() { return std::make_unique<GlobalGrounder>(); }

std::unique_ptr<Grounder> MakeRegionsGrounder(std::optional<ObjectVocabulary> vocabulary) {
  return std::make_unique<RegionsGrounder>(std::move(vocabulary));
}

absl::StatusOr<std::unique_ptr<Grounder>> MakeTorchScriptGrounder(const std::string& path) {
  MFPO_RETURN_IF_ERROR(CheckRegularFile(path, "TorchScript file"));
  MFPO_ASSIGN_OR_RETURN(torch::jit::script::Module module,
                        CatchAll(absl::StrCat("loading TorchScript grounder ", path), [&] { return torch::jit::load(path); }));
  module.eval();
  return std::unique_ptr<Grounder>(std::make_unique<TorchScriptGrounder>(std::move(module)));
}

absl::StatusOr<std::unique_ptr<Grounder>> MakeModelGrounder(const std::string& model_dir,
                                                            const ModelGrounderOptions& options) {
  if (options.heat != "gradient" && options.heat != "cosine")
    return absl::InvalidArgumentError(absl::StrCat("model grounder heat map '", options.heat, "': expected gradient or cosine"));
  MFPO_ASSIGN_OR_RETURN(LoadedModel model, LoadModelDir(model_dir));
  return std::unique_ptr<Grounder>(std::make_unique<ModelGrounder>(std::move(model), options));
}

absl::StatusOr<GroundedMask> GroundKeywords(Grounder& grounder, const cv::Mat& rgb,
                                            const std::vector<std::string>& keywords,
                                            const std::vector<PreferenceRegion>& regions) {
  GroundedMask out;
  for (const std::string& k : keywords) {
    MFPO_ASSIGN_OR_RETURN(cv::Mat m, grounder.Ground(rgb, k, regions));
    if (m.empty()) continue;
    if (m.size() != rgb.size() || m.type() != CV_8UC1)
      return absl::InternalError(absl::StrCat(grounder.name(), " grounder returned a mask of the wrong size/type"));
    out.found.push_back(k);
    if (out.mask.empty()) {
      out.mask = m.clone();
    } else {
      cv::bitwise_or(out.mask, m, out.mask);
    }
  }
  return out;
}

cv::Mat RegionsMask(const std::vector<PreferenceRegion>& regions, cv::Size size) {
  cv::Mat mask = cv::Mat::zeros(size, CV_8UC1);
  for (const auto& r : regions) {
    if (!r.polygon.empty()) {
      std::vector<cv::Point> pts;
      for (const auto& p : r.polygon) pts.emplace_back(p[0], p[1]);
      cv::fillPoly(mask, std::vector<std::vector<cv::Point>>{pts}, cv::Scalar(255));
    } else {
      const cv::Rect box = cv::Rect(cv::Point(r.box[0], r.box[1]), cv::Point(r.box[2], r.box[3])) &
                           cv::Rect(0, 0, size.width, size.height);
      if (box.area() > 0) mask(box).setTo(255);
    }
  }
  return mask;
}

double MaskIou(const cv::Mat& a, const cv::Mat& b) {
  if (a.empty() || b.empty()) return 0.0;
  cv::Mat inter, uni;
  cv::bitwise_and(a != 0, b != 0, inter);
  cv::bitwise_or(a != 0, b != 0, uni);
  const int u = cv::countNonZero(uni);
  return u == 0 ? 0.0 : static_cast<double>(cv::countNonZero(inter)) / u;
}

}  // namespace mfpo
