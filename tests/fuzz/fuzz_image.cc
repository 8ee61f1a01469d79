// Fuzz target: image decoding (PNG / JPEG / WebP through the header probe and OpenCV) with
// small limits, then the CLIP preprocessing pipeline at 32 px.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  mfpo::ImageLimits limits;
  limits.max_pixels = 4'000'000;
  limits.max_file_bytes = 8ll << 20;
  (void)mfpo::ProbeImageSize(bytes);
  auto rgb = mfpo::DecodeImage(bytes, "fuzz", limits);
  if (!rgb.ok()) return 0;
  if (rgb->empty() || rgb->type() != CV_8UC3 ||
      static_cast<int64_t>(rgb->cols) * rgb->rows > limits.max_pixels)
    __builtin_trap();  // DecodeImage's contract
  mfpo::ImageProcessorConfig config;
  config.size = 32;
  config.crop_size = 32;
  auto pixels = mfpo::PreprocessImage(*rgb, config);
  if (pixels.ok() && (pixels->dim() != 3 || pixels->size(0) != 3 || pixels->size(1) != 32 ||
                      pixels->size(2) != 32))
    __builtin_trap();
  return 0;
}
