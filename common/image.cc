#include "common/image.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "common/llava_config.h"
#include "common/jsonl.h"
#include "common/torch_seam.h"

namespace mfpo {
namespace {

uint32_t Be16(const uint8_t* p) { return (p[0] << 8) | p[1]; }
uint32_t Be32(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3]; }
uint32_t Le16(const uint8_t* p) { return p[0] | (p[1] << 8); }
uint32_t Le24(const uint8_t* p) { return p[0] | (p[1] << 8) | (p[2] << 16); }

// Pillow's bicubic kernel (a = -0.5).
double BicubicKernel(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

constexpr int kPrecisionBits = 32 - 8 - 2;

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis.
struct AxisCoeffs {
  int ksize = 0;
  std::vector<int> bounds;    // [out] -> (xmin, count)
  std::vector<int32_t> kk;    // [out * ksize]
};

AxisCoeffs ComputeCoeffs(int in_size, int out_size) {
  const double support_base = 2.0;  // bicubic
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = support_base * filterscale;
  AxisCoeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(out_size * 2);
  c.kk.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      k[x] = BicubicKernel((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double w = ww != 0.0 ? k[x] / ww : k[x];
      c.kk[xx * c.ksize + x] = static_cast<int32_t>(
          w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
    }
    c.bounds[xx * 2] = xmin;
    c.bounds[xx * 2 + 1] = xmax;
  }
  return c;
}

uint8_t Clip8(int64_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(std::clamp<int64_t>(v, 0, 255));
}

cv::Mat ResampleHorizontal(const cv::Mat& in, int out_w) {
  const AxisCoeffs c = ComputeCoeffs(in.cols, out_w);
  cv::Mat out(in.rows, out_w, CV_8UC3);
  for (int y = 0; y < in.rows; ++y) {
    const uint8_t* src = in.ptr<uint8_t>(y);
    uint8_t* dst = out.ptr<uint8_t>(y);
    for (int xx = 0; xx < out_w; ++xx) {
      const int xmin = c.bounds[xx * 2], n = c.bounds[xx * 2 + 1];
      const int32_t* k = &c.kk[xx * c.ksize];
      int64_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int x = 0; x < n; ++x) {
        const uint8_t* p = src + (x + xmin) * 3;
        s0 += p[0] * int64_t{k[x]};
        s1 += p[1] * int64_t{k[x]};
        s2 += p[2] * int64_t{k[x]};
      }
      dst[xx * 3] = Clip8(s0);
      dst[xx * 3 + 1] = Clip8(s1);
      dst[xx * 3 + 2] = Clip8(s2);
    }
  }
  return out;
}

cv::Mat ResampleVertical(const cv::Mat& in, int out_h) {
  const AxisCoeffs c = ComputeCoeffs(in.rows, out_h);
  cv::Mat out(out_h, in.cols, CV_8UC3);
  const int row_len = in.cols * 3;
  std::vector<int64_t> acc(row_len);
  for (int yy = 0; yy < out_h; ++yy) {
    const int ymin = c.bounds[yy * 2], n = c.bounds[yy * 2 + 1];
    const int32_t* k = &c.kk[yy * c.ksize];
    std::fill(acc.begin(), acc.end(), int64_t{1} << (kPrecisionBits - 1));
    for (int y = 0; y < n; ++y) {
      const uint8_t* src = in.ptr<uint8_t>(y + ymin);
      const int64_t w = k[y];
      for (int i = 0; i < row_len; ++i) acc[i] += src[i] * w;
    }
    uint8_t* dst = out.ptr<uint8_t>(yy);
    for (int i = 0; i < row_len; ++i) dst[i] = Clip8(acc[i]);
  }
  return out;
}

absl::Status CheckPixels(int64_t w, int64_t h, const std::string& source,
                         const ImageLimits& limits) {
  if (w <= 0 || h <= 0)
    return absl::InvalidArgumentError(absl::StrCat(source, ": image has no pixels (", w, "x", h, ")"));
  if (w > limits.max_pixels / h)  // w * h > max_pixels, without overflowing
    return absl::ResourceExhaustedError(absl::StrCat(source, ": image is ", w, "x", h, " = ",
                                                     static_cast<uint64_t>(w) * static_cast<uint64_t>(h),
                                                     " pixels, above the limit of ",
                                                     limits.max_pixels));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ImageSize> ProbeImageSize(const std::string& bytes) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  // PNG: signature, then the IHDR chunk with big-endian width and height.
  if (n >= 24 && std::memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0 && std::memcmp(p + 12, "IHDR", 4) == 0)
    return ImageSize{Be32(p + 16), Be32(p + 20)};
  // JPEG: walk the marker segments to the first start-of-frame.
  if (n >= 4 && p[0] == 0xFF && p[1] == 0xD8) {
    size_t i = 2;
    while (i + 9 < n) {
      if (p[i] != 0xFF) return absl::InvalidArgumentError("JPEG: corrupt marker sequence");
      const uint8_t marker = p[i + 1];
      if (marker == 0xFF) { ++i; continue; }
      if (marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01) { i += 2; continue; }
      const uint32_t len = Be16(p + i + 2);
      if (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC)
        return ImageSize{Be16(p + i + 7), Be16(p + i + 5)};
      if (len < 2) return absl::InvalidArgumentError("JPEG: corrupt segment length");
      i += 2 + len;
    }
    return absl::InvalidArgumentError("JPEG: no frame header (truncated?)");
  }
  // WebP: RIFF container with a VP8 (lossy), VP8L (lossless) or VP8X (extended) first chunk.
  if (n >= 30 && std::memcmp(p, "RIFF", 4) == 0 && std::memcmp(p + 8, "WEBP", 4) == 0) {
    if (std::memcmp(p + 12, "VP8 ", 4) == 0)
      return ImageSize{Le16(p + 26) & 0x3FFF, Le16(p + 28) & 0x3FFF};
    if (std::memcmp(p + 12, "VP8L", 4) == 0 && p[20] == 0x2F) {
      const uint32_t b = p[21] | (p[22] << 8) | (p[23] << 16) | (uint32_t(p[24]) << 24);
      return ImageSize{(b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1};
    }
    if (std::memcmp(p + 12, "VP8X", 4) == 0) return ImageSize{Le24(p + 24) + 1, Le24(p + 27) + 1};
    return absl::InvalidArgumentError("WebP: unknown first chunk");
  }
  return absl::NotFoundError("not a PNG, JPEG or WebP header");
}

absl::StatusOr<cv::Mat> DecodeImage(const std::string& bytes, const std::string& source,
                                    const ImageLimits& limits) {
  if (bytes.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": empty image file"));
  if (static_cast<int64_t>(bytes.size()) > limits.max_file_bytes)
    return absl::ResourceExhaustedError(absl::StrCat(source, ": ", bytes.size(),
                                                     " bytes, above the limit of ",
                                                     limits.max_file_bytes));
  // Only the formats whose header is checked against the pixel limit before decoding: OpenCV
  // would also decode BMP, TIFF, PPM... with no such check (a decompression bomb).
  absl::StatusOr<ImageSize> probed = ProbeImageSize(bytes);
  if (absl::IsNotFound(probed.status()))
    return absl::InvalidArgumentError(absl::StrCat(source, ": undecodable image (not a PNG, JPEG or WebP file)"));
  if (!probed.ok()) return Annotate(probed.status(), absl::StrCat(source, ": undecodable image"));
  MFPO_RETURN_IF_ERROR(CheckPixels(probed->width, probed->height, source, limits));
  MFPO_ASSIGN_OR_RETURN(cv::Mat decoded, CatchAll(source, [&] {
    cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
    return cv::imdecode(buf, cv::IMREAD_COLOR);
  }));
  if (decoded.empty())
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": undecodable image (a corrupt or truncated file, or a PNG / JPEG / WebP variant "
                             "OpenCV cannot read, such as an animated WebP)"));
  MFPO_RETURN_IF_ERROR(CheckPixels(decoded.cols, decoded.rows, source, limits));
  return CatchAll(source, [&] {
    cv::Mat rgb;
    cv::cvtColor(decoded, rgb, cv::COLOR_BGR2RGB);
    return rgb;
  });
}

