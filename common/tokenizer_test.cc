// The native SentencePiece encoder against the real library (mfpo-spm-train encode, run as a
// separate process), the LLaVA-1.5 template and label masking, and — when a real Llama
// tokenizer.model is given in MFPO_LLAMA_TOKENIZER — the golden ids of DESIGN.md.
#include "common/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/sentencepiece_model.h"
#include "common/tiny_corpus.h"

namespace mfpo {
namespace {
namespace fs = std::filesystem;

// Runs the real SentencePiece on `lines` via mfpo-spm-train; one id list per line.
std::vector<std::vector<int>> ReferenceEncode(const std::string& model_path,
                                              const std::vector<std::string>& lines) {
  const fs::path in = fs::temp_directory_path() / ("spm_in_" + std::to_string(::getpid()));
  {
    std::ofstream out(in);
    for (const auto& l : lines) out << l << "\n";
  }
  const std::string cmd = std::string(MFPO_SPM_TOOL) + " encode " + model_path + " < " + in.string();
  std::FILE* p = ::popen(cmd.c_str(), "r");
  std::vector<std::vector<int>> result;
  char buf[1 << 16];
  while (p != nullptr && std::fgets(buf, sizeof(buf), p) != nullptr) {
    std::vector<int> ids;
    for (absl::string_view tok : absl::StrSplit(absl::string_view(buf), absl::ByAnyChar(" \n"), absl::SkipEmpty()))
      ids.push_back(std::stoi(std::string(tok)));
    result.push_back(ids);
  }
  if (p != nullptr) ::pclose(p);
  fs::remove(in);
  return result;
}

std::vector<std::string> TrickyLines() {
  return {"hello world",
          "  two leading spaces and  double  spaces ",
          "What's the content of the image?",
          "digits 1234567890 and 3.14",
          "UPPER lower MiXeD",
          "unicode: caf\xC3\xA9 \xE2\x82\xAC 100 \xF0\x9F\x90\xB1 \xE4\xB8\xAD\xE6\x96\x87",
          "tabs\tand punctuation!?;:,.()[]{}",
          "a",
          "zzzzzzzzzzzzzzzzzzzzqqqqqqqqxxxxxxxxxxx",
          "The image shows a small red cat on the left next to the dog."};
}

class TinyTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (fs::temp_directory_path() / ("tiny_tok_" + std::to_string(::getpid()) + ".model")).string();
    std::ofstream(path_, std::ios::binary) << TinyTokenizerModelBytes();
    auto t = Tokenizer::FromFile(path_, kTinyTokenizerVocab, kTinyTokenizerVocab + 1);
    ASSERT_TRUE(t.ok()) << t.status();
    tok_ = *t;
  }
  void TearDown() override { fs::remove(path_); }
  std::string path_;
  Tokenizer tok_;
};

