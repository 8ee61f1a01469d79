// The image-preference pipeline on the embedded world: outputs and manifest, untouched pixels
// outside the mask, global fallback, bad records, byte-identical reruns, and resume after the
// worker is killed mid-shard.
#include "datagen/perturb_pipeline.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <prometheus/text_serializer.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/image.h"
#include "common/metrics_server.h"
#include "common/metrics_test_util.h"
#include "datagen/datagen_metrics.h"
#include "datagen/diffusion_noise.h"
#include "datagen/perturb_command.h"
#include "datagen/scene_world.h"
#include "tests/cli_runner.h"

namespace mfpo {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

class PerturbPipelineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(fs::temp_directory_path() / ("perturb_test_" + std::to_string(::getpid())));
    fs::remove_all(*root_);
    WorldOptions world;
    world.train = 40;
    world.val = 0;
    world.test = 0;
    ASSERT_TRUE(WriteWorld((*root_ / "world").string(), world).ok());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
  }
  static std::unique_ptr<Grounder> Regions() {
    auto vocab = ObjectVocabulary::FromFile((*root_ / "world" / "vocab.txt").string());
    EXPECT_TRUE(vocab.ok()) << vocab.status();
    return MakeRegionsGrounder(*vocab);
  }
  // Runs the regions grounder over DIR/in.jsonl into DIR/out with default options.
  static absl::StatusOr<ShardReport> RunOnDir(const fs::path& dir) {
    ShardOptions shard;
    shard.manifest = (dir / "in.jsonl").string();
    shard.out_dir = (dir / "out").string();
    auto grounder = Regions();
    return RunPerturbShard(shard, PerturbOptions{}, *grounder, nullptr);
  }
  static std::vector<json> Lines(const std::string& path) {
    std::vector<json> out;
    std::ifstream in(path);
    for (std::string l; std::getline(in, l);) out.push_back(json::parse(l));
    return out;
  }
  static fs::path* root_;
};
fs::path* PerturbPipelineTest::root_ = nullptr;

TEST_F(PerturbPipelineTest, WritesRejectedImagesMasksAndATrainableManifest) {
  ShardOptions shard;
  shard.manifest = (*root_ / "world" / "train.jsonl").string();
  shard.out_dir = (*root_ / "out").string();
  shard.end = 60;
  shard.threads = 2;
  auto grounder = Regions();
  auto report = RunPerturbShard(shard, PerturbOptions{}, *grounder, nullptr);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->records, 60);
  EXPECT_EQ(report->done, 60);
  EXPECT_EQ(report->errors, 0);
  auto lines = Lines(report->manifest_path);
  ASSERT_EQ(lines.size(), 60u);
  int fallbacks = 0, local = 0;
  for (const json& l : lines) {
    const json& p = l["perturbation"];
    EXPECT_EQ(p["grounder"], "regions");
    EXPECT_EQ(p["t"], 500);
    ASSERT_TRUE(l.contains("rejected_image"));
    auto input = ReadImageFile((fs::path(shard.out_dir) / l["image"].get<std::string>()).string());
    auto rejected = ReadImageFile((fs::path(shard.out_dir) / l["rejected_image"].get<std::string>()).string());
    cv::Mat mask = cv::imread((fs::path(shard.out_dir) / p["mask"].get<std::string>()).string(), cv::IMREAD_GRAYSCALE);
    ASSERT_TRUE(input.ok() && rejected.ok() && !mask.empty()) << l.dump();
    // Pixels outside the mask are bit-identical; the coverage is the mask's.
    cv::Mat diff;
    cv::absdiff(*input, *rejected, diff);
    for (int y = 0; y < mask.rows; ++y)
      for (int x = 0; x < mask.cols; ++x)
        if (mask.at<uint8_t>(y, x) == 0) { ASSERT_EQ(diff.at<cv::Vec3b>(y, x), cv::Vec3b(0, 0, 0)) << l["id"]; }
    EXPECT_NEAR(p["coverage"].get<double>(), cv::countNonZero(mask) / double(mask.total()), 1e-9);
    if (p["fallback"].get<bool>()) {
      ++fallbacks;
      EXPECT_EQ(p["coverage"].get<double>(), 1.0);
      EXPECT_TRUE(p["found"].empty());
    } else {
      ++local;
      EXPECT_LT(p["coverage"].get<double>(), 1.0);
      EXPECT_FALSE(p["keywords"].empty());
    }
    // "No, there is no kite." names an absent object: nothing to ground, global noise.
    if (l["type"] == "exist_no") { EXPECT_TRUE(p["fallback"].get<bool>()) << l.dump(); }
    if (l["type"] == "describe") { EXPECT_FALSE(p["fallback"].get<bool>()) << l.dump(); }
  }
  EXPECT_GT(local, 30);
  EXPECT_GT(fallbacks, 5);

  // A rerun skips everything and rewrites an identical manifest.
  const std::string before = ReadFileToString(report->manifest_path).value_or("");
  auto again = RunPerturbShard(shard, PerturbOptions{}, *grounder, nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->skipped, 60);
  EXPECT_EQ(ReadFileToString(again->manifest_path).value_or("x"), before);
}

