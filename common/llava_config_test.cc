#include "common/llava_config.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace mfpo {
namespace {

// config.json of llava-hf/llava-1.5-7b-hf as published: every default left out.
constexpr char kHubConfig[] = R"({
  "architectures": ["LlavaForConditionalGeneration"],
  "ignore_index": -100, "image_token_index": 32000, "model_type": "llava",
  "pad_token_id": 32001, "projector_hidden_act": "gelu",
  "text_config": {"_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"],
                  "max_position_embeddings": 4096, "model_type": "llama", "rms_norm_eps": 1e-05,
                  "torch_dtype": "float16", "vocab_size": 32064},
  "tie_word_embeddings": false, "torch_dtype": "float16", "transformers_version": "4.36.0.dev0",
  "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                    "model_type": "clip_vision_model", "num_attention_heads": 16,
                    "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768,
                    "vocab_size": 32000},
  "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064
})";

TEST(LlavaConfig, HubConfigIsCompletedWithTransformersDefaults) {
  auto c = ParseLlavaConfig(kHubConfig, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->text.hidden_size, 4096);
  EXPECT_EQ(c->text.intermediate_size, 11008);
  EXPECT_EQ(c->text.num_hidden_layers, 32);
  EXPECT_EQ(c->text.num_attention_heads, 32);
  EXPECT_EQ(c->text.num_key_value_heads, 32);
  EXPECT_EQ(c->text.head_dim, 128);
  EXPECT_EQ(c->text.vocab_size, 32064);
  EXPECT_DOUBLE_EQ(c->text.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c->text.rope_theta, 10000.0);
  EXPECT_EQ(c->vision.hidden_act, "quick_gelu");
  EXPECT_DOUBLE_EQ(c->vision.layer_norm_eps, 1e-5);
  EXPECT_EQ(c->image_tokens(), 576);
  EXPECT_EQ(c->vision_layers_to_run(), 23);
  EXPECT_EQ(c->pad_token_id, 32001);
}

TEST(LlavaConfig, OmittedFieldsTakeLlamaConfigDefaults) {
  auto c = ParseLlavaConfig(R"({"model_type": "llava", "text_config": {"model_type": "llama",
      "num_attention_heads": 8, "hidden_size": 512, "vocab_size": 32064}})", "c.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->text.rms_norm_eps, 1e-6);  // LlamaConfig's own default
  EXPECT_EQ(c->text.num_key_value_heads, 8);     // defaults to the head count
  EXPECT_EQ(c->text.head_dim, 64);
  EXPECT_EQ(c->vision.image_size, 336);  // LlavaConfig's default CLIP-L/336 tower
}

TEST(LlavaConfig, NewerImageTokenSpelling) {
  auto c = ParseLlavaConfig(R"({"model_type": "llava", "image_token_id": 32001,
      "text_config": {"vocab_size": 32064}})", "c.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->image_token_index, 32001);
}

TEST(LlavaConfig, RoundTripsThroughJson) {
  auto c = ParseLlavaConfig(kHubConfig, "config.json");
  ASSERT_TRUE(c.ok());
  auto again = ParseLlavaConfig(LlavaConfigToJson(*c), "written");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(LlavaConfigToJson(*again), LlavaConfigToJson(*c));
}

struct BadCase {
  const char* json;
  const char* needle;
};

class LlavaConfigErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(LlavaConfigErrors, RejectedWithTheFieldNamed) {
  auto c = ParseLlavaConfig(GetParam().json, "bad/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(absl::StrContains(c.status().message(), "bad/config.json")) << c.status();
  EXPECT_TRUE(absl::StrContains(c.status().message(), GetParam().needle)) << c.status();
}

INSTANTIATE_TEST_SUITE_P(
    All, LlavaConfigErrors,
    ::testing::Values(
        BadCase{"not json", "not a JSON object"},
        BadCase{R"({"model_type": "llava", "text_config": {"rope_theta": -1}})", "text_config.rope_theta: must be a positive"},
        BadCase{R"({"model_type": "llava", "text_config": {"rms_norm_eps": 0}})", "text_config.rms_norm_eps"},
        BadCase{R"({"model_type": "llava", "text_config": {"max_position_embeddings": 0}})",
                "text_config.max_position_embeddings: must be positive"},
        BadCase{R"({"model_type": "blip-2"})", "model_type: 'blip-2' is not supported"},
        BadCase{R"({"model_type": "llava", "architectures": ["LlavaNextForConditionalGeneration"]})",
                "architectures"},
        BadCase{R"({"model_type": "llava", "text_config": {"model_type": "gemma"}})",
                "text_config.model_type: 'gemma'"},
        BadCase{R"({"model_type": "llava_next", "architectures": ["LlavaForConditionalGeneration"]})",
                "is not LlavaNextForConditionalGeneration"},
        BadCase{R"({"model_type": "llava_next", "image_grid_pinpoints": [[336, 600]], "text_config": {"vocab_size": 32064}})",
                "image_grid_pinpoints: [336, 600] is not a multiple"},
        BadCase{R"({"model_type": "llava_next", "image_grid_pinpoints": [336, 672]})",
                "image_grid_pinpoints: expected a list of [height, width] pairs"},
        BadCase{R"({"model_type": "llava_next", "image_grid_pinpoints": []})", "image_grid_pinpoints"},
        BadCase{R"({"model_type": "llava_next", "vision_feature_select_strategy": "full", "text_config": {"vocab_size": 32064}})",
                "vision_feature_select_strategy"},
        BadCase{R"({"model_type": "llava_next", "multimodal_projector_bias": 1})",
                "multimodal_projector_bias: expected true or false"},
        BadCase{R"({"model_type": "llava_next", "text_config": {"model_type": "mistral", "sliding_window": 0}})",
                "text_config.sliding_window"},
        BadCase{R"({"model_type": "llava", "vision_config": {"model_type": "siglip_vision_model"}})",
                "vision_config.model_type"},
        BadCase{R"({"model_type": "llava", "text_config": {"hidden_size": "big"}})",
                "text_config.hidden_size: expected an integer"},
        BadCase{R"({"model_type": "llava", "text_config": {"num_attention_heads": 32, "num_key_value_heads": 5}})",
                "text_config.num_key_value_heads: must divide"},
        BadCase{R"({"model_type": "llava", "text_config": {"rope_scaling": {"type": "linear", "factor": 2}}})",
                "text_config.rope_scaling"},
        BadCase{R"({"model_type": "llava", "vision_feature_layer": -30})", "vision_feature_layer"},
        BadCase{R"({"model_type": "llava", "image_grid_pinpoints": [[336, 672]]})", "llava_next"}));

// config.json of llava-hf/llava-v1.6-mistral-7b-hf, abridged to what differs from the defaults.
constexpr char kNextMistralConfig[] = R"({
  "architectures": ["LlavaNextForConditionalGeneration"], "model_type": "llava_next",
  "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
  "image_token_index": 32000, "projector_hidden_act": "gelu",
  "text_config": {"architectures": ["MistralForCausalLM"], "intermediate_size": 14336,
                  "max_position_embeddings": 32768, "model_type": "mistral", "num_key_value_heads": 8,
                  "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": null, "vocab_size": 32064},
  "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                    "model_type": "clip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 24,
                    "patch_size": 14, "projection_dim": 768},
  "vision_feature_layer": -2, "vision_feature_select_strategy": "default"
})";

TEST(LlavaNextConfig, MistralHubConfigParses) {
  auto c = ParseLlavaConfig(kNextMistralConfig, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->is_next());
  EXPECT_EQ(c->text.model_type, "mistral");
  EXPECT_EQ(c->text.sliding_window, 0);  // null: no window
  EXPECT_EQ(c->text.num_key_value_heads, 8);
  EXPECT_EQ(c->text.hidden_size, 4096);
  EXPECT_EQ(c->image_grid_pinpoints.size(), 5u);
  auto again = ParseLlavaConfig(LlavaConfigToJson(*c), "written");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(LlavaConfigToJson(*again), LlavaConfigToJson(*c));
}

TEST(LlavaNextConfig, DefaultsAsTransformersAppliesThem) {
  // LlavaNextConfig's grid; MistralConfig's window, MLP and KV heads.
  auto c = ParseLlavaConfig(R"({"model_type": "llava_next", "text_config": {"model_type": "mistral", "vocab_size": 32064}})",
                            "c.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->image_grid_pinpoints,
            (std::vector<Resolution>{{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}}));
  EXPECT_EQ(c->text.sliding_window, 4096);
  EXPECT_EQ(c->text.intermediate_size, 14336);
  EXPECT_EQ(c->text.num_key_value_heads, 8);
  EXPECT_TRUE(c->multimodal_projector_bias);
}

TEST(LlavaNextConfig, BestResolutionAndTokenCountByHand) {
  auto c = ParseLlavaConfig(kNextMistralConfig, "config.json");
  ASSERT_TRUE(c.ok());
  // 640 x 480 (w x h): 672x672 keeps all 307,200 pixels (scale 1.05); the others at most
  // 448 x 336 = 150,528. The 2 x 2 tiles give a 48 x 48 feature grid; the image's 4:3 aspect
  // keeps round(480 * 48 / 640) = 36 rows (6 cut above and below): 576 + 36 * (48 + 1) = 2340.
  EXPECT_EQ(SelectBestResolution(480, 640, c->image_grid_pinpoints), (Resolution{672, 672}));
  EXPECT_EQ(c->ImageTokensFor(480, 640), 2340);
  // 1000 x 300: 336 x 1008 (scale 1.008 caps at the image's own 300,000 pixels) beats 336 x 672
  // (0.672: 672 x 201 = 135,072). Grid 24 x 72; the image fills int(300 * 72 / 1000) = 21 rows,
  // so (24 - 21) // 2 = 1 row is cut on each side: 22 rows, 576 + 22 * 73 = 2182.
  EXPECT_EQ(SelectBestResolution(300, 1000, c->image_grid_pinpoints), (Resolution{336, 1008}));
  EXPECT_EQ(c->ImageTokensFor(300, 1000), 2182);
  // A square keeps its whole grid: 576 + 48 * 49 = 2928.
  EXPECT_EQ(c->ImageTokensFor(500, 500), 2928);
  // Ties in kept pixels go to the smallest area: a 10 x 10 image fits every pinpoint whole.
  EXPECT_EQ(SelectBestResolution(10, 10, c->image_grid_pinpoints), (Resolution{336, 672}));
}

}  // namespace
}  // namespace mfpo