absl::StatusOr<cv::Mat> ReadImageFile(const std::string& path, const ImageLimits& limits) {
  // The size limit is checked from the file's size, before anything is read.
  MFPO_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path, "image", limits.max_file_bytes));
  return DecodeImage(bytes, path, limits);
}

cv::Mat PadToSquare(const cv::Mat& rgb, const std::array<double, 3>& mean) {
  if (rgb.cols == rgb.rows) return rgb;
  const int side = std::max(rgb.cols, rgb.rows);
  cv::Mat out(side, side, CV_8UC3,
              cv::Scalar(int(mean[0] * 255), int(mean[1] * 255), int(mean[2] * 255)));
  const int x = (side - rgb.cols) / 2, y = (side - rgb.rows) / 2;
  rgb.copyTo(out(cv::Rect(x, y, rgb.cols, rgb.rows)));
  return out;
}

cv::Mat ResizeBicubicPil(const cv::Mat& rgb, int64_t width, int64_t height) {
  cv::Mat cur = rgb.isContinuous() ? rgb : rgb.clone();
  if (width != cur.cols) cur = ResampleHorizontal(cur, static_cast<int>(width));
  if (height != cur.rows) cur = ResampleVertical(cur, static_cast<int>(height));
  return cur;
}

absl::StatusOr<torch::Tensor> PreprocessImage(const cv::Mat& rgb, const ImageProcessorConfig& c) {
  if (rgb.empty() || rgb.type() != CV_8UC3)
    return absl::InvalidArgumentError("PreprocessImage expects a non-empty 8-bit RGB image");
  if (c.size <= 0 || c.crop_size <= 0)
    return absl::InvalidArgumentError(absl::StrCat("image processor: size ", c.size, " and crop_size ", c.crop_size,
                                                   " must be positive"));
  // Every image made below stays within c.max_pixels (checked before it is allocated).
  auto bound = [&](int64_t w, int64_t h, const char* what) -> absl::Status {
    if (static_cast<double>(w) * static_cast<double>(h) <= static_cast<double>(c.max_pixels)) return absl::OkStatus();
    return absl::ResourceExhaustedError(absl::StrCat("image of ", rgb.cols, "x", rgb.rows, ": its ", what, " would be ", w,
                                                     "x", h, " pixels, above the limit of ", c.max_pixels));
  };
  const int64_t side = std::max(rgb.cols, rgb.rows);
  if (c.pad_to_square) MFPO_RETURN_IF_ERROR(bound(side, side, "square canvas"));
  const int64_t pw = c.pad_to_square ? side : rgb.cols, ph = c.pad_to_square ? side : rgb.rows;
  // transformers' get_resize_output_image_size for {"shortest_edge": size}.
  const int64_t short_side = std::min(pw, ph), long_side = std::max(pw, ph);
  const double new_long_d = static_cast<double>(c.size) * static_cast<double>(long_side) / static_cast<double>(short_side);
  if (new_long_d * static_cast<double>(c.size) > static_cast<double>(c.max_pixels))
    return bound(static_cast<int64_t>(std::min(new_long_d, 1e15)), c.size, "resized image");
  const int64_t new_long = static_cast<int64_t>(new_long_d);
  const int64_t w = pw <= ph ? c.size : new_long;
  const int64_t h = pw <= ph ? new_long : c.size;
  MFPO_RETURN_IF_ERROR(bound(std::max(w, c.crop_size), std::max(h, c.crop_size), "cropped canvas"));
  MFPO_ASSIGN_OR_RETURN(cv::Mat img, CatchAll("image preprocessing", [&] {
    cv::Mat out = c.pad_to_square ? PadToSquare(rgb, c.mean) : rgb;
    if (w != out.cols || h != out.rows) out = ResizeBicubicPil(out, w, h);
    return out;
  }));
  // Centre crop as transformers' center_crop (top = (h - crop) // 2).
  const int64_t crop = c.crop_size;
  return CatchAll("image preprocessing", [&]() -> torch::Tensor {
    if (img.cols < crop || img.rows < crop) {
      cv::Mat padded(std::max<int>(img.rows, crop), std::max<int>(img.cols, crop), CV_8UC3, cv::Scalar(0, 0, 0));
      img.copyTo(padded(cv::Rect((padded.cols - img.cols) / 2, (padded.rows - img.rows) / 2, img.cols, img.rows)));
      img = padded;
    }
    const int top = static_cast<int>((img.rows - crop) / 2), left = static_cast<int>((img.cols - crop) / 2);
    cv::Mat cropped = img(cv::Rect(left, top, static_cast<int>(crop), static_cast<int>(crop))).clone();
    torch::Tensor t = torch::from_blob(cropped.data, {crop, crop, 3}, torch::kUInt8)
                          .to(torch::kFloat32)
                          .permute({2, 0, 1})
                          .contiguous();
    t = t * (1.0 / 255.0);
    torch::Tensor mean = torch::tensor({c.mean[0], c.mean[1], c.mean[2]}, torch::kFloat32).view({3, 1, 1});
    torch::Tensor std = torch::tensor({c.std[0], c.std[1], c.std[2]}, torch::kFloat32).view({3, 1, 1});
    return ((t - mean) / std).contiguous();
  });
}