// A record whose id is not a string fails alone (reported by line), not the shard.
TEST_F(PerturbPipelineTest, NonStringIdIsARecordError) {
  const fs::path dir = *root_ / "numeric_id";
  fs::create_directories(dir);
  fs::copy_file(*root_ / "world" / "images" / "train-0.png", dir / "img.png");
  std::ofstream(dir / "in.jsonl")
      << json{{"id", 7}, {"image", "img.png"}, {"question", "Q"}, {"chosen", "A red ball."}, {"rejected", "r"}}.dump()
      << "\n"
      << json{{"id", "fine"}, {"image", "img.png"}, {"question", "Q"}, {"chosen", "A red ball."}, {"rejected", "r"}}.dump()
      << "\n";
  auto report = RunOnDir(dir);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->done, 1);
  EXPECT_EQ(report->errors, 1);
  auto errors = Lines(report->errors_path);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0]["id"], "line-1");
  EXPECT_TRUE(absl::StrContains(errors[0]["reason"].get<std::string>(), "id")) << errors[0].dump();
}

// The worker's Prometheus metrics, as an exposer would serve them after a shard.
TEST_F(PerturbPipelineTest, MetricsCountTheShard) {
  prometheus::Registry registry;
  DatagenMetrics metrics(registry);
  PerturbCounters counters;
  metrics.Attach(counters);
  ShardOptions shard;
  shard.manifest = (*root_ / "world" / "train.jsonl").string();
  shard.out_dir = (*root_ / "metrics_out").string();
  shard.end = 30;
  auto grounder = Regions();
  auto report = RunPerturbShard(shard, PerturbOptions{}, *grounder, nullptr, &counters);
  ASSERT_TRUE(report.ok()) << report.status();
  metrics.Sync(counters);
  const std::string text = prometheus::TextSerializer().Serialize(registry.Collect());
  EXPECT_TRUE(absl::StrContains(text, "mfpo_datagen_records_total{result=\"ok\"} 30")) << text;
  EXPECT_TRUE(absl::StrContains(text, "mfpo_datagen_record_seconds_count 30")) << text;
  EXPECT_TRUE(absl::StrContains(text, absl::StrCat("mfpo_datagen_global_fallback_total ", report->fallbacks))) << text;
  EXPECT_TRUE(absl::StrContains(text, "mfpo_datagen_queue_depth 0")) << text;
}

TEST_F(PerturbPipelineTest, BadRecordsGoToTheErrorsFileAndTheRestContinue) {
  const fs::path dir = *root_ / "bad";
  fs::create_directories(dir);
  fs::copy_file(*root_ / "world" / "images" / "train-0.png", dir / "good.png");
  std::ofstream(dir / "corrupt.png") << "this is not a png";
  {
    std::ofstream m(dir / "in.jsonl");
    auto rec = [](const std::string& id, const std::string& image, const std::string& chosen) {
      return json{{"id", id}, {"image", image}, {"question", "Describe the image."}, {"chosen", chosen},
                  {"rejected", "A purple kite."}}.dump();
    };
    m << rec("ok", "good.png", "A red ball.") << "\n";
    m << rec("corrupt", "corrupt.png", "A red ball.") << "\n";
    m << rec("missing-image", "nope.png", "A red ball.") << "\n";
    m << rec("empty", "good.png", "  ") << "\n";
    m << json{{"id", "no-question"}, {"image", "good.png"}, {"chosen", "x"}, {"rejected", "y"}}.dump() << "\n";
    m << "{not json\n";
    m << rec("ok2", "good.png", "A green tree.") << "\n";
  }
  auto report = RunOnDir(dir);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->done, 2);
  EXPECT_EQ(report->errors, 5);
  std::map<std::string, std::string> reasons;
  for (const json& e : Lines(report->errors_path)) reasons[e["id"]] = e["reason"];
  ASSERT_EQ(reasons.size(), 5u);
  EXPECT_TRUE(absl::StrContains(reasons["corrupt"], "corrupt.png")) << reasons["corrupt"];
  EXPECT_TRUE(absl::StrContains(reasons["missing-image"], "nope.png")) << reasons["missing-image"];
  EXPECT_TRUE(absl::StrContains(reasons["empty"], "field 'chosen' is empty")) << reasons["empty"];
  EXPECT_TRUE(absl::StrContains(reasons["no-question"], "question")) << reasons["no-question"];
  EXPECT_TRUE(reasons.count("line-6")) << "the unparsable line is reported by line number";
}

