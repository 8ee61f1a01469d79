// LoRA adapters: the alpha / r scaled update against a hand-computed linear layer, a zero B that
// leaves the model exactly as it was, adapters off = the base model, merged == unmerged, and the
// PEFT directory layout written and read back (with its refusals).
#include "common/lora.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "common/file_util.h"
#include "common/model_dir.h"
#include "common/presets.h"

namespace mfpo {
namespace {
namespace fs = std::filesystem;

TEST(Lora, LinearLayerMatchesHandComputation) {
  torch::NoGradGuard no_grad;
  nn::Linear layer(3, 2, /*bias=*/true, torch::TensorOptions());
  layer->weight.copy_(torch::tensor({{1.0f, 0.0f, 2.0f}, {0.0f, -1.0f, 1.0f}}));
  layer->bias.copy_(torch::tensor({0.5f, -0.5f}));
  layer->AddLora(/*rank=*/2, /*scaling=*/4.0 / 2.0, /*dropout=*/0.0);
  layer->lora_A.copy_(torch::tensor({{1.0f, 1.0f, 0.0f}, {0.0f, 1.0f, -1.0f}}));  // [r, in]
  layer->lora_B.copy_(torch::tensor({{1.0f, 0.0f}, {2.0f, 1.0f}}));               // [out, r]
  layer->eval();
  // x = (1, 2, 3): W x + b = (1 + 6 + 0.5, -2 + 3 - 0.5) = (7.5, 0.5); A x = (3, -1);
  // B A x = (3, 6 - 1) = (3, 5); scaled by alpha / r = 2: (6, 10). y = (13.5, 10.5).
  torch::Tensor y = layer->forward(torch::tensor({{1.0f, 2.0f, 3.0f}}));
  EXPECT_FLOAT_EQ(y[0][0].item<float>(), 13.5f);
  EXPECT_FLOAT_EQ(y[0][1].item<float>(), 10.5f);
  layer->lora_enabled = false;
  y = layer->forward(torch::tensor({{1.0f, 2.0f, 3.0f}}));
  EXPECT_FLOAT_EQ(y[0][0].item<float>(), 7.5f);
  EXPECT_FLOAT_EQ(y[0][1].item<float>(), 0.5f);
}

class LoraModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto preset = GetPreset("tiny");
    ASSERT_TRUE(preset.ok());
    config_ = preset->config;
    model_ = LlavaModel(config_, torch::TensorOptions());
    InitializeWeights(model_, 0.05, 7);
    model_->eval();
    batch_.input_ids = torch::randint(3, 200, {2, 12 + config_.image_tokens()}, torch::kInt64);
    batch_.input_ids.slice(1, 2, 2 + config_.image_tokens()).fill_(config_.image_token_index);
  }
  torch::Tensor Logits() {
    torch::NoGradGuard no_grad;
    // The projector runs inside EncodeImages: recompute so that its adapters count.
    LlavaBatch b = batch_;
    b.image_features = model_->EncodeImages(pixels_);
    return model_->Logits(b);
  }
  void RandomiseB(uint64_t seed) {
    torch::NoGradGuard no_grad;
    torch::manual_seed(seed);
    for (auto& [name, t] : LoraParameters(model_))
      if (absl::StrContains(name, "lora_B")) t.normal_(0.0, 0.05);
  }
  LlavaConfig config_;
  LlavaModel model_{nullptr};
  LlavaBatch batch_;
  torch::Tensor pixels_ = torch::randn({2, 3, 64, 64});
};

TEST_F(LoraModelTest, ZeroInitialisedBLeavesTheLogitsExactlyAsTheyWere) {
  const torch::Tensor before = Logits();
  LoraConfig c;
  c.target_modules.push_back("linear_1");  // the projector too
  auto layers = AttachLora(model_, c, 1);
  ASSERT_TRUE(layers.ok()) << layers.status();
  EXPECT_EQ(*layers, 7 * config_.text.num_hidden_layers + 1);
  EXPECT_TRUE(torch::equal(Logits(), before));
  // A trained adapter moves them; switched off, the model is the base model bit for bit.
  RandomiseB(3);
  const torch::Tensor adapted = Logits();
  EXPECT_GT((adapted - before).abs().max().item<double>(), 1e-3);
  {
    LoraDisabled off(model_);
    EXPECT_TRUE(torch::equal(Logits(), before));
  }
  EXPECT_TRUE(torch::equal(Logits(), adapted));
}

TEST_F(LoraModelTest, TargetsAreChecked) {
  LoraConfig c;
  c.target_modules = {"q_proj", "fc1"};
  EXPECT_FALSE(AttachLora(model_, c, 1).ok());
  c.target_modules.clear();
  c.target_regex = ".*vision_tower.*q_proj";  // PEFT would adapt the vision tower: refused
  auto s = AttachLora(model_, c, 1);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.status().message(), "vision_tower")) << s.status();
  c.target_regex = ".*language_model.*\\.(q_proj|v_proj)";
  auto n = AttachLora(model_, c, 1);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2 * config_.text.num_hidden_layers);
  EXPECT_FALSE(AttachLora(model_, c, 1).ok());  // twice
}

