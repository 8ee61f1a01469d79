#include "evaluator/hallucination_metrics.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace mfpo {
namespace {

const std::string kCoco = std::string(MFPO_SOURCE_DIR) + "/common/text/coco_synonyms.txt";

class ChairTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto v = ObjectVocabulary::FromFile(kCoco);
    ASSERT_TRUE(v.ok()) << v.status();
    vocab_ = *v;
  }
  std::vector<std::string> Canon(const std::string& text) {
    std::vector<std::string> out;
    for (const auto& m : vocab_.Extract(text)) out.push_back(m.canonical);
    return out;
  }
  ObjectVocabulary vocab_;
};

TEST_F(ChairTest, TableHasTheEightyCocoCategories) {
  EXPECT_EQ(vocab_.categories().size(), 80u);
  const auto tv = vocab_.Synonyms("tv");
  EXPECT_NE(std::find(tv.begin(), tv.end(), "television"), tv.end());
  EXPECT_EQ(std::find(tv.begin(), tv.end(), "tv"), tv.end());
}

TEST_F(ChairTest, PluralsSynonymsAndTwoWordObjects) {
  EXPECT_EQ(Canon("Two teddy bears on a bench with several people."),
            (std::vector<std::string>{"teddy bear", "bench", "person"}));
  EXPECT_EQ(Canon("A man rides a motor bike past hot-dogs and traffic lights."),
            (std::vector<std::string>{"person", "motorcycle", "hot dog", "traffic light"}));
  EXPECT_EQ(Canon("Wine glasses, knives and buses."),
            (std::vector<std::string>{"wine glass", "knife", "bus"}));
}

TEST_F(ChairTest, SpecialCases) {
  EXPECT_EQ(Canon("A baby elephant follows an adult giraffe."),
            (std::vector<std::string>{"elephant", "giraffe"}));
  EXPECT_EQ(Canon("The seat of the toilet is up."), (std::vector<std::string>{"toilet"}));
  EXPECT_EQ(Canon("A toilet seat."), (std::vector<std::string>{"toilet"}));
  EXPECT_EQ(Canon("A wooden seat."), (std::vector<std::string>{"chair"}));
  EXPECT_EQ(Canon("A man in a bow tie."), (std::vector<std::string>{"person", "tie"}));
  EXPECT_EQ(Canon("A passenger train."), (std::vector<std::string>{"train"}));
}

TEST_F(ChairTest, HandComputedScores) {
  ChairMetrics m;
  // 4 mentions, 1 hallucinated (hot dog); covers person, motorcycle, dog.
  ChairSample a = ScoreChair(vocab_, "A man riding a motorcycle next to two dogs and a hot dog stand.",
                             {{"person", "motorcycle", "dog"}, {}});
  EXPECT_EQ(a.mentions.size(), 4u);
  EXPECT_EQ(a.hallucinated, std::vector<std::string>{"hot dog"});
  EXPECT_EQ(a.covered, 3);
  m.Add(a);
  // Repeated hallucinated mentions each count.
  ChairSample b = ScoreChair(vocab_, "A cat, another cat and a kitten.", {{"dog"}, {}});
  EXPECT_EQ(b.hallucinated.size(), 3u);
  EXPECT_EQ(b.covered, 0);
  m.Add(b);
  // Mentions in reference captions are not hallucinations; truth objects may be synonyms.
  ChairSample c = ScoreChair(vocab_, "A puppy sleeps on the sofa.", {{"puppy"}, {"a dog on a couch"}});
  EXPECT_TRUE(c.hallucinated.empty());
  EXPECT_EQ(c.truth_objects, 2);  // dog (annotated as puppy) and couch (from the caption)
  EXPECT_EQ(c.covered, 2);
  m.Add(c);
  EXPECT_EQ(m.responses, 3);
  EXPECT_EQ(m.mentions, 4 + 3 + 2);
  EXPECT_EQ(m.hallucinated_mentions, 4);
  EXPECT_DOUBLE_EQ(m.chair_s(), 2.0 / 3);
  EXPECT_DOUBLE_EQ(m.chair_i(), 4.0 / 9);
  EXPECT_DOUBLE_EQ(m.recall(), 5.0 / 6);  // (3 + 0 + 2) / (3 + 1 + 2)
  EXPECT_EQ(m.empty_responses, 0);
  // A degenerate answer names nothing: no hallucination, but it is counted as empty.
  m.Add(ScoreChair(vocab_, "There is a green There.", {{"dog"}, {}}));
  EXPECT_EQ(m.empty_responses, 1);
  EXPECT_DOUBLE_EQ(m.empty(), 1.0 / 4);
  EXPECT_DOUBLE_EQ(m.chair_s(), 2.0 / 4);
}

// Recall uses the same ground truth as hallucination: annotated objects plus the objects the
// reference captions name. By hand: truth {dog (annotated), couch, frisbee (captions)} = 3
// objects; the answer names dog and couch (covered 2) and a cat (hallucinated).
TEST_F(ChairTest, RecallCountsObjectsTheCaptionsAdd) {
  ChairSample s = ScoreChair(vocab_, "A dog on a sofa next to a cat.",
                             {{"dog"}, {"a puppy on a couch", "a dog catching a frisbee"}});
  EXPECT_EQ(s.truth_objects, 3);
  EXPECT_EQ(s.covered, 2);
  EXPECT_EQ(s.hallucinated, std::vector<std::string>{"cat"});
  ChairMetrics m;
  m.Add(s);
  EXPECT_DOUBLE_EQ(m.recall(), 2.0 / 3);
  EXPECT_DOUBLE_EQ(m.chair_i(), 1.0 / 3);
}

