#include "datagen/scene_world.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/match.h"
#include "datagen/diffusion_noise.h"

namespace mfpo {
namespace {

cv::Vec3b ColourOf(const std::string& name) {
  for (const auto& c : WorldColours())
    if (c.name == name) return c.rgb;
  return {};
}

TEST(SceneWorld, DeterministicBySeed) {
  WorldOptions o;
  o.seed = 42;
  for (int i = 0; i < 20; ++i) {
    cv::Mat a, b;
    WorldSample sa = GenerateWorldSample(o, "train", i, &a);
    WorldSample sb = GenerateWorldSample(o, "train", i, &b);
    EXPECT_EQ(cv::norm(a, b, cv::NORM_INF), 0.0);
    EXPECT_EQ(sa.caption, sb.caption);
    ASSERT_EQ(sa.questions.size(), sb.questions.size());
  }
  o.seed = 43;
  cv::Mat c, d;
  GenerateWorldSample(o, "train", 0, &c);
  o.seed = 42;
  GenerateWorldSample(o, "train", 0, &d);
  EXPECT_GT(cv::norm(c, d, cv::NORM_INF), 0.0);
}

// Every ground-truth object is drawn where its box says: a good share of the box's pixels have
// exactly the object's colour (the background never does: it is pale and noisy), and no pixel of
// that colour lies far outside all boxes of that colour.
TEST(SceneWorld, LabelsAgreeWithPixels) {
  WorldOptions o;
  o.seed = 7;
  int checked = 0;
  for (const std::string split : {"train", "test"}) {
    for (int i = 0; i < 200; ++i) {
      cv::Mat img;
      WorldSample s = GenerateWorldSample(o, split, i, &img);
      ASSERT_FALSE(s.objects.empty());
      for (const auto& obj : s.objects) {
        ASSERT_GE(obj.x0, 0);
        ASSERT_LE(obj.x1, img.cols);
        ASSERT_GE(obj.y0, 0);
        ASSERT_LE(obj.y1, img.rows);
        const cv::Vec3b want = ColourOf(obj.colour);
        int inside = 0;
        for (int y = obj.y0; y < obj.y1; ++y)
          for (int x = obj.x0; x < obj.x1; ++x) inside += img.at<cv::Vec3b>(y, x) == want;
        const double share = double(inside) / ((obj.x1 - obj.x0) * (obj.y1 - obj.y0));
        EXPECT_GT(share, 0.15) << s.id << " " << obj.kind << " " << obj.colour;
        ++checked;
      }
      for (int y = 0; y < img.rows; ++y)
        for (int x = 0; x < img.cols; ++x) {
          bool covered = false, coloured = false;
          for (const auto& obj : s.objects) {
            if (img.at<cv::Vec3b>(y, x) != ColourOf(obj.colour)) continue;
            coloured = true;
            covered = covered || (x >= obj.x0 && x < obj.x1 && y >= obj.y0 && y < obj.y1);
          }
          if (coloured) { ASSERT_TRUE(covered) << s.id << " pixel " << x << "," << y; }
        }
    }
  }
  EXPECT_GT(checked, 400);
}

TEST(SceneWorld, TrainHasPriorsAndTestBreaksThem) {
  WorldOptions o;
  o.seed = 3;
  std::map<std::string, std::string> partner, typical;
  for (const auto& k : WorldKinds()) {
    partner[k.name] = k.partner;
    typical[k.name] = k.typical_colour;
  }
  auto rates = [&](const std::string& split, double* cooccur, double* typical_rate) {
    int pairs = 0, anchors = 0, typ = 0, objs = 0;
    for (int i = 0; i < 400; ++i) {
      cv::Mat img;
      WorldSample s = GenerateWorldSample(o, split, i, &img);
      std::map<std::string, int> present;
      for (const auto& obj : s.objects) present[obj.kind]++;
      const std::string& anchor = s.objects.front().kind;
      anchors++;
      pairs += present.count(partner[anchor]) > 0;
      for (const auto& obj : s.objects) {
        objs++;
        typ += obj.colour == typical[obj.kind];
      }
    }
    *cooccur = double(pairs) / anchors;
    *typical_rate = double(typ) / objs;
  };
  double train_co, train_typ, test_co, test_typ;
  rates("train", &train_co, &train_typ);
  rates("test", &test_co, &test_typ);
  std::printf("co-occurrence of partners: train %.2f, test %.2f; typical colours: train %.2f, test %.2f\n",
              train_co, test_co, train_typ, test_typ);
  EXPECT_GT(train_co, 0.7);
  EXPECT_LT(test_co, 0.35);
  EXPECT_GT(train_typ, 0.7);
  EXPECT_LT(test_typ, 0.25);
}

TEST(SceneWorld, QuestionsAreConsistentWithGroundTruth) {
  WorldOptions o;
  for (int i = 0; i < 100; ++i) {
    cv::Mat img;
    WorldSample s = GenerateWorldSample(o, "val", i, &img);
    std::map<std::string, int> count;
    for (const auto& obj : s.objects) count[obj.kind]++;
    for (const auto& q : s.questions) {
      EXPECT_NE(q.chosen, q.rejected) << s.id << " " << q.type;
      if (q.type == "exist_no") {
        const std::string kind = q.question.substr(11, q.question.find(" in the image") - 11);
        EXPECT_EQ(count.count(kind), 0u) << q.question;
      }
      if (q.type == "count") { EXPECT_EQ(q.answer, NumberWord(count[s.objects[0].kind])); }
      if (q.type == "colour") { EXPECT_EQ(q.answer, s.objects[0].colour); }
    }
  }
}

TEST(SceneWorld, WritesAFewThousandSamplesWithAllFiles) {
  const auto dir = std::filesystem::temp_directory_path() / ("world_test_" + std::to_string(::getpid()));
  WorldOptions o;
  o.train = 300;
  o.val = 30;
  o.test = 50;
  ASSERT_TRUE(WriteWorld(dir.string(), o).ok());
  for (const char* f : {"train.jsonl", "val.jsonl", "test.jsonl", "annotations.jsonl", "vocab.txt", "world.json",
                        "images/train-0.png", "images/test-49.png"})
    EXPECT_TRUE(std::filesystem::exists(dir / f)) << f;
  std::ifstream ann(dir / "annotations.jsonl");
  int lines = 0;
  for (std::string l; std::getline(ann, l);) ++lines;
  EXPECT_EQ(lines, 380);
  EXPECT_FALSE(WriteWorld(dir.string(), WorldOptions{.size = 4}).ok());
  std::filesystem::remove_all(dir);
}

TEST(SceneWorld, ShippedSynonymTableMatchesTheGenerator) {
  std::ifstream in(std::string(MFPO_SOURCE_DIR) + "/datagen/data/scene_world_synonyms.txt");
  std::string expected;
  for (const auto& k : WorldKinds()) {
    std::string line;
    for (size_t i = 0; i < k.synonyms.size(); ++i) line += (i ? ", " : "") + k.synonyms[i];
    expected += line + "\n";
  }
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), expected);
}

