// Image-preference pipeline throughput (keywords -> grounder -> masked DDPM noise -> PNGs +
// manifest), per core, as a ratio to the floor set by decoding and encoding the same images
// alone (what any pipeline that reads and writes them must pay). Target: >= 0.5 with the
// `regions` grounder. With --model DIR also the `model` grounder.
//
//   build/bench/mfpo_bench_datagen [--images 300] [--size 256] [--model DIR]
// Rates are the best of three runs (two for the model grounder).
#include <torch/torch.h>

#include <chrono>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "bench/bench_util.h"
#include "common/device.h"
#include "common/image.h"
#include "common/jsonl.h"
#include "datagen/perturb_command.h"
#include "datagen/scene_world.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Decode each record's image and encode an RGB and a mask PNG of its size, single-threaded.
double FloorImagesPerSecond(const fs::path& manifest) {
  std::vector<std::string> images;
  (void)mfpo::ReadJsonl(manifest.string(), [&](int, const nlohmann::json& j) {
    images.push_back((manifest.parent_path() / j["image"].get<std::string>()).string());
    return absl::OkStatus();
  });
  const auto t0 = Clock::now();
  for (const auto& path : images) {
    auto rgb = mfpo::ReadImageFile(path);
    if (!rgb.ok()) continue;
    cv::Mat bgr, mask(rgb->size(), CV_8UC1, cv::Scalar(0));
    cv::cvtColor(*rgb, bgr, cv::COLOR_RGB2BGR);
    std::vector<uint8_t> a, b;
    cv::imencode(".png", bgr, a, {cv::IMWRITE_PNG_COMPRESSION, 1});
    cv::imencode(".png", mask, b, {cv::IMWRITE_PNG_COMPRESSION, 1});
  }
  return images.size() / Seconds(t0);
}

double PipelineImagesPerSecond(mfpo::PerturbCommandOptions o, const fs::path& out, int threads, int64_t* fallbacks) {
  fs::remove_all(out);
  o.shard.out_dir = out.string();
  o.shard.threads = threads;
  const auto t0 = Clock::now();
  auto report = mfpo::RunPerturbCommand(o);
  const double secs = Seconds(t0);
  if (!report.ok()) {
    std::fprintf(stderr, "pipeline failed: %s\n", std::string(report.status().message()).c_str());
    std::exit(1);
  }
  *fallbacks = report->fallbacks;
  return report->done / secs;
}

}  // namespace

int main(int argc, char** argv) {
  int images = 300, size = 256;
  std::string model;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--images") images = std::stoi(argv[i + 1]);
    else if (a == "--size") size = std::stoi(argv[i + 1]);
    else if (a == "--model") model = argv[i + 1];
  }
  mfpo::SetComputeThreads(1);
  const fs::path root = fs::temp_directory_path() / ("mfpo_bench_datagen_" + std::to_string(::getpid()));
  mfpo::WorldOptions world;
  world.train = images;
  world.val = world.test = 0;
  world.size = size;
  if (!mfpo::WriteWorld((root / "world").string(), world).ok()) return 1;
  const fs::path manifest = root / "world" / "train.jsonl";
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  // Best of three: this machine is shared and the first pass also warms the page cache.
  double floor = 0;
  for (int r = 0; r < 3; ++r) floor = std::max(floor, FloorImagesPerSecond(manifest));
  std::printf("world: %d images of %d px, %d records; %d cores\n", images, size, images * 5, cores);
  std::printf("floor (decode + encode image and mask PNG), 1 core: %.1f records/s\n", floor);

  mfpo::PerturbCommandOptions o;
  o.shard.manifest = manifest.string();
  o.vocabulary_path = (root / "world" / "vocab.txt").string();
  int64_t fallbacks = 0;
  double regions1 = 0;
  for (int r = 0; r < 3; ++r) regions1 = std::max(regions1, PipelineImagesPerSecond(o, root / "regions1", 1, &fallbacks));
  std::printf("regions grounder, 1 core: %.1f records/s = %.2f x floor (target >= 0.5); %lld global fallbacks\n",
              regions1, regions1 / floor, static_cast<long long>(fallbacks));
  mfpo::bench::Result("datagen", "regions grounder, 1 core", regions1 / floor,
                      "decode + encode image and mask PNG, 1 core", ">= 0.5");
  const double regions_all = PipelineImagesPerSecond(o, root / "regions_all", cores, &fallbacks);
  std::printf("regions grounder, %d cores: %.1f records/s (%.2f x its 1-core rate)\n", cores, regions_all,
              regions_all / regions1);
  mfpo::bench::Result("datagen", "regions grounder, all cores vs 1", regions_all / regions1, "the 1-core rate",
                      "~ cores");
  if (!model.empty()) {
    o.grounder = "model";
    o.model_dir = model;
    double model1 = 0;
    for (int r = 0; r < 2; ++r) model1 = std::max(model1, PipelineImagesPerSecond(o, root / "model1", 1, &fallbacks));
    std::printf("model grounder, 1 core: %.1f records/s = %.2f x floor; %lld global fallbacks\n", model1,
                model1 / floor, static_cast<long long>(fallbacks));
    mfpo::bench::Result("datagen", "model grounder, 1 core", model1 / floor, "decode + encode image and mask PNG, 1 core");
    const double model_all = PipelineImagesPerSecond(o, root / "model_all", cores, &fallbacks);
    std::printf("model grounder, %d cores: %.1f records/s (%.2f x its 1-core rate)\n", cores, model_all,
                model_all / model1);
  }
  fs::remove_all(root);
  return 0;
}
