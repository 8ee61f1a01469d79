// The image pipeline against Pillow (tests/golden/gen_image_golden.py) and its error cases.
#include "common/image.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/match.h"
#include "common/safetensors.h"

namespace mfpo {
namespace {

const std::string kDir = std::string(MFPO_SOURCE_DIR) + "/tests/golden/images/";

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

cv::Mat Png(const std::string& name) {
  auto m = ReadImageFile(kDir + name);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : cv::Mat();
}

int MaxAbsDiff(const cv::Mat& a, const cv::Mat& b) {
  cv::Mat d;
  cv::absdiff(a, b, d);
  double mx = 0;
  cv::minMaxLoc(d.reshape(1), nullptr, &mx);
  return static_cast<int>(mx);
}

TEST(ImagePipeline, BicubicResizeMatchesPillowWithinOneLevel) {
  const std::array<double, 3> mean = ImageProcessorConfig().mean;
  for (auto [name, size] : std::vector<std::pair<std::string, int>>{
           {"wide", 32}, {"tall", 32}, {"big", 32}, {"big", 336}, {"small", 32}}) {
    cv::Mat in = Png(name + ".png");
    cv::Mat want = Png(name + "_resized_" + std::to_string(size) + ".png");
    cv::Mat got = ResizeBicubicPil(PadToSquare(in, mean), size, size);
    ASSERT_EQ(got.size(), want.size()) << name;
    const int diff = MaxAbsDiff(got, want);
    EXPECT_LE(diff, 1) << name << " -> " << size;
    // OpenCV's plain bicubic is what this replaces: it must be measurably different on the
    // down-scaled cases, or the test would not be checking anything.
    if (in.cols > size) {
      cv::Mat cv_cubic;
      cv::resize(PadToSquare(in, mean), cv_cubic, cv::Size(size, size), 0, 0, cv::INTER_CUBIC);
      EXPECT_GT(MaxAbsDiff(cv_cubic, want), 1) << name;
    }
  }
}

TEST(ImagePipeline, NormalisedTensorsMatchTransformersPipeline) {
  auto golden = SafetensorsFile::Open(kDir + "pipeline.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status();
  ImageProcessorConfig c;
  c.size = c.crop_size = 32;
  for (const std::string name : {"wide", "tall", "big", "small"}) {
    auto want = (*golden)->Load(name + "_32", torch::kFloat32);
    ASSERT_TRUE(want.ok()) << want.status();
    auto got = PreprocessImage(Png(name + ".png"), c);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->sizes(), want->sizes());
    // One 8-bit level over the smallest CLIP std.
    EXPECT_LT((*got - *want).abs().max().item<double>(), 1.0 / 255 / 0.2613 + 1e-5) << name;
  }
}

// A white box on black, run through PreprocessImage: its bright pixels must sit inside the
// mapped box (1 px of resampling blur allowed) and cover its interior.
void ExpectBoxLandsWhereMapped(int width, int height, const ImageProcessorConfig& c) {
  cv::Mat rgb(height, width, CV_8UC3, cv::Scalar(0, 0, 0));
  const std::array<double, 4> box = {6, 4, 14, 14};  // inside every image size used below
  cv::rectangle(rgb, cv::Point(6, 4), cv::Point(13, 13), cv::Scalar(255, 255, 255), cv::FILLED);
  auto t = PreprocessImage(rgb, c);
  ASSERT_TRUE(t.ok()) << t.status();
  const std::array<double, 4> m = MapBoxToPixelValues(box, width, height, c);
  torch::Tensor bright = t->select(0, 0) > 1.0;  // normalised white is ~1.9, black ~-1.8
  torch::Tensor nz = bright.nonzero();
  ASSERT_GT(nz.size(0), 0);
  const double y0 = nz.select(1, 0).min().item<int64_t>(), y1 = nz.select(1, 0).max().item<int64_t>() + 1;
  const double x0 = nz.select(1, 1).min().item<int64_t>(), x1 = nz.select(1, 1).max().item<int64_t>() + 1;
  EXPECT_NEAR(x0, m[0], 1.01) << width << "x" << height;
  EXPECT_NEAR(y0, m[1], 1.01);
  EXPECT_NEAR(x1, m[2], 1.01);
  EXPECT_NEAR(y1, m[3], 1.01);
}

TEST(ImagePipeline, BoxesMapThroughPadResizeAndCrop) {
  ImageProcessorConfig c;
  c.size = c.crop_size = 48;
  ExpectBoxLandsWhereMapped(32, 32, c);  // resize only
  ExpectBoxLandsWhereMapped(40, 20, c);  // pad to square, then resize
  ExpectBoxLandsWhereMapped(20, 40, c);
  c.pad_to_square = false;
  c.size = c.crop_size = 16;
  ExpectBoxLandsWhereMapped(40, 20, c);  // shortest edge 16 -> 32x16, crop the middle 16
  // Fully cropped away: clipped to an empty box at the edge.
  const auto gone = MapBoxToPixelValues({0, 0, 4, 4}, 40, 20, c);
  EXPECT_EQ(gone[2] - gone[0], 0.0);
}

TEST(ImageDecode, JpegAndWebpDecodeAndProbe) {
  cv::Mat png = Png("wide.png");
  for (const std::string name : {"wide.jpg", "wide.webp"}) {
    const std::string bytes = ReadBytes(kDir + name);
    auto size = ProbeImageSize(bytes);
    ASSERT_TRUE(size.ok()) << name << ": " << size.status();
    EXPECT_EQ(size->width, 53);
    EXPECT_EQ(size->height, 37);
    auto img = DecodeImage(bytes, name);
    ASSERT_TRUE(img.ok()) << img.status();
    EXPECT_EQ(img->size(), png.size());
    // Lossless WebP is identical to the PNG; the JPEG decodes as Pillow decodes it (both use
    // libjpeg-turbo) within one level.
    if (name == "wide.webp") {
      EXPECT_EQ(MaxAbsDiff(*img, png), 0);
    } else {
      EXPECT_LE(MaxAbsDiff(*img, Png("wide_jpg_decoded.png")), 1) << name;
    }
  }
  auto p = ProbeImageSize(ReadBytes(kDir + "big.png"));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->width, 300);
  EXPECT_EQ(p->height, 200);
}

TEST(ImageDecode, EmptyFileIsRejected) {
  auto r = DecodeImage("", "empty.png");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "empty.png: empty")) << r.status();
}

