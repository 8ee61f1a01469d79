#include "worker/preference_step.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"

namespace mfpo {

absl::StatusOr<StepLogps> ComputeStepLogps(LlavaModel& model, int64_t pad_id,
                                           const std::vector<PreferenceExample>& examples,
                                           const ObjectiveConfig& objective) {
  const int64_t n = static_cast<int64_t>(examples.size());
  if (n == 0) return absl::InvalidArgumentError("empty micro-batch");
  struct Row {
    const TokenizedExample* tokens;
    int64_t image;  // index into the stacked pixels
  };
  std::vector<Row> rows;
  std::vector<PixelInput> pixels;
  for (int64_t i = 0; i < n; ++i) {
    pixels.push_back(examples[i].image);
    rows.push_back({&examples[i].chosen, i});
  }
  if (objective.needs_rejected())
    for (int64_t i = 0; i < n; ++i) rows.push_back({&examples[i].rejected, i});
  if (objective.needs_perturbed()) {
    for (int64_t i = 0; i < n; ++i) {
      if (!examples[i].perturbed_image.pixel_values.defined())
        return absl::InvalidArgumentError(absl::StrCat("example '", examples[i].id, "' has no perturbed image"));
      pixels.push_back(examples[i].perturbed_image);
      rows.push_back({&examples[i].chosen, n + i});
    }
  }
  size_t longest = 0;
  for (const Row& r : rows) longest = std::max(longest, r.tokens->ids.size());
  const int64_t b = static_cast<int64_t>(rows.size()), len = static_cast<int64_t>(longest);
  const int64_t filler = pad_id >= 0 ? pad_id : 0;
  // Right padding: labels stay aligned with their tokens; positions come from the mask.
  torch::Tensor ids = torch::full({b, len}, filler, torch::kInt64);
  torch::Tensor mask = torch::zeros({b, len}, torch::kInt64);
  torch::Tensor labels = torch::full({b, len}, kIgnoreLabel, torch::kInt64);
  torch::Tensor image_index = torch::empty({b}, torch::kInt64);
  for (int64_t r = 0; r < b; ++r) {
    const auto& t = *rows[r].tokens;
    const int64_t l = static_cast<int64_t>(t.ids.size());
    ids[r].slice(0, 0, l).copy_(torch::tensor(t.ids, torch::kInt64));
    labels[r].slice(0, 0, l).copy_(torch::tensor(t.labels, torch::kInt64));
    mask[r].slice(0, 0, l).fill_(1);
    image_index[r] = rows[r].image;
  }
  return CatchAll("preference step", [&]() -> absl::StatusOr<StepLogps> {
    const auto param = model->language_model()->parameters()[0];
    LlavaBatch batch;
    batch.input_ids = ids.to(param.device());
    batch.attention_mask = mask.to(param.device());
    batch.image_index = image_index.to(param.device());
    MFPO_RETURN_IF_ERROR(model->SetImages(&batch, pixels));
    MFPO_RETURN_IF_ERROR(model->ValidateBatch(batch));
    ResponseScores s = model->ScoreResponses(batch, labels);
    StepLogps out;
    out.logps.chosen = s.logp.slice(0, 0, n);
    out.chosen_tokens = s.num_tokens.slice(0, 0, n);
    out.chosen_entropy = s.entropy.slice(0, 0, n);
    int64_t at = n;
    if (objective.needs_rejected()) {
      out.logps.rejected = s.logp.slice(0, at, at + n);
      at += n;
    }
    if (objective.needs_perturbed()) {
      out.logps.chosen_perturbed = s.logp.slice(0, at, at + n);
      std::vector<float> pair;
      for (const auto& ex : examples) pair.push_back(ex.image_pair ? 1.0f : 0.0f);
      out.logps.image_pair = torch::tensor(pair).to(s.logp.device());
    }
    return out;
  });
}

}  // namespace mfpo
