// Option handling shared by `mfpo perturb` and `mfpo-datagen`: builds the grounder and word
// vectors that the options name, then runs the shard (datagen/perturb_pipeline.h).
#ifndef MFPO_DATAGEN_PERTURB_COMMAND_H_
#define MFPO_DATAGEN_PERTURB_COMMAND_H_

#include <string>

#include "absl/status/statusor.h"
#include "datagen/perturb_pipeline.h"

namespace mfpo {

struct PerturbCommandOptions {
  ShardOptions shard;
  PerturbOptions perturb;
  std::string grounder = "regions";  // regions | model | torchscript | random | global (ablations)
  double random_fraction = 0.2;      // random: share of the image in the noised box
  std::string fill = "noise";        // noise | inpaint (ablation): parsed into perturb.fill
  std::string model_dir;             // LLaVA directory: the `model` grounder, and word vectors
  std::string torchscript_path;      // the `torchscript` grounder's module
  std::string vocabulary_path;       // regions: synonym table (as vocab.txt of `mfpo world`)
  std::string word_vectors_path;     // GloVe text file; default: the model's embeddings if a
                                     // model is given, else positional edges only
  ModelGrounderOptions model_grounder;
};

absl::StatusOr<ShardReport> RunPerturbCommand(const PerturbCommandOptions& options,
                                              PerturbCounters* counters = nullptr);

}  // namespace mfpo

#endif  // MFPO_DATAGEN_PERTURB_COMMAND_H_