TEST(ImageDecode, GarbageAndTruncatedFilesAreRejectedNamingTheSource) {
  auto g = DecodeImage("this is not an image at all", "notes.txt");
  ASSERT_FALSE(g.ok());
  EXPECT_TRUE(absl::StrContains(g.status().message(), "notes.txt: undecodable")) << g.status();
  const std::string png = ReadBytes(kDir + "big.png");
  auto t = DecodeImage(png.substr(0, 40), "cut.png");
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::StrContains(t.status().message(), "cut.png")) << t.status();
  const std::string jpg = ReadBytes(kDir + "wide.jpg");
  auto tj = DecodeImage(jpg.substr(0, 12), "cut.jpg");
  ASSERT_FALSE(tj.ok());
  EXPECT_TRUE(absl::StrContains(tj.status().message(), "cut.jpg")) << tj.status();
}

TEST(ImageDecode, OversizedImagesAreRejectedBeforeDecoding) {
  ImageLimits limits;
  limits.max_pixels = 1000;
  auto r = DecodeImage(ReadBytes(kDir + "big.png"), "big.png", limits);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(r.status()));
  EXPECT_TRUE(absl::StrContains(r.status().message(), "300x200 = 60000 pixels")) << r.status();
  limits = ImageLimits();
  limits.max_file_bytes = 100;
  EXPECT_TRUE(absl::IsResourceExhausted(DecodeImage(ReadBytes(kDir + "big.png"), "big.png", limits).status()));
  // A forged PNG header claiming 100000 x 100000 pixels is stopped by the probe.
  std::string forged = ReadBytes(kDir + "small.png");
  forged[16] = 0; forged[17] = 1; forged[18] = static_cast<char>(0x86); forged[19] = static_cast<char>(0xA0);
  forged[20] = 0; forged[21] = 1; forged[22] = static_cast<char>(0x86); forged[23] = static_cast<char>(0xA0);
  auto f = DecodeImage(forged, "forged.png");
  EXPECT_TRUE(absl::IsResourceExhausted(f.status())) << f.status();
}

TEST(ImageDecode, MissingFileIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(ReadImageFile("/nonexistent/x.png").status()));
}

TEST(ImageProcessorConfigFile, ReadsHubPreprocessorConfig) {
  const std::string path = ::testing::TempDir() + "/preprocessor_config.json";
  std::ofstream(path) << R"({"crop_size": {"height": 336, "width": 336}, "do_center_crop": true,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3, "size": {"shortest_edge": 336}})";
  ImageProcessorConfig defaults;
  defaults.size = defaults.crop_size = 32;
  auto c = LoadImageProcessorConfig(path, defaults);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->size, 336);
  EXPECT_EQ(c->crop_size, 336);
  std::ofstream(path) << R"({"image_mean": [0.5, 0.5]})";
  auto bad = LoadImageProcessorConfig(path, defaults);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "image_mean")) << bad.status();
}

}  // namespace
}  // namespace mfpo

namespace mfpo {
namespace {

// A 20000 x 1 image passes the decoder's pixel limit; its square canvas (400M pixels) must not be
// allocated: an error for this image, not an abort of the process.
TEST(ImagePipeline, ExtremeAspectRatiosAreRefusedBeforeAllocating) {
  std::vector<uint8_t> png;
  ASSERT_TRUE(cv::imencode(".png", cv::Mat(1, 20000, CV_8UC3, cv::Scalar(10, 20, 30)), png));
  auto rgb = DecodeImage(std::string(png.begin(), png.end()), "wide.png");
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  ImageProcessorConfig c;
  c.size = c.crop_size = 32;
  auto t = PreprocessImage(*rgb, c);
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(t.status())) << t.status();
  EXPECT_TRUE(absl::StrContains(t.status().message(), "square canvas would be 20000x20000")) << t.status();
  // Without padding the resize target (32 x 640000) is the allocation that is bounded.
  c.pad_to_square = false;
  c.max_pixels = 1'000'000;
  t = PreprocessImage(*rgb, c);
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::StrContains(t.status().message(), "resized image")) << t.status();
  // A tall thin image within the limits still works.
  c.max_pixels = 50'000'000;
  c.pad_to_square = true;
  auto ok = PreprocessImage(cv::Mat(300, 2, CV_8UC3, cv::Scalar(1, 2, 3)), c);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->sizes(), (std::vector<int64_t>{3, 32, 32}));
  // A nonsensical processor config is an error too.
  c.crop_size = 0;
  EXPECT_FALSE(PreprocessImage(cv::Mat(4, 4, CV_8UC3), c).ok());
}

TEST(ImageDecode, ADirectoryOrDeviceIsNotAnImage) {
  for (const char* path : {"/tmp", "/dev/null"}) {
    auto m = ReadImageFile(path);
    ASSERT_FALSE(m.ok()) << path;
    EXPECT_TRUE(absl::StrContains(m.status().message(), "is a")) << m.status();
  }
}

}  // namespace
}  // namespace mfpo