absl::StatusOr<torch::Tensor> PreprocessAnyRes(const cv::Mat& rgb, const ImageProcessorConfig& c) {
  if (rgb.empty() || rgb.type() != CV_8UC3)
    return absl::InvalidArgumentError("PreprocessAnyRes expects a non-empty 8-bit RGB image");
  if (c.image_grid_pinpoints.empty())
    return absl::InvalidArgumentError("image processor: any-resolution tiling needs image_grid_pinpoints");
  const int64_t crop = c.crop_size;
  const int64_t oh = rgb.rows, ow = rgb.cols;
  const Resolution best = SelectBestResolution(oh, ow, c.image_grid_pinpoints);
  const int64_t th = best[0], tw = best[1];
  if (th % crop != 0 || tw % crop != 0)
    return absl::InvalidArgumentError(absl::StrCat("image processor: grid resolution ", th, "x", tw,
                                                   " is not a multiple of crop_size ", crop));
  if (static_cast<double>(th) * static_cast<double>(tw) > static_cast<double>(c.max_pixels))
    return absl::ResourceExhaustedError(absl::StrCat("image processor: grid resolution ", th, "x", tw,
                                                     " is above the limit of ", c.max_pixels, " pixels"));
  // transformers' get_patch_output_size: fit inside the target, the other side rounded up.
  const double scale_w = static_cast<double>(tw) / static_cast<double>(ow);
  const double scale_h = static_cast<double>(th) / static_cast<double>(oh);
  int64_t nw = tw, nh = th;
  if (scale_w < scale_h) {
    nh = std::min<int64_t>(static_cast<int64_t>(std::ceil(static_cast<double>(oh) * scale_w)), th);
  } else {
    nw = std::min<int64_t>(static_cast<int64_t>(std::ceil(static_cast<double>(ow) * scale_h)), tw);
  }
  ImageProcessorConfig tile_config = c;
  tile_config.pad_to_square = false;
  tile_config.image_grid_pinpoints.clear();
  MFPO_ASSIGN_OR_RETURN(std::vector<cv::Mat> views, CatchAll("image preprocessing", [&] {
    cv::Mat resized = (nw == ow && nh == oh) ? rgb : ResizeBicubicPil(rgb, nw, nh);
    // Zero padding around the centred image (left/top get the smaller half).
    cv::Mat canvas(static_cast<int>(th), static_cast<int>(tw), CV_8UC3, cv::Scalar(0, 0, 0));
    resized.copyTo(canvas(cv::Rect(static_cast<int>((tw - nw) / 2), static_cast<int>((th - nh) / 2),
                                   static_cast<int>(nw), static_cast<int>(nh))));
    std::vector<cv::Mat> out;
    // The whole image squashed to size x size comes first.
    out.push_back((ow == c.size && oh == c.size) ? rgb : ResizeBicubicPil(rgb, c.size, c.size));
    for (int64_t y = 0; y < th; y += crop)
      for (int64_t x = 0; x < tw; x += crop)
        out.push_back(canvas(cv::Rect(static_cast<int>(x), static_cast<int>(y), static_cast<int>(crop),
                                      static_cast<int>(crop))).clone());
    return out;
  }));
  std::vector<torch::Tensor> tiles;
  for (const cv::Mat& v : views) {
    MFPO_ASSIGN_OR_RETURN(torch::Tensor t, PreprocessImage(v, tile_config));
    tiles.push_back(std::move(t));
  }
  return CatchAll("image preprocessing", [&] { return torch::stack(tiles); });
}

