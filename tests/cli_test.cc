// End-to-end checks of the `mfpo` binary: init-model -> generate / logits, determinism, and the
// errors users see for bad input. Runs the real executable as a separate process.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "absl/strings/match.h"
#include "common/file_util.h"
#include "common/generation.h"
#include "common/image.h"
#include "common/model_dir.h"
#include "common/safetensors.h"
#include "tests/cli_runner.h"

namespace mfpo {
namespace {
namespace fs = std::filesystem;

// The file's bytes, or "" when it cannot be read (the comparisons then fail visibly).
std::string ReadAll(const fs::path& p) { return ReadFileToString(p.string()).value_or(""); }

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("cli_test_" + std::to_string(::getpid())));
    fs::remove_all(*dir_);
    fs::create_directories(*dir_);
    Result r = Mfpo("init-model --preset tiny --seed 7 --out " + Model());
    ASSERT_EQ(r.code, 0) << r.all;
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string Model() { return (*dir_ / "tiny").string(); }
  static std::string Image() { return std::string(MFPO_SOURCE_DIR) + "/tests/golden/images/wide.png"; }
  static fs::path* dir_;
};
fs::path* CliTest::dir_ = nullptr;

TEST_F(CliTest, InitModelWritesAHuggingFaceDirectoryDeterministically) {
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model",
                        "preprocessor_config.json", "added_tokens.json"})
    EXPECT_TRUE(fs::exists(fs::path(Model()) / f)) << f;
  const std::string again = (*dir_ / "again").string(), other = (*dir_ / "other").string();
  ASSERT_EQ(Mfpo("init-model --preset tiny --seed 7 --out " + again).code, 0);
  ASSERT_EQ(Mfpo("init-model --preset tiny --seed 8 --out " + other).code, 0);
  EXPECT_EQ(ReadAll(fs::path(Model()) / "model.safetensors"), ReadAll(fs::path(again) / "model.safetensors"));
  EXPECT_NE(ReadAll(fs::path(Model()) / "model.safetensors"), ReadAll(fs::path(other) / "model.safetensors"));
  auto m = LoadModelDir(Model());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->report.unexpected.empty());
  EXPECT_EQ(m->config.image_tokens(), 64);
}

TEST_F(CliTest, GenerateJsonAgreesWithTheLibrary) {
  Result r = Mfpo("generate --model " + Model() + " --image " + Image() +
                 " --prompt 'What is in the image?' --max-new-tokens 6 --json");
  ASSERT_EQ(r.code, 0) << r.all;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.contains("answer") && j.contains("new_ids")) << r.out;
  std::vector<int64_t> ids = j["new_ids"].get<std::vector<int64_t>>();
  EXPECT_GE(ids.size(), 1u);
  EXPECT_LE(ids.size(), 6u);
  // The same answer through the library.
  auto m = LoadModelDir(Model());
  ASSERT_TRUE(m.ok());
  auto rgb = ReadImageFile(Image());
  ASSERT_TRUE(rgb.ok());
  auto pixels = PreprocessForModel(*rgb, m->image);
  ASSERT_TRUE(pixels.ok());
  auto prompt = m->tokenizer.PromptIds("What is in the image?");
  ASSERT_TRUE(prompt.ok());
  ExpandImageTokens(m->config.image_token_index, m->model->ImageTokens(*pixels), &*prompt);
  GenerationOptions g;
  g.max_new_tokens = 6;
  g.eos_id = m->tokenizer.eos_id();
  auto want = GreedyGenerate(m->model, {*prompt}, {*pixels}, g);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(ids, (*want)[0]);
  EXPECT_EQ(j["answer"].get<std::string>(), m->tokenizer.Decode(ids));
}

TEST_F(CliTest, LogitsFileHasLogitsAndResponseLogProb) {
  const std::string out = (*dir_ / "l.safetensors").string();
  Result r = Mfpo("logits --model " + Model() + " --image " + Image() +
                 " --prompt 'What color is the cat?' --response 'The cat is red.' --out " + out);
  ASSERT_EQ(r.code, 0) << r.all;
  auto f = SafetensorsFile::Open(out);
  ASSERT_TRUE(f.ok()) << f.status();
  auto logits = (*f)->Load("logits", torch::kFloat32);
  auto logp = (*f)->Load("response_logp", torch::kFloat32);
  ASSERT_TRUE(logits.ok() && logp.ok());
  EXPECT_EQ(logits->dim(), 2);
  EXPECT_EQ(logits->size(1), 1024);
  EXPECT_EQ(logp->dim(), 0);
  // Recompute the log-prob from the written logits: the same tokens, shifted by one.
  auto m = LoadModelDir(Model());
  ASSERT_TRUE(m.ok());
  auto ex = m->tokenizer.Example("What color is the cat?", "The cat is red.");
  ASSERT_TRUE(ex.ok());
  ExpandImageTokens(m->config.image_token_index, m->config.image_tokens(), &ex->ids, &ex->labels);
  ASSERT_EQ(static_cast<int64_t>(ex->ids.size()), logits->size(0));
  double sum = 0;
  torch::Tensor lsm = torch::log_softmax(*logits, -1);
  for (size_t i = 1; i < ex->ids.size(); ++i)
    if (ex->labels[i] != kIgnoreLabel) sum += lsm[i - 1][ex->labels[i]].item<double>();
  EXPECT_NEAR(logp->item<double>(), sum, 1e-3);
  EXPECT_LT(sum, 0.0);
}

TEST_F(CliTest, BadInputGivesClearErrors) {
  Result missing = Mfpo("generate --image " + Image() + " --prompt hi");
  EXPECT_EQ(missing.code, 2);
  EXPECT_TRUE(absl::StrContains(missing.all, "--model is required")) << missing.all;

  const std::string junk = (*dir_ / "junk.png").string();
  std::ofstream(junk) << "definitely not a png";
  Result bad_image = Mfpo("generate --model " + Model() + " --image " + junk + " --prompt hi");
  EXPECT_NE(bad_image.code, 0);
  EXPECT_TRUE(absl::StrContains(bad_image.all, junk + ": undecodable")) << bad_image.all;

  Result preset = Mfpo("init-model --preset enormous --out " + (*dir_ / "x").string());
  EXPECT_NE(preset.code, 0);
  EXPECT_TRUE(absl::StrContains(preset.all, "unknown preset 'enormous'")) << preset.all;

  Result no_model = Mfpo("generate --model /nonexistent --image " + Image() + " --prompt hi");
  EXPECT_NE(no_model.code, 0);
  EXPECT_TRUE(absl::StrContains(no_model.all, "/nonexistent")) << no_model.all;

  Result dtype = Mfpo("generate --model " + Model() + " --image " + Image() + " --prompt hi --dtype float64");
  EXPECT_EQ(dtype.code, 2);
  EXPECT_TRUE(absl::StrContains(dtype.all, "--dtype: 'float64'")) << dtype.all;

  Result unknown = Mfpo("frobnicate");
  EXPECT_EQ(unknown.code, 2);
  EXPECT_TRUE(absl::StrContains(unknown.all, "unknown command 'frobnicate'")) << unknown.all;
}

