// One forward over a micro-batch of preference examples: the sequences (m, y_w), (m, y_l) and
// (m', y_w) of every example are padded into one batch, each distinct image is encoded once,
// and the summed response log-probs come back per sequence kind.
#ifndef MFPO_WORKER_PREFERENCE_STEP_H_
#define MFPO_WORKER_PREFERENCE_STEP_H_

#include <torch/torch.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/llava_model.h"
#include "common/tokenizer.h"
#include "worker/mfpo_objective.h"

namespace mfpo {

// A tokenised preference example (image placeholder expanded) with its images.
struct PreferenceExample {
  std::string id;
  TokenizedExample chosen, rejected;
  PixelInput image;            // preprocessed (PreprocessForModel)
  PixelInput perturbed_image;  // the same size as `image`; needed when the objective uses the image term
  bool image_pair = true;         // false: no image-preference pair (its image term is left out)
};

struct StepLogps {
  ResponseLogps logps;
  torch::Tensor chosen_tokens;  // [B]
  torch::Tensor chosen_entropy;  // [B] mean token entropy of y_w given m (difficulty score)
};

// Runs the policy (or, under NoGradGuard, the reference) on `examples`. Rows: chosen for every
// example, then rejected (unless SFT), then chosen on m' (when the objective needs it).
absl::StatusOr<StepLogps> ComputeStepLogps(LlavaModel& model, int64_t pad_id,
                                           const std::vector<PreferenceExample>& examples,
                                           const ObjectiveConfig& objective);

}  // namespace mfpo

#endif  // MFPO_WORKER_PREFERENCE_STEP_H_