// Training sample 3 of the default world, and its first object as a region.
WorldSample FirstObjectSample(cv::Mat* rgb, PreferenceRegion* r) {
  WorldSample s = GenerateWorldSample(WorldOptions{}, "train", 3, rgb);
  r->label = s.objects[0].kind;
  r->box = {s.objects[0].x0, s.objects[0].y0, s.objects[0].x1, s.objects[0].y1};
  return s;
}

TEST_F(PerturbPipelineTest, FeatheredMaskBlendsTheEdgeAndLeavesTheRestUntouched) {
  cv::Mat rgb;
  PreferenceRegion r;
  const WorldSample s = FirstObjectSample(&rgb, &r);
  PerturbOptions o;
  o.feather = 3;
  auto grounder = Regions();
  auto p = PerturbImage(rgb, "There is a " + r.label + ".", {r}, s.id, o, *grounder, nullptr);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_FALSE(p->fallback);
  double min_soft = 255, soft = 0;
  for (int y = 0; y < rgb.rows; ++y)
    for (int x = 0; x < rgb.cols; ++x) {
      const uint8_t m = p->mask.at<uint8_t>(y, x);
      if (m == 0) {
        ASSERT_EQ(rgb.at<cv::Vec3b>(y, x), p->rejected.at<cv::Vec3b>(y, x));
      }
      if (m > 0 && m < 255) {
        ++soft;
        min_soft = std::min<double>(min_soft, m);
      }
    }
  EXPECT_GT(soft, 0) << "a feathered edge has intermediate mask values";
  // The edge lies outside the region: inside the box the weight is 255 whatever the feather,
  // even one wider than the object (a plain blur would leave it nearly untouched).
  const cv::Rect box(r.box[0], r.box[1], r.box[2] - r.box[0], r.box[3] - r.box[1]);
  for (const int feather : {3, 256}) {
    o.feather = feather;
    auto wide = PerturbImage(rgb, "There is a " + r.label + ".", {r}, s.id, o, *grounder, nullptr);
    ASSERT_TRUE(wide.ok()) << wide.status();
    double min_inside = 0;
    cv::minMaxLoc(wide->mask(box), &min_inside);
    EXPECT_EQ(min_inside, 255) << "feather " << feather;
  }
  o.feather = 3;
  // Same seed key, same bytes.
  auto again = PerturbImage(rgb, "There is a " + r.label + ".", {r}, s.id, o, *grounder, nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(cv::norm(p->rejected, again->rejected, cv::NORM_INF), 0);
}

// The worker binary killed mid-shard loses only the records in flight; the rerun finishes the
// shard and the result is byte-identical to an uninterrupted run.
TEST_F(PerturbPipelineTest, WorkerResumesAfterAKill) {
  const std::string tool = MFPO_DATAGEN_TOOL;
  // A shard big enough (2,000 records) that the kill lands mid-way.
  WorldOptions world;
  world.train = 400;
  world.val = world.test = 0;
  ASSERT_TRUE(WriteWorld((*root_ / "big_world").string(), world).ok());
  const std::string manifest = (*root_ / "big_world" / "train.jsonl").string();
  const fs::path killed = *root_ / "killed", clean = *root_ / "clean";
  auto command = [&](const fs::path& out) {
    return std::vector<std::string>{tool, "--manifest", manifest, "--out", out.string(), "--threads", "1",
                                    "--vocab", (*root_ / "world" / "vocab.txt").string()};
  };
  auto spawn = [](const std::vector<std::string>& argv) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      const int null_fd = ::open("/dev/null", O_WRONLY);
      ::dup2(null_fd, 1);
      ::dup2(null_fd, 2);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    return pid;
  };
  const pid_t pid = spawn(command(killed));
  ASSERT_GT(pid, 0);
  // Wait until some records are finished, then kill -9.
  int finished = 0;
  for (int i = 0; i < 600 && finished < 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    finished = 0;
    if (fs::exists(killed / "records"))
      for (const auto& e : fs::directory_iterator(killed / "records")) finished += absl::EndsWith(e.path().string(), ".json");
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_GT(finished, 0) << "the worker finished no record before the kill";
  EXPECT_FALSE(fs::exists(killed / "manifest.jsonl")) << "killed before the end: no manifest yet";
  // Leftover temporary files of the in-flight records are harmless; rerun to the end.
  for (const fs::path& out : {killed, clean}) {
    std::string line;
    for (const auto& a : command(out)) line += ShellQuote(a) + " ";
    Result r = RunShell(line, 300);
    ASSERT_EQ(r.code, 0) << out << "\n" << r.all;
  }
  const auto a = ReadFileToString((killed / "manifest.jsonl").string());
  const auto b = ReadFileToString((clean / "manifest.jsonl").string());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  int compared = 0;
  for (const auto& e : fs::directory_iterator(clean / "rejected")) {
    EXPECT_EQ(ReadFileToString(e.path().string()).value_or("a"),
              ReadFileToString((killed / "rejected" / e.path().filename()).string()).value_or("b"))
        << e.path().filename();
    ++compared;
  }
  EXPECT_GT(compared, 100);
}

// Two records with one id would write one set of files twice and lose the other record.
TEST_F(PerturbPipelineTest, DuplicateIdsAreAnErrorOfTheInput) {
  const fs::path dir = *root_ / "duplicates";
  fs::create_directories(dir);
  fs::copy_file(*root_ / "world" / "images" / "train-0.png", dir / "img.png");
  const json record = {{"id", "same"}, {"image", "img.png"}, {"question", "Q"}, {"chosen", "A red ball."}, {"rejected", "r"}};
  std::ofstream(dir / "in.jsonl") << record.dump() << "\n" << record.dump() << "\n";
  auto report = RunOnDir(dir);
  ASSERT_FALSE(report.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(report.status())) << report.status();
  EXPECT_TRUE(absl::StrContains(report.status().message(), "in.jsonl:2: duplicate record id 'same' (first at line 1)"))
      << report.status();
}

// One record's output path is blocked by a directory and another's input is a directory: those
// two records fail, the others are written, and the run ends (it used to wait forever).
TEST_F(PerturbPipelineTest, ARecordThatCannotBeWrittenOrReadFailsAloneWithoutAHang) {
  const fs::path dir = *root_ / "blocked";
  fs::create_directories(dir);
  std::ofstream in(dir / "in.jsonl");
  for (int i = 0; i < 6; ++i) {
    const std::string image = absl::StrCat("train-", i, ".png");
    fs::copy_file(*root_ / "world" / "images" / image, dir / image);
    in << json{{"id", absl::StrCat("r", i)}, {"image", i == 4 ? "." : image}, {"question", "Q"},
               {"chosen", "A red ball and a blue car."}, {"rejected", "r"}}.dump() << "\n";
  }
  in.close();
  fs::create_directories(dir / "out" / "rejected" / (RecordKey("r2") + ".png"));
  Result r = RunShell(absl::StrCat(MFPO_DATAGEN_TOOL, " --manifest ", (dir / "in.jsonl").string(), " --out ",
                                   (dir / "out").string(), " --threads 2 --vocab ",
                                   (*root_ / "world" / "vocab.txt").string()),
                      120);
  ASSERT_EQ(r.code, 0) << r.all;
  EXPECT_TRUE(absl::StrContains(r.out, "records 6, written 4, skipped 0 (already done), errors 2")) << r.all;
  auto errors = Lines((dir / "out" / "manifest.errors.jsonl").string());
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0]["id"], "r2");
  EXPECT_TRUE(absl::StrContains(errors[0]["reason"].get<std::string>(), "is a directory; refusing to replace it"))
      << errors[0];
  EXPECT_EQ(errors[1]["id"], "r4");
  EXPECT_TRUE(absl::StrContains(errors[1]["reason"].get<std::string>(), "is a directory")) << errors[1];
}