TEST_F(CliTest, Bfloat16GenerationRuns) {
  Result r = Mfpo("generate --model " + Model() + " --image " + Image() +
                  " --prompt 'Describe the image.' --max-new-tokens 3 --dtype bfloat16 --json");
  ASSERT_EQ(r.code, 0) << r.all;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_GE(j["new_ids"].size(), 1u) << r.out;
  EXPECT_LE(j["new_ids"].size(), 3u) << r.out;
}

TEST_F(CliTest, ModelWithATruncatedWeightFileIsRefusedNamingTheFile) {
  const fs::path broken = *dir_ / "broken";
  fs::create_directories(broken);
  for (const char* f : {"config.json", "tokenizer.model", "preprocessor_config.json"})
    fs::copy_file(fs::path(Model()) / f, broken / f, fs::copy_options::overwrite_existing);
  const std::string weights = ReadAll(fs::path(Model()) / "model.safetensors");
  std::ofstream(broken / "model.safetensors", std::ios::binary) << weights.substr(0, weights.size() / 2);
  Result r = Mfpo("generate --model " + broken.string() + " --image " + Image() + " --prompt hi");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(absl::StrContains(r.all, (broken / "model.safetensors").string())) << r.all;
  EXPECT_TRUE(absl::StrContains(r.all, "out of range")) << r.all;
}