TEST_F(LoraModelTest, MergedEqualsUnmergedAndThePeftDirectoryRoundTrips) {
  LoraConfig c;
  c.rank = 4;
  c.alpha = 8;
  c.target_modules = {"q_proj", "v_proj", "down_proj", "linear_2"};
  ASSERT_TRUE(AttachLora(model_, c, 5).ok());
  RandomiseB(4);
  const torch::Tensor adapted = Logits();
  const fs::path dir = fs::temp_directory_path() / ("lora_test_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  ASSERT_TRUE(SaveAdapter(dir.string(), model_, c).ok());
  // PEFT's names and config.
  auto file = SafetensorsFile::Open((dir / "adapter_model.safetensors").string());
  ASSERT_TRUE(file.ok());
  EXPECT_NE((*file)->Find("base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight"), nullptr);
  EXPECT_NE((*file)->Find("base_model.model.multi_modal_projector.linear_2.lora_B.weight"), nullptr);
  nlohmann::json j = nlohmann::json::parse(std::ifstream(dir / "adapter_config.json"));
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["r"], 4);
  EXPECT_EQ(j["lora_alpha"], 8.0);
  EXPECT_TRUE(j["target_modules"].is_string());

  // Read back into a fresh copy of the base model: the same logits.
  LlavaModel fresh(config_, torch::TensorOptions());
  InitializeWeights(fresh, 0.05, 7);
  fresh->eval();
  auto loaded = LoadAdapter(dir.string(), fresh);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->rank, 4);
  std::swap(fresh, model_);
  EXPECT_TRUE(torch::equal(Logits(), adapted));
  // Merged into the weights: the same logits within float rounding, and no adapter left to write.
  ASSERT_TRUE(MergeLora(model_).ok());
  EXPECT_LT((Logits() - adapted).abs().max().item<double>(), 1e-5);
  for (const auto& [name, t] : ModelTensors(model_)) EXPECT_FALSE(IsLoraParameterName(name)) << name;
  fs::remove_all(dir);
}

TEST_F(LoraModelTest, BadAdapterDirectoriesAreRefusedWithTheCause) {
  LoraConfig c;
  c.target_modules = {"q_proj"};
  ASSERT_TRUE(AttachLora(model_, c, 5).ok());
  const fs::path dir = fs::temp_directory_path() / ("lora_bad_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  ASSERT_TRUE(SaveAdapter(dir.string(), model_, c).ok());
  auto reload = [&](const std::string& needle) {
    LlavaModel fresh(config_, torch::TensorOptions());
    auto r = LoadAdapter(dir.string(), fresh);
    ASSERT_FALSE(r.ok()) << "expected: " << needle;
    EXPECT_TRUE(absl::StrContains(r.status().message(), needle)) << r.status();
  };
  const std::string config_text = ReadFileToString((dir / "adapter_config.json").string()).value();
  auto edit = [&](const std::function<void(nlohmann::json&)>& f) {
    nlohmann::json j = nlohmann::json::parse(config_text);
    f(j);
    std::ofstream(dir / "adapter_config.json") << j.dump();
  };
  edit([](nlohmann::json& j) { j["use_dora"] = true; });
  reload("use_dora");
  edit([](nlohmann::json& j) { j["r"] = 8; });  // the tensors are rank 16
  reload("has shape");
  edit([](nlohmann::json& j) { j["target_modules"] = {"q_proj", "k_proj"}; });  // k_proj tensors missing
  reload("k_proj.lora_A.weight' is missing");
  edit([](nlohmann::json& j) { j["target_modules"] = nlohmann::json::array(); });
  reload("target_modules");
  edit([](nlohmann::json& j) { j["exclude_modules"] = {"q_proj"}; });
  reload("exclude_modules: not supported");
  edit([](nlohmann::json& j) { j["lora_bias"] = true; });
  reload("lora_bias: true is not supported");
  edit([](nlohmann::json& j) { j["target_modules"] = "all-linear"; });
  reload("all-linear");
  edit([](nlohmann::json& j) { j["target_modules"] = {"q_proj", "q_proj"}; });
  reload("named twice");
  edit([](nlohmann::json& j) { j.erase("r"); });
  reload("adapter_config.json: r");
  std::ofstream(dir / "adapter_config.json") << "{not json";
  reload("adapter_config.json");
  fs::remove_all(dir);
  LlavaModel fresh(config_, torch::TensorOptions());
  EXPECT_FALSE(LoadAdapter(dir.string(), fresh).ok());  // no directory
}

}  // namespace
}  // namespace mfpo