// A full disk (simulated with a file-size limit: writes fail with EFBIG) ends the shard with an
// error naming the cause; a rerun with space finishes and matches an undisturbed run.
TEST_F(PerturbPipelineTest, AFullDiskEndsTheShardWithAnErrorAndARerunContinues) {
  const fs::path full = *root_ / "full", clean = *root_ / "full_clean";
  auto command = [&](const fs::path& out) {
    return absl::StrCat(MFPO_DATAGEN_TOOL, " --manifest ", (*root_ / "world" / "train.jsonl").string(), " --end 12 --out ",
                        out.string(), " --threads 2 --vocab ", (*root_ / "world" / "vocab.txt").string());
  };
  Result failed = RunShell("ulimit -f 2; " + command(full), 120);
  EXPECT_EQ(failed.code, 1) << failed.all;
  EXPECT_TRUE(absl::StrContains(failed.all, "File too large")) << failed.all;
  EXPECT_TRUE(absl::StrContains(failed.all, "shard stopped")) << failed.all;
  EXPECT_FALSE(fs::exists(full / "manifest-0-12.jsonl"));
  ASSERT_FALSE(fs::exists(full / "records") && !fs::is_empty(full / "records") &&
               [&] {
                 for (const auto& e : fs::directory_iterator(full / "records"))
                   if (absl::EndsWith(e.path().string(), ".error.json")) return true;
                 return false;
               }())
      << "a full disk must not be recorded as record errors (a rerun would skip those records)";
  Result rerun = RunShell(command(full), 120);
  ASSERT_EQ(rerun.code, 0) << rerun.all;
  Result reference = RunShell(command(clean), 120);
  ASSERT_EQ(reference.code, 0) << reference.all;
  EXPECT_EQ(ReadFileToString((full / "manifest-0-12.jsonl").string()).value_or("a"),
            ReadFileToString((clean / "manifest-0-12.jsonl").string()).value_or("b"));
  for (const auto& e : fs::recursive_directory_iterator(full))
    EXPECT_FALSE(absl::StrContains(e.path().filename().string(), ".tmp")) << e.path();
}

