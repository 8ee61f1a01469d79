#include "datagen/preference_formats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "common/file_util.h"
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

namespace mfpo {
namespace {

TEST_F(ImportTest, HostileLinesAreThatLinesErrorsAndLeaveNothingBehind) {
  const std::string long_id(300, 'x');  // longer than a file name may be
  const std::string in = Write({
      // A documented image form: bare base64 in "image" (it contains '/', like most base64).
      R"({"id": "bare", "image": ")" + png_b64_ + R"(", "question": "Q", "chosen": "c", "rejected": "r"})",
      R"({"id": ")" + long_id + R"(", "image": {"bytes": ")" + png_b64_ + R"("}, "question": "Q", "chosen": "c", "rejected": "r"})",
      // Rejected for a duplicate id: its image must not be written.
      R"({"id": "bare", "image": {"bytes": ")" + png_b64_ + R"("}, "question": "Q2", "chosen": "c", "rejected": "r"})",
      // A path that is not an image, one that is a directory, and deep nesting.
      R"({"id": "text", "image": "in.jsonl", "question": "Q", "chosen": "c", "rejected": "r"})",
      R"({"id": "dir", "image": ".", "question": "Q", "chosen": "c", "rejected": "r"})",
      R"({"id": "deep", "image": "img.png", "question": "Q", "chosen": "c", "rejected": "r", "x": )" +
          std::string(10000, '[') + std::string(10000, ']') + "}",
      // PNG magic but not a PNG.
      R"({"id": "fake", "image": {"bytes": ")" + absl::Base64Escape("\x89PNG\r\n\x1a\nnot really") +
          R"("}, "question": "Q", "chosen": "c", "rejected": "r"})",
  });
  auto report = Import(ImportFormat::kRlaifV, in);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->imported, 2);
  ASSERT_EQ(report->errors.size(), 5u);
  EXPECT_TRUE(absl::StrContains(report->errors[0].reason, "duplicate id 'bare'"));
  EXPECT_TRUE(absl::StrContains(report->errors[1].reason, "undecodable")) << report->errors[1].reason;
  EXPECT_TRUE(absl::StrContains(report->errors[2].reason, "is a directory")) << report->errors[2].reason;
  EXPECT_TRUE(absl::StrContains(report->errors[3].reason, "nested deeper")) << report->errors[3].reason;
  EXPECT_TRUE(absl::StrContains(report->errors[4].reason, "undecodable")) << report->errors[4].reason;
  auto out = Output();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(fs::is_regular_file(dir_ / out[0]["image"].get<std::string>())) << out[0];
  EXPECT_TRUE(fs::is_regular_file(dir_ / out[1]["image"].get<std::string>())) << out[1];
  EXPECT_EQ(out[1]["id"], long_id);
  int images = 0, temporaries = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir_)) {
    images += e.path().parent_path().filename() == "out_images";
    temporaries += absl::StrContains(e.path().filename().string(), ".tmp");
  }
  EXPECT_EQ(images, 2) << "an image of a rejected line was written";
  EXPECT_EQ(temporaries, 0);
}

TEST_F(ImportTest, VlFeedbackNonFiniteRatingsAreRejected) {
  const std::string in = Write({
      R"({"id": "n1", "image": "img.png", "prompt": "Describe.", "completions": [
          {"response": "a", "annotations": {"Helpfulness": {"Rating": "nan"}}},
          {"response": "b", "annotations": {"Helpfulness": {"Rating": "nan"}}}]})",
      R"({"id": "n2", "image": "img.png", "prompt": "Describe.", "completions": [
          {"response": "a", "annotations": {"Helpfulness": {"Rating": "inf"}}},
          {"response": "b", "annotations": {"Helpfulness": {"Rating": 2}}}]})",
      R"({"id": "n3", "image": "img.png", "prompt": "Describe.", "completions": [
          {"response": "", "annotations": {"Helpfulness": {"Rating": 5}}},
          {"response": "b", "annotations": {"Helpfulness": {"Rating": 2}}}]})",
  });
  auto report = Import(ImportFormat::kVlFeedback, in);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->imported, 0);
  ASSERT_EQ(report->errors.size(), 3u);
  EXPECT_TRUE(absl::StrContains(report->errors[0].reason, "non-finite rating")) << report->errors[0].reason;
  EXPECT_TRUE(absl::StrContains(report->errors[1].reason, "non-finite rating")) << report->errors[1].reason;
  EXPECT_TRUE(absl::StrContains(report->errors[2].reason, "empty response")) << report->errors[2].reason;
}

