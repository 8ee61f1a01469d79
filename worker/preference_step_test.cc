// The policy's preference log-probs on a real (tiny) model, and the overfit check: on a handful
// of preference pairs with perturbed images, MFPO drives the text reward accuracy to 1 and the
// image reward margin above 0.
#include "worker/preference_step.h"

#include <gtest/gtest.h>

#include "common/image.h"
#include "common/presets.h"
#include "datagen/diffusion_noise.h"
#include "datagen/scene_world.h"

namespace mfpo {
namespace {

class PreferenceStepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto preset = GetPreset("tiny");
    ASSERT_TRUE(preset.ok());
    config_ = preset->config;
    model_ = LlavaModel(config_, torch::TensorOptions());
    InitializeWeights(model_, 0.02, 5);
    auto tok = Tokenizer::FromSerialized(TinyTokenizerModelBytes(), config_.image_token_index,
                                         config_.pad_token_id, "tiny");
    ASSERT_TRUE(tok.ok());
    tokenizer_ = *tok;
    ImageProcessorConfig ip;
    ip.size = ip.crop_size = config_.vision.image_size;
    WorldOptions world;
    world.size = 32;
    for (int i = 0; i < 4; ++i) {
      cv::Mat rgb;
      WorldSample s = GenerateWorldSample(world, "train", i, &rgb);
      const WorldQuestion& q = s.questions[1 + i % 3];  // existence and count questions
      PreferenceExample ex;
      ex.id = s.id;
      auto chosen = tokenizer_.Example(q.question, q.chosen);
      auto rejected = tokenizer_.Example(q.question, q.rejected);
      ASSERT_TRUE(chosen.ok() && rejected.ok());
      ex.chosen = *chosen;
      ex.rejected = *rejected;
      ExpandImageTokens(config_.image_token_index, config_.image_tokens(), &ex.chosen.ids, &ex.chosen.labels);
      ExpandImageTokens(config_.image_token_index, config_.image_tokens(), &ex.rejected.ids, &ex.rejected.labels);
      auto px = PreprocessImage(rgb, ip);
      auto noised = AddDiffusionNoise(rgb, cv::Mat(), kDefaultNoiseStep, SampleSeed(0, s.id));
      ASSERT_TRUE(px.ok() && noised.ok());
      auto npx = PreprocessImage(*noised, ip);
      ASSERT_TRUE(npx.ok());
      ex.image.pixel_values = *px;
      ex.perturbed_image.pixel_values = *npx;
      examples_.push_back(ex);
    }
  }
  LlavaConfig config_;
  LlavaModel model_{nullptr};
  Tokenizer tokenizer_;
  std::vector<PreferenceExample> examples_;
};

TEST_F(PreferenceStepTest, BatchedLogpsEqualOneSequenceAtATime) {
  torch::NoGradGuard no_grad;
  ObjectiveConfig objective;
  auto all = ComputeStepLogps(model_, config_.pad_token_id, examples_, objective);
  ASSERT_TRUE(all.ok()) << all.status();
  for (size_t i = 0; i < examples_.size(); ++i) {
    auto one = ComputeStepLogps(model_, config_.pad_token_id, {examples_[i]}, objective);
    ASSERT_TRUE(one.ok());
    EXPECT_NEAR(one->logps.chosen.item<double>(), all->logps.chosen[i].item<double>(), 1e-3);
    EXPECT_NEAR(one->logps.rejected.item<double>(), all->logps.rejected[i].item<double>(), 1e-3);
    EXPECT_NEAR(one->logps.chosen_perturbed.item<double>(), all->logps.chosen_perturbed[i].item<double>(), 1e-3);
  }
  EXPECT_TRUE((all->logps.chosen < 0).all().item<bool>());
  EXPECT_TRUE((all->chosen_tokens > 0).all().item<bool>());
}

TEST_F(PreferenceStepTest, MfpoOverfitsAHandfulOfPairs) {
  ObjectiveConfig objective;
  ResponseLogps reference;
  {
    torch::NoGradGuard no_grad;
    auto ref = ComputeStepLogps(model_, config_.pad_token_id, examples_, objective);
    ASSERT_TRUE(ref.ok());
    reference = ref->logps;
  }
  std::vector<torch::Tensor> trainable;
  for (const auto& p : model_->parameters())
    if (p.requires_grad()) trainable.push_back(p);
  torch::optim::AdamW optimizer(trainable, torch::optim::AdamWOptions(2e-3).weight_decay(0.0));
  std::map<std::string, double> first, last;
  for (int step = 0; step < 40; ++step) {
    auto logps = ComputeStepLogps(model_, config_.pad_token_id, examples_, objective);
    ASSERT_TRUE(logps.ok());
    ObjectiveOutput out = ComputeObjective(objective, logps->logps, reference, logps->chosen_tokens);
    if (step == 0) first = out.metrics;
    last = out.metrics;
    optimizer.zero_grad();
    out.loss.backward();
    optimizer.step();
  }
  // At step 0 the policy is the reference: every reward is 0 and the loss is 3 log 2.
  EXPECT_NEAR(first["reward_chosen"], 0.0, 1e-4);
  EXPECT_NEAR(first["loss"], 3 * std::log(2.0), 1e-3);
  std::printf("after 40 steps: loss %.3f, text acc %.2f, text margin %.3f, image margin %.3f\n",
              last["loss"], last["reward_acc_text"], last["margin_text"], last["margin_image"]);
  EXPECT_EQ(last["reward_acc_text"], 1.0);
  EXPECT_GT(last["margin_image"], 0.0);
  EXPECT_LT(last["loss"], first["loss"]);
}

}  // namespace
}  // namespace mfpo