// The worker's /metrics endpoint in a process that links LibTorch and OpenBLAS (whose static TLS
// kept prometheus-cpp's civetweb threads from starting).
TEST_F(PerturbPipelineTest, MetricsEndpointServesNextToLibTorch) {
  auto registry = std::make_shared<prometheus::Registry>();
  DatagenMetrics metrics(*registry);
  PerturbCounters counters;
  counters.done = 3;
  metrics.Sync(counters);
  auto server = MetricsServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string body = HttpGet((*server)->port(), "/metrics");
  EXPECT_TRUE(absl::StrContains(body, "mfpo_datagen_records_total{result=\"ok\"} 3")) << body;
}

// Finished records are skipped by a rerun, so a rerun with other settings (or another input)
// into the same --out would mix two configurations in one manifest: refused, saying what differs.
TEST_F(PerturbPipelineTest, ARerunWithOtherSettingsIsRefusedAndFailedRecordsAreRetried) {
  const fs::path dir = *root_ / "settings";
  fs::create_directories(dir);
  fs::copy_file(*root_ / "world" / "images" / "train-0.png", dir / "img.png");
  std::ofstream(dir / "in.jsonl")
      << json{{"id", "a"}, {"image", "img.png"}, {"question", "Q"}, {"chosen", "A red ball."}, {"rejected", "r"}}.dump() << "\n"
      << json{{"id", "b"}, {"image", "later.png"}, {"question", "Q"}, {"chosen", "A red ball."}, {"rejected", "r"}}.dump() << "\n";
  auto first = RunOnDir(dir);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->done, 1);
  EXPECT_EQ(first->errors, 1);
  // The missing image appears: a rerun tries record b again and keeps a.
  fs::copy_file(dir / "img.png", dir / "later.png");
  auto second = RunOnDir(dir);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->done, 2);
  EXPECT_EQ(second->skipped, 1);
  EXPECT_EQ(second->errors, 0);
  EXPECT_TRUE(Lines(second->errors_path).empty());
  // Other settings.
  ShardOptions shard;
  shard.manifest = (dir / "in.jsonl").string();
  shard.out_dir = (dir / "out").string();
  PerturbOptions other;
  other.noise_step = 999;
  other.seed = 5;
  auto grounder = Regions();
  auto refused = RunPerturbShard(shard, other, *grounder, nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "noise_step: 500 -> 999")) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "seed: 0 -> 5")) << refused.status();
  // Another input into the same directory.
  std::ofstream(dir / "other.jsonl") << json{{"id", "c"}, {"image", "img.png"}, {"question", "Q"}, {"chosen", "A ball."},
                                             {"rejected", "r"}}.dump() << "\n";
  shard.manifest = (dir / "other.jsonl").string();
  auto other_input = RunPerturbShard(shard, PerturbOptions{}, *grounder, nullptr);
  ASSERT_FALSE(other_input.ok());
  EXPECT_TRUE(absl::StrContains(other_input.status().message(), "manifest: ")) << other_input.status();
}
// The inpainting ablation: the object is gone, the region is smooth (no noise texture a model
// could learn to spot), the rest is untouched; a region covering the image falls back to noise.
TEST_F(PerturbPipelineTest, InpaintFillRemovesTheObjectWithoutANoiseTexture) {
  cv::Mat rgb;
  PreferenceRegion r;
  const WorldSample s = FirstObjectSample(&rgb, &r);
  auto grounder = Regions();
  const std::string text = "There is a " + r.label + ".";
  PerturbOptions noise_options, inpaint_options;
  inpaint_options.fill = PerturbFill::kInpaint;
  auto noised = PerturbImage(rgb, text, {r}, s.id, noise_options, *grounder, nullptr);
  auto inpainted = PerturbImage(rgb, text, {r}, s.id, inpaint_options, *grounder, nullptr);
  ASSERT_TRUE(noised.ok()) << noised.status();
  ASSERT_TRUE(inpainted.ok()) << inpainted.status();
  EXPECT_EQ(noised->fill, PerturbFill::kNoise);
  ASSERT_EQ(inpainted->fill, PerturbFill::kInpaint);
  // Mean |difference| to the original, and mean |difference| between horizontal neighbours, over
  // the mask's pixels.
  auto inside = [&](const cv::Mat& img, double* change, double* roughness) {
    double c = 0, rough = 0;
    int n = 0;
    for (int y = 0; y < rgb.rows; ++y)
      for (int x = 0; x + 1 < rgb.cols; ++x) {
        if (inpainted->mask.at<uint8_t>(y, x) == 0) {
          EXPECT_EQ(rgb.at<cv::Vec3b>(y, x), inpainted->rejected.at<cv::Vec3b>(y, x)) << "outside the mask at " << x << "," << y;
          continue;
        }
        for (int k = 0; k < 3; ++k) {
          c += std::abs(img.at<cv::Vec3b>(y, x)[k] - rgb.at<cv::Vec3b>(y, x)[k]);
          rough += std::abs(img.at<cv::Vec3b>(y, x + 1)[k] - img.at<cv::Vec3b>(y, x)[k]);
        }
        ++n;
      }
    ASSERT_GT(n, 0);
    *change = c / (3.0 * n);
    *roughness = rough / (3.0 * n);
  };
  double noise_change, noise_rough, inpaint_change, inpaint_rough, original_change, original_rough;
  inside(noised->rejected, &noise_change, &noise_rough);
  inside(inpainted->rejected, &inpaint_change, &inpaint_rough);
  inside(rgb, &original_change, &original_rough);
  EXPECT_GT(inpaint_change, 10) << "the object's pixels were replaced";
  EXPECT_LT(inpaint_rough, 0.25 * noise_rough) << "inpainting leaves no noise texture";
  EXPECT_LE(inpaint_rough, original_rough + 1) << "no rougher than the original image";
  // Nothing to fill from: the whole image is the region, so noise (and the record says so).
  PreferenceRegion all;
  all.label = r.label;
  all.box = {0, 0, rgb.cols, rgb.rows};
  auto whole = PerturbImage(rgb, text, {all}, s.id, inpaint_options, *grounder, nullptr);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->fill, PerturbFill::kNoise);
  // A feathered edge softens only the outside of the region: inside the box the object is gone
  // entirely (weight 255), outside it the blend fades out.
  inpaint_options.feather = 6;
  auto feathered = PerturbImage(rgb, text, {r}, s.id, inpaint_options, *grounder, nullptr);
  ASSERT_TRUE(feathered.ok()) << feathered.status();
  ASSERT_EQ(feathered->fill, PerturbFill::kInpaint);
  const cv::Rect box(r.box[0], r.box[1], r.box[2] - r.box[0], r.box[3] - r.box[1]);
  double min_inside = 0;
  cv::minMaxLoc(feathered->mask(box), &min_inside);
  EXPECT_EQ(min_inside, 255) << "a feathered inpaint mask lets the object show at the box's border";
  EXPECT_GT(cv::countNonZero(feathered->mask), box.area()) << "the feathered edge reaches outside the box";
  // A feather reaching every pixel would leave nothing to fill from: the region alone is filled.
  inpaint_options.feather = 256;
  auto everywhere = PerturbImage(rgb, text, {r}, s.id, inpaint_options, *grounder, nullptr);
  ASSERT_TRUE(everywhere.ok()) << everywhere.status();
  EXPECT_EQ(everywhere->fill, PerturbFill::kInpaint);
  EXPECT_EQ(cv::countNonZero(everywhere->mask), box.area());
  EXPECT_GT(cv::norm(everywhere->rejected(box), rgb(box), cv::NORM_L1) / (3.0 * box.area()), 10);
}

