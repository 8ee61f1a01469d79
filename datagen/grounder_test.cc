// Grounders on images whose object positions are known: the `regions` grounder against the
// world's boxes, the TorchScript contract on a scripted module, and the `model` grounder's
// mechanics (its IoU with a world-trained SFT model is measured when MFPO_SFT_MODEL names one).
#include "datagen/grounder.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <opencv2/imgproc.hpp>

#include "absl/strings/match.h"
#include "common/presets.h"
#include "datagen/scene_world.h"

namespace mfpo {
namespace {

std::vector<PreferenceRegion> Regions(const WorldSample& s) {
  std::vector<PreferenceRegion> out;
  for (const auto& o : s.objects) {
    PreferenceRegion r;
    r.label = o.kind;
    r.box = {o.x0, o.y0, o.x1, o.y1};
    out.push_back(r);
  }
  return out;
}

cv::Mat TruthMask(const WorldSample& s, const std::string& kind, cv::Size size) {
  std::vector<PreferenceRegion> hits;
  for (const auto& r : Regions(s))
    if (r.label == kind) hits.push_back(r);
  return RegionsMask(hits, size);
}

absl::StatusOr<ObjectVocabulary> WorldVocabulary() {
  return ObjectVocabulary::FromFile(std::string(MFPO_SOURCE_DIR) + "/datagen/data/scene_world_synonyms.txt");
}

TEST(RegionsGrounder, FindsTheLabelledBoxesAndSynonyms) {
  auto vocab = WorldVocabulary();
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  auto grounder = MakeRegionsGrounder(*vocab);
  WorldOptions world;
  double iou_sum = 0;
  int n = 0;
  for (int i = 0; i < 100; ++i) {
    cv::Mat rgb;
    WorldSample s = GenerateWorldSample(world, "test", i, &rgb);
    for (const auto& o : s.objects) {
      auto mask = grounder->Ground(rgb, o.kind, Regions(s));
      ASSERT_TRUE(mask.ok()) << mask.status();
      iou_sum += MaskIou(*mask, TruthMask(s, o.kind, rgb.size()));
      ++n;
    }
    // A synonym of a drawn kind, and a kind that is not in the image.
    const auto& kinds = WorldKinds();
    for (const auto& k : kinds) {
      if (k.synonyms.size() > 1 && std::any_of(s.objects.begin(), s.objects.end(),
                                               [&](const WorldObject& o) { return o.kind == k.name; })) {
        auto mask = grounder->Ground(rgb, k.synonyms[1] + "s", Regions(s));  // plural synonym
        ASSERT_TRUE(mask.ok());
        EXPECT_EQ(MaskIou(*mask, TruthMask(s, k.name, rgb.size())), 1.0) << k.synonyms[1];
      }
      if (std::none_of(s.objects.begin(), s.objects.end(), [&](const WorldObject& o) { return o.kind == k.name; })) {
        auto mask = grounder->Ground(rgb, k.name, Regions(s));
        ASSERT_TRUE(mask.ok());
        EXPECT_TRUE(mask->empty()) << k.name << " is not in sample " << s.id;
      }
    }
  }
  std::printf("regions grounder: mean IoU with the true boxes %.3f over %d objects\n", iou_sum / n, n);
  EXPECT_EQ(iou_sum / n, 1.0);  // stated floor: exact (the boxes are the annotation)
}

TEST(RegionsGrounder, PolygonsAreFilled) {
  PreferenceRegion tri;
  tri.label = "roof";
  tri.polygon = {{0, 0}, {9, 0}, {0, 9}};
  cv::Mat mask = RegionsMask({tri}, cv::Size(10, 10));
  EXPECT_EQ(mask.at<uint8_t>(1, 1), 255);
  EXPECT_EQ(mask.at<uint8_t>(9, 9), 0);
  EXPECT_NEAR(cv::countNonZero(mask), 55, 10);  // about half of the 10x10 square
}

TEST(MaskIou, HandComputed) {
  cv::Mat a = cv::Mat::zeros(4, 4, CV_8UC1), b = cv::Mat::zeros(4, 4, CV_8UC1);
  a(cv::Rect(0, 0, 2, 4)).setTo(255);  // 8 pixels
  b(cv::Rect(1, 0, 2, 4)).setTo(255);  // 8 pixels, 4 shared
  EXPECT_DOUBLE_EQ(MaskIou(a, b), 4.0 / 12.0);
  EXPECT_DOUBLE_EQ(MaskIou(a, cv::Mat()), 0.0);
}

TEST(AblationGrounders, RandomBoxCoversTheFractionAndGlobalFindsNothing) {
  cv::Mat rgb;
  GenerateWorldSample(WorldOptions{}, "train", 1, &rgb);
  auto random = MakeRandomGrounder(0.2, 7);
  auto a = random->Ground(rgb, "ball", {});
  auto b = random->Ground(rgb, "tree", {});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NEAR(cv::countNonZero(*a) / static_cast<double>(rgb.total()), 0.2, 0.03);
  EXPECT_EQ(cv::norm(*a, *b, cv::NORM_INF), 0) << "one box per image, whatever the keyword";
  auto other = MakeRandomGrounder(0.2, 8)->Ground(rgb, "ball", {});
  ASSERT_TRUE(other.ok());
  EXPECT_GT(cv::norm(*a, *other, cv::NORM_INF), 0) << "the seed moves the box";
  auto global = MakeGlobalGrounder()->Ground(rgb, "ball", {});
  ASSERT_TRUE(global.ok());
  EXPECT_TRUE(global->empty());
}

TEST(TorchScriptGrounder, FollowsTheContract) {
  auto grounder = MakeTorchScriptGrounder(std::string(MFPO_SOURCE_DIR) +
                                          "/tests/golden/torchscript/brightness_grounder.pt");
  ASSERT_TRUE(grounder.ok()) << grounder.status();
  cv::Mat rgb(20, 30, CV_8UC3, cv::Scalar(0, 0, 0));
  rgb(cv::Rect(0, 0, 10, 20)).setTo(cv::Scalar(255, 255, 255));  // bright left third
  auto mask = (*grounder)->Ground(rgb, "anything", {});
  ASSERT_TRUE(mask.ok()) << mask.status();
  ASSERT_EQ(mask->size(), rgb.size());  // half-resolution logits resized back
  cv::Mat truth = cv::Mat::zeros(rgb.size(), CV_8UC1);
  truth(cv::Rect(0, 0, 10, 20)).setTo(255);
  EXPECT_GT(MaskIou(*mask, truth), 0.9);
  auto nothing = (*grounder)->Ground(rgb, "nothing", {});
  ASSERT_TRUE(nothing.ok());
  EXPECT_TRUE(nothing->empty());

  auto missing = MakeTorchScriptGrounder("/nonexistent/grounder.pt");
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  const std::string junk = (std::filesystem::temp_directory_path() / "mfpo_junk_grounder.pt").string();
  std::ofstream(junk) << "not a zip";
  auto broken = MakeTorchScriptGrounder(junk);
  ASSERT_FALSE(broken.ok());
  EXPECT_TRUE(absl::StrContains(broken.status().message(), junk)) << broken.status();
}

TEST(ModelGrounder, ProducesAMaskOfTheImageOrNothing) {
  const std::string dir = (std::filesystem::temp_directory_path() / "mfpo_grounder_model").string();
  InitModelOptions init;
  init.seed = 1;
  ASSERT_TRUE(InitModelDir(dir, init).ok());
  auto grounder = MakeModelGrounder(dir, {});
  ASSERT_TRUE(grounder.ok()) << grounder.status();
  cv::Mat rgb;
  WorldSample s = GenerateWorldSample(WorldOptions{}, "test", 0, &rgb);
  auto a = (*grounder)->Ground(rgb, s.objects[0].kind, {});
  auto b = (*grounder)->Ground(rgb, s.objects[0].kind, {});
  ASSERT_TRUE(a.ok() && b.ok()) << a.status();
  EXPECT_EQ(a->empty(), b->empty());  // deterministic
  if (!a->empty()) {
    EXPECT_EQ(a->size(), rgb.size());
    EXPECT_EQ(a->type(), CV_8UC1);
    EXPECT_EQ(cv::norm(*a, *b, cv::NORM_INF), 0);  // deterministic
  }
  std::filesystem::remove_all(dir);
}

// The `model` grounder with the world's SFT model (the shipped baseline, common/data/sft-baseline,
// made by scripts/sft-baseline.sh): IoU with the true boxes.
TEST(ModelGrounder, IouWithTheWorldSftModel) {
  const std::string dir = MFPO_SOURCE_DIR "/common/data/sft-baseline";
  double default_iou = 0;
  for (const char* heat : {"gradient", "cosine"}) {
    ModelGrounderOptions options;
    options.heat = heat;
    auto grounder = MakeModelGrounder(dir, options);
    ASSERT_TRUE(grounder.ok()) << grounder.status();
    double iou_sum = 0, iou_found = 0;
    int n = 0, found = 0, absent_found = 0;
    for (int i = 0; i < 100; ++i) {
      cv::Mat rgb;
      WorldSample s = GenerateWorldSample(WorldOptions{}, "test", i, &rgb);
      const std::string kind = s.objects[0].kind;
      auto mask = (*grounder)->Ground(rgb, kind, {});
      ASSERT_TRUE(mask.ok()) << mask.status();
      const double iou = MaskIou(*mask, TruthMask(s, kind, rgb.size()));
      found += !mask->empty();
      iou_sum += iou;
      iou_found += mask->empty() ? 0 : iou;
      ++n;
      // A kind that is not in the image should not be found.
      for (const auto& k : WorldKinds())
        if (std::none_of(s.objects.begin(), s.objects.end(), [&](const WorldObject& o) { return o.kind == k.name; })) {
          auto absent = (*grounder)->Ground(rgb, k.name, {});
          ASSERT_TRUE(absent.ok());
          absent_found += !absent->empty();
          break;
        }
    }
    std::printf("model grounder (%s): mean IoU with the true box %.3f over %d present objects (found %d, IoU when "
                "found %.3f); absent kinds found %d / %d\n",
                heat, iou_sum / n, n, found, found ? iou_found / found : 0.0, absent_found, n);
    if (options.heat == ModelGrounderOptions{}.heat) default_iou = iou_sum / n;
  }
  // Context: a box of 20% of the image at a random place.
  auto random = MakeRandomGrounder(0.2, 0);
  double random_iou = 0;
  for (int i = 0; i < 100; ++i) {
    cv::Mat rgb;
    WorldSample s = GenerateWorldSample(WorldOptions{}, "test", i, &rgb);
    auto mask = random->Ground(rgb, s.objects[0].kind, {});
    ASSERT_TRUE(mask.ok());
    random_iou += MaskIou(*mask, TruthMask(s, s.objects[0].kind, rgb.size())) / 100;
  }
  std::printf("random 20%% box: mean IoU %.3f (the chance level)\n", random_iou);
  EXPECT_GE(default_iou, 0.25);  // stated floor for the default heat map
  EXPECT_GT(default_iou, random_iou);  // better than chance
}

}  // namespace
}  // namespace mfpo
