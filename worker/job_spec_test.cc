#include "worker/job_spec.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace mfpo {
namespace {

constexpr char kYaml[] = R"(
name: world-mfpo
output_dir: out/job
model:
  path: out/sft
data:
  train: out/world/train.jsonl
objective:
  variant: mfpo
  beta: 0.2
  w_margin: 0.5
optimizer:
  lr: 1e-4
  micro_batch: 8
  trainable: [language_model]
curriculum:
  mode: easy_to_hard
)";

TEST(JobSpec, YamlMergesOverDefaults) {
  auto s = ParseJobSpec(kYaml, true, "job.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->name(), "world-mfpo");
  EXPECT_DOUBLE_EQ(s->objective().beta(), 0.2);
  EXPECT_DOUBLE_EQ(s->objective().w_margin(), 0.5);
  EXPECT_DOUBLE_EQ(s->objective().w_image(), 1.0);  // default kept
  EXPECT_DOUBLE_EQ(s->optimizer().lr(), 1e-4);
  EXPECT_EQ(s->optimizer().micro_batch(), 8);
  EXPECT_EQ(s->optimizer().grad_accum(), 1);
  ASSERT_EQ(s->optimizer().trainable_size(), 1);  // the file's list replaces the default
  EXPECT_EQ(s->optimizer().trainable(0), "language_model");
  EXPECT_EQ(s->curriculum().tiers(), 3);
  EXPECT_EQ(s->evaluation().suites_size(), 4);
  EXPECT_EQ(s->objective().noise_step(), 500);
}

TEST(JobSpec, LoraDefaultsAndNoTrainablePrefixes) {
  auto s = ParseJobSpec(R"({"output_dir": "o", "model": {"path": "m"}, "data": {"train": "t.jsonl"},
                            "optimizer": {"lora": {"rank": 8}}})", false, "job.json");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->optimizer().lora().rank(), 8);
  EXPECT_DOUBLE_EQ(s->optimizer().lora().alpha(), 32);
  EXPECT_DOUBLE_EQ(s->optimizer().lora().dropout(), 0.05);
  EXPECT_EQ(s->optimizer().lora().target_modules_size(), 7);
  EXPECT_EQ(s->optimizer().trainable_size(), 0);  // only the adapters train
  auto plain = ParseJobSpec(R"({"output_dir": "o", "model": {"path": "m"}, "data": {"train": "t.jsonl"}})", false, "p");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->optimizer().has_lora());
}

TEST(JobSpec, JsonAndLearningRateZeroIsKept) {
  auto s = ParseJobSpec(R"({"output_dir": "o", "model": {"path": "m"}, "data": {"train": "t.jsonl"},
                            "optimizer": {"lr": 0}})", false, "job.json");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->optimizer().lr(), 0.0);  // explicitly 0, not replaced by the default
  EXPECT_EQ(s->objective().variant(), "mfpo");
}

struct Bad {
  std::string text;
  bool yaml;
  std::string needle;
};
class JobSpecErrors : public ::testing::TestWithParam<Bad> {};

TEST_P(JobSpecErrors, RejectedWithFieldAndReason) {
  auto s = ParseJobSpec(GetParam().text, GetParam().yaml, "bad.spec");
  ASSERT_FALSE(s.ok()) << "accepted: " << GetParam().text;
  EXPECT_TRUE(absl::IsInvalidArgument(s.status()));
  EXPECT_TRUE(absl::StrContains(s.status().message(), "bad.spec")) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), GetParam().needle)) << s.status();
}

const std::string kBase = "output_dir: o\nmodel: {path: m}\ndata: {train: t.jsonl}\n";

