// The C++ LLaVA-NeXT against the independent PyTorch / Pillow reference in
// tests/golden/gen_llava_next_golden.py, for a Llama and a Mistral (sliding window) decoder:
// pixel values of wide, tall, square and tiny images within 1e-5, their image-token counts
// exactly, logits within 1e-4 for one batch mixing the four image sizes (so rows carry different
// image-token counts), response log-prob / entropy within 1e-3 and greedy generation token for
// token, batched (left-padded, KV cache) and alone.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/generation.h"
#include "common/golden_test_util.h"
#include "common/model_dir.h"
#include "common/safetensors.h"

namespace mfpo {
namespace {

const std::string kRoot = std::string(MFPO_SOURCE_DIR) + "/tests/golden/llava_next_tiny";
const std::vector<std::string> kImages = {"wide", "tall", "square", "tiny"};

class NextGoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string dir = kRoot + "/" + GetParam();
    LoadModelOptions options;
    options.load_tokenizer = false;  // driven by ids
    auto m = LoadModelDir(dir, options);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    model_.model->eval();
    auto g = SafetensorsFile::Open(dir + "/golden.safetensors");
    ASSERT_TRUE(g.ok()) << g.status();
    golden_ = std::move(*g);
    for (const std::string& name : kImages) {
      auto rgb = ReadImageFile(kRoot + "/images/" + name + ".png");
      ASSERT_TRUE(rgb.ok()) << rgb.status();
      auto px = PreprocessForModel(*rgb, model_.image);
      ASSERT_TRUE(px.ok()) << name << ": " << px.status();
      images_.push_back(*px);
    }
  }
  torch::Tensor Golden(const std::string& name) {
    auto t = golden_->Load(name, golden_->Find(name)->dtype == StDtype::kI64 ? torch::kInt64 : torch::kFloat32);
    EXPECT_TRUE(t.ok()) << t.status();
    return *t;
  }
  std::vector<PixelInput> InOrder(const torch::Tensor& order) {
    std::vector<PixelInput> out;
    for (int64_t i = 0; i < order.size(0); ++i) out.push_back(images_[order[i].item<int64_t>()]);
    return out;
  }
  LoadedModel model_;
  std::shared_ptr<SafetensorsFile> golden_;
  std::vector<PixelInput> images_;
};

TEST_P(NextGoldenTest, ConfigIsLlavaNext) {
  EXPECT_TRUE(model_.config.is_next());
  EXPECT_EQ(model_.config.text.model_type, GetParam());
  EXPECT_EQ(model_.config.text.sliding_window, GetParam() == "mistral" ? 24 : 0);
  EXPECT_TRUE(model_.report.unexpected.empty());  // model.image_newline found its place
  EXPECT_EQ(model_.image.image_grid_pinpoints.size(), 5u);
}

TEST_P(NextGoldenTest, PixelValuesAndTokenCountsMatchProcessor) {
  for (size_t i = 0; i < kImages.size(); ++i) {
    SCOPED_TRACE(kImages[i]);
    torch::Tensor want = Golden("pixels_" + kImages[i]);
    ASSERT_EQ(images_[i].pixel_values.sizes(), want.sizes());
    EXPECT_LT((images_[i].pixel_values - want).abs().max().item<double>(), 1e-5);
    EXPECT_EQ(model_.model->ImageTokens(images_[i]), Golden("tokens_" + kImages[i]).item<int64_t>());
  }
}

TEST_P(NextGoldenTest, MixedSizeBatchLogitsMatchReference) {
  torch::NoGradGuard no_grad;
  LlavaBatch batch;
  batch.input_ids = Golden("input_ids");
  batch.attention_mask = Golden("attention_mask");
  ASSERT_TRUE(model_.model->SetImages(&batch, InOrder(Golden("image_order"))).ok());
  ASSERT_TRUE(model_.model->ValidateBatch(batch).ok()) << model_.model->ValidateBatch(batch);
  torch::Tensor logits = model_.model->Logits(batch);
  torch::Tensor want = Golden("logits");
  torch::Tensor mask = batch.attention_mask.to(torch::kBool).unsqueeze(-1).expand_as(want);
  const double err = (logits - want).abs().masked_select(mask).max().item<double>();
  EXPECT_LT(err, 1e-4) << "max |logit difference| over real positions";
  ResponseScores s = model_.model->ScoreResponses(batch, Golden("labels"));
  EXPECT_LT((s.logp - Golden("response_logp")).abs().max().item<double>(), 1e-3);
  EXPECT_LT((s.entropy - Golden("response_entropy")).abs().max().item<double>(), 1e-3);
}

TEST_P(NextGoldenTest, GenerationMatchesReferenceBatchedAndAlone) {
  ExpectGenerationMatches(model_.model, Golden("gen_prompts"), InOrder(Golden("gen_image_order")), Golden("gen_ids"));
}

TEST_P(NextGoldenTest, TokenFeatureMismatchNamesBothCounts) {
  torch::NoGradGuard no_grad;
  LlavaBatch batch;
  const int64_t n = model_.model->ImageTokens(images_[0]);
  std::vector<int64_t> ids(1 + n - 1, model_.config.image_token_index);  // one image token short
  ids[0] = 1;
  batch.input_ids = torch::tensor(ids, torch::kInt64).unsqueeze(0);
  ASSERT_TRUE(model_.model->SetImages(&batch, {images_[0]}).ok());
  absl::Status s = model_.model->ValidateBatch(batch);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), std::to_string(n - 1) + " image tokens")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), std::to_string(n) + " features")) << s;
  // A tile count that does not fit the image's size is refused before encoding.
  PixelInput wrong = images_[0];
  wrong.pixel_values = wrong.pixel_values.slice(0, 0, wrong.pixel_values.size(0) - 1);
  EXPECT_FALSE(model_.model->Encode({wrong}).ok());
}

INSTANTIATE_TEST_SUITE_P(Decoders, NextGoldenTest, ::testing::Values("llama", "mistral"));

}  // namespace
}  // namespace mfpo