TEST(ObjectText, SingularizeAndTokenize) {
  EXPECT_EQ(Singularize("boxes"), "box");
  EXPECT_EQ(Singularize("houses"), "house");
  EXPECT_EQ(Singularize("puppies"), "puppy");
  EXPECT_EQ(Singularize("glass"), "glass");
  EXPECT_EQ(Singularize("bus"), "bus");
  EXPECT_EQ(Singularize("benches"), "bench");
  EXPECT_EQ(Singularize("children"), "child");
  EXPECT_EQ(TokenizeWords("There's a Dog, isn't it?"),
            (std::vector<std::string>{"there", "a", "dog", "isn", "it"}));
}

TEST(ObjectText, BadTablesAreRejected) {
  EXPECT_FALSE(ObjectVocabulary::FromText("", "empty.txt").ok());
  auto dup = ObjectVocabulary::FromText("cat, kitty\ndog, kitty\n", "dup.txt");
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("dup.txt:2"), std::string::npos) << dup.status();
}

TEST(Pope, AnswerParsing) {
  EXPECT_FALSE(PopeAnswerIsYes("No, there is not."));
  EXPECT_FALSE(PopeAnswerIsYes("There is not a cat in the image."));
  EXPECT_TRUE(PopeAnswerIsYes("Yes. There is no dog, though."));
  EXPECT_TRUE(PopeAnswerIsYes("There is a cat."));
  EXPECT_TRUE(PopeAnswerIsYes("Nothing suggests otherwise"));
}

TEST(Pope, QuestionSamplingSettings) {
  std::vector<PopeImage> images = {{"a", {"cat", "dog", "sofa", "tv"}},
                                   {"b", {"cat", "dog"}},
                                   {"c", {"dog", "frisbee"}},
                                   {"d", {"car"}}};
  const std::vector<std::string> vocab = {"car", "cat", "dog", "frisbee", "sofa", "tv", "zebra"};
  for (PopeSetting s : {PopeSetting::kRandom, PopeSetting::kPopular, PopeSetting::kAdversarial}) {
    auto qs = BuildPopeQuestions(images, vocab, s, 3, 1);
    int yes = 0;
    for (const auto& q : qs) {
      const auto& img = *std::find_if(images.begin(), images.end(), [&](auto& i) { return i.image_id == q.image_id; });
      const bool present = std::count(img.objects.begin(), img.objects.end(), q.object) > 0;
      EXPECT_EQ(present, q.label_yes) << q.id;
      yes += q.label_yes;
    }
    EXPECT_EQ(yes, 3 + 2 + 2 + 1);
    EXPECT_EQ(qs.size(), 16u);
  }
  // Image d (car): popular negatives are the most frequent objects: dog (3), then cat (2).
  auto pop = BuildPopeQuestions(images, vocab, PopeSetting::kPopular, 3, 1);
  auto neg_d = std::find_if(pop.begin(), pop.end(), [](auto& q) { return q.image_id == "d" && !q.label_yes; });
  EXPECT_EQ(neg_d->object, "dog");
  // Image c (dog, frisbee): adversarial negatives co-occur with dog most: cat (2).
  auto adv = BuildPopeQuestions(images, vocab, PopeSetting::kAdversarial, 3, 1);
  std::vector<std::string> neg_c;
  for (auto& q : adv)
    if (q.image_id == "c" && !q.label_yes) neg_c.push_back(q.object);
  ASSERT_FALSE(neg_c.empty());
  EXPECT_EQ(neg_c[0], "cat");
}

TEST(Pope, Metrics) {
  PopeMetrics m;
  m.Add(true, true);
  m.Add(true, false);
  m.Add(false, true);
  m.Add(false, false);
  m.Add(true, true);
  EXPECT_DOUBLE_EQ(m.accuracy(), 3.0 / 5);
  EXPECT_DOUBLE_EQ(m.precision(), 2.0 / 3);
  EXPECT_DOUBLE_EQ(m.recall(), 2.0 / 3);
  EXPECT_DOUBLE_EQ(m.f1(), 2.0 / 3);
  EXPECT_DOUBLE_EQ(m.yes_ratio(), 3.0 / 5);
}

TEST(Amber, GenerativeMetricsOnAFixture) {
  std::vector<AmberTruth> truth = {{{"dog", "grass"}, {"cat", "frisbee"}}, {{"car"}, {"person"}}};
  AmberScorer scorer({{"dog", {"puppy"}}}, {"background"}, truth);
  AmberMetrics m;
  scorer.Add("A puppy on the grass with a frisbee and a cat in the background.", truth[0], &m);
  scorer.Add("A red car.", truth[1], &m);
  EXPECT_EQ(m.mentioned, 5 + 1);  // puppy grass frisbee cat background; car
  EXPECT_EQ(m.hallucinated, 2);
  EXPECT_DOUBLE_EQ(m.chair(), 2.0 / 6);
  EXPECT_DOUBLE_EQ(m.cover(), 3.0 / 3);
  EXPECT_DOUBLE_EQ(m.hal(), 0.5);
  EXPECT_DOUBLE_EQ(m.cog(), 2.0 / 3);
}

}  // namespace
}  // namespace mfpo