TEST_F(CliTest, WorldThenEvalWritesAnswersAndReport) {
  const std::string world = (*dir_ / "world").string(), eval = (*dir_ / "eval").string();
  Result w = Mfpo("world --out " + world + " --seed 3 --train 20 --val 5 --test 12 --size 32");
  ASSERT_EQ(w.code, 0) << w.all;
  Result e = Mfpo("eval --model " + Model() + " --data " + world + " --out " + eval +
                  " --suite chair,pope,amber,reliance --limit 6 --max-new-tokens 6 --batch-size 8");
  ASSERT_EQ(e.code, 0) << e.all;
  EXPECT_TRUE(absl::StrContains(e.out, "POPE adversarial")) << e.out;
  auto report = nlohmann::json::parse(ReadAll(fs::path(eval) / "report.json"));
  EXPECT_EQ(report["images"], 6);
  EXPECT_EQ(report["chair"]["responses"], 6);
  for (const char* setting : {"random", "popular", "adversarial"})
    EXPECT_GT(report["pope"][setting]["questions"].get<int>(), 6) << setting;
  EXPECT_GT(report["reliance"]["questions"].get<int>(), 6);
  EXPECT_TRUE(fs::exists(fs::path(eval) / "report.md"));
  int lines = 0;
  std::ifstream answers(fs::path(eval) / "answers.jsonl");
  for (std::string l; std::getline(answers, l);) ++lines;
  EXPECT_GT(lines, 6 + 3 * 6 + 6);
  // Per-image counts sum to the report's totals; every interval holds its estimate.
  int scored = 0;
  double mentions = 0, pope_questions = 0;
  std::ifstream scores(fs::path(eval) / "scores.jsonl");
  for (std::string l; std::getline(scores, l); ++scored) {
    auto j = nlohmann::json::parse(l);
    mentions += j["counts"].value("chair.mentions", 0.0);
    for (const char* setting : {"random", "popular", "adversarial"})
      for (const char* cell : {"tp", "fp", "tn", "fn"})
        pope_questions += j["counts"].value(std::string("pope.") + setting + "." + cell, 0.0);
  }
  EXPECT_EQ(scored, 6);
  EXPECT_EQ(mentions, report["chair"]["mentions"].get<double>());
  int report_questions = 0;
  for (const char* setting : {"random", "popular", "adversarial"})
    report_questions += report["pope"][setting]["questions"].get<int>();
  EXPECT_EQ(pope_questions, report_questions);
  for (auto it = report["ci95"].begin(); it != report["ci95"].end(); ++it) {
    EXPECT_LE((*it)["lo"].get<double>(), (*it)["value"].get<double>() + 1e-12) << it.key();
    EXPECT_GE((*it)["hi"].get<double>(), (*it)["value"].get<double>() - 1e-12) << it.key();
  }
  Result bad = Mfpo("eval --model " + Model() + " --data " + world + " --out " + eval + " --suite chair,mmhal");
  EXPECT_EQ(bad.code, 2);
  EXPECT_TRUE(absl::StrContains(bad.all, "unknown suite 'mmhal'")) << bad.all;
  Result negative = Mfpo("eval --model " + Model() + " --data " + world + " --out " + eval + "-n --limit -5");
  EXPECT_TRUE(absl::StrContains(negative.all, "--limit must be >= 0")) << negative.all;
  Result no_suite = Mfpo("eval --model " + Model() + " --data " + world + " --out " + eval + "-n --suite ''");
  EXPECT_TRUE(absl::StrContains(no_suite.all, "--suite names no suite")) << no_suite.all;
  EXPECT_FALSE(fs::exists(eval + "-n"));
  {
    // A corrupt test image fails that image, not the evaluation.
    const fs::path copy = *dir_ / "world-corrupt";
    fs::copy(world, copy, fs::copy_options::recursive);
    std::string first_test;
    std::ifstream ann(copy / "annotations.jsonl");
    for (std::string l; std::getline(ann, l);) {
      auto j = nlohmann::json::parse(l);
      if (j["split"] == "test") {
        first_test = j["image"].get<std::string>();
        break;
      }
    }
    ASSERT_FALSE(first_test.empty());
    std::ofstream(copy / first_test, std::ios::trunc) << "not a png";
    Result c = Mfpo("eval --model " + Model() + " --data " + copy.string() + " --out " + eval +
                    "-c --suite chair,pope --limit 3 --max-new-tokens 4");
    ASSERT_EQ(c.code, 0) << c.all;
    auto cj = nlohmann::json::parse(ReadAll(fs::path(eval + "-c") / "report.json"));
    EXPECT_EQ(cj["images"], 2);
    ASSERT_EQ(cj["skipped_images"].size(), 1u);
    EXPECT_TRUE(absl::StrContains(c.all, "left out")) << c.all;
  }

  // The report over two evaluations (the same model twice: every paired difference is 0).
  const std::string eval2 = (*dir_ / "eval2").string(), report_dir = (*dir_ / "report").string();
  ASSERT_EQ(fs::create_directory(eval2), true);
  fs::copy(eval, eval2, fs::copy_options::recursive);
  Result rep = Mfpo("report --runs 'SFT=" + eval + ",+ MFPO=" + eval2 + "' --out " + report_dir);
  ASSERT_EQ(rep.code, 0) << rep.all;
  EXPECT_TRUE(absl::StrContains(rep.out, "| + MFPO |")) << rep.out;
  for (const char* f : {"report.md", "report.json", "table.png"}) EXPECT_TRUE(fs::exists(fs::path(report_dir) / f)) << f;
  auto rj = nlohmann::json::parse(ReadAll(fs::path(report_dir) / "report.json"));
  EXPECT_EQ(rj["runs"].size(), 2u);
  EXPECT_EQ(rj["claim"]["all"]["SFT"]["differences"]["chair_s"]["value"], 0.0);
  EXPECT_EQ(rj["claim"]["all"]["holds"], false);  // not better than itself
  EXPECT_TRUE(rj["runs"][0]["metrics"].contains("chair_empty"));
  EXPECT_EQ(report["chair"]["empty"].get<double>(), report["chair"]["empty_responses"].get<double>() / 6);
  // Reliance gap above the other's: equal is not above.
  Result gap = Mfpo("report --runs 'SFT=" + eval + ",+ MFPO=" + eval2 + "' --claim chair_recall --claim_against '' " +
                    "--claim_gap_over SFT --out " + report_dir + "g");
  ASSERT_EQ(gap.code, 0) << gap.all;
  auto gj = nlohmann::json::parse(ReadAll(fs::path(report_dir + "g") / "report.json"));
  EXPECT_EQ(gj["claim"]["all"]["SFT"]["claim"]["reliance_gap_above"], false);
  Result unknown = Mfpo("report --runs 'A=" + eval + ",B=" + eval2 + "' --claim_against ' C' --out " + report_dir + "u");
  EXPECT_TRUE(absl::StrContains(unknown.all, "'C' is not one of the other labels")) << unknown.all;  // trimmed
  // One model alone: nothing to compare, the claim is n/a rather than "holds".
  Result alone = Mfpo("report --runs 'A=" + eval + "' --out " + report_dir + "n");
  ASSERT_EQ(alone.code, 0) << alone.all;
  EXPECT_TRUE(absl::StrContains(alone.out, "n/a (no other model")) << alone.out;
  EXPECT_TRUE(nlohmann::json::parse(ReadAll(fs::path(report_dir + "n") / "report.json"))["claim"]["all"]["holds"].is_null());
  // Eval-only runs: no training curves, and the report does not claim to have drawn them.
  EXPECT_FALSE(fs::exists(fs::path(report_dir + "n") / "loss_terms.png"));
  EXPECT_FALSE(absl::StrContains(alone.out, "loss_terms.png")) << alone.out;
  // Runs on other images (a shorter scores.jsonl) are refused, not paired silently.
  const std::string half = (*dir_ / "eval-half").string();
  fs::create_directory(half);
  fs::copy(eval, half, fs::copy_options::recursive);
  {
    std::ifstream in(fs::path(eval) / "scores.jsonl");
    std::ofstream o(fs::path(half) / "scores.jsonl", std::ios::trunc);
    std::string l;
    for (int i = 0; i < 3 && std::getline(in, l); ++i) o << l << "\n";
  }
  Result fewer = Mfpo("report --runs 'A=" + eval + ",B=" + half + "' --out " + report_dir + "h");
  EXPECT_EQ(fewer.code, 1);
  EXPECT_TRUE(absl::StrContains(fewer.all, "were not scored on the same test images")) << fewer.all;
  // An evaluation that did not finish (no report.json) is refused.
  fs::remove(fs::path(half) / "report.json");
  Result unfinished = Mfpo("report --runs 'A=" + eval + ",B=" + half + "' --out " + report_dir + "f");
  EXPECT_TRUE(absl::StrContains(unfinished.all, "the evaluation did not finish")) << unfinished.all;
  auto png = ReadImageFile(report_dir + "/table.png");
  ASSERT_TRUE(png.ok()) << png.status();
  EXPECT_GT(png->cols, 300);
  // Bad input, each refused with a message that names it (and nothing written).
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"'A=" + eval + ",B@1=" + eval2 + "' --out " + report_dir + "m", "either every run names its seed"},
      {"'A@x=" + eval + "' --out " + report_dir + "s", "must be a non-negative integer"},
      {"'A|B=" + eval + "' --out " + report_dir + "p", "may not contain '|'"},
      {"'A=" + eval + ",B=" + eval2 + "' --out " + eval2 + " --overwrite", "is the directory of run 'B'"},
      {"'A=" + eval + ",B=" + (*dir_ / "nope").string() + "' --out " + report_dir + "x",
       "nope: not a directory (run 'B')"},
      {"'A=" + eval + ",A=" + eval2 + "' --out " + report_dir + "y", "'A' is given twice"},
      {eval + " --out " + report_dir + "z", "is not LABEL=DIR"},
      {"'A=" + eval + "' --focus B --out " + report_dir + "w", "--focus: 'B'"}};
  for (const auto& [args, message] : refused) {
    Result r = Mfpo("report --runs " + args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_TRUE(absl::StrContains(r.all, message)) << args << "\n" << r.all;
  }
  EXPECT_TRUE(fs::exists(fs::path(eval2) / "scores.jsonl"));  // --out onto a run wrote nothing there
  EXPECT_FALSE(fs::exists(report_dir + "x"));
  Result again = Mfpo("report --runs 'A=" + eval + "' --out " + report_dir);
  EXPECT_TRUE(absl::StrContains(again.all, "--overwrite")) << again.all;  // not empty
}