// Images one pixel high or wide have nothing for OpenCV's Telea to read around the region
// (it reads outside the image): they are noised, deterministically, and counted as such.
TEST_F(PerturbPipelineTest, InpaintOnAOnePixelHighImageFallsBackToNoise) {
  auto grounder = Regions();
  PerturbOptions options;
  options.fill = PerturbFill::kInpaint;
  for (const cv::Size size : {cv::Size(64, 1), cv::Size(1, 64)}) {
    cv::Mat rgb(size, CV_8UC3, cv::Scalar(10, 200, 30));
    PreferenceRegion r;
    r.label = "cube";
    r.box = {0, 0, std::max(1, size.width / 2), std::max(1, size.height / 2)};
    auto a = PerturbImage(rgb, "There is a cube.", {r}, "thin", options, *grounder, nullptr);
    auto b = PerturbImage(rgb, "There is a cube.", {r}, "thin", options, *grounder, nullptr);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(a->fill, PerturbFill::kNoise) << size;
    EXPECT_EQ(cv::norm(a->rejected, b->rejected, cv::NORM_INF), 0) << size;
  }
}

TEST_F(PerturbPipelineTest, InpaintShardRecordsTheFillAndARerunWithNoiseIsRefused) {
  PerturbCommandOptions o;
  o.shard.manifest = (*root_ / "world" / "train.jsonl").string();
  o.shard.out_dir = (*root_ / "inpaint").string();
  o.shard.end = 4;
  o.vocabulary_path = (*root_ / "world" / "vocab.txt").string();
  o.fill = "inpaint";
  auto report = RunPerturbCommand(o);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->done, 4);
  for (const json& line : Lines(report->manifest_path))
    EXPECT_EQ(line["perturbation"]["fill"], line["perturbation"]["fallback"].get<bool>() ? "noise" : "inpaint") << line;
  for (const json& line : Lines(report->manifest_path))
    EXPECT_EQ(line["perturbation"].contains("t"), line["perturbation"]["fill"] == "noise") << "t only where noised";
  EXPECT_EQ(report->noise_fills, report->fallbacks);
  o.fill = "noise";
  auto mixed = RunPerturbCommand(o);
  ASSERT_FALSE(mixed.ok());
  EXPECT_TRUE(absl::StrContains(mixed.status().message(), "fill: \"inpaint\" -> \"noise\"")) << mixed.status();
  // Without perturb.json the records themselves say what made them: a rerun with noise redoes
  // every record instead of mixing inpainted ones into a noise manifest.
  fs::remove(fs::path(o.shard.out_dir) / "perturb.json");
  auto redone = RunPerturbCommand(o);
  ASSERT_TRUE(redone.ok()) << redone.status();
  EXPECT_EQ(redone->skipped, 0);
  EXPECT_EQ(redone->noise_fills, 0);
  for (const json& line : Lines(redone->manifest_path)) {
    EXPECT_FALSE(line["perturbation"].contains("fill")) << line;
    EXPECT_EQ(line["perturbation"]["t"], 500) << line;
  }
  auto again = RunPerturbCommand(o);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->skipped, 4) << "the same settings skip finished records";
  // A finished record whose rejected image was deleted, or whose mask was emptied, is made again.
  auto lines = Lines(again->manifest_path);
  ASSERT_EQ(lines.size(), 4u);
  fs::remove(fs::path(o.shard.out_dir) / lines[0]["rejected_image"].get<std::string>());
  std::ofstream(fs::path(o.shard.out_dir) / lines[1]["perturbation"]["mask"].get<std::string>(), std::ios::trunc);
  auto repaired = RunPerturbCommand(o);
  ASSERT_TRUE(repaired.ok()) << repaired.status();
  EXPECT_EQ(repaired->skipped, 2);
  EXPECT_GT(fs::file_size(fs::path(o.shard.out_dir) / lines[0]["rejected_image"].get<std::string>()), 0u);
  EXPECT_GT(fs::file_size(fs::path(o.shard.out_dir) / lines[1]["perturbation"]["mask"].get<std::string>()), 0u);
  o.fill = "blur";
  auto bad = RunPerturbCommand(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "--fill 'blur': expected noise or inpaint")) << bad.status();
}

