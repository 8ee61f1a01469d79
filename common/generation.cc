#include "common/generation.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"

namespace mfpo {

absl::StatusOr<std::vector<std::vector<int64_t>>> GreedyGenerate(
    LlavaModel& model, const std::vector<std::vector<int64_t>>& prompts,
    const std::vector<PixelInput>& images, const GenerationOptions& options) {
  const int64_t batch = static_cast<int64_t>(prompts.size());
  if (batch == 0) return std::vector<std::vector<int64_t>>{};
  if (options.max_new_tokens <= 0)
    return absl::InvalidArgumentError("max_new_tokens must be positive");
  size_t longest = 0;
  for (const auto& p : prompts) {
    if (p.empty()) return absl::InvalidArgumentError("empty prompt");
    longest = std::max(longest, p.size());
  }
  const int64_t len = static_cast<int64_t>(longest);
  const int64_t context = model->config().text.max_position_embeddings;
  if (len + options.max_new_tokens > context)
    return absl::InvalidArgumentError(absl::StrCat(
        "the prompt (", len, " tokens with the image's) plus max_new_tokens (", options.max_new_tokens,
        ") exceeds the model's context of ", context, " tokens (max_position_embeddings)"));
  const auto device = model->language_model()->parameters()[0].device();
  const int64_t filler = options.eos_id;  // fed to finished rows; their outputs are not kept

  // Left padding: real tokens at the end of each row.
  torch::Tensor ids = torch::full({batch, len}, filler, torch::kInt64);
  torch::Tensor mask = torch::zeros({batch, len}, torch::kInt64);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = static_cast<int64_t>(prompts[b].size());
    ids[b].slice(0, len - n).copy_(torch::tensor(prompts[b], torch::kInt64));
    mask[b].slice(0, len - n).fill_(1);
  }
  LlavaBatch first;
  first.input_ids = ids;
  first.attention_mask = mask;
  std::vector<std::vector<int64_t>> out(batch);
  return CatchAll("GreedyGenerate", [&]() -> absl::StatusOr<std::vector<std::vector<int64_t>>> {
    torch::NoGradGuard no_grad;
    if (!images.empty()) {
      if (static_cast<int64_t>(images.size()) != batch)
        return absl::InvalidArgumentError(absl::StrCat(images.size(), " images for ", batch, " prompts"));
      MFPO_RETURN_IF_ERROR(model->SetImages(&first, images));
    }
    MFPO_RETURN_IF_ERROR(model->ValidateBatch(first));
    first.input_ids = first.input_ids.to(device);
    first.attention_mask = first.attention_mask.to(device);
    const auto param = model->language_model()->parameters()[0];
    KvCache cache = KvCache::Allocate(model->config().text, batch, len + options.max_new_tokens,
                                      param.options().requires_grad(false));
    torch::Tensor hidden = model->Hidden(first, &cache);
    torch::Tensor logits = model->language_model()->LmHead(hidden.select(1, len - 1));
    torch::Tensor full_mask = first.attention_mask;
    std::vector<bool> done(batch, false);
    for (int64_t step = 0; step < options.max_new_tokens; ++step) {
      torch::Tensor next = logits.argmax(-1).to(torch::kCPU);
      bool all_done = true;
      for (int64_t b = 0; b < batch; ++b) {
        if (done[b]) continue;
        const int64_t tok = next[b].item<int64_t>();
        out[b].push_back(tok);
        if (tok == options.eos_id) done[b] = true;
        all_done = all_done && done[b];
      }
      if (all_done || step + 1 == options.max_new_tokens) break;
      for (int64_t b = 0; b < batch; ++b)
        if (done[b]) next[b] = filler;
      LlavaBatch step_batch;
      step_batch.input_ids = next.view({batch, 1}).to(device);
      full_mask = torch::cat({full_mask, torch::ones({batch, 1}, full_mask.options())}, 1);
      step_batch.attention_mask = full_mask;
      logits = model->language_model()->LmHead(model->Hidden(step_batch, &cache).select(1, 0));
    }
    return out;
  });
}

}  // namespace mfpo
