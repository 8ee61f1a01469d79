// Activation checkpointing must not change any number: the loss and every parameter gradient of a
// tiny LLaVA model are compared with and without it (the recomputation runs the same kernels on
// the same inputs, so they agree to float rounding), including a trained vision tower.
#include "common/activation_checkpoint.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "common/llava_model.h"
#include "common/presets.h"

namespace mfpo {
namespace {

std::map<std::string, torch::Tensor> LossAndGrads(LlavaModel& model, LlavaBatch batch,
                                                  const torch::Tensor& pixels, bool checkpoint,
                                                  double* loss_out) {
  model->SetActivationCheckpointing(checkpoint);
  model->zero_grad();
  batch.image_features = model->EncodeImages(pixels);
  torch::Tensor logits = model->Logits(batch);
  torch::Tensor loss = logits.to(torch::kFloat32).log_softmax(-1).select(-1, 7).mean();
  loss.backward();
  *loss_out = loss.item<double>();
  std::map<std::string, torch::Tensor> grads;
  for (const auto& p : model->named_parameters())
    // Undefined for parameters the forward never uses (the CLIP layers after the selected one).
    if (p.value().requires_grad() && p.value().grad().defined()) grads[p.key()] = p.value().grad().clone();
  return grads;
}

TEST(ActivationCheckpointTest, GradientsMatchTheStoredActivationPath) {
  auto preset = GetPreset("tiny");
  ASSERT_TRUE(preset.ok()) << preset.status();
  const LlavaConfig& c = preset->config;
  LlavaModel model(c, torch::TensorOptions());
  InitializeWeights(model, 0.05, 3);
  model->FreezeVisionTower(false);
  torch::manual_seed(0);
  const int64_t n_img = c.image_tokens();
  LlavaBatch batch;
  torch::Tensor pixels = torch::randn({2, 3, c.vision.image_size, c.vision.image_size});
  batch.input_ids = torch::randint(0, 100, {2, n_img + 12}, torch::kInt64);
  batch.input_ids[0].slice(0, 2, 2 + n_img).fill_(c.image_token_index);
  batch.attention_mask = torch::ones({2, n_img + 12}, torch::kInt64);
  // Row 1 is left-padded by 3, its image placeholders after the pads.
  batch.attention_mask[1].slice(0, 0, 3).zero_();
  batch.input_ids[1].slice(0, 0, 3).fill_(c.pad_token_id);
  batch.input_ids[1].slice(0, 3, 3 + n_img).fill_(c.image_token_index);
  LlavaBatch check = batch;
  check.image_features = torch::zeros({2, n_img, c.text.hidden_size});
  ASSERT_TRUE(model->ValidateBatch(check).ok()) << model->ValidateBatch(check);

  double loss_plain = 0, loss_ckpt = 0;
  auto plain = LossAndGrads(model, batch, pixels, false, &loss_plain);
  auto ckpt = LossAndGrads(model, batch, pixels, true, &loss_ckpt);
  EXPECT_NEAR(loss_plain, loss_ckpt, 1e-6);
  ASSERT_EQ(plain.size(), ckpt.size());
  int vision = 0;
  for (const auto& [name, g] : plain) {
    ASSERT_TRUE(ckpt[name].defined()) << name;
    EXPECT_TRUE(torch::allclose(g, ckpt[name], 1e-5, 1e-7)) << name << " max diff "
                                                             << (g - ckpt[name]).abs().max().item<double>();
    if (name.find("vision_tower") != std::string::npos) vision += g.abs().sum().item<double>() > 0;
  }
  EXPECT_GT(vision, 0) << "the vision tower's gradients must flow through checkpointed layers";
}

TEST(ActivationCheckpointTest, ParametersGetGradientsWhenTheInputIsConstant) {
  torch::manual_seed(1);
  torch::nn::Linear layer(4, 3);
  torch::Tensor x = torch::randn({5, 4});  // requires no grad
  torch::Tensor y = CheckpointedCall([&](const torch::Tensor& h) { return torch::tanh(layer(h)); }, x);
  EXPECT_TRUE(y.requires_grad());
  y.pow(2).sum().backward();
  torch::Tensor expected_w = layer->weight.grad().clone();
  layer->zero_grad();
  torch::tanh(layer(x)).pow(2).sum().backward();
  EXPECT_TRUE(torch::allclose(expected_w, layer->weight.grad()));
}

TEST(ActivationCheckpointTest, NoGradModeRunsTheBlockPlainly) {
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::randn({3});
  torch::Tensor y = CheckpointedCall([](const torch::Tensor& h) { return h * 2; }, x);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(torch::equal(y, x * 2));
}

}  // namespace
}  // namespace mfpo