TEST_F(TinyTokenizerTest, MatchesRealSentencePieceOnCorpusAndTrickyText) {
  std::vector<std::string> lines = TrickyLines();
  const auto corpus = TinyTokenizerCorpus();
  for (size_t i = 0; i < corpus.size(); i += 7) lines.push_back(corpus[i]);
  const auto want = ReferenceEncode(path_, lines);
  ASSERT_EQ(want.size(), lines.size()) << "mfpo-spm-train encode failed";
  auto model = SentencePieceModel::Parse(TinyTokenizerModelBytes(), "tiny");
  ASSERT_TRUE(model.ok()) << model.status();
  int mismatches = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (model->Encode(lines[i]) != want[i]) {
      ++mismatches;
      ADD_FAILURE() << "line " << i << ": '" << lines[i] << "'";
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << lines.size() << " lines";
}

TEST_F(TinyTokenizerTest, DecodeInvertsEncode) {
  for (const std::string& line : TrickyLines()) {
    // SentencePiece's decoder drops every space before the first visible piece (the dummy
    // prefix rule applies while the output is empty), so leading spaces do not round-trip.
    if (line[0] == ' ') continue;
    auto ids = tok_.Encode(line);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(tok_.Decode(*ids), line);
  }
}

TEST_F(TinyTokenizerTest, InvalidUtf8FromBytePiecesDecodesToReplacementCharacters) {
  auto model = SentencePieceModel::Parse(TinyTokenizerModelBytes(), "tiny");
  ASSERT_TRUE(model.ok());
  auto byte_id = [&](const std::string& piece) {
    for (int i = 0; i < model->size(); ++i)
      if (model->piece(i).text == piece) return i;
    return -1;
  };
  // A lone continuation byte, then a valid two-byte sequence (U+00E9) split over two pieces.
  const std::vector<int> ids = {byte_id("<0xB6>"), byte_id("<0xC3>"), byte_id("<0xA9>")};
  EXPECT_EQ(model->Decode(ids), "\xEF\xBF\xBD\xC3\xA9");
}

TEST_F(TinyTokenizerTest, PromptTemplateAndLabels) {
  auto ex = tok_.Example("What color is the cat?", "The cat is red.");
  ASSERT_TRUE(ex.ok()) << ex.status();
  ASSERT_EQ(ex->ids.size(), ex->labels.size());
  EXPECT_EQ(ex->ids.front(), tok_.bos_id());
  EXPECT_EQ(ex->ids.back(), tok_.eos_id());
  EXPECT_EQ(std::count(ex->ids.begin(), ex->ids.end(), tok_.image_id()), 1);
  auto prompt = tok_.PromptIds("What color is the cat?");
  ASSERT_TRUE(prompt.ok());
  // The prompt is a prefix of the example; only what follows it carries labels.
  ASSERT_LT(prompt->size(), ex->ids.size());
  EXPECT_TRUE(std::equal(prompt->begin(), prompt->end(), ex->ids.begin()));
  for (size_t i = 0; i < ex->ids.size(); ++i)
    EXPECT_EQ(ex->labels[i], i < prompt->size() ? kIgnoreLabel : ex->ids[i]) << i;
  std::vector<int64_t> answer(ex->ids.begin() + prompt->size(), ex->ids.end());
  EXPECT_EQ(tok_.Decode(answer), "The cat is red.");
  // The template text. Each chunk around <image> gets SentencePiece's dummy-prefix space, as
  // in LLaVA's golden ids (..., ':', '▁', <image>, '▁', '\n', ...), hence two spaces here.
  std::vector<int64_t> text_ids(prompt->begin() + 1, prompt->end());
  EXPECT_EQ(tok_.Decode(text_ids), "USER:  \nWhat color is the cat? ASSISTANT:");
  // Expansion keeps labels aligned.
  ExpandImageTokens(tok_.image_id(), 64, &ex->ids, &ex->labels);
  EXPECT_EQ(std::count(ex->ids.begin(), ex->ids.end(), tok_.image_id()), 64);
  EXPECT_EQ(ex->ids.size(), ex->labels.size());
}

TEST_F(TinyTokenizerTest, PlaceholderInsideAnswerIsRejected) {
  EXPECT_FALSE(tok_.Example("q", "an <image> answer").ok());
  EXPECT_FALSE(tok_.PromptIds("<image> twice").ok());
}

TEST(Tokenizer, RejectsImageIdInsideVocabularyAndGarbageModels) {
  auto t = Tokenizer::FromSerialized(TinyTokenizerModelBytes(), 5, 6, "tiny");
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::StrContains(t.status().message(), "collides")) << t.status();
  auto g = Tokenizer::FromSerialized("\x0a\xff\xff\xff garbage", 32000, 32001, "junk.model");
  ASSERT_FALSE(g.ok());
  EXPECT_TRUE(absl::StrContains(g.status().message(), "junk.model")) << g.status();
  auto missing = Tokenizer::FromFile("/nonexistent/tokenizer.model", 32000, 32001);
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
}

TEST(Tokenizer, RealLlamaTokenizerGoldenIds) {
  const char* path = std::getenv("MFPO_LLAMA_TOKENIZER");
  if (path == nullptr || !fs::exists(path))
    GTEST_SKIP() << "set MFPO_LLAMA_TOKENIZER to a Llama/LLaVA-1.5 tokenizer.model to run this "
                    "check (none ships here: no downloads)";
  auto t = Tokenizer::FromFile(path, 32000, 32001);
  ASSERT_TRUE(t.ok()) << t.status();
  auto ids = t->Encode("USER: <image>\nWhat's the content of the image?\nASSISTANT:");
  ASSERT_TRUE(ids.ok());
  ids->insert(ids->begin(), t->bos_id());
  const std::vector<int64_t> head = {1, 3148, 1001, 29901, 29871, 32000, 29871, 13, 5618};
  const std::vector<int64_t> tail = {22933, 9047, 13566, 29901};
  ASSERT_GE(ids->size(), head.size() + tail.size());
  EXPECT_EQ(std::vector<int64_t>(ids->begin(), ids->begin() + head.size()), head);
  EXPECT_EQ(std::vector<int64_t>(ids->end() - tail.size(), ids->end()), tail);
}

}  // namespace
}  // namespace mfpo
