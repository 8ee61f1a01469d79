#include "datagen/preference_formats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "common/jsonl.h"

namespace mfpo {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

class ImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("import_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    fs::copy_file(std::string(MFPO_SOURCE_DIR) + "/tests/golden/images/small.png", dir_ / "img.png");
    std::ifstream in(dir_ / "img.png", std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    png_b64_ = absl::Base64Escape(ss.str());
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::vector<std::string>& lines) {
    const std::string path = (dir_ / "in.jsonl").string();
    std::ofstream out(path);
    for (std::string l : lines) {  // fixtures are written over several source lines
      std::replace(l.begin(), l.end(), '\n', ' ');
      out << l << "\n";
    }
    return path;
  }
  std::vector<json> Output() {
    std::vector<json> out;
    EXPECT_TRUE(ReadJsonl((dir_ / "out.jsonl").string(), [&](int, const json& j) {
      out.push_back(j);
      return absl::OkStatus();
    }).ok());
    return out;
  }
  absl::StatusOr<ImportReport> Import(ImportFormat f, const std::string& in) {
    return ImportPreferences(f, in, (dir_ / "out.jsonl").string());
  }
  fs::path dir_;
  std::string png_b64_;
};

TEST_F(ImportTest, RlhfVWithFilesBase64AndBadLines) {
  const std::string in = Write({
      R"({"idx": 1, "image": "img.png", "text": "{\"question\": \"What is this?\", \"chosen\": \"A square.\", \"rejected\": \"A dog.\"}"})",
      R"({"idx": 2, "image": {"bytes": ")" + png_b64_ + R"("}, "text": {"question": "Q2", "chosen": "c2", "rejected": "r2"}})",
      R"(this is not json)",
      R"({"idx": 3, "image": "missing.png", "text": "{\"question\": \"Q\", \"chosen\": \"c\", \"rejected\": \"r\"}"})",
      R"({"idx": 1, "image": "img.png", "text": "{\"question\": \"Q\", \"chosen\": \"c\", \"rejected\": \"r\"}"})",
      R"({"idx": 4, "image": "img.png", "text": "{\"question\": \"Q\", \"chosen\": \"c\"}"})",
      R"({"idx": 5, "image": {"bytes": "bm90IGFuIGltYWdl"}, "text": {"question": "Q", "chosen": "c", "rejected": "r"}})",
  });
  auto report = Import(ImportFormat::kRlhfV, in);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->imported, 2);
  ASSERT_EQ(report->errors.size(), 5u);
  EXPECT_EQ(report->errors[0].line, 3);
  EXPECT_TRUE(absl::StrContains(report->errors[0].reason, "malformed JSON"));
  EXPECT_EQ(report->errors[1].line, 4);
  EXPECT_TRUE(absl::StrContains(report->errors[1].reason, "missing.png"));
  EXPECT_TRUE(absl::StrContains(report->errors[2].reason, "duplicate id '1'"));
  EXPECT_TRUE(absl::StrContains(report->errors[3].reason, "'rejected'"));
  EXPECT_TRUE(absl::StrContains(report->errors[4].reason, "not a PNG, JPEG or WebP"));
  auto out = Output();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0]["question"], "What is this?");
  EXPECT_TRUE(fs::exists(out[0]["image"].get<std::string>()));
  EXPECT_TRUE(fs::exists(dir_ / out[1]["image"].get<std::string>())) << out[1];
}

TEST_F(ImportTest, RlaifVFlatColumns) {
  const std::string in = Write({
      R"({"id": "a", "image": "img.png", "question": "Q", "chosen": "good", "rejected": "bad", "ds_name": "x"})",
      R"({"id": "b", "image": "img.png", "question": "", "chosen": "good", "rejected": "bad"})",
  });
  auto report = Import(ImportFormat::kRlaifV, in);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->imported, 1);
  ASSERT_EQ(report->errors.size(), 1u);
  EXPECT_TRUE(absl::StrContains(report->errors[0].reason, "'question' is empty"));
  EXPECT_EQ(Output()[0]["ds_name"], "x");
}