TEST_F(ImportTest, InputsThatAreNotFilesAreRefused) {
  EXPECT_TRUE(absl::IsInvalidArgument(Import(ImportFormat::kNative, dir_.string()).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Import(ImportFormat::kNative, "/dev/null").status()));
  const std::string in = Write({R"({"id": "a", "image": "img.png", "question": "Q", "chosen": "c", "rejected": "r"})"});
  fs::create_directories(dir_ / "out_dir.jsonl");
  EXPECT_FALSE(ImportPreferences(ImportFormat::kNative, in, (dir_ / "out_dir.jsonl").string()).ok());
}

// Conversational pairs repeat the user's turn in chosen and rejected: only the assistant's turn
// is the response. LLaVA-style prompts carry an <image> placeholder: dropped.
TEST_F(ImportTest, HuggingFaceConversationalPairsKeepOnlyTheAnswer) {
  const std::string in = Write({
      R"({"id": "c1", "images": ["img.png"], "prompt": [{"role": "user", "content": "<image>\nWhat is it?"}],
          "chosen": [{"role": "user", "content": "What is it?"}, {"role": "assistant", "content": "A ball."}],
          "rejected": [{"role": "user", "content": "What is it?"}, {"role": "assistant", "content": "A cat."}]})",
      R"({"id": "c2", "images": [], "prompt": "p", "chosen": "a", "rejected": "b"})",
      R"({"id": "c3", "images": "img.png", "prompt": "p", "chosen": "a", "rejected": "b"})",
  });
  auto report = Import(ImportFormat::kHuggingFace, in);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->imported, 1);
  auto out = Output();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["question"], "What is it?");
  EXPECT_EQ(out[0]["chosen"], "A ball.");
  EXPECT_EQ(out[0]["rejected"], "A cat.");
  ASSERT_EQ(report->errors.size(), 2u);
  EXPECT_TRUE(absl::StrContains(report->errors[0].reason, "'images' is an empty list")) << report->errors[0].reason;
  EXPECT_TRUE(absl::StrContains(report->errors[1].reason, "'images' must be a list")) << report->errors[1].reason;
}

TEST_F(ImportTest, TheOutputCannotBeTheInput) {
  const std::string in = Write({R"({"id": "a", "image": "img.png", "question": "Q", "chosen": "c", "rejected": "r"})"});
  const std::string before = ReadFileToString(in).value_or("");
  auto r = ImportPreferences(ImportFormat::kNative, in, in);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "is the input file")) << r.status();
  EXPECT_EQ(ReadFileToString(in).value_or(""), before);
}

TEST_F(ImportTest, PairsThatAreNotPreferencesAreRejected) {
  const std::string in = Write({
      R"({"id": "u", "images": ["img.png"], "prompt": "Q", "chosen": [{"role": "user", "content": "only user"}], "rejected": "r"})",
      R"({"id": "m", "images": ["img.png"], "prompt": "Q", "chosen": [{"role": "assistant", "content": "A."}],
          "rejected": [{"role": "assistant", "content": "B."}, {"role": "user", "content": "sure?"}, {"role": "assistant", "content": "C."}]})",
      R"({"id": "same", "images": ["img.png"], "prompt": "Q", "chosen": "A ball.", "rejected": "A ball."})",
  });
  auto report = Import(ImportFormat::kHuggingFace, in);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->imported, 0);
  ASSERT_EQ(report->errors.size(), 3u);
  EXPECT_TRUE(absl::StrContains(report->errors[0].reason, "no 'assistant' turn")) << report->errors[0].reason;
  EXPECT_TRUE(absl::StrContains(report->errors[1].reason, "2 'assistant' turns")) << report->errors[1].reason;
  EXPECT_TRUE(absl::StrContains(report->errors[2].reason, "the same text")) << report->errors[2].reason;
}

}  // namespace
}  // namespace mfpo
