// The preference objectives: SFT, DPO, mDPO and MFPO (and any subset of MFPO's terms), from
// summed response log-probs of the policy and of the frozen reference (DESIGN.md section 3).
//
//   r(y|m) = beta * (logp_policy(y|m,x) - logp_ref(y|m,x))
//   L_text   = -log sigmoid(r(y_w|m) - r(y_l|m))
//   L_image  = -log sigmoid(r(y_w|m) - r(y_w|m'))     (chosen response on the perturbed image)
//   L_margin = -log sigmoid(r(y_w|m) - delta)
//   L = w_text * L_text + w_image * L_image + w_margin * L_margin
// mDPO is the same three terms with a random-crop corrupted m' (the data path differs, not the
// loss); DPO is L_text alone; SFT is the mean token NLL of y_w.
#ifndef MFPO_WORKER_MFPO_OBJECTIVE_H_
#define MFPO_WORKER_MFPO_OBJECTIVE_H_

#include <torch/torch.h>

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace mfpo {

enum class ObjectiveVariant { kSft, kDpo, kMdpo, kMfpo };
absl::StatusOr<ObjectiveVariant> ParseObjectiveVariant(const std::string& name);
const char* ObjectiveVariantName(ObjectiveVariant v);

struct ObjectiveConfig {
  ObjectiveVariant variant = ObjectiveVariant::kMfpo;
  double beta = 0.1;
  double delta = 0.0;  // margin (anchor) target
  // Term weights (mdpo/mfpo; dpo uses text only). A zero weight removes the term: the paper's
  // ablations are subsets of {text, image, margin}.
  double w_text = 1.0, w_image = 1.0, w_margin = 1.0;

  bool needs_rejected() const { return variant != ObjectiveVariant::kSft; }
  bool needs_perturbed() const {
    return (variant == ObjectiveVariant::kMdpo || variant == ObjectiveVariant::kMfpo) && w_image != 0;
  }
  bool needs_reference() const { return variant != ObjectiveVariant::kSft; }
};

// Summed response log-probs, [B] each; `chosen_perturbed` only when the objective needs it.
struct ResponseLogps {
  torch::Tensor chosen, rejected, chosen_perturbed;
  // [B] 1 where the example has an image-preference pair, 0 where its image term is left out
  // (no grounded region); undefined: every example has one.
  torch::Tensor image_pair;
};

struct ObjectiveOutput {
  torch::Tensor loss;                     // scalar, differentiable w.r.t. the policy log-probs
  std::map<std::string, double> metrics;  // batch means (see ComputeObjective)
};

// Metrics: loss, loss_text, loss_image, loss_margin, loss_sft (as applicable);
// reward_chosen, reward_rejected, reward_chosen_perturbed; reward_acc_text (r_w > r_l),
// reward_acc_image (r_w > r_w'); margin_text (r_w - r_l), margin_image (r_w - r_w');
// logp_chosen, logp_rejected, logp_chosen_perturbed (policy); image_pairs (share of examples
// with an image term). The image metrics average over the examples that have an image pair.
// `chosen_tokens` [B] (response token counts) is used by SFT's per-token mean.
ObjectiveOutput ComputeObjective(const ObjectiveConfig& config, const ResponseLogps& policy,
                                 const ResponseLogps& reference, const torch::Tensor& chosen_tokens);

}  // namespace mfpo

#endif  // MFPO_WORKER_MFPO_OBJECTIVE_H_
