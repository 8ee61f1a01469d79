#include "datagen/perturb_command.h"

#include <memory>
#include <optional>

#include <spdlog/spdlog.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "datagen/diffusion_noise.h"
#include "common/model_dir.h"
#include "common/status_macros.h"

namespace mfpo {

absl::StatusOr<ShardReport> RunPerturbCommand(const PerturbCommandOptions& o, PerturbCounters* counters) {
  if (o.shard.manifest.empty()) return absl::InvalidArgumentError("--manifest is required (or, as the job service's datagen agent, --coordinator HOST:PORT)");
  if (o.shard.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  // t = 0 is the image itself: a rejected image equal to the chosen one.
  if (o.perturb.noise_step < 1 || o.perturb.noise_step > 1000)
    return absl::InvalidArgumentError("--noise-step must be in [1, 1000] (0 would leave the image unchanged)");
  const KeywordOptions& k = o.perturb.keywords;
  if (k.top_k < 1 || k.top_k > 100) return absl::InvalidArgumentError("--top-k must be in [1, 100]");
  if (!(k.alpha >= 0 && k.alpha <= 1)) return absl::InvalidArgumentError("--alpha must be in [0, 1]");
  if (!(k.sigma > 0 && k.sigma <= 1e6)) return absl::InvalidArgumentError("--sigma must be a positive number of tokens");
  if (o.perturb.feather < 0 || o.perturb.feather > 256)
    return absl::InvalidArgumentError("--feather must be in [0, 256] pixels");
  PerturbOptions perturb = o.perturb;
  MFPO_ASSIGN_OR_RETURN(perturb.fill, ParsePerturbFill(o.fill));
  if (!(o.model_grounder.threshold >= 0 && o.model_grounder.threshold <= 1))
    return absl::InvalidArgumentError("--heat-threshold must be in [0, 1]");

  std::unique_ptr<Grounder> grounder;
  if (o.grounder == "regions") {
    std::optional<ObjectVocabulary> vocabulary;
    if (!o.vocabulary_path.empty()) {
      MFPO_ASSIGN_OR_RETURN(vocabulary, ObjectVocabulary::FromFile(o.vocabulary_path));
    }
    grounder = MakeRegionsGrounder(std::move(vocabulary));
  } else if (o.grounder == "model") {
    if (o.model_dir.empty()) return absl::InvalidArgumentError("--grounder model needs --model (a LLaVA directory)");
    MFPO_ASSIGN_OR_RETURN(grounder, MakeModelGrounder(o.model_dir, o.model_grounder));
  } else if (o.grounder == "torchscript") {
    if (o.torchscript_path.empty())
      return absl::InvalidArgumentError("--grounder torchscript needs --grounder-model (a TorchScript file)");
    MFPO_ASSIGN_OR_RETURN(grounder, MakeTorchScriptGrounder(o.torchscript_path));
  } else if (o.grounder == "random") {
    if (!(o.random_fraction > 0 && o.random_fraction <= 1))
      return absl::InvalidArgumentError("--random-fraction must be in (0, 1]");
    grounder = MakeRandomGrounder(o.random_fraction, o.perturb.seed);
  } else if (o.grounder == "global") {
    grounder = MakeGlobalGrounder();
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--grounder '", o.grounder,
                                                   "': expected regions, model, torchscript, random or global"));
  }

  std::unique_ptr<WordVectors> vectors;
  std::optional<LoadedModel> embedding_model;
  if (!o.word_vectors_path.empty()) {
    MFPO_ASSIGN_OR_RETURN(vectors, LoadGloveVectors(o.word_vectors_path));
  } else if (!o.model_dir.empty()) {
    MFPO_ASSIGN_OR_RETURN(embedding_model, LoadModelDir(o.model_dir));
    vectors = EmbeddingWordVectors(embedding_model->tokenizer,
                                   embedding_model->model->language_model()->embed_tokens());
  }
  spdlog::info("datagen: grounder {}, fill {}, word vectors: {}", grounder->name(), PerturbFillName(perturb.fill),
               !o.word_vectors_path.empty() ? o.word_vectors_path
               : vectors                    ? "the model's input embeddings"
                                            : "none (positional edges only)");
  ShardOptions shard = o.shard;
  // Files by absolute path and content (a vocabulary edited in place changes the regions).
  auto file = [](const std::string& path) -> nlohmann::json {
    if (path.empty()) return "";
    std::error_code ec;
    const std::string abs = std::filesystem::absolute(path, ec).lexically_normal().string();
    absl::StatusOr<std::string> bytes = ReadFileToString(path, "file", 64 << 20);
    if (!bytes.ok()) return abs;  // a directory (--model) or a large file (word vectors): by path
    return absl::StrCat(abs, "#", absl::StrFormat("%016x", SampleSeed(0, *bytes)));
  };
  shard.configuration = {{"vocab", file(o.vocabulary_path)},
                         {"model", file(o.model_dir)},
                         {"grounder_model", file(o.torchscript_path)},
                         {"word_vectors", file(o.word_vectors_path)},
                         {"random_fraction", o.grounder == "random" ? o.random_fraction : 0.0},
                         {"heat_threshold", o.grounder == "model" ? o.model_grounder.threshold : 0.0}};
  return RunPerturbShard(shard, perturb, *grounder, vectors.get(), counters);
}

}  // namespace mfpo
