// The DDPM forward (noising) process on 8-bit RGB images.
//
// Linear beta schedule from 1e-4 to 0.02 over T = 1000 steps (beta_s for s = 1..T),
// abar_t = prod_{s<=t} (1 - beta_s), pixels scaled to [-1, 1],
// x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps, eps ~ N(0, I), applied only where the mask
// is non-zero (everywhere without a mask). Deterministic for a seed: eps comes from a
// counter-based generator (SplitMix64 + Box-Muller), the same on every platform and build.
#ifndef MFPO_DATAGEN_DIFFUSION_NOISE_H_
#define MFPO_DATAGEN_DIFFUSION_NOISE_H_

#include <cstdint>

#include <opencv2/core.hpp>

#include "absl/status/statusor.h"

namespace mfpo {

inline constexpr int kDiffusionSteps = 1000;
inline constexpr int kDefaultNoiseStep = 500;

// abar_t for t in [0, T] (abar_0 = 1).
double DiffusionAlphaBar(int t);

// Returns the noised copy of `rgb` (CV_8UC3). `mask` (CV_8UC1, same size) selects the pixels to
// noise; an empty mask noises the whole image. Pixels where the mask is 0 are bit-identical; 255
// is x_t exactly; values in between (a feathered edge) blend x_0 and x_t linearly in [-1, 1].
absl::StatusOr<cv::Mat> AddDiffusionNoise(const cv::Mat& rgb, const cv::Mat& mask, int t,
                                          uint64_t seed);

// A soft-edged copy of a binary mask (Gaussian, `radius` pixels); radius 0 returns it unchanged.
cv::Mat FeatherMask(const cv::Mat& mask, int radius);

// A per-sample seed from a base seed and a sample id (stable across runs and platforms).
uint64_t SampleSeed(uint64_t base_seed, const std::string& sample_id);

}  // namespace mfpo

#endif  // MFPO_DATAGEN_DIFFUSION_NOISE_H_