INSTANTIATE_TEST_SUITE_P(
    All, JobSpecErrors,
    ::testing::Values(
        Bad{kBase + "objective: {betta: 0.1}\n", true, "betta"},
        Bad{kBase + "objective: {beta: fast}\n", true, "beta"},
        Bad{kBase + "objective: {beta: 0}\n", true, "objective.beta: must be > 0"},
        Bad{kBase + "objective: {variant: ppo}\n", true, "objective.variant: 'ppo'"},
        Bad{kBase + "objective: {w_image: -1}\n", true, "objective.w_image: must be >= 0"},
        Bad{kBase + "optimizer: {micro_batch: 0}\n", true, "optimizer.micro_batch: must be >= 1"},
        Bad{kBase + "optimizer: {trainable: [lm_head]}\n", true, "optimizer.trainable[0]"},
        Bad{kBase + "curriculum: {mode: random}\n", true, "curriculum.mode"},
        Bad{kBase + "datagen: {fill: blur}\n", true, "datagen.fill: 'blur' is not noise or inpaint"},
        Bad{kBase + "objective: {noise_step: 0}\n", true, "objective.noise_step: must be in [1, 1000]"},
        Bad{"output_dir: o\nmodel: {path: m, chat_template: chatml}\ndata: {train: t.jsonl}\n", true,
            "model.chat_template: 'chatml'"},
        Bad{kBase + "optimizer: {lora: {rank: 0}}\n", true, "optimizer.lora.rank: must be in [1, 4096]"},
        Bad{kBase + "optimizer: {lora: {alpha: -1}}\n", true, "optimizer.lora.alpha: must be > 0"},
        Bad{kBase + "optimizer: {lora: {dropout: 1}}\n", true, "optimizer.lora.dropout: must be in [0, 1)"},
        Bad{kBase + "optimizer: {lora: {target_modules: [q_proj, fc1]}}\n", true,
            "optimizer.lora.target_modules[1]: 'fc1' is not one of"},
        Bad{kBase + "optimizer: {lora: {rank: 8}, trainable: [language_model]}\n", true,
            "optimizer.trainable: not with optimizer.lora"},
        Bad{kBase + "evaluation: {suites: [chair, mmhal]}\n", true, "evaluation.suites[1]: unknown suite 'mmhal'"},
        Bad{kBase + "resources: {device: tpu}\n", true, "resources.device"},
        Bad{kBase + "resources: {precision: fp8}\n", true, "resources.precision: 'fp8' is not auto, fp32 or bf16"},
        Bad{kBase + "evaluation: {split: dev}\n", true, "evaluation.split: 'dev'"},
        Bad{kBase + "evaluation: {max_new_tokens: 0}\n", true, "evaluation.max_new_tokens: must be >= 1"},
        Bad{kBase + "evaluation: {batch_size: 0}\n", true, "evaluation.batch_size: must be in [1, 4096]"},
        Bad{"model: {path: m}\ndata: {train: t}\n", true, "output_dir: required"},
        Bad{"output_dir: o\ndata: {train: t}\n", true, "model.path: required"},
        Bad{"output_dir: [unclosed\n", true, "not valid YAML"},
        Bad{"- just\n- a list\n", true, "must be a mapping"},
        Bad{R"({"output_dir": "o", "unknown_top": 1})", false, "unknown_top"},
        Bad{"{not json", false, "bad.spec"},
        // Hostile YAML: aliases (a cycle, exponential expansion), duplicate keys, deep nesting.
        Bad{kBase + "name: &a [*a]\n", true, "anchors (&name) are not accepted"},
        Bad{kBase + "x: &a [1, 2]\ny: *a\n", true, "not accepted"},
        Bad{"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
            "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
            "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n",
            true, "not accepted"},
        Bad{kBase + "output_dir: other\n", true, "output_dir: duplicate key"},
        Bad{kBase + "optimizer: {lr: 1e-4, lr: 2e-4}\n", true, "optimizer.lr: duplicate key"},
        Bad{kBase + "name: " + std::string(5000, '[') + std::string(5000, ']') + "\n", true, "nested deeper than 32"},
        Bad{R"({"output_dir": "o", "name": )" + std::string(100000, '[') + "}", false, "nested deeper than 64"},
        Bad{"[1, 2]", false, "must be a JSON object"},
        Bad{kBase + "---\nname: second\n", true, "a second YAML document"},
        Bad{kBase + "name: \"\xff\xfe\"\n", true, "not valid UTF-8 text (byte"},
        Bad{R"({"output_dir": "o", "model": {"path": "m"}, "data": {"train": "t"}, "output_dir": "p"})", false,
            "duplicate key 'output_dir'"}));

TEST(JobSpec, MissingFileIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(LoadJobSpec("/nonexistent/job.yaml").status()));
}

}  // namespace
}  // namespace mfpo
