// Image decoding and the LLaVA preprocessing pipelines.
//
// LLaVA-1.5 / CLIP: pad to square with the mean colour -> resize (PIL's antialiased bicubic,
// bit-exact with Pillow's 8-bit fixed-point resampler, which transformers' CLIPImageProcessor
// uses) -> centre crop -> scale 1/255 -> normalise with the CLIP mean/std -> CHW float32.
// LLaVA-NeXT (transformers' LlavaNextImageProcessor, "anyres"): the best grid resolution, an
// aspect-preserving resize into it, zero padding to it, tiles of crop_size, preceded by the whole
// image resized to size x size; each of them then goes through the CLIP steps above.
#ifndef MFPO_COMMON_IMAGE_H_
#define MFPO_COMMON_IMAGE_H_

#include <torch/types.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "absl/status/statusor.h"

namespace mfpo {

struct ImageLimits {
  int64_t max_pixels = 50'000'000;      // width * height
  int64_t max_file_bytes = 256ll << 20;
};

// Width and height read from the PNG / JPEG / WebP header without decoding; NOT_FOUND when the
// format is not one of those (decoding then decides).
struct ImageSize {
  int64_t width = 0, height = 0;
};
absl::StatusOr<ImageSize> ProbeImageSize(const std::string& bytes);

// Decodes PNG, JPEG or WebP (other formats are refused) to 8-bit RGB (HWC, CV_8UC3). Errors name
// `source`: empty input, oversized files and images (checked from the file size and the header
// before reading / decoding), undecodable data.
absl::StatusOr<cv::Mat> DecodeImage(const std::string& bytes, const std::string& source,
                                    const ImageLimits& limits = {});
absl::StatusOr<cv::Mat> ReadImageFile(const std::string& path, const ImageLimits& limits = {});

struct ImageProcessorConfig {
  int64_t size = 336;       // shortest edge after resize
  int64_t crop_size = 336;  // centre crop (square)
  bool pad_to_square = true;
  std::array<double, 3> mean = {0.48145466, 0.4578275, 0.40821073};
  std::array<double, 3> std = {0.26862954, 0.26130258, 0.27577711};
  // Non-empty: LLaVA-NeXT any-resolution tiling at these (height, width) resolutions (the
  // model config's image_grid_pinpoints), without pad_to_square.
  std::vector<std::array<int64_t, 2>> image_grid_pinpoints;
  // Bound on every image PreprocessImage allocates (the square canvas, the resized image):
  // an input of 50,000,000 x 1 pixels passes the decoder's limit but its square would not.
  int64_t max_pixels = ImageLimits{}.max_pixels;
};

// Reads a Hugging Face `preprocessor_config.json` (size.shortest_edge or size, crop_size,
// image_mean, image_std); fields it omits keep the values of `defaults`.
absl::StatusOr<ImageProcessorConfig> LoadImageProcessorConfig(const std::string& path,
                                                              const ImageProcessorConfig& defaults);
std::string ImageProcessorConfigToJson(const ImageProcessorConfig& config);

// LLaVA's expand2square: centre the image on a square canvas of the mean colour (as 0-255 ints).
cv::Mat PadToSquare(const cv::Mat& rgb, const std::array<double, 3>& mean);
// Pillow's Image.resize(..., BICUBIC) for 8-bit RGB: separable, antialiased (the kernel widens
// by the downscale factor), a = -0.5, 22-bit fixed-point weights, horizontal pass first.
cv::Mat ResizeBicubicPil(const cv::Mat& rgb, int64_t width, int64_t height);
// The whole pipeline for one image: [3, crop, crop] float32. RESOURCE_EXHAUSTED when an
// intermediate image would exceed c.max_pixels.
absl::StatusOr<torch::Tensor> PreprocessImage(const cv::Mat& rgb, const ImageProcessorConfig& c);
// One image as the model takes it: LLaVA-1.5 [3, crop, crop]; LLaVA-NeXT [1 + tiles, 3, crop,
// crop] (the whole image first), with the original size that decides the tiling and the
// unpadding of its features.
struct PixelInput {
  torch::Tensor pixel_values;
  int64_t height = 0, width = 0;
};

// LlavaNextImageProcessor for one image: [1 + tiles, 3, crop, crop]. Needs c.image_grid_pinpoints.
absl::StatusOr<torch::Tensor> PreprocessAnyRes(const cv::Mat& rgb, const ImageProcessorConfig& c);
// The pipeline the processor config asks for (anyres when it has pinpoints).
absl::StatusOr<PixelInput> PreprocessForModel(const cv::Mat& rgb, const ImageProcessorConfig& c);

// Where a box {x0, y0, x1, y1} of a width x height image lands in PreprocessImage's output
// (pad to square, resize, centre crop), clipped to [0, crop_size].
std::array<double, 4> MapBoxToPixelValues(const std::array<double, 4>& box, int64_t width, int64_t height,
                                          const ImageProcessorConfig& c);

}  // namespace mfpo

#endif  // MFPO_COMMON_IMAGE_H_