TEST_F(ImportTest, VlFeedbackPairsByMeanRatingAndDropsTies) {
  const std::string in = Write({
      R"({"id": "v1", "image": "img.png", "prompt": "Describe.", "completions": [
          {"model": "m1", "response": "ok answer", "annotations": {"Helpfulness": {"Rating": "3"}, "Visual Faithfulness": {"Rating": "3"}}},
          {"model": "m2", "response": "best answer", "annotations": {"Helpfulness": {"Rating": "5"}, "Visual Faithfulness": {"Rating": "4"}, "Ethical Considerations": {"Rating": "N/A"}}},
          {"model": "m3", "response": "worst answer", "annotations": {"Helpfulness": {"Rating": "1"}, "Visual Faithfulness": {"Rating": "2"}}}]})",
      R"({"id": "v2", "image": "img.png", "prompt": "Describe.", "completions": [
          {"response": "x", "annotations": {"Helpfulness": {"Rating": "4"}}},
          {"response": "y", "annotations": {"Helpfulness": {"Rating": 4}}}]})",
  });
  auto report = Import(ImportFormat::kVlFeedback, in);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->imported, 1);
  EXPECT_EQ(report->dropped_ties, 1);
  EXPECT_TRUE(report->errors.empty());
  auto out = Output();
  EXPECT_EQ(out[0]["chosen"], "best answer");
  EXPECT_EQ(out[0]["rejected"], "worst answer");
  EXPECT_DOUBLE_EQ(out[0]["chosen_rating"].get<double>(), 4.5);
}

TEST_F(ImportTest, HuggingFaceMessagesLayout) {
  const std::string in = Write({
      R"({"images": ["img.png"], "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color?"}]}],
          "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Red."}]}],
          "rejected": [{"role": "assistant", "content": "Blue."}]})",
      R"({"images": [{"bytes": ")" + png_b64_ + R"("}], "prompt": "Plain prompt", "chosen": "yes", "rejected": "no"})",
      R"({"prompt": "no image", "chosen": "a", "rejected": "b"})",
  });
  auto report = Import(ImportFormat::kHuggingFace, in);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->imported, 2);
  ASSERT_EQ(report->errors.size(), 1u);
  EXPECT_EQ(report->errors[0].line, 3);
  auto out = Output();
  EXPECT_EQ(out[0]["question"], "What color?");
  EXPECT_EQ(out[0]["chosen"], "Red.");
  EXPECT_EQ(out[0]["rejected"], "Blue.");
  EXPECT_EQ(out[0]["id"], "out-1");  // no id in the input: the output name and the line
}

TEST_F(ImportTest, NativeRecordsAreValidated) {
  const std::string in = Write({
      R"({"id": "n1", "image": "img.png", "question": "Q", "chosen": "c", "rejected": "r", "regions": [{"label": "box", "box": [1, 2, 10, 12]}], "type": "describe"})",
      R"({"id": "n2", "image": "img.png", "question": "Q", "chosen": "c", "rejected": "r", "regions": [{"box": [5, 5, 2, 2]}]})",
  });
  auto report = Import(ImportFormat::kNative, in);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->imported, 1);
  ASSERT_EQ(report->errors.size(), 1u);
  EXPECT_TRUE(absl::StrContains(report->errors[0].reason, "regions[0].box is empty or inverted"));
  auto out = Output();
  EXPECT_EQ(out[0]["type"], "describe");
  EXPECT_EQ(out[0]["regions"][0]["box"][3], 12);
}

TEST(ImportFormats, NamesAndMissingInput) {
  EXPECT_FALSE(ParseImportFormat("csv").ok());
  EXPECT_TRUE(ParseImportFormat("vlfeedback").ok());
  EXPECT_TRUE(absl::IsNotFound(ImportPreferences(ImportFormat::kRlaifV, "/nonexistent.jsonl", "/tmp/x.jsonl").status()));
}

}  // namespace
}  // namespace mfpo
