#include "datagen/diffusion_noise.h"

#include <cmath>
#include <string>

#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"

namespace mfpo {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in (0, 1) from 53 random bits.
double Uniform(uint64_t bits) { return ((bits >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

// The i-th standard normal of the stream `seed` (Box-Muller on a counter: no state).
double Normal(uint64_t seed, uint64_t i) {
  const uint64_t pair = i / 2;
  const double u1 = Uniform(SplitMix64(seed ^ SplitMix64(2 * pair)));
  const double u2 = Uniform(SplitMix64(seed ^ SplitMix64(2 * pair + 1)));
  const double r = std::sqrt(-2.0 * std::log(u1));
  return i % 2 == 0 ? r * std::cos(2 * M_PI * u2) : r * std::sin(2 * M_PI * u2);
}

}  // namespace

double DiffusionAlphaBar(int t) {
  double abar = 1.0;
  for (int s = 1; s <= t; ++s) {
    const double beta = 1e-4 + (0.02 - 1e-4) * (s - 1) / (kDiffusionSteps - 1);
    abar *= 1.0 - beta;
  }
  return abar;
}

uint64_t SampleSeed(uint64_t base_seed, const std::string& sample_id) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : sample_id) h = (h ^ c) * 1099511628211ull;
  return SplitMix64(base_seed ^ SplitMix64(h));
}

absl::StatusOr<cv::Mat> AddDiffusionNoise(const cv::Mat& rgb, const cv::Mat& mask, int t,
                                          uint64_t seed) {
  if (rgb.empty() || rgb.type() != CV_8UC3)
    return absl::InvalidArgumentError("diffusion noise expects a non-empty 8-bit RGB image");
  if (t < 0 || t > kDiffusionSteps)
    return absl::InvalidArgumentError(absl::StrCat("noise step t=", t, " outside [0, ", kDiffusionSteps, "]"));
  if (!mask.empty() && (mask.type() != CV_8UC1 || mask.size() != rgb.size()))
    return absl::InvalidArgumentError("mask must be 8-bit single-channel and the image's size");
  const double a = std::sqrt(DiffusionAlphaBar(t)), b = std::sqrt(1.0 - DiffusionAlphaBar(t));
  cv::Mat out = rgb.clone();
  for (int y = 0; y < rgb.rows; ++y) {
    const uint8_t* src = rgb.ptr<uint8_t>(y);
    uint8_t* dst = out.ptr<uint8_t>(y);
    const uint8_t* m = mask.empty() ? nullptr : mask.ptr<uint8_t>(y);
    for (int x = 0; x < rgb.cols; ++x) {
      if (m != nullptr && m[x] == 0) continue;
      const double w = m == nullptr ? 1.0 : m[x] / 255.0;  // < 1 only on a feathered edge
      for (int c = 0; c < 3; ++c) {
        const uint64_t index = (static_cast<uint64_t>(y) * rgb.cols + x) * 3 + c;
        const double x0 = src[x * 3 + c] / 127.5 - 1.0;
        const double noised = a * x0 + b * Normal(seed, index);
        const double xt = w == 1.0 ? noised : w * noised + (1.0 - w) * x0;
        dst[x * 3 + c] = static_cast<uint8_t>(std::lround(std::clamp((xt + 1.0) * 127.5, 0.0, 255.0)));
      }
    }
  }
  return out;
}

cv::Mat FeatherMask(const cv::Mat& mask, int radius) {
  if (mask.empty() || radius <= 0) return mask.clone();
  cv::Mat soft;
  cv::GaussianBlur(mask, soft, cv::Size(2 * radius + 1, 2 * radius + 1), radius / 2.0, radius / 2.0,
                   cv::BORDER_REPLICATE);
  return soft;
}

}  // namespace mfpo
