// Keyword selection: weighted PageRank against hand-computed scores, the content-word filter,
// semantic edges from word vectors, and precision on the embedded world's captions.
#include "datagen/keywords.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "datagen/scene_world.h"
#include "common/text/object_text.h"

namespace mfpo {
namespace {

TEST(WeightedPageRank, StarGraphMatchesTheClosedForm) {
  // Centre 0 joined to leaves 1..3 with weight 1. With s_l = (1-d)/4 + d s_c / 3 and
  // s_c = (1-d)/4 + 3 d s_l: s_c = (1 + 3d) / (4 (1 + d)), s_l = (1 - s_c) / 3.
  const double d = 0.85;
  std::vector<double> w(16, 0.0);
  for (int leaf = 1; leaf < 4; ++leaf) w[leaf] = w[leaf * 4] = 1.0;
  int iterations = 0;
  auto s = WeightedPageRank(w, 4, {d, 1e-12, 1000}, &iterations);
  const double centre = (1 + 3 * d) / (4 * (1 + d));
  EXPECT_NEAR(s[0], centre, 1e-9);
  for (int leaf = 1; leaf < 4; ++leaf) EXPECT_NEAR(s[leaf], (1 - centre) / 3, 1e-9);
  EXPECT_LT(iterations, 1000);
}

TEST(WeightedPageRank, WeightedChainMatchesHandComputation) {
  // a -2- b -1- c. s_b = (1-d)/3 + d (s_a + s_c), s_a = (1-d)/3 + d (2/3) s_b,
  // s_c = (1-d)/3 + d (1/3) s_b  =>  s_b = 0.135 / 0.2775 at d = 0.85.
  std::vector<double> w = {0, 2, 0, 2, 0, 1, 0, 1, 0};
  auto s = WeightedPageRank(w, 3, {0.85, 1e-12, 1000});
  const double b = 0.135 / 0.2775;
  EXPECT_NEAR(s[1], b, 1e-9);
  EXPECT_NEAR(s[0], 0.05 + 0.85 * 2.0 / 3.0 * b, 1e-9);
  EXPECT_NEAR(s[2], 0.05 + 0.85 / 3.0 * b, 1e-9);
  EXPECT_NEAR(s[0] + s[1] + s[2], 1.0, 1e-12);
}

TEST(WeightedPageRank, IsolatedNodeKeepsTheTeleportShare) {
  // 0 - 1 joined, 2 isolated (dangling): by symmetry s_0 = s_1, and s_2 = (1-d)/3 + d s_2 / 3.
  std::vector<double> w = {0, 1, 0, 1, 0, 0, 0, 0, 0};
  auto s = WeightedPageRank(w, 3, {0.85, 1e-12, 1000});
  const double isolated = (0.15 / 3) / (1 - 0.85 / 3);
  EXPECT_NEAR(s[2], isolated, 1e-9);
  EXPECT_NEAR(s[0], (1 - isolated) / 2, 1e-9);
}

TEST(Keywords, StopWordsAndAttributesNeverBecomeKeywords) {
  KeywordOptions o;
  o.top_k = 10;
  auto k = ExtractKeywords("There are two red balls next to a big brown box in the image.", nullptr, o);
  std::set<std::string> words;
  for (const auto& kw : k) words.insert(kw.word);
  EXPECT_EQ(words, (std::set<std::string>{"ball", "box"}));
  EXPECT_TRUE(ExtractKeywords("Yes, it is there.", nullptr, o).empty());
  EXPECT_TRUE(IsNonContentWord("the"));
  EXPECT_TRUE(IsNonContentWord("42"));
  EXPECT_FALSE(IsNonContentWord("giraffe"));
}

TEST(Keywords, SemanticEdgesFromWordVectors) {
  const std::string path = (std::filesystem::temp_directory_path() / "mfpo_glove_test.txt").string();
  std::ofstream(path) << "cat 1 0 0\ndog 0.9 0.1 0\ntree 0 0 1\numbrella 0 1 0\n";
  auto vectors = LoadGloveVectors(path);
  ASSERT_TRUE(vectors.ok()) << vectors.status();
  KeywordOptions o;
  o.alpha = 0.0;  // semantic edges only
  o.gamma = 0.0;
  o.top_k = 4;
  // cat and dog are similar; tree and umbrella are orthogonal to everything: isolated.
  auto k = ExtractKeywords("tree cat umbrella dog", vectors->get(), o);
  ASSERT_EQ(k.size(), 4u);
  EXPECT_EQ(std::set<std::string>({k[0].word, k[1].word}), (std::set<std::string>{"cat", "dog"}));
  EXPECT_GT(k[1].score, k[2].score);

  std::ofstream(path) << "cat 1 0 0\ndog 0.9 x 0\n";
  auto bad = LoadGloveVectors(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), path + ":2")) << bad.status();
  std::ofstream(path) << "cat 1 0 0\ndog 0.9 0.1\n";
  bad = LoadGloveVectors(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), ":2: 2 components")) << bad.status();
  std::filesystem::remove(path);
}

TEST(Keywords, MiddleOfAChainRanksFirstAndScoresSumToOne) {
  // Positional edges only (no vectors), with the default contextual refinement: the middle word
  // of a three-word chain has the most edge weight and wins; the scores are a distribution.
  KeywordOptions o;
  o.top_k = 3;
  auto k = ExtractKeywords("apple banana cherry", nullptr, o);
  ASSERT_EQ(k.size(), 3u);
  EXPECT_EQ(k[0].word, "banana");
  double sum = 0;
  for (const auto& kw : k) sum += kw.score;
  EXPECT_NEAR(sum, 1.0, 1e-9);
}

// On the world's captions and chosen descriptions, the top-3 keywords are the objects drawn.
TEST(Keywords, TopThreeAreGroundTruthObjectsOnTheWorld) {
  WorldOptions world;
  KeywordOptions o;
  o.top_k = 3;
  int total = 0, correct = 0, samples = 0;
  for (const char* split : {"train", "test"}) {
    for (int i = 0; i < 200; ++i) {
      cv::Mat image;
      WorldSample s = GenerateWorldSample(world, split, i, &image);
      std::set<std::string> truth;
      for (const auto& obj : s.objects) truth.insert(obj.kind);
      std::vector<std::string> texts = {s.caption};
      for (const auto& q : s.questions)
        if (q.type == "exist_yes" || q.type == "colour" || q.type == "count") texts.push_back(q.chosen);
      for (const std::string& text : texts) {
        ++samples;
        for (const auto& kw : ExtractKeywords(text, nullptr, o)) {
          ++total;
          correct += truth.count(kw.word) > 0;
        }
      }
    }
  }
  const double precision = static_cast<double>(correct) / std::max(1, total);
  std::printf("keyword precision on the world: %d / %d top-3 keywords are drawn objects (%.1f%%) over %d texts\n",
              correct, total, 100 * precision, samples);
  EXPECT_GE(precision, 0.8);
  EXPECT_GT(total, samples);  // at least one keyword per text on average
}

}  // namespace
}  // namespace mfpo