TEST_F(CliTest, ConvertModelWritesBfloat16WeightsThatGenerateAlike) {
  const std::string bf16 = (*dir_ / "tiny-bf16").string();
  Result r = Mfpo("convert-model --model " + Model() + " --out " + bf16 + " --dtype bfloat16");
  ASSERT_EQ(r.code, 0) << r.all;
  auto ckpt = SafetensorsCheckpoint::Open(bf16);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  for (const auto& name : ckpt->names()) EXPECT_EQ(ckpt->Find(name)->entry->dtype, StDtype::kBF16) << name;
  const auto f32_size = fs::file_size(fs::path(Model()) / "model.safetensors");
  const auto bf16_size = fs::file_size(fs::path(bf16) / "model.safetensors");
  EXPECT_LT(bf16_size, f32_size * 0.51);
  for (const char* f : {"tokenizer.model", "preprocessor_config.json", "config.json"})
    EXPECT_TRUE(fs::exists(fs::path(bf16) / f)) << f;
  Result g = Mfpo("generate --model " + bf16 + " --image " + Image() + " --prompt hi --max-new-tokens 4");
  EXPECT_EQ(g.code, 0) << g.all;
  Result self = Mfpo("convert-model --model " + Model() + " --out " + Model() + " --dtype bfloat16");
  EXPECT_EQ(self.code, 2);
  EXPECT_TRUE(absl::StrContains(self.all, "is the model directory itself")) << self.all;
  Result dtype = Mfpo("convert-model --model " + Model() + " --out " + bf16 + "2 --dtype int8");
  EXPECT_TRUE(absl::StrContains(dtype.all, "'int8' is not float32, bfloat16 or float16")) << dtype.all;
}

