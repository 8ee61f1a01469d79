// The C++ LLaVA against the independent PyTorch reference in tests/golden/gen_llava_golden.py:
// logits within 1e-4 (fp32), response log-prob and entropy within 1e-3, greedy generation token
// for token. The reference runs each sequence alone and unpadded, without a KV cache; here the
// batch is padded (right for scoring, left for generation) and decoding uses the cache.
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/match.h"
#include "common/generation.h"
#include "common/golden_test_util.h"
#include "common/model_dir.h"
#include "common/safetensors.h"

namespace mfpo {
namespace {

const std::string kDir = std::string(MFPO_SOURCE_DIR) + "/tests/golden/llava_tiny";

class GoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LoadModelOptions options;
    options.load_tokenizer = false;  // the golden model is driven by ids
    auto m = LoadModelDir(kDir, options);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    model_.model->eval();
    auto g = SafetensorsFile::Open(kDir + "/golden.safetensors");
    ASSERT_TRUE(g.ok()) << g.status();
    golden_ = std::move(*g);
  }
  torch::Tensor Golden(const std::string& name) {
    auto t = golden_->Load(name, golden_->Find(name)->dtype == StDtype::kI64 ? torch::kInt64
                                                                            : torch::kFloat32);
    EXPECT_TRUE(t.ok()) << t.status();
    return *t;
  }
  // The golden scoring batch (right-padded) with image features from `model`.
  LlavaBatch ScoringBatch(LlavaModel& model, torch::ScalarType dtype = torch::kFloat32) {
    LlavaBatch batch;
    batch.input_ids = Golden("input_ids");
    batch.attention_mask = Golden("attention_mask");
    batch.image_features = model->EncodeImages(Golden("pixel_values").to(dtype));
    return batch;
  }
  LoadedModel model_;
  std::shared_ptr<SafetensorsFile> golden_;
};

TEST_F(GoldenTest, ReportsUnusedHubTensorsAndIgnoresBuffers) {
  EXPECT_EQ(model_.report.unexpected.size(), 2u);  // post_layernorm weight + bias
  for (const auto& name : model_.report.unexpected)
    EXPECT_TRUE(absl::StrContains(name, "post_layernorm")) << name;
}

TEST_F(GoldenTest, LogitsMatchReference) {
  torch::NoGradGuard no_grad;
  LlavaBatch batch = ScoringBatch(model_.model);
  ASSERT_TRUE(model_.model->ValidateBatch(batch).ok());
  torch::Tensor logits = model_.model->Logits(batch);
  torch::Tensor expected = Golden("logits");
  torch::Tensor valid = batch.attention_mask.to(torch::kBool);
  const double max_diff = (logits - expected).abs().index({valid}).max().item<double>();
  const double scale = expected.abs().max().item<double>();
  EXPECT_LT(max_diff, 1e-4) << "logit scale " << scale;
  EXPECT_GT(scale, 1.0) << "weights too small for the test to see layout bugs";
}

TEST_F(GoldenTest, ResponseLogProbAndEntropyMatchReference) {
  torch::NoGradGuard no_grad;
  LlavaBatch batch = ScoringBatch(model_.model);
  torch::Tensor labels = Golden("labels");
  ResponseScores fast = model_.model->ScoreResponses(batch, labels);
  ResponseScores plain = ScoreResponsesFromLogits(model_.model->Logits(batch), labels);
  torch::Tensor want_logp = Golden("response_logp"), want_entropy = Golden("response_entropy");
  EXPECT_LT((fast.logp - want_logp).abs().max().item<double>(), 1e-3) << fast.logp << want_logp;
  EXPECT_LT((fast.entropy - want_entropy).abs().max().item<double>(), 1e-3);
  EXPECT_LT((plain.logp - fast.logp).abs().max().item<double>(), 1e-4);
  EXPECT_EQ(fast.num_tokens[0].item<float>(), 4.0f);
  EXPECT_EQ(fast.num_tokens[1].item<float>(), 3.0f);
}

TEST_F(GoldenTest, GreedyGenerationMatchesReferenceBatchedAndAlone) {
  torch::Tensor pixels = Golden("pixel_values");
  std::vector<PixelInput> images;
  for (int64_t b = 0; b < pixels.size(0); ++b) images.push_back({pixels[b], 0, 0});
  ExpectGenerationMatches(model_.model, Golden("gen_prompts"), images, Golden("gen_ids"));
}

TEST_F(GoldenTest, Bfloat16ComputeStaysCloseToReference) {
  LoadModelOptions options;
  options.load_tokenizer = false;
  options.dtype = torch::kBFloat16;
  auto m = LoadModelDir(kDir, options);
  ASSERT_TRUE(m.ok()) << m.status();
  torch::NoGradGuard no_grad;
  LlavaBatch batch = ScoringBatch(m->model, torch::kBFloat16);
  torch::Tensor logits = m->model->Logits(batch).to(torch::kFloat32);
  torch::Tensor expected = Golden("logits");
  torch::Tensor valid = batch.attention_mask.to(torch::kBool);
  // bf16 keeps 8 bits of mantissa: a few per cent of the logit scale after 5 layers.
  const double err = (logits - expected).abs().index({valid}).max().item<double>();
  EXPECT_LT(err, 0.1 * expected.abs().max().item<double>()) << err;
  EXPECT_GT(err, 0.0) << "bf16 must actually compute in bf16";
}

TEST_F(GoldenTest, ValidateBatchRejectsWrongPlaceholderCount) {
  torch::NoGradGuard no_grad;
  LlavaBatch batch;
  batch.input_ids = Golden("input_ids").slice(1, 0, 10);  // cuts the image run short
  batch.image_features = model_.model->EncodeImages(Golden("pixel_values"));
  absl::Status s = model_.model->ValidateBatch(batch);
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_TRUE(absl::StrContains(s.message(), "image tokens")) << s;
}

}  // namespace
}  // namespace mfpo
