#include "datagen/perturb_flags.h"

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"

// Defined by each binary's main() (they serve its other commands too).
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, out);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(int32_t, noise_step);
ABSL_DECLARE_FLAG(int32_t, threads);

ABSL_FLAG(std::string, manifest, "", "perturb: input native preference JSONL");
ABSL_FLAG(int64_t, begin, 0, "perturb: first record of the shard (line order, 0-based)");
ABSL_FLAG(int64_t, end, -1, "perturb: end of the shard (exclusive); -1 = to the end");
ABSL_FLAG(std::string, grounder, "regions",
          "perturb: regions | model | torchscript, or the ablations random (a random box) | global (whole image)");
ABSL_FLAG(double, random_fraction, 0.2, "perturb: share of the image the random grounder's box covers");
ABSL_FLAG(std::string, grounder_model, "", "perturb: TorchScript segmentation module (grounder torchscript)");
ABSL_FLAG(std::string, vocab, "", "perturb: synonym table for matching keywords to region labels (regions)");
ABSL_FLAG(std::string, word_vectors, "", "perturb: GloVe-format word vectors (default: the model's embeddings)");
ABSL_FLAG(int32_t, top_k, 3, "perturb: keywords per record");
ABSL_FLAG(double, alpha, 0.5, "perturb: positional vs semantic edge weight");
ABSL_FLAG(double, sigma, 3.0, "perturb: positional decay in tokens");
ABSL_FLAG(int32_t, feather, 0, "perturb: soft mask edge in pixels");
ABSL_FLAG(std::string, fill, "noise",
          "perturb: what replaces the region: noise (DDPM, the paper's) | inpaint (filled from its surroundings; "
          "ablation)");
ABSL_FLAG(bool, keywords_from_question, false, "perturb: rank the prompt's words too");
ABSL_FLAG(double, heat_threshold, 0.6, "perturb: model grounder threshold on the normalised heat map");

namespace mfpo {

void PerturbOptionsFromFlags(PerturbCommandOptions* o) {
  o->model_dir = absl::GetFlag(FLAGS_model);
  o->shard.out_dir = absl::GetFlag(FLAGS_out);
  o->shard.threads = absl::GetFlag(FLAGS_threads);
  o->perturb.seed = absl::GetFlag(FLAGS_seed);
  o->perturb.noise_step = absl::GetFlag(FLAGS_noise_step);
  o->shard.manifest = absl::GetFlag(FLAGS_manifest);
  o->shard.begin = absl::GetFlag(FLAGS_begin);
  o->shard.end = absl::GetFlag(FLAGS_end);
  o->grounder = absl::GetFlag(FLAGS_grounder);
  o->random_fraction = absl::GetFlag(FLAGS_random_fraction);
  o->torchscript_path = absl::GetFlag(FLAGS_grounder_model);
  o->vocabulary_path = absl::GetFlag(FLAGS_vocab);
  o->word_vectors_path = absl::GetFlag(FLAGS_word_vectors);
  o->perturb.keywords.top_k = absl::GetFlag(FLAGS_top_k);
  o->perturb.keywords.alpha = absl::GetFlag(FLAGS_alpha);
  o->perturb.keywords.sigma = absl::GetFlag(FLAGS_sigma);
  o->perturb.feather = absl::GetFlag(FLAGS_feather);
  o->fill = absl::GetFlag(FLAGS_fill);
  o->perturb.keywords_from_question = absl::GetFlag(FLAGS_keywords_from_question);
  o->model_grounder.threshold = absl::GetFlag(FLAGS_heat_threshold);
}

std::vector<std::string> PerturbFlagNames() {
  return {"manifest", "out",   "begin", "end",      "grounder", "random_fraction", "grounder_model", "vocab",
          "word_vectors", "top_k", "alpha", "sigma", "feather", "fill", "keywords_from_question", "heat_threshold", "model",
          "seed", "noise_step", "threads"};
}

const char* PerturbFlagsHelp() {
  return R"(  --manifest IN.jsonl --out DIR [--begin N --end M] [--threads N]
  --grounder regions|model|torchscript|random|global [--vocab vocab.txt] [--model LLAVA_DIR]
  [--random-fraction 0.2]
  [--grounder-model module.pt] [--word-vectors glove.txt] [--top-k 3] [--alpha 0.5]
  [--sigma 3] [--noise-step 500] [--feather PX] [--fill noise|inpaint] [--seed N] [--keywords-from-question]
  [--heat-threshold 0.6]
)";
}

}  // namespace mfpo