TEST_F(CliTest, ScoreChairPopeAmberFromFiles) {
  const fs::path d = *dir_ / "score";
  fs::create_directories(d);
  std::ofstream(d / "chair_answers.jsonl") << R"({"id": "1", "answer": "A man riding a motorcycle next to two dogs and a hot dog stand."})" "\n"
                                           << R"({"id": "2", "answer": "A cat, another cat and a kitten."})" "\n";
  std::ofstream(d / "chair_truth.jsonl") << R"({"id": "1", "objects": ["person", "motorcycle", "dog"]})" "\n"
                                         << R"({"id": "2", "objects": ["dog"]})" "\n";
  Result chair = Mfpo("score --suite chair --answers " + (d / "chair_answers.jsonl").string() + " --truth " +
                      (d / "chair_truth.jsonl").string() + " --json");
  ASSERT_EQ(chair.code, 0) << chair.all;
  auto c = nlohmann::json::parse(chair.out);
  EXPECT_DOUBLE_EQ(c["chair_s"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(c["chair_i"].get<double>(), 4.0 / 7);
  EXPECT_DOUBLE_EQ(c["recall"].get<double>(), 3.0 / 4);

  std::ofstream(d / "pope_answers.jsonl") << R"({"id": "q1", "answer": "Yes, there is."})" "\n"
                                          << R"({"id": "q2", "answer": "No."})" "\n"
                                          << R"({"id": "q3", "answer": "Yes."})" "\n";
  std::ofstream(d / "pope_truth.jsonl") << R"({"question_id": "q1", "label": "yes"})" "\n"
                                        << R"({"question_id": "q2", "label": "yes"})" "\n"
                                        << R"({"question_id": "q3", "label": "no"})" "\n";
  Result pope = Mfpo("score --suite pope --answers " + (d / "pope_answers.jsonl").string() + " --truth " +
                     (d / "pope_truth.jsonl").string() + " --json");
  ASSERT_EQ(pope.code, 0) << pope.all;
  auto p = nlohmann::json::parse(pope.out);
  EXPECT_DOUBLE_EQ(p["all"]["accuracy"].get<double>(), 1.0 / 3);
  EXPECT_DOUBLE_EQ(p["all"]["yes_ratio"].get<double>(), 2.0 / 3);

  std::ofstream(d / "amber.json") << R"([{"id": 1, "type": "generative", "truth": ["dog", "grass"], "hallu": ["cat", "frisbee"]},
                                         {"id": 2, "type": "discriminative", "query": "Is there a dog?"}])";
  std::ofstream(d / "relation.json") << R"({"dog": ["puppy"]})";
  std::ofstream(d / "amber_answers.json") << R"([{"id": 1, "response": "A puppy on the grass with a frisbee."}])";
  Result amber = Mfpo("score --suite amber --answers " + (d / "amber_answers.json").string() + " --truth " +
                      (d / "amber.json").string() + " --association " + (d / "relation.json").string() + " --json");
  ASSERT_EQ(amber.code, 0) << amber.all;
  auto a = nlohmann::json::parse(amber.out);
  EXPECT_DOUBLE_EQ(a["chair"].get<double>(), 1.0 / 3);
  EXPECT_DOUBLE_EQ(a["cover"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(a["cog"].get<double>(), 0.5);

  std::ofstream(d / "bad_truth.jsonl") << R"({"id": "1", "objects": "dog"})" "\n";
  Result bad = Mfpo("score --suite chair --answers " + (d / "chair_answers.jsonl").string() + " --truth " +
                    (d / "bad_truth.jsonl").string());
  EXPECT_NE(bad.code, 0);
  EXPECT_TRUE(absl::StrContains(bad.all, "bad_truth.jsonl:1: record '1': 'objects' must be a list")) << bad.all;
}

TEST_F(CliTest, ImportReportsBadLinesAndKeepsTheRest) {
  const fs::path d = *dir_ / "import";
  fs::create_directories(d);
  fs::copy_file(Image(), d / "img.png", fs::copy_options::overwrite_existing);
  std::ofstream(d / "in.jsonl") << R"({"id": "a", "image": "img.png", "question": "Q", "chosen": "c", "rejected": "r"})" "\n"
                                << "{broken\n"
                                << R"({"id": "a", "image": "img.png", "question": "Q", "chosen": "c", "rejected": "r"})" "\n";
  Result r = Mfpo("import --format rlaif-v " + (d / "in.jsonl").string() + " " + (d / "out.jsonl").string());
  ASSERT_EQ(r.code, 0) << r.all;
  EXPECT_TRUE(absl::StrContains(r.out, "imported 1 records")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.all, "in.jsonl:2: malformed JSON")) << r.all;
  EXPECT_TRUE(absl::StrContains(r.all, "in.jsonl:3: duplicate id 'a'")) << r.all;
  Result bad = Mfpo("import --format csv " + (d / "in.jsonl").string() + " " + (d / "out.jsonl").string());
  EXPECT_EQ(bad.code, 2);
}

// The image-preference pipeline feeds training: `mfpo perturb` writes a manifest with rejected
// images, `mfpo train` trains MFPO on it and then runs the spec's evaluation section.
TEST_F(CliTest, PerturbThenTrainThenEvaluate) {
  const fs::path d = *dir_ / "pipeline";
  const std::string world = (d / "world").string();
  ASSERT_EQ(Mfpo("world --out " + world + " --seed 5 --train 4 --val 0 --test 4").code, 0);
  Result p = Mfpo("perturb --manifest " + world + "/train.jsonl --out " + (d / "perturbed").string() +
                  " --vocab " + world + "/vocab.txt --threads 2 --feather 2");
  ASSERT_EQ(p.code, 0) << p.all;
  EXPECT_TRUE(absl::StrContains(p.out, "records 20, written 20")) << p.out;
  const std::string spec = (d / "job.json").string();
  std::ofstream(spec) << nlohmann::json{
      {"output_dir", (d / "run").string()},
      {"model", {{"path", Model()}}},
      {"data", {{"train", (d / "perturbed" / "manifest.jsonl").string()}, {"max_samples", 8}}},
      {"objective", {{"variant", "mfpo"}}},
      {"optimizer", {{"lr", 1e-4}, {"micro_batch", 4}}},
      {"curriculum", {{"mode", "end_to_end"}}},
      {"evaluation", {{"data", world}, {"limit", 2}, {"max_new_tokens", 4}, {"suites", {"chair", "pope"}}}}}.dump();
  Result t = Mfpo("train --spec " + spec);
  ASSERT_EQ(t.code, 0) << t.all;
  EXPECT_TRUE(absl::StrContains(t.out, "== evaluation of")) << t.out;
  auto report = nlohmann::json::parse(ReadAll(d / "run" / "eval" / "report.json"));
  EXPECT_EQ(report["images"], 2);
  EXPECT_TRUE(report.contains("pope"));
  EXPECT_FALSE(report.contains("reliance"));  // only the suites the spec names
  // A rerun of the finished job keeps its evaluation (same checkpoint, same settings).
  Result again = Mfpo("train --spec " + spec);
  ASSERT_EQ(again.code, 0) << again.all;
  EXPECT_TRUE(absl::StrContains(again.out, "== evaluation: kept")) << again.out;

  Result bad = Mfpo("perturb --manifest " + world + "/train.jsonl --out " + (d / "x").string() + " --grounder sam");
  EXPECT_EQ(bad.code, 2);
  EXPECT_TRUE(absl::StrContains(bad.all, "--grounder 'sam'")) << bad.all;
  Result no_model = Mfpo("perturb --manifest " + world + "/train.jsonl --out " + (d / "x").string() + " --grounder model");
  EXPECT_EQ(no_model.code, 2);
  EXPECT_TRUE(absl::StrContains(no_model.all, "needs --model")) << no_model.all;
}

// LLaVA-1.6 and LoRA through the commands: a tiny-next model trained by MFPO with LoRA on data
// that mixes image sizes (so micro-batches mix image-token counts), evaluated with its adapter;
// merge-lora then gives a model that answers as base + adapter does; the model grounder runs on it.
TEST_F(CliTest, LlavaNextWithLoraTrainsMergesAndEvaluates) {
  const fs::path d = *dir_ / "next";
  const std::string model = (d / "model").string(), world = (d / "world").string();
  Result init = Mfpo("init-model --preset tiny-next --seed 2 --out " + model);
  ASSERT_EQ(init.code, 0) << init.all;
  EXPECT_TRUE(absl::StrContains(init.out, "per tile")) << init.out;
  ASSERT_EQ(Mfpo("world --out " + world + " --seed 5 --train 6 --val 0 --test 4").code, 0);
  // Every other record's image squeezed to 64 x 40 (another tiling, another token count).
  fs::create_directories(d / "wide");
  std::ifstream in(world + "/train.jsonl");
  std::ofstream mixed(d / "mixed.jsonl");
  int n = 0;
  for (std::string line; std::getline(in, line); ++n) {
    auto j = nlohmann::json::parse(line);
    const fs::path image = fs::path(world) / j["image"].get<std::string>();
    j["image"] = image.string();
    if (n % 2 == 1) {
      auto rgb = ReadImageFile(image.string());
      ASSERT_TRUE(rgb.ok());
      const fs::path wide = d / "wide" / (std::to_string(n) + ".png");
      ASSERT_TRUE(cv::imwrite(wide.string(), ResizeBicubicPil(*rgb, 64, 40)));
      j["image"] = wide.string();
      j.erase("boxes");
    }
    mixed << j.dump() << "\n";
  }
  mixed.close();
  Result p = Mfpo("perturb --manifest " + (d / "mixed.jsonl").string() + " --out " + (d / "perturbed").string() +
                  " --grounder global --threads 2");
  ASSERT_EQ(p.code, 0) << p.all;
  const std::string spec = (d / "job.json").string();
  std::ofstream(spec) << nlohmann::json{
      {"output_dir", (d / "run").string()},
      {"model", {{"path", model}}},
      {"data", {{"train", (d / "perturbed" / "manifest.jsonl").string()}, {"max_samples", 12}}},
      {"objective", {{"variant", "mfpo"}}},
      {"optimizer", {{"lr", 1e-3}, {"micro_batch", 4}, {"lora", {{"rank", 4}, {"target_modules", {"q_proj", "v_proj", "linear_1"}}}}}},
      {"curriculum", {{"mode", "end_to_end"}}},
      {"evaluation", {{"data", world}, {"limit", 2}, {"max_new_tokens", 4}, {"suites", {"chair"}}}}}.dump();
  Result t = Mfpo("train --spec " + spec);
  ASSERT_EQ(t.code, 0) << t.all;
  const fs::path adapter = d / "run" / "checkpoints" / "step-000003";
  ASSERT_TRUE(fs::exists(adapter / "adapter_model.safetensors")) << t.all;
  auto report = nlohmann::json::parse(ReadAll(d / "run" / "eval" / "report.json"));
  EXPECT_EQ(report["adapter"], adapter.string());
  EXPECT_EQ(report["model"], model);

  const std::string merged = (d / "merged").string();
  Result m = Mfpo("merge-lora --model " + model + " --adapter " + adapter.string() + " --out " + merged);
  ASSERT_EQ(m.code, 0) << m.all;
  EXPECT_TRUE(fs::exists(fs::path(merged) / "chat_template.json"));
  const std::string wide_image = (d / "wide" / "1.png").string();
  const std::string ask = " --image " + wide_image + " --prompt 'What is in the image?' --max-new-tokens 6 --json";
  Result with_adapter = Mfpo("generate --model " + model + " --adapter " + adapter.string() + ask);
  Result from_merged = Mfpo("generate --model " + merged + ask);
  Result base = Mfpo("generate --model " + model + ask);
  ASSERT_EQ(with_adapter.code, 0) << with_adapter.all;
  ASSERT_EQ(from_merged.code, 0) << from_merged.all;
  EXPECT_EQ(nlohmann::json::parse(with_adapter.out)["new_ids"], nlohmann::json::parse(from_merged.out)["new_ids"]);
  // Logits of merged and unmerged agree within float rounding; the adapter moved them.
  const std::string lg = " --image " + wide_image + " --prompt 'What is in the image?' --response 'A red ball.' --out ";
  ASSERT_EQ(Mfpo("logits --model " + model + " --adapter " + adapter.string() + lg + (d / "a.safetensors").string()).code, 0);
  ASSERT_EQ(Mfpo("logits --model " + merged + lg + (d / "m.safetensors").string()).code, 0);
  ASSERT_EQ(Mfpo("logits --model " + model + lg + (d / "b.safetensors").string()).code, 0);
  auto la = (*SafetensorsFile::Open((d / "a.safetensors").string()))->Load("logits", torch::kFloat32);
  auto lm = (*SafetensorsFile::Open((d / "m.safetensors").string()))->Load("logits", torch::kFloat32);
  auto lb = (*SafetensorsFile::Open((d / "b.safetensors").string()))->Load("logits", torch::kFloat32);
  ASSERT_TRUE(la.ok() && lm.ok() && lb.ok());
  EXPECT_LT((*la - *lm).abs().max().item<double>(), 1e-4);
  EXPECT_GT((*la - *lb).abs().max().item<double>(), 1e-4);

  // The model grounder on a LLaVA-NeXT model; adapters of another shape and bad templates refused.
  Result g = Mfpo("perturb --manifest " + world + "/train.jsonl --out " + (d / "grounded").string() + " --grounder model --model " +
                  merged + " --threads 1 --end 2");
  EXPECT_EQ(g.code, 0) << g.all;
  const fs::path broken = d / "broken-adapter";
  fs::create_directories(broken);
  fs::copy_file(adapter / "adapter_config.json", broken / "adapter_config.json");
  const std::string weights = ReadAll(adapter / "adapter_model.safetensors");
  std::ofstream(broken / "adapter_model.safetensors", std::ios::binary) << weights.substr(0, weights.size() / 2);
  Result other = Mfpo("generate --model " + model + " --adapter " + broken.string() + ask);
  EXPECT_NE(other.code, 0);
  EXPECT_TRUE(absl::StrContains(other.all, "adapter_model.safetensors")) << other.all;
  Result tmpl = Mfpo("generate --model " + model + " --chat-template chatml" + ask);
  EXPECT_EQ(tmpl.code, 2) << tmpl.all;
  EXPECT_TRUE(absl::StrContains(tmpl.all, "chatml")) << tmpl.all;
  Result no_adapter = Mfpo("merge-lora --model " + model + " --out " + (d / "x").string());
  EXPECT_EQ(no_adapter.code, 2) << no_adapter.all;
  Result onto_adapter = Mfpo("merge-lora --model " + model + " --adapter " + adapter.string() + " --out " +
                             adapter.string() + " --overwrite");
  EXPECT_NE(onto_adapter.code, 0);
  EXPECT_TRUE(absl::StrContains(onto_adapter.all, "is the adapter directory itself")) << onto_adapter.all;
  // An adapter given as a model names what to do instead.
  Result as_model = Mfpo("generate --model " + adapter.string() + ask);
  EXPECT_NE(as_model.code, 0);
  EXPECT_TRUE(absl::StrContains(as_model.all, "is a LoRA adapter directory")) << as_model.all;

  // The chat template from chat_template.jinja (newest transformers); image-processor settings
  // the pipeline does not implement are refused instead of ignored.
  const fs::path jinja = d / "jinja";
  fs::copy(model, jinja, fs::copy_options::recursive);
  fs::remove(jinja / "chat_template.json");
  std::ofstream(jinja / "chat_template.jinja") << "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}";
  Result via_jinja = Mfpo("logits --model " + jinja.string() + lg + (d / "j.safetensors").string());
  Result mistral = Mfpo("logits --model " + model + " --chat-template mistral" + lg + (d / "k.safetensors").string());
  ASSERT_EQ(via_jinja.code, 0) << via_jinja.all;
  ASSERT_EQ(mistral.code, 0) << mistral.all;
  EXPECT_EQ(ReadAll(d / "j.safetensors"), ReadAll(d / "k.safetensors"));
  auto pre = nlohmann::json::parse(ReadAll(jinja / "preprocessor_config.json"));
  pre["do_normalize"] = false;
  std::ofstream(jinja / "preprocessor_config.json") << pre.dump();
  Result no_norm = Mfpo("generate --model " + jinja.string() + ask);
  EXPECT_NE(no_norm.code, 0);
  EXPECT_TRUE(absl::StrContains(no_norm.all, "do_normalize: false is not supported")) << no_norm.all;
}

// ---- Hostile use: each case used to crash, hang or silently change data. ---------------------

TEST_F(CliTest, EachCommandHasItsOwnHelpAndRefusesOtherCommandsFlags) {
  Result help = Mfpo("train --help");
  EXPECT_EQ(help.code, 0) << help.all;
  EXPECT_TRUE(absl::StrContains(help.out, "mfpo train --spec job.yaml")) << help.out;
  EXPECT_TRUE(absl::StrContains(help.out, "--stop-after-steps")) << help.out;
  EXPECT_FALSE(absl::StrContains(help.out, "--max-new-tokens")) << help.out;
  Result general = Mfpo("--help");
  EXPECT_EQ(general.code, 0);
  EXPECT_TRUE(absl::StrContains(general.out, "Commands:")) << general.out;
  Result perturb = Mfpo("perturb --help");
  EXPECT_TRUE(absl::StrContains(perturb.out, "--grounder")) << perturb.out;
  Result datagen = RunShell(std::string(MFPO_DATAGEN_BIN) + " --help", 60);
  EXPECT_EQ(datagen.code, 0) << datagen.all;
  EXPECT_TRUE(absl::StrContains(datagen.out, "--metrics-address")) << datagen.out;
  EXPECT_TRUE(absl::StrContains(datagen.out, "--manifest")) << datagen.out;

  Result foreign = Mfpo("world --out " + (*dir_ / "w_foreign").string() + " --max-new-tokens 5");
  EXPECT_EQ(foreign.code, 2);
  EXPECT_TRUE(absl::StrContains(foreign.all, "--max_new_tokens is not a flag of this command")) << foreign.all;
  EXPECT_TRUE(absl::StrContains(foreign.all, "mfpo world: --max_new_tokens")) << foreign.all;
  EXPECT_FALSE(absl::StrContains(foreign.all, "mfpo: mfpo world")) << "prefixed twice: " << foreign.all;
  EXPECT_FALSE(fs::exists(*dir_ / "w_foreign"));
  Result negated = Mfpo("world --out " + (*dir_ / "w_foreign").string() + " --nojson");
  EXPECT_EQ(negated.code, 2) << negated.all;
}

TEST_F(CliTest, InitModelRefusesToOverwriteAModel) {
  const std::string weights = ReadAll(fs::path(Model()) / "model.safetensors");
  Result again = Mfpo("init-model --preset tiny --seed 99 --out " + Model());
  EXPECT_NE(again.code, 0);
  EXPECT_TRUE(absl::StrContains(again.all, "pass --overwrite")) << again.all;
  EXPECT_EQ(ReadAll(fs::path(Model()) / "model.safetensors"), weights);
  const std::string copy = (*dir_ / "overwritten").string();
  ASSERT_EQ(Mfpo("init-model --preset tiny --seed 1 --out " + copy).code, 0);
  Result forced = Mfpo("init-model --preset tiny --seed 7 --overwrite --out " + copy);
  EXPECT_EQ(forced.code, 0) << forced.all;
  EXPECT_EQ(ReadAll(fs::path(copy) / "model.safetensors"), weights);  // seed 7 again
}

TEST_F(CliTest, InputsThatAreNotFilesAreRefusedAtOnce) {
  const fs::path fifo = *dir_ / "spec.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  for (const std::string& spec : {std::string("/dev/null"), dir_->string(), fifo.string()}) {
    Result r = Mfpo("train --spec " + spec, 60);
    EXPECT_EQ(r.code, 2) << spec << ": " << r.all;
    EXPECT_TRUE(absl::StrContains(r.all, spec + ": job spec is a")) << r.all;
  }
  Result image = Mfpo("generate --model " + Model() + " --image " + fifo.string() + " --prompt hi", 60);
  EXPECT_EQ(image.code, 2) << image.all;
  EXPECT_TRUE(absl::StrContains(image.all, "a FIFO")) << image.all;
  Result manifest = Mfpo("perturb --manifest /dev/zero --out " + (*dir_ / "p_zero").string(), 60);
  EXPECT_EQ(manifest.code, 2) << manifest.all;
  EXPECT_TRUE(absl::StrContains(manifest.all, "/dev/zero: file is a character device")) << manifest.all;
}

