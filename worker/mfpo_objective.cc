#include "worker/mfpo_objective.h"

#include "absl/strings/str_cat.h"

namespace mfpo {

absl::StatusOr<ObjectiveVariant> ParseObjectiveVariant(const std::string& name) {
  if (name == "sft") return ObjectiveVariant::kSft;
  if (name == "dpo") return ObjectiveVariant::kDpo;
  if (name == "mdpo") return ObjectiveVariant::kMdpo;
  if (name == "mfpo") return ObjectiveVariant::kMfpo;
  return absl::InvalidArgumentError(absl::StrCat("objective '", name, "' is not one of sft, dpo, mdpo, mfpo"));
}

const char* ObjectiveVariantName(ObjectiveVariant v) {
  switch (v) {
    case ObjectiveVariant::kSft: return "sft";
    case ObjectiveVariant::kDpo: return "dpo";
    case ObjectiveVariant::kMdpo: return "mdpo";
    default: return "mfpo";
  }
}

ObjectiveOutput ComputeObjective(const ObjectiveConfig& c, const ResponseLogps& policy,
                                 const ResponseLogps& reference, const torch::Tensor& chosen_tokens) {
  ObjectiveOutput out;
  auto mean = [](const torch::Tensor& t) { return t.detach().to(torch::kFloat64).mean().item<double>(); };
  out.metrics["logp_chosen"] = mean(policy.chosen);
  if (c.variant == ObjectiveVariant::kSft) {
    torch::Tensor nll = -(policy.chosen / chosen_tokens.to(policy.chosen.dtype()).clamp_min(1)).mean();
    out.loss = nll;
    out.metrics["loss_sft"] = nll.item<double>();
    out.metrics["loss"] = out.metrics["loss_sft"];
    return out;
  }
  const torch::Tensor r_w = c.beta * (policy.chosen - reference.chosen);
  const torch::Tensor r_l = c.beta * (policy.rejected - reference.rejected);
  out.metrics["logp_rejected"] = mean(policy.rejected);
  out.metrics["reward_chosen"] = mean(r_w);
  out.metrics["reward_rejected"] = mean(r_l);
  out.metrics["margin_text"] = mean(r_w - r_l);
  out.metrics["reward_acc_text"] = mean((r_w > r_l).to(torch::kFloat32));
  const torch::Tensor l_text = -torch::log_sigmoid(r_w - r_l);
  out.metrics["loss_text"] = mean(l_text);
  const bool three_terms = c.variant == ObjectiveVariant::kMdpo || c.variant == ObjectiveVariant::kMfpo;
  torch::Tensor loss = (three_terms ? c.w_text : 1.0) * l_text;
  if (three_terms && policy.chosen_perturbed.defined()) {
    const torch::Tensor r_wp = c.beta * (policy.chosen_perturbed - reference.chosen_perturbed);
    const torch::Tensor pair = policy.image_pair.defined()
                                   ? policy.image_pair.to(r_w.dtype())
                                   : torch::ones_like(r_w.detach());
    const double pairs = pair.sum().item<double>();
    out.metrics["image_pairs"] = pairs / std::max<int64_t>(1, pair.numel());
    // Means over the examples with an image pair (none: the image metrics are left out).
    auto pair_mean = [&](const torch::Tensor& t) {
      return (t.detach().to(torch::kFloat64) * pair.to(torch::kFloat64)).sum().item<double>() / pairs;
    };
    const torch::Tensor l_image = -torch::log_sigmoid(r_w - r_wp);
    if (pairs > 0) {
      out.metrics["logp_chosen_perturbed"] = pair_mean(policy.chosen_perturbed);
      out.metrics["reward_chosen_perturbed"] = pair_mean(r_wp);
      out.metrics["margin_image"] = pair_mean(r_w - r_wp);
      out.metrics["reward_acc_image"] = pair_mean((r_w > r_wp).to(torch::kFloat32));
      out.metrics["loss_image"] = pair_mean(l_image);
    }
    if (c.w_image != 0) loss = loss + c.w_image * pair * l_image;
  }
  if (three_terms) {
    const torch::Tensor l_margin = -torch::log_sigmoid(r_w - c.delta);
    out.metrics["loss_margin"] = mean(l_margin);
    if (c.w_margin != 0) loss = loss + c.w_margin * l_margin;
  }
  out.loss = loss.mean();
  out.metrics["loss"] = out.loss.item<double>();
  return out;
}

}  // namespace mfpo
