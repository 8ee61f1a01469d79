// Loss values and gradient signs against hand-computed examples for every variant and ablation.
#include "worker/mfpo_objective.h"

#include <gtest/gtest.h>

#include <cmath>

namespace mfpo {
namespace {

double NegLogSigmoid(double x) { return std::log1p(std::exp(-x)); }

struct Case {
  ResponseLogps policy, reference;
  torch::Tensor tokens;
};

// One sample: policy chosen -10, rejected -12, chosen on m' -11; reference all -11.
// beta 0.1: r_w = 0.1, r_l = -0.1, r_w' = 0.0.
Case OneSample() {
  Case c;
  c.policy.chosen = torch::tensor({-10.0}, torch::requires_grad());
  c.policy.rejected = torch::tensor({-12.0}, torch::requires_grad());
  c.policy.chosen_perturbed = torch::tensor({-11.0}, torch::requires_grad());
  c.reference = {torch::tensor({-11.0}), torch::tensor({-11.0}), torch::tensor({-11.0})};
  c.tokens = torch::tensor({5.0});
  return c;
}

TEST(Objective, MfpoTermsRewardsAndGradientSigns) {
  Case c = OneSample();
  ObjectiveConfig config;
  ObjectiveOutput out = ComputeObjective(config, c.policy, c.reference, c.tokens);
  const double lt = NegLogSigmoid(0.2), li = NegLogSigmoid(0.1), lm = NegLogSigmoid(0.1);
  EXPECT_NEAR(out.metrics["loss_text"], lt, 1e-6);
  EXPECT_NEAR(out.metrics["loss_image"], li, 1e-6);
  EXPECT_NEAR(out.metrics["loss_margin"], lm, 1e-6);
  EXPECT_NEAR(out.metrics["loss"], lt + li + lm, 1e-6);
  EXPECT_NEAR(out.metrics["reward_chosen"], 0.1, 1e-6);
  EXPECT_NEAR(out.metrics["reward_rejected"], -0.1, 1e-6);
  EXPECT_NEAR(out.metrics["reward_chosen_perturbed"], 0.0, 1e-6);
  EXPECT_NEAR(out.metrics["margin_text"], 0.2, 1e-6);
  EXPECT_NEAR(out.metrics["margin_image"], 0.1, 1e-6);
  EXPECT_EQ(out.metrics["reward_acc_text"], 1.0);
  EXPECT_EQ(out.metrics["reward_acc_image"], 1.0);
  out.loss.backward();
  // d/d logp_w = -beta * (sig(-0.2) + sig(-0.1) + sig(-0.1)); the others push their logp down.
  auto sig = [](double x) { return 1 / (1 + std::exp(-x)); };
  EXPECT_NEAR(c.policy.chosen.grad().item<double>(), -0.1 * (sig(-0.2) + 2 * sig(-0.1)), 1e-6);
  EXPECT_NEAR(c.policy.rejected.grad().item<double>(), 0.1 * sig(-0.2), 1e-6);
  EXPECT_NEAR(c.policy.chosen_perturbed.grad().item<double>(), 0.1 * sig(-0.1), 1e-6);
}

// Two samples; the second has no image-preference pair (datagen found no region for its
// keywords): its image term is left out of the loss and of the image metrics.
TEST(Objective, ExamplesWithoutAnImagePairHaveNoImageTerm) {
  ResponseLogps policy, reference;
  policy.chosen = torch::tensor({-10.0, -10.0}, torch::requires_grad());
  policy.rejected = torch::tensor({-12.0, -12.0}, torch::requires_grad());
  policy.chosen_perturbed = torch::tensor({-11.0, -9.0}, torch::requires_grad());
  policy.image_pair = torch::tensor({1.0, 0.0});
  reference = {torch::full({2}, -11.0), torch::full({2}, -11.0), torch::full({2}, -11.0)};
  ObjectiveOutput out = ComputeObjective(ObjectiveConfig{}, policy, reference, torch::tensor({5.0, 5.0}));
  const double lt = NegLogSigmoid(0.2), li = NegLogSigmoid(0.1), lm = NegLogSigmoid(0.1);
  EXPECT_NEAR(out.metrics["loss"], ((lt + li + lm) + (lt + lm)) / 2, 1e-6);
  EXPECT_NEAR(out.metrics["loss_image"], li, 1e-6);        // the first sample's only
  EXPECT_NEAR(out.metrics["reward_acc_image"], 1.0, 1e-6);  // r_w 0.1 > r_w' 0.0 (the second: 0.1 < 0.2)
  EXPECT_NEAR(out.metrics["image_pairs"], 0.5, 1e-6);
  out.loss.backward();
  EXPECT_GT(policy.chosen_perturbed.grad()[0].item<double>(), 0);  // descent lowers log p(y_w | m')
  EXPECT_EQ(policy.chosen_perturbed.grad()[1].item<double>(), 0);  // untouched
  // No pair at all: no image metrics, and the loss is text + margin.
  policy.image_pair = torch::zeros({2});
  ObjectiveOutput none = ComputeObjective(ObjectiveConfig{}, policy, reference, torch::tensor({5.0, 5.0}));
  EXPECT_EQ(none.metrics.count("loss_image"), 0u);
  EXPECT_NEAR(none.metrics["loss"], lt + lm, 1e-6);
}

TEST(Objective, AblationsAreSubsetsOfTheTerms) {
  const double lt = NegLogSigmoid(0.2), li = NegLogSigmoid(0.1), lm = NegLogSigmoid(0.1);
  struct Ablation {
    double wt, wi, wm, expected;
  };
  for (const Ablation& a : {Ablation{1, 0, 0, lt}, Ablation{1, 1, 0, lt + li}, Ablation{1, 0, 1, lt + lm},
                            Ablation{0, 1, 1, li + lm}, Ablation{2, 0.5, 0.25, 2 * lt + 0.5 * li + 0.25 * lm}}) {
    Case c = OneSample();
    ObjectiveConfig config;
    config.w_text = a.wt;
    config.w_image = a.wi;
    config.w_margin = a.wm;
    ObjectiveOutput out = ComputeObjective(config, c.policy, c.reference, c.tokens);
    EXPECT_NEAR(out.metrics["loss"], a.expected, 1e-6) << a.wt << " " << a.wi << " " << a.wm;
    out.loss.backward();
    // The perturbed log-prob only gets a gradient through the image term.
    const auto g = c.policy.chosen_perturbed.grad();
    if (a.wi == 0) EXPECT_TRUE(!g.defined() || g.item<double>() == 0.0);
    else EXPECT_GT(g.item<double>(), 0.0);
  }
}

TEST(Objective, DpoIsTheTextTermAlone) {
  Case c = OneSample();
  ObjectiveConfig config;
  config.variant = ObjectiveVariant::kDpo;
  ObjectiveOutput out = ComputeObjective(config, c.policy, c.reference, c.tokens);
  EXPECT_NEAR(out.metrics["loss"], NegLogSigmoid(0.2), 1e-6);
  EXPECT_EQ(out.metrics.count("loss_image"), 0u);
  out.loss.backward();
  EXPECT_LT(c.policy.chosen.grad().item<double>(), 0);
  EXPECT_GT(c.policy.rejected.grad().item<double>(), 0);
  EXPECT_FALSE(config.needs_perturbed());
}

TEST(Objective, MdpoUsesTheSameThreeTerms) {
  Case c = OneSample();
  ObjectiveConfig config;
  config.variant = ObjectiveVariant::kMdpo;
  ObjectiveOutput out = ComputeObjective(config, c.policy, c.reference, c.tokens);
  EXPECT_NEAR(out.metrics["loss"], NegLogSigmoid(0.2) + 2 * NegLogSigmoid(0.1), 1e-6);
  EXPECT_TRUE(config.needs_perturbed());
}

TEST(Objective, MarginDeltaAndBeta) {
  Case c = OneSample();
  ObjectiveConfig config;
  config.beta = 0.5;
  config.delta = 0.3;
  ObjectiveOutput out = ComputeObjective(config, c.policy, c.reference, c.tokens);
  // r_w = 0.5, r_l = -0.5, r_w' = 0.
  EXPECT_NEAR(out.metrics["loss_text"], NegLogSigmoid(1.0), 1e-6);
  EXPECT_NEAR(out.metrics["loss_image"], NegLogSigmoid(0.5), 1e-6);
  EXPECT_NEAR(out.metrics["loss_margin"], NegLogSigmoid(0.2), 1e-6);
}

TEST(Objective, SftIsTheMeanTokenNll) {
  ResponseLogps policy{torch::tensor({-10.0, -4.0}, torch::requires_grad()), {}, {}};
  ObjectiveConfig config;
  config.variant = ObjectiveVariant::kSft;
  ObjectiveOutput out = ComputeObjective(config, policy, {}, torch::tensor({5.0, 2.0}));
  EXPECT_NEAR(out.metrics["loss"], (10.0 / 5 + 4.0 / 2) / 2, 1e-6);
  out.loss.backward();
  EXPECT_NEAR(policy.chosen.grad()[0].item<double>(), -1.0 / 5 / 2, 1e-6);
  EXPECT_FALSE(config.needs_reference());
}

TEST(Objective, BatchMeansAndAccuracies) {
  ResponseLogps policy{torch::tensor({-10.0, -13.0}), torch::tensor({-12.0, -11.0}), torch::tensor({-11.0, -12.0})};
  ResponseLogps ref{torch::tensor({-11.0, -11.0}), torch::tensor({-11.0, -11.0}), torch::tensor({-11.0, -11.0})};
  ObjectiveOutput out = ComputeObjective(ObjectiveConfig(), policy, ref, torch::tensor({1.0, 1.0}));
  EXPECT_DOUBLE_EQ(out.metrics["reward_acc_text"], 0.5);   // second sample prefers rejected
  EXPECT_DOUBLE_EQ(out.metrics["reward_acc_image"], 0.5);  // -0.2 vs -0.1 on the second
  const double expected = (NegLogSigmoid(0.2) + NegLogSigmoid(0.1) + NegLogSigmoid(0.1) +
                           NegLogSigmoid(-0.2) + NegLogSigmoid(-0.1) + NegLogSigmoid(-0.2)) / 2;
  EXPECT_NEAR(out.metrics["loss"], expected, 1e-6);
}

TEST(Objective, VariantNames) {
  EXPECT_FALSE(ParseObjectiveVariant("ppo").ok());
  for (const char* n : {"sft", "dpo", "mdpo", "mfpo"}) {
    auto v = ParseObjectiveVariant(n);
    ASSERT_TRUE(v.ok());
    EXPECT_STREQ(ObjectiveVariantName(*v), n);
  }
}

}  // namespace
}  // namespace mfpo