TEST_F(CliTest, GenerationBeyondTheContextIsRefused) {
  Result r = Mfpo("generate --model " + Model() + " --image " + Image() + " --prompt hi --max-new-tokens 5000");
  EXPECT_EQ(r.code, 2) << r.all;
  EXPECT_TRUE(absl::StrContains(r.all, "exceeds the model's context of 1024 tokens")) << r.all;
}

TEST_F(CliTest, ScoreRefusesInputsThatWouldReadAsPerfect) {
  const fs::path d = *dir_ / "score_refusals";
  fs::create_directories(d);
  std::ofstream(d / "answers.jsonl") << R"({"id": "x", "answer": "A dog."})" "\n";
  std::ofstream(d / "empty.jsonl") << "";
  std::ofstream(d / "truth.jsonl") << R"({"id": "1", "objects": ["dog"]})" "\n";
  std::ofstream(d / "dup_truth.jsonl") << R"({"id": "x", "objects": ["dog"]})" "\n" << R"({"id": "x", "objects": ["cat"]})" "\n";
  auto score = [&](const std::string& suite, const char* answers, const char* truth) {
    return Mfpo("score --suite " + suite + " --answers " + (d / answers).string() + " --truth " + (d / truth).string());
  };
  Result none = score("chair", "answers.jsonl", "truth.jsonl");
  EXPECT_EQ(none.code, 2) << none.all;
  EXPECT_TRUE(absl::StrContains(none.all, "nothing to score")) << none.all;
  Result empty = score("chair", "empty.jsonl", "truth.jsonl");
  EXPECT_EQ(empty.code, 2) << empty.all;
  EXPECT_TRUE(absl::StrContains(empty.all, "no answers")) << empty.all;
  Result dup = score("chair", "answers.jsonl", "dup_truth.jsonl");
  EXPECT_EQ(dup.code, 2) << dup.all;
  EXPECT_TRUE(absl::StrContains(dup.all, "duplicate truth id 'x'")) << dup.all;
  std::ofstream(d / "pope_truth.jsonl") << R"({"id": "q", "label": "yes"})" "\n";
  Result pope = score("pope", "answers.jsonl", "pope_truth.jsonl");
  EXPECT_EQ(pope.code, 2) << pope.all;
}

