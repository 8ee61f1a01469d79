// The single-process trainer end to end on a tiny model and world: the objective at lr 0,
// bitwise-identical resume, and the reference-cache fingerprint check.
#include "worker/trainer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "common/file_util.h"
#include "common/presets.h"
#include "datagen/scene_world.h"
#include "worker/job_spec.h"

namespace mfpo {
namespace {
namespace fs = std::filesystem;

// The file's bytes, or "" when it cannot be read (the comparisons then fail visibly).
std::string ReadAll(const fs::path& p) { return ReadFileToString(p.string()).value_or(""); }

class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(fs::temp_directory_path() / ("trainer_test_" + std::to_string(::getpid())));
    fs::remove_all(*root_);
    InitModelOptions init;
    init.seed = 3;
    ASSERT_TRUE(InitModelDir((*root_ / "model").string(), init).ok());
    WorldOptions world;
    world.train = 12;
    world.val = 0;
    world.test = 0;
    world.size = 32;
    ASSERT_TRUE(WriteWorld((*root_ / "world").string(), world).ok());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
  }
  v1::JobSpec Spec(const std::string& name, double lr) {
    auto s = ParseJobSpec(R"({"output_dir": ")" + (*root_ / name).string() + R"(", "model": {"path": ")" +
                              (*root_ / "model").string() + R"("}, "data": {"train": ")" +
                              (*root_ / "world" / "train.jsonl").string() +
                              R"(", "max_samples": 24}, "optimizer": {"lr": )" + std::to_string(lr) +
                              R"(, "micro_batch": 4, "warmup_ratio": 0.2}, "checkpoint": {"keep_last": 0}})",
                          false, name);
    EXPECT_TRUE(s.ok()) << s.status();
    return *s;
  }
  static fs::path* root_;
};
fs::path* TrainerTest::root_ = nullptr;

TEST_F(TrainerTest, LearningRateZeroLeavesWeightsAndLogsTheExactObjective) {
  std::ostringstream progress;
  ASSERT_TRUE(RunTraining(Spec("lr0", 0.0), {}, progress).ok()) << progress.str();
  const auto final_weights = ReadAll(*root_ / "lr0" / "checkpoints" / "step-000006" / "model.safetensors");
  ASSERT_FALSE(final_weights.empty());
  EXPECT_EQ(final_weights, ReadAll(*root_ / "model" / "model.safetensors"));
  std::ifstream metrics(*root_ / "lr0" / "metrics.jsonl");
  int lines = 0;
  for (std::string l; std::getline(metrics, l); ++lines) {
    auto j = nlohmann::json::parse(l);
    // Policy == reference: every reward is 0, so each MFPO term is log 2.
    EXPECT_NEAR(j["loss"].get<double>(), 3 * std::log(2.0), 1e-4) << l;
    EXPECT_NEAR(j["reward_chosen"].get<double>(), 0.0, 1e-4);
    EXPECT_EQ(j["lr"].get<double>(), 0.0);
  }
  EXPECT_EQ(lines, 6);  // 24 samples, 3 tiers of 8, micro-batch 4
}

TEST_F(TrainerTest, OnlineReferenceGivesTheSameObjectiveAsTheCache) {
  v1::JobSpec spec = Spec("online", 0.0);
  spec.mutable_objective()->set_online_reference(true);
  std::ostringstream progress;
  ASSERT_TRUE(RunTraining(spec, {}, progress).ok()) << progress.str();
  EXPECT_FALSE(fs::exists(*root_ / "online" / "reference_logps.safetensors"));
  std::ifstream metrics(*root_ / "online" / "metrics.jsonl");
  int lines = 0;
  for (std::string l; std::getline(metrics, l); ++lines)
    EXPECT_NEAR(nlohmann::json::parse(l)["loss"].get<double>(), 3 * std::log(2.0), 1e-4) << l;
  EXPECT_EQ(lines, 6);
}

TEST_F(TrainerTest, ResumeIsBitwiseIdentical) {
  std::ostringstream p1, p2, p3;
  ASSERT_TRUE(RunTraining(Spec("straight", 1e-3), {}, p1).ok()) << p1.str();
  TrainControl stop;
  stop.stop_after_steps = 3;  // mid-way through the medium phase
  ASSERT_TRUE(RunTraining(Spec("resumed", 1e-3), stop, p2).ok()) << p2.str();
  EXPECT_TRUE(fs::exists(*root_ / "resumed" / "checkpoints" / "step-000003"));
  EXPECT_FALSE(fs::exists(*root_ / "resumed" / "checkpoints" / "step-000006"));
  ASSERT_TRUE(RunTraining(Spec("resumed", 1e-3), {}, p3).ok()) << p3.str();
  const auto a = ReadAll(*root_ / "straight" / "checkpoints" / "step-000006" / "model.safetensors");
  const auto b = ReadAll(*root_ / "resumed" / "checkpoints" / "step-000006" / "model.safetensors");
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == b) << "weights after 3 + 3 steps differ from 6 uninterrupted steps";
  EXPECT_NE(a, ReadAll(*root_ / "model" / "model.safetensors"));  // it did train
}

TEST_F(TrainerTest, ReferenceCacheOfAnotherModelIsRefused) {
  std::ostringstream progress;
  ASSERT_TRUE(RunTraining(Spec("cache", 0.0), {}, progress).ok());
  // Same output directory, different starting weights: the cached reference no longer applies.
  InitModelOptions other;
  other.seed = 4;
  ASSERT_TRUE(InitModelDir((*root_ / "other_model").string(), other).ok());
  v1::JobSpec spec = Spec("cache", 0.0);
  spec.mutable_model()->set_path((*root_ / "other_model").string());
  absl::Status s = RunTraining(spec, {}, progress);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(s));
  EXPECT_TRUE(absl::StrContains(s.message(), "reference cache fingerprint")) << s;
}

TEST(Schedule, WarmupThenCosine) {
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(1.0, 0.1, 0, 100), 0.1);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(1.0, 0.1, 9, 100), 1.0);
  EXPECT_NEAR(ScheduledLearningRate(1.0, 0.1, 10, 100), 1.0, 1e-12);
  EXPECT_NEAR(ScheduledLearningRate(1.0, 0.1, 55, 100), 0.5, 1e-12);
  EXPECT_LT(ScheduledLearningRate(1.0, 0.1, 99, 100), 0.001);
}

}  // namespace
}  // namespace mfpo
