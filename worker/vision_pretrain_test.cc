// Vision-tower pre-training: what it trains, what it leaves alone, and what bad input gets.
#include "worker/vision_pretrain.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "common/model_dir.h"
#include "common/presets.h"
#include "datagen/scene_world.h"

namespace mfpo {
namespace {
namespace fs = std::filesystem;

TEST(CaptionWords, LowerCaseRunsOfLetters) {
  EXPECT_EQ(CaptionWords("There are two balls (red and Blue)."),
            (std::vector<std::string>{"there", "are", "two", "balls", "red", "and", "blue"}));
  EXPECT_TRUE(CaptionWords(" 3, .").empty());
}

class VisionPretrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("vision_pretrain_test_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    InitModelOptions init;
    init.seed = 5;
    ASSERT_TRUE(InitModelDir((root_ / "model").string(), init).ok());
    WorldOptions world;
    world.train = 48;
    world.val = 0;
    world.test = 0;
    world.colour_prior = 0.0;
    world.cooccur_prior = 0.0;
    ASSERT_TRUE(WriteWorld((root_ / "world").string(), world).ok());
  }
  void TearDown() override { fs::remove_all(root_); }

  VisionPretrainOptions Options(const std::string& out) const {
    VisionPretrainOptions o;
    o.model_dir = (root_ / "model").string();
    o.data = (root_ / "world").string();
    o.out_dir = (root_ / out).string();
    o.eval_split = "train";  // score the fit itself
    o.batch_size = 16;
    o.min_word_count = 2;
    return o;
  }
  static std::map<std::string, torch::Tensor> Params(const fs::path& dir) {
    auto m = LoadModelDir(dir.string());
    EXPECT_TRUE(m.ok()) << m.status();
    std::map<std::string, torch::Tensor> out;
    if (!m.ok()) return out;
    for (const auto& p : m->model->named_parameters()) out[p.key()] = p.value().clone();
    return out;
  }
  fs::path root_;
};

TEST_F(VisionPretrainTest, FitsTheCaptionWordsAndChangesOnlyTheUsedTowerLayers) {
  VisionPretrainOptions o = Options("pre");
  o.epochs = 40;
  o.lr = 3e-3;
  std::ostringstream progress;
  auto r = RunVisionPretrain(o, progress);
  ASSERT_TRUE(r.ok()) << r.status();
  const std::string summary = VisionPretrainSummary(*r);
  EXPECT_EQ(r->train_images, 48);
  EXPECT_EQ(r->steps, 40 * 3);
  EXPECT_TRUE(r->record_errors.empty());
  EXPECT_EQ(r->box_labels, 10);  // the world's kinds, from the annotations' boxes
  ASSERT_EQ(r->epoch_losses.size(), 40u);
  EXPECT_LT(r->epoch_losses.back(), 0.5 * r->epoch_losses.front()) << summary;
  // Colour is the first thing learnt: each of these words is in several of the 48 captions.
  for (const char* colour : {"red", "blue", "green", "black"}) {
    ASSERT_TRUE(r->words.count(colour)) << colour;
    EXPECT_GE(r->words.at(colour).F1(), 0.9) << colour << "\n" << summary;
  }
  EXPECT_GT(r->informative_f1, 0.5) << summary;
  EXPECT_GT(r->object_patch_accuracy, 0.25) << summary;  // 10 labels: chance is 0.1
  EXPECT_TRUE(absl::StrContains(progress.str(), "images/s"));
  EXPECT_TRUE(fs::exists(root_ / "pre" / "vision_pretrain.json"));
  EXPECT_TRUE(fs::exists(root_ / "pre" / "tokenizer.model"));
  EXPECT_FALSE(fs::exists(root_ / "pre.tmp"));

  auto before = Params(root_ / "model"), after = Params(root_ / "pre");
  ASSERT_EQ(before.size(), after.size());
  int changed = 0;
  for (const auto& [name, t] : before) {
    const bool same = torch::equal(t, after.at(name));
    // The tiny preset reads layer -2 of 3: encoder layer 2 never runs, so it cannot change.
    const bool trained = absl::StartsWith(name, "vision_tower.") && !absl::StrContains(name, "layers.2.") &&
                         !absl::StrContains(name, "post_layernorm");
    if (trained) {
      changed += !same;
    } else {
      EXPECT_TRUE(same) << name << " changed";
    }
  }
  EXPECT_GT(changed, 20);
}

TEST_F(VisionPretrainTest, BadRecordsAreSkippedAndNamed) {
  // The world's 48 records plus three bad ones.
  const fs::path file = root_ / "world" / "annotations.jsonl";
  {
    std::ofstream out(file, std::ios::app);
    out << R"({"image": "images/missing.png", "captions": ["a red ball"]})" << "\n";
    out << R"({"image": "images/train-0.png"})" << "\n";
    out << "{not json\n";
  }
  VisionPretrainOptions o = Options("bad");
  o.data = file.string();
  o.epochs = 1;
  o.eval_split = "";
  auto r = RunVisionPretrain(o, std::cerr);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->train_images, 48);
  ASSERT_EQ(r->record_errors.size(), 3u) << VisionPretrainSummary(*r);
  const std::string all = VisionPretrainSummary(*r);
  EXPECT_TRUE(absl::StrContains(all, "missing.png")) << all;
  EXPECT_TRUE(absl::StrContains(all, "annotations.jsonl:50: field 'captions'")) << all;
  EXPECT_TRUE(absl::StrContains(all, "annotations.jsonl:51")) << all;
}

TEST_F(VisionPretrainTest, RefusesWhatItCannotUse) {
  VisionPretrainOptions o = Options("refused");
  o.data = (root_ / "nowhere.jsonl").string();
  auto missing = RunVisionPretrain(o, std::cerr);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "nowhere.jsonl")) << missing.status();

  o = Options("refused");
  o.train_split = "nosuchsplit";
  auto empty = RunVisionPretrain(o, std::cerr);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(empty.status().message(), "nosuchsplit")) << empty.status();

  fs::create_directories(root_ / "exists");
  o = Options("exists");
  auto exists = RunVisionPretrain(o, std::cerr);
  EXPECT_EQ(exists.status().code(), absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace mfpo