// A spec whose evaluation data is missing fails before training, and a full disk while writing a
// checkpoint ends the run with the OS's reason, keeps the previous checkpoint and resumes.
TEST_F(CliTest, TrainChecksEvaluationDataFirstAndSurvivesAFullDisk) {
  const fs::path d = *dir_ / "full_disk";
  const std::string world = (d / "world").string();
  ASSERT_EQ(Mfpo("world --out " + world + " --seed 2 --train 4 --val 0 --test 2 --size 32").code, 0);
  auto spec = [&](const std::string& name, const std::string& eval_data) {
    const std::string path = (d / (name + ".json")).string();
    nlohmann::json j = {{"output_dir", (d / name).string()},
                        {"model", {{"path", Model()}}},
                        {"data", {{"train", world + "/train.jsonl"}, {"max_samples", 16}}},
                        {"objective", {{"variant", "dpo"}}},
                        {"optimizer", {{"lr", 1e-4}, {"micro_batch", 4}}},
                        {"curriculum", {{"mode", "end_to_end"}}},
                        {"checkpoint", {{"every_steps", 1}}}};
    if (!eval_data.empty()) j["evaluation"] = {{"data", eval_data}, {"limit", 1}, {"max_new_tokens", 2}, {"suites", {"chair"}}};
    std::ofstream(path) << j.dump();
    return path;
  };
  Result no_eval = Mfpo("train --spec " + spec("noeval", (d / "missing_world").string()));
  EXPECT_EQ(no_eval.code, 2) << no_eval.all;
  EXPECT_TRUE(absl::StrContains(no_eval.all, "evaluation.data")) << no_eval.all;
  EXPECT_FALSE(fs::exists(d / "noeval" / "checkpoints"));

  const std::string job = spec("run", "");
  Result first = Mfpo("train --spec " + job + " --stop-after-steps 2");
  ASSERT_EQ(first.code, 0) << first.all;
  ASSERT_TRUE(fs::exists(d / "run" / "checkpoints" / "step-000002"));
  // 2 MiB per file: the tiny model's weights (16 MiB) cannot be written at step 3.
  Result limited = RunShell("ulimit -f 2048; " + std::string(MFPO_BIN) + " train --spec " + job, 600);
  EXPECT_EQ(limited.code, 1) << limited.all;
  EXPECT_TRUE(absl::StrContains(limited.all, "File too large")) << limited.all;
  EXPECT_TRUE(absl::StrContains(limited.all, "kept " + (d / "run" / "checkpoints" / "step-000002").string())) << limited.all;
  for (const auto& e : fs::directory_iterator(d / "run" / "checkpoints"))
    EXPECT_FALSE(absl::EndsWith(e.path().string(), ".tmp")) << e.path();
  Result resumed = Mfpo("train --spec " + job);
  EXPECT_EQ(resumed.code, 0) << resumed.all;
  EXPECT_TRUE(absl::StrContains(resumed.out, "trained")) << resumed.out;
}