// An agent takes its shard settings from each job's spec: perturb flags given with --coordinator
// would be ignored, so they are refused before anything starts (no coordinator is contacted).
TEST_F(PerturbPipelineTest, AgentModeRefusesShardSettingFlags) {
  for (const std::string flags : {"--fill inpaint", "--fill=blur", "--grounder global", "--noise-step 10"}) {
    Result r = RunShell(absl::StrCat(MFPO_DATAGEN_TOOL, " --coordinator 127.0.0.1:1 ", flags), 60);
    EXPECT_EQ(r.code, 2) << flags << ": " << r.all;
    EXPECT_TRUE(absl::StrContains(r.all, "is a shard setting, not an agent's")) << flags << ": " << r.all;
  }
}

TEST_F(PerturbPipelineTest, ShardRangesAndOptionsAreChecked) {
  auto run = [&](int64_t begin, int64_t end) {
    ShardOptions shard;
    shard.manifest = (*root_ / "world" / "train.jsonl").string();
    shard.out_dir = (*root_ / "ranges").string();
    shard.begin = begin;
    shard.end = end;
    auto grounder = Regions();
    return RunPerturbShard(shard, PerturbOptions{}, *grounder, nullptr).status();
  };
  EXPECT_TRUE(absl::StrContains(run(-3, 2).message(), "--begin -3: must be >= 0"));
  EXPECT_TRUE(absl::StrContains(run(5, 2).message(), "must be greater than --begin 5"));
  EXPECT_TRUE(absl::StrContains(run(100000, -1).message(), "past the end")) << run(100000, -1);
  EXPECT_FALSE(fs::exists(*root_ / "ranges")) << "a refused shard made directories";
  PerturbCommandOptions o;
  o.shard.manifest = (*root_ / "world" / "train.jsonl").string();
  o.shard.out_dir = (*root_ / "bad_options").string();
  for (auto [field, set] : std::vector<std::pair<std::string, std::function<void(PerturbCommandOptions&)>>>{
           {"--feather", [](PerturbCommandOptions& x) { x.perturb.feather = 1000000000; }},
           {"--noise-step", [](PerturbCommandOptions& x) { x.perturb.noise_step = 0; }},
           {"--sigma", [](PerturbCommandOptions& x) { x.perturb.keywords.sigma = std::nan(""); }},
           {"--alpha", [](PerturbCommandOptions& x) { x.perturb.keywords.alpha = 2; }},
           {"--heat-threshold", [](PerturbCommandOptions& x) { x.model_grounder.threshold = -1; }}}) {
    PerturbCommandOptions bad = o;
    set(bad);
    auto r = RunPerturbCommand(bad);
    ASSERT_FALSE(r.ok()) << field;
    EXPECT_TRUE(absl::StrContains(r.status().message(), field)) << r.status();
  }
}

// A record edited in the manifest (same id) is made again by a rerun, not skipped.
TEST_F(PerturbPipelineTest, ARecordEditedInTheManifestIsMadeAgain) {
  const fs::path dir = *root_ / "edited";
  fs::create_directories(dir);
  fs::copy_file(*root_ / "world" / "images" / "train-0.png", dir / "img.png");
  auto write = [&](const std::string& chosen) {
    std::ofstream(dir / "in.jsonl") << json{{"id", "a"}, {"image", "img.png"}, {"question", "Q"}, {"chosen", chosen},
                                            {"rejected", "r"}}.dump() << "\n";
  };
  write("A red ball.");
  ASSERT_TRUE(RunOnDir(dir).ok());
  write("A blue car.");
  auto again = RunOnDir(dir);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->skipped, 0);
  EXPECT_EQ(again->done, 1);
  auto lines = Lines(again->manifest_path);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["chosen"], "A blue car.");
}

}  // namespace
}  // namespace mfpo