absl::StatusOr<PixelInput> PreprocessForModel(const cv::Mat& rgb, const ImageProcessorConfig& c) {
  PixelInput p;
  p.height = rgb.rows;
  p.width = rgb.cols;
  if (c.image_grid_pinpoints.empty()) {
    MFPO_ASSIGN_OR_RETURN(p.pixel_values, PreprocessImage(rgb, c));
  } else {
    MFPO_ASSIGN_OR_RETURN(p.pixel_values, PreprocessAnyRes(rgb, c));
  }
  return p;
}

std::array<double, 4> MapBoxToPixelValues(const std::array<double, 4>& box, int64_t width, int64_t height,
                                          const ImageProcessorConfig& c) {
  // Follows PreprocessImage step by step.
  double ox = 0, oy = 0;
  int64_t pw = width, ph = height;
  if (c.pad_to_square && width != height) {
    pw = ph = std::max(width, height);
    ox = static_cast<double>((pw - width) / 2);
    oy = static_cast<double>((ph - height) / 2);
  }
  const int64_t short_side = std::min(pw, ph), long_side = std::max(pw, ph);
  const int64_t new_long = static_cast<int64_t>(c.size * long_side / static_cast<double>(short_side));
  const int64_t w = pw <= ph ? c.size : new_long, h = pw <= ph ? new_long : c.size;
  const double sx = static_cast<double>(w) / pw, sy = static_cast<double>(h) / ph;
  const int64_t cw = std::max(w, c.crop_size), ch = std::max(h, c.crop_size);
  const double dx = static_cast<double>((cw - w) / 2) - static_cast<double>((cw - c.crop_size) / 2);
  const double dy = static_cast<double>((ch - h) / 2) - static_cast<double>((ch - c.crop_size) / 2);
  const double hi = static_cast<double>(c.crop_size);
  auto clip = [hi](double v) { return std::min(hi, std::max(0.0, v)); };
  return {clip((box[0] + ox) * sx + dx), clip((box[1] + oy) * sy + dy), clip((box[2] + ox) * sx + dx),
          clip((box[3] + oy) * sy + dy)};
}