TEST_F(CliTest, OutputsAreNeverReplacedSilently) {
  // A world over an existing output directory (here: the model) is refused.
  const std::string config = ReadAll(fs::path(Model()) / "config.json");
  Result world = Mfpo("world --out " + Model() + " --train 2 --val 1 --test 1");
  EXPECT_NE(world.code, 0);
  EXPECT_TRUE(absl::StrContains(world.all, "not empty; choose a new --out or pass --overwrite")) << world.all;
  EXPECT_EQ(ReadAll(fs::path(Model()) / "config.json"), config);
  // logits into a device or a FIFO: refused, the device untouched.
  const fs::path fifo = *dir_ / "logits.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  for (const std::string& out : {std::string("/dev/null"), fifo.string()}) {
    Result r = Mfpo("logits --model " + Model() + " --image " + Image() + " --prompt hi --out " + out, 120);
    EXPECT_NE(r.code, 0) << out;
    EXPECT_TRUE(absl::StrContains(r.all, "refusing to replace it")) << r.all;
  }
  EXPECT_TRUE(fs::is_fifo(fifo));
  EXPECT_TRUE(fs::is_character_file("/dev/null"));
  // logits beyond the context.
  std::string essay;
  for (int i = 0; i < 1200; ++i) essay += "red ";
  Result long_logits = Mfpo("logits --model " + Model() + " --image " + Image() + " --prompt hi --response '" + essay +
                            "' --out " + (*dir_ / "long.safetensors").string());
  EXPECT_EQ(long_logits.code, 2) << long_logits.all;
  EXPECT_TRUE(absl::StrContains(long_logits.all, "more than the model's context of 1024")) << long_logits.all;
}

TEST_F(CliTest, UnknownFlagsAndVersion) {
  Result datagen = RunShell(std::string(MFPO_DATAGEN_BIN) + " --manifest x --feathr 3", 60);
  EXPECT_EQ(datagen.code, 2) << datagen.all;
  EXPECT_TRUE(absl::StrContains(datagen.all, "--feathr is not a flag of this program")) << datagen.all;
  EXPECT_FALSE(absl::StrContains(datagen.all, "mfpo-datagen: mfpo-datagen")) << "prefixed twice: " << datagen.all;
  Result version = Mfpo("--version");
  EXPECT_EQ(version.code, 0);
  EXPECT_TRUE(absl::StartsWith(version.out, "mfpo ")) << version.out;
  Result negative = Mfpo("world --out " + (*dir_ / "neg").string() + " --train -5");
  EXPECT_EQ(negative.code, 2) << negative.all;
  EXPECT_TRUE(absl::StrContains(negative.all, "split sizes must be >= 0")) << negative.all;
}

TEST_F(CliTest, ImportRefusesToReplaceAnOutputAndFailsWhenNothingImports) {
  const fs::path d = *dir_ / "import2";
  fs::create_directories(d);
  fs::copy_file(Image(), d / "img.png", fs::copy_options::overwrite_existing);
  std::ofstream(d / "in.jsonl") << R"({"id": "a", "image": "img.png", "question": "Q", "chosen": "c", "rejected": "r"})" "\n";
  std::ofstream(d / "bad.jsonl") << R"({"id": "a", "image": "missing.png", "question": "Q", "chosen": "c", "rejected": "r"})" "\n";
  std::ofstream(d / "keep.jsonl") << "precious\n";
  Result keep = Mfpo("import --format native " + (d / "in.jsonl").string() + " " + (d / "keep.jsonl").string());
  EXPECT_NE(keep.code, 0);
  EXPECT_TRUE(absl::StrContains(keep.all, "pass --overwrite")) << keep.all;
  EXPECT_EQ(ReadAll(d / "keep.jsonl"), "precious\n");
  EXPECT_EQ(Mfpo("import --overwrite --format native " + (d / "in.jsonl").string() + " " + (d / "keep.jsonl").string()).code, 0);
  Result none = Mfpo("import --format native " + (d / "bad.jsonl").string() + " " + (d / "none.jsonl").string());
  EXPECT_EQ(none.code, 2) << none.all;
  EXPECT_TRUE(absl::StrContains(none.all, "no record could be imported")) << none.all;
  Result threads = Mfpo("world --out " + (d / "w").string() + " --threads 100000");
  EXPECT_EQ(threads.code, 2) << threads.all;
}

TEST_F(CliTest, TrainRefusesToWriteIntoItsModel) {
  const std::string spec = (*dir_ / "into_model.json").string();
  std::ofstream(spec) << nlohmann::json{{"output_dir", Model()}, {"model", {{"path", Model()}}},
                                        {"data", {{"train", (*dir_ / "x" / "train.jsonl").string()}}}}.dump();
  Result r = Mfpo("train --spec " + spec);
  EXPECT_EQ(r.code, 2) << r.all;
  EXPECT_TRUE(absl::StrContains(r.all, "is model.path; use a directory of its own")) << r.all;
  EXPECT_FALSE(fs::exists(fs::path(Model()) / "run.json"));
}

}  // namespace
}  // namespace mfpo