TEST(DiffusionNoise, OutsideMaskUntouchedInsideMatchesClosedFormAndRerunsAreIdentical) {
  cv::Mat img(64, 64, CV_8UC3, cv::Scalar(100, 150, 200));
  cv::Mat mask = cv::Mat::zeros(64, 64, CV_8UC1);
  mask(cv::Rect(0, 0, 64, 32)).setTo(255);
  auto a = AddDiffusionNoise(img, mask, 500, 9);
  auto b = AddDiffusionNoise(img, mask, 500, 9);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(cv::norm(*a, *b, cv::NORM_INF), 0.0);
  EXPECT_EQ(cv::norm((*a)(cv::Rect(0, 32, 64, 32)), img(cv::Rect(0, 32, 64, 32)), cv::NORM_INF), 0.0);
  // Inside: x_t = sqrt(abar) x0 + sqrt(1 - abar) eps in [-1, 1] units, then clipped to [-1, 1]
  // for storage: the moments of a clipped normal are the closed form to match.
  const double abar = DiffusionAlphaBar(500);
  const double mu = std::sqrt(abar) * (100 / 127.5 - 1.0), sd = std::sqrt(1 - abar);
  auto phi = [](double z) { return std::exp(-0.5 * z * z) / std::sqrt(2 * M_PI); };
  auto cdf = [](double z) { return 0.5 * (1 + std::erf(z / std::sqrt(2.0))); };
  const double al = (-1 - mu) / sd, be = (1 - mu) / sd, p_in = cdf(be) - cdf(al);
  const double want_mean = -cdf(al) + (1 - cdf(be)) + mu * p_in + sd * (phi(al) - phi(be));
  const double want_sq = cdf(al) + (1 - cdf(be)) + (mu * mu + sd * sd) * p_in +
                         sd * ((-1 + mu) * phi(al) - (1 + mu) * phi(be));
  const double want_var = want_sq - want_mean * want_mean;
  double sum = 0, sq = 0;
  const int n = 64 * 32;
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 64; ++x) {
      const double v = (*a).at<cv::Vec3b>(y, x)[0] / 127.5 - 1.0;
      sum += v;
      sq += v * v;
    }
  const double mean = sum / n, var = sq / n - mean * mean;
  // Four standard errors for the mean; 10% for the variance (its standard error is ~3% here).
  EXPECT_NEAR(mean, want_mean, 4 * std::sqrt(want_var / n));
  EXPECT_NEAR(var, want_var, 0.10 * want_var);
  EXPECT_NEAR(abar, 0.0785, 0.002);  // the standard linear schedule's abar at t = 500
  auto c = AddDiffusionNoise(img, cv::Mat(), 500, 10);
  ASSERT_TRUE(c.ok());
  EXPECT_GT(cv::norm(*a, *c, cv::NORM_INF), 0.0);
  EXPECT_FALSE(AddDiffusionNoise(img, mask, 1001, 1).ok());
}

}  // namespace
}  // namespace mfpo