absl::StatusOr<ImageProcessorConfig> LoadImageProcessorConfig(const std::string& path,
                                                              const ImageProcessorConfig& defaults) {
  using json = nlohmann::json;
  json j;
  MFPO_RETURN_IF_ERROR(ReadJsonFile(path, &j));
  if (!j.is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  ImageProcessorConfig c = defaults;
  auto bad = [&](const char* field) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", field, ": unexpected value"));
  };
  auto edge = [](const json& v, int64_t* out) {
    if (v.is_number_integer()) { *out = v.get<int64_t>(); return true; }
    if (v.is_object()) {
      for (const char* k : {"shortest_edge", "height"})
        if (v.contains(k) && v[k].is_number_integer()) { *out = v[k].get<int64_t>(); return true; }
    }
    return false;
  };
  if (j.contains("size") && !edge(j["size"], &c.size)) return bad("size");
  if (j.contains("crop_size") && !edge(j["crop_size"], &c.crop_size)) return bad("crop_size");
  for (auto [key, arr] : {std::pair<const char*, std::array<double, 3>*>{"image_mean", &c.mean},
                          {"image_std", &c.std}}) {
    if (!j.contains(key)) continue;
    const json& v = j[key];
    if (!v.is_array() || v.size() != 3) return bad(key);
    for (int i = 0; i < 3; ++i) {
      if (!v[i].is_number()) return bad(key);
      (*arr)[i] = v[i].get<double>();
    }
  }
  if (j.contains("image_grid_pinpoints") && !j["image_grid_pinpoints"].is_null()) {
    absl::Status s = ParsePinpoints(j["image_grid_pinpoints"], "image_grid_pinpoints", &c.image_grid_pinpoints);
    if (!s.ok()) return Annotate(s, path);
  }
  if (c.size <= 0 || c.crop_size <= 0) return bad("size");
  // Settings this pipeline does not implement are refused rather than ignored: it always resizes
  // (Pillow bicubic), centre-crops, rescales by 1/255 and normalises.
  auto unsupported = [&](const char* field, const std::string& why) {
    return absl::UnimplementedError(absl::StrCat(path, ": ", field, ": ", why));
  };
  for (const char* flag : {"do_resize", "do_center_crop", "do_rescale", "do_normalize"}) {
    if (!j.contains(flag) || j[flag].is_null()) continue;
    if (!j[flag].is_boolean()) return bad(flag);
    if (!j[flag].get<bool>()) return unsupported(flag, "false is not supported (the pipeline always applies it)");
  }
  if (j.contains("resample") && !j["resample"].is_null() && j["resample"] != 3)
    return unsupported("resample", absl::StrCat(j["resample"].dump(), " is not supported (only 3, bicubic)"));
  if (j.contains("rescale_factor") && !j["rescale_factor"].is_null() &&
      (!j["rescale_factor"].is_number() || std::abs(j["rescale_factor"].get<double>() * 255.0 - 1.0) > 1e-6))
    return unsupported("rescale_factor", "only 1/255 is supported");
  return c;
}

std::string ImageProcessorConfigToJson(const ImageProcessorConfig& c) {
  const bool next = !c.image_grid_pinpoints.empty();
  nlohmann::json j = {{"image_processor_type", next ? "LlavaNextImageProcessor" : "CLIPImageProcessor"},
                      {"processor_class", next ? "LlavaNextProcessor" : "LlavaProcessor"},
                      {"do_resize", true},
                      {"size", {{"shortest_edge", c.size}}},
                      {"resample", 3},
                      {"do_center_crop", true},
                      {"crop_size", {{"height", c.crop_size}, {"width", c.crop_size}}},
                      {"do_rescale", true},
                      {"rescale_factor", 1.0 / 255.0},
                      {"do_normalize", true},
                      {"image_mean", c.mean},
                      {"image_std", c.std},
                      {"do_convert_rgb", true}};
  if (next) {
    j["image_grid_pinpoints"] = nlohmann::json::array();
    for (const auto& r : c.image_grid_pinpoints) j["image_grid_pinpoints"].push_back({r[0], r[1]});
    j["do_pad"] = true;
  }
  return j.dump(2) + "\n";
}

}  // namespace mfpo
