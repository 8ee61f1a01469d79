// mfpo: the offline tool. Parses flags into the command's Options struct and runs it.
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <csignal>
#include <iostream>
#include <thread>
#include <string>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "common/device.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_cat.h"
#include "cli/cli_commands.h"
#include "cli/local_ranks.h"
#include "cli/report_command.h"
#include "cli/train_command.h"
#include "common/cli_util.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"
#include "datagen/perturb_flags.h"
#include "evaluator/evaluation.h"
#include "worker/job_spec.h"
#include "worker/vision_pretrain.h"

ABSL_FLAG(std::string, model, "", "model directory (Hugging Face LLaVA layout)");
ABSL_FLAG(std::string, image, "", "image file (JPEG, PNG or WebP)");
ABSL_FLAG(std::string, prompt, "", "the user's question, placed in the model's chat template");
ABSL_FLAG(std::string, adapter, "",
          "logits/generate/eval: a LoRA adapter directory (PEFT layout) run with --model, unmerged; merge-lora: the "
          "adapter to merge");
ABSL_FLAG(std::string, chat_template, "",
          "logits/generate/eval: llava-1.5, vicuna or mistral (default: from the model directory: chat_template.json, "
          "tokenizer_config.json, else by its config)");
ABSL_FLAG(std::string, response, "", "logits: the answer to score (empty: prompt only)");
ABSL_FLAG(std::string, out, "", "output: a directory (a file for logits)");
ABSL_FLAG(std::string, preset, "tiny",
          "init-model: model preset (tiny, tiny-next: LLaVA-1.6 any-resolution, medium, 7b-shape: LLaVA-1.5-7B shapes "
          "with 2 layers)");
ABSL_FLAG(uint64_t, seed, 0, "random seed");
ABSL_FLAG(bool, overwrite, false, "write into an --out that is not empty (init-model, world, eval) or replace OUT (import)");
ABSL_FLAG(double, init_std, 0.02, "init-model: standard deviation of the initial weights");
ABSL_FLAG(int64_t, max_new_tokens, 64, "generate, eval: most tokens generated per answer");
ABSL_FLAG(bool, json, false, "print the result as one JSON object");
ABSL_FLAG(int32_t, train, 2000, "world: training images");
ABSL_FLAG(int32_t, val, 200, "world: validation images");
ABSL_FLAG(int32_t, test, 500, "world: test images");
ABSL_FLAG(int32_t, size, 64, "world: image side in pixels");
ABSL_FLAG(double, cooccur_prior, 0.85, "world: P(partner object | anchor) in train/val");
ABSL_FLAG(double, colour_prior, 0.85, "world: P(typical colour) in train/val");
ABSL_FLAG(std::string, spec, "", "train: job spec (YAML or JSON)");
ABSL_FLAG(int64_t, stop_after_steps, 0, "train: stop (with a checkpoint) after this many steps");
ABSL_FLAG(std::string, metrics_address, "",
          "train: serve Prometheus training metrics at HOST:PORT/metrics while training (rank 0 reports)");
ABSL_FLAG(int32_t, rank, -1, "train: this process's rank in a data-parallel group (default: $RANK)");
ABSL_FLAG(int32_t, world_size, 0, "train: ranks in the group (default: $WORLD_SIZE)");
ABSL_FLAG(std::string, rendezvous, "", "train: HOST:PORT where rank 0 hosts the group's rendezvous (default: $MASTER_ADDR:$MASTER_PORT)");
ABSL_FLAG(int32_t, local_rank, -1, "train: this rank's GPU on its machine (default: $LOCAL_RANK, else 0)");
ABSL_FLAG(bool, launcher_store, false, "train: set by mfpo train for the ranks it starts (the rendezvous store is the launcher's)");
ABSL_FLAG(std::string, format, "", "import: native, rlhf-v, rlaif-v, vlfeedback, hf");
ABSL_FLAG(std::string, suite, "", "score: chair|pope|amber; eval: comma list of chair,pope,amber,reliance");
ABSL_FLAG(std::string, answers, "", "score: answers JSONL ({id, answer})");
ABSL_FLAG(std::string, truth, "", "score: ground truth file");
ABSL_FLAG(std::string, synonyms, "", "score chair: synonym table (default: the COCO table)");
ABSL_FLAG(std::string, association, "", "score amber: relation.json");
ABSL_FLAG(std::string, safe_words, "", "score amber: safe words file");
ABSL_FLAG(std::string, data, "", "eval: embedded-world directory; pretrain-vision: world directory or captions JSONL");
ABSL_FLAG(std::string, split, "test", "eval: split to evaluate");
ABSL_FLAG(int64_t, limit, 0, "eval: images per suite (0: all)");
ABSL_FLAG(int64_t, batch_size, 16, "eval: generation batch size");
ABSL_FLAG(int32_t, noise_step, 500, "DDPM step t of the noise (eval: the reliance suite; perturb: inside the regions)");
ABSL_FLAG(int64_t, epochs, 8, "pretrain-vision: passes over the train images");
ABSL_FLAG(int64_t, images_per_step, 128, "pretrain-vision: images per optimiser step");
ABSL_FLAG(double, lr, 1e-3, "pretrain-vision: peak learning rate (warm-up, cosine decay)");
ABSL_FLAG(std::string, eval_split, "val", "pretrain-vision: split scored after training");
ABSL_FLAG(double, dense_weight, 1.0, "pretrain-vision: weight of the per-patch box-label loss (0: captions only)");
ABSL_FLAG(int64_t, short_answer_tokens, 12, "eval: most tokens of a POPE or reliance answer (their parsers read the first sentence)");
ABSL_FLAG(int32_t, bootstrap_resamples, 2000, "eval, report: bootstrap resamples of the test images for the 95% intervals");
ABSL_FLAG(std::string, runs, "", "report: comma list of LABEL=DIR or LABEL@SEED=DIR (train output dirs or eval dirs)");
ABSL_FLAG(std::string, title, "MFPO on the scene world", "report: heading of report.md");
ABSL_FLAG(std::string, focus, "", "report: the label compared with every other (default: the last)");
ABSL_FLAG(std::string, notes, "", "report: markdown file appended to report.md");
ABSL_FLAG(std::string, claim, "chair_s,chair_i", "report: metrics on which --focus must beat the --claim_against labels");
ABSL_FLAG(std::string, claim_against, "", "report: labels --focus must beat on --claim (comma-separated; empty: all)");
ABSL_FLAG(std::string, claim_gap_over, "", "report: label whose reliance gap --focus must exceed (empty: no such check)");
ABSL_FLAG(int32_t, threads, 0, "CPU threads (0: one per core; perturb: worker threads)");
ABSL_FLAG(std::string, dtype, "float32",
          "logits/generate/eval: compute dtype; convert-model: the weights' dtype (float32, bfloat16, float16); bfloat16 halves the "
          "memory of a 7B model");

namespace {

// A comma-separated flag value as a list: items trimmed, empty items dropped.
std::vector<std::string> List(const std::string& value) {
  std::vector<std::string> out;
  for (absl::string_view item : absl::StrSplit(value, ',')) {
    item = absl::StripAsciiWhitespace(item);
    if (!item.empty()) out.emplace_back(item);
  }
  return out;
}

constexpr char kUsage[] = R"(mfpo <command> [flags]

Commands:
  init-model --preset tiny|tiny-next|medium|7b-shape --out DIR [--seed N] [--overwrite]
      write a randomly initialised LLaVA checkpoint directory (config.json, model.safetensors,
      tokenizer.model, preprocessor_config.json, chat_template.json); tiny-next is LLaVA-1.6
  logits --model DIR --image FILE --prompt TEXT [--response TEXT] --out FILE.safetensors
      [--adapter DIR] [--chat-template llava-1.5|vicuna|mistral]
      write the logits of the prompt(+response) sequence and the response's summed log-prob
  world --out DIR [--seed N] [--train N --val N --test N] [--size PX]
      write the embedded scene world: images, preference manifests, annotations, vocabulary
  train --spec job.yaml [--stop-after-steps N] [--rank R --world-size N --rendezvous HOST:PORT]
      one job: reference pass, difficulty, curriculum phases, evaluation; with resources.workers N
      it starts N local ranks; --rank/--world-size/--rendezvous (or torchrun's RANK, WORLD_SIZE,
      MASTER_ADDR, MASTER_PORT, LOCAL_RANK) make this process one rank of a multi-machine group;
      resumes from the newest checkpoint in output_dir
  import --format native|rlhf-v|rlaif-v|vlfeedback|hf IN.jsonl OUT.jsonl
      convert preference data to the native JSONL format (bad lines reported, the rest kept)
  score --suite chair|pope|amber --answers FILE.jsonl --truth FILE [--synonyms FILE] [--json]
      hallucination metrics of answers produced by any system
  eval --model DIR --data DIR [--suite chair,pope,amber,reliance] --out DIR [--limit N]
      [--adapter DIR] [--chat-template llava-1.5|vicuna|mistral]
      generate answers on a world's test split, score them, write answers and a report
  perturb --manifest IN.jsonl --out DIR [--grounder regions|model|torchscript] [--model DIR]
      the image-preference pipeline: keywords of each chosen response -> regions -> diffusion
      noise there -> rejected images, masks and a trainable manifest (see mfpo-datagen --help)
  pretrain-vision --model DIR --data WORLD_DIR|captions.jsonl --out DIR [--epochs N]
      [--images-per-step N] [--lr X] [--eval-split val] [--dense-weight 1]
      train the vision tower on image captions (bag of caption words predicted from every
      patch feature), standing in for CLIP pre-training of a randomly initialised tower
  generate --model DIR --image FILE --prompt TEXT [--max-new-tokens N] [--json]
      [--dtype bfloat16] [--adapter DIR] [--chat-template llava-1.5|vicuna|mistral]
      greedy answer to the prompt about the image
  convert-model --model DIR --out DIR [--dtype float32|bfloat16|float16]
      a copy of a model directory with its weights in another dtype (default float32)
  merge-lora --model BASE_DIR --adapter DIR --out DIR [--dtype float32|bfloat16|float16]
      a full model directory: the base weights with a LoRA adapter (PEFT layout) merged in
  report --runs LABEL[@SEED]=DIR,... --out DIR [--focus LABEL] [--notes FILE] [--title TEXT]
      [--claim chair_s,chair_i] [--claim_against LABEL,...] [--claim_gap_over LABEL] [--overwrite]
      the experiment report over evaluated runs (all on the same test images): table with 95%
      bootstrap intervals, paired differences of --focus against the others, means over seeds,
      the claim check, PNG plots of the training curves and of the table

mfpo <command> --help lists the command's flags.
)";

int Exit(const absl::Status& status) { return mfpo::ExitCode(status, "mfpo"); }

// The flags each command reads (FLAGS_threads is common to all); any other flag is refused.
const std::vector<mfpo::CommandFlags>& Commands() {
  static const auto* commands = new std::vector<mfpo::CommandFlags>{
      {"init-model", "--preset tiny|tiny-next|medium|7b-shape --out DIR [--seed N] [--overwrite]", {"preset", "out", "seed", "init_std", "overwrite"}},
      {"logits", "--model DIR --image FILE --prompt TEXT [--response TEXT] --out FILE.safetensors [--adapter DIR]\n"
                 "  [--chat-template llava-1.5|vicuna|mistral]",
       {"model", "image", "prompt", "response", "out", "dtype", "adapter", "chat_template"}},
      {"generate", "--model DIR --image FILE --prompt TEXT [--max-new-tokens N] [--json] [--dtype bfloat16] [--adapter DIR]\n"
                   "  [--chat-template llava-1.5|vicuna|mistral]",
       {"model", "image", "prompt", "max_new_tokens", "json", "dtype", "adapter", "chat_template"}},
      {"world", "--out DIR [--seed N] [--train N --val N --test N] [--size PX]",
       {"out", "seed", "train", "val", "test", "size", "cooccur_prior", "colour_prior", "overwrite"}},
      {"train", "--spec job.yaml [--stop-after-steps N] [--rank R --world-size N --rendezvous HOST:PORT]\n"
                "  [--metrics-address HOST:PORT]",
       {"spec", "stop_after_steps", "rank", "world_size", "rendezvous", "local_rank", "launcher_store", "metrics_address"}},
      {"import", "--format native|rlhf-v|rlaif-v|vlfeedback|hf IN.jsonl OUT.jsonl [--overwrite]", {"format", "overwrite"}},
      {"score", "--suite chair|pope|amber --answers FILE.jsonl --truth FILE [--synonyms FILE] [--json]",
       {"suite", "answers", "truth", "synonyms", "association", "safe_words", "json"}},
      {"eval", "--model DIR --data DIR [--suite chair,pope,amber,reliance] --out DIR [--limit N]",
       {"model", "data", "suite", "out", "split", "limit", "batch_size", "max_new_tokens", "noise_step", "seed", "dtype",
        "overwrite", "short_answer_tokens", "bootstrap_resamples", "adapter", "chat_template"}},
      {"convert-model", "--model DIR --out DIR --dtype bfloat16|float16|float32 [--overwrite]", {"model", "out", "dtype", "overwrite"}},
      {"merge-lora", "--model BASE_DIR --adapter DIR --out DIR [--dtype float32|bfloat16|float16] [--overwrite]",
       {"model", "adapter", "out", "dtype", "overwrite"}},
      {"report", "--runs LABEL[@SEED]=DIR,... --out DIR [--focus LABEL] [--notes FILE] [--title TEXT] [--overwrite]",
       {"runs", "out", "focus", "notes", "title", "claim", "claim_against", "claim_gap_over", "bootstrap_resamples", "seed", "overwrite"}},
      {"perturb", std::string("\n") + mfpo::PerturbFlagsHelp(), mfpo::PerturbFlagNames()},
      {"pretrain-vision", "--model DIR --data WORLD_DIR|captions.jsonl --out DIR [--epochs N] [--lr X]",
       {"model", "data", "out", "epochs", "images_per_step", "lr", "eval_split", "dense_weight", "seed"}},
  };
  return *commands;
}

const std::vector<std::string> kGlobalFlags = {"threads"};

// `given`: the flags named on the command line (to tell `--suite ''` from no --suite).
int Run(const std::vector<char*>& args, const std::vector<std::string>& given);

}  // namespace

int main(int argc, char** argv) {
  // A write beyond the file-size limit (ulimit -f) fails with EFBIG and is reported like a full
  // disk, instead of the default SIGXFSZ killing the process mid-write.
  std::signal(SIGXFSZ, SIG_IGN);
  absl::SetProgramUsageMessage(kUsage);
  std::vector<std::string> normalised = mfpo::NormaliseFlagNames(argc, argv);
  std::vector<char*> raw;
  for (auto& a : normalised) raw.push_back(a.data());
  // The command is the first argument that is not a flag (flags may come before it).
  const mfpo::CommandFlags* command = nullptr;
  for (size_t i = 1; i < normalised.size() && command == nullptr; ++i) {
    if (normalised[i] == "--") break;
    for (const auto& c : Commands())
      if (c.name == normalised[i]) command = &c;
  }
  if (mfpo::WantsHelp(normalised)) {
    std::cout << (command != nullptr ? mfpo::CommandHelp("mfpo", *command, kGlobalFlags) : std::string(kUsage));
    return 0;
  }
  if (command != nullptr) {
    absl::Status s = mfpo::CheckCommandFlags("mfpo", *command, kGlobalFlags, mfpo::GivenFlagNames(normalised));
    if (!s.ok()) return Exit(s);
  }
  for (const std::string& a : normalised)
    if (a == "--version") {
      std::cout << "mfpo " << MFPO_VERSION << "\n";
      return 0;
    }
  std::vector<char*> args = absl::ParseCommandLine(static_cast<int>(raw.size()), raw.data());
  spdlog::set_default_logger(spdlog::stderr_color_mt("mfpo"));
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  if (args.size() < 2) {
    std::cerr << kUsage;
    return 2;
  }
  // The last seam: whatever a command throws (it should not) becomes an error, not an abort.
  int code = 1;
  absl::Status thrown = mfpo::CatchAll(absl::StrCat("mfpo ", args[1]), [&] { code = Run(args, mfpo::GivenFlagNames(normalised)); });
  return thrown.ok() ? code : Exit(thrown);
}

namespace {

// A non-negative integer from a flag or an environment variable; `what` names it in errors.
absl::Status ParseCount(const char* text, const std::string& what, int* out) {
  if (!absl::SimpleAtoi(text, out) || *out < 0)
    return absl::InvalidArgumentError(absl::StrCat(what, " = '", text, "' is not a non-negative integer"));
  return absl::OkStatus();
}

// The data-parallel group of `mfpo train`: --rank/--world-size/--rendezvous/--local-rank, else
// the variables torchrun and the Kubeflow PyTorchJob operator set (RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT, LOCAL_RANK). The only place the environment is read.
absl::Status GroupFromFlagsAndEnvironment(mfpo::TrainCommandOptions* o) {
  const int rank = absl::GetFlag(FLAGS_rank), world = absl::GetFlag(FLAGS_world_size);
  const std::string rendezvous = absl::GetFlag(FLAGS_rendezvous);
  int local_rank = absl::GetFlag(FLAGS_local_rank);
  const char* env_world = std::getenv("WORLD_SIZE");
  if (rank < -1 || world < 0) return absl::InvalidArgumentError("--rank and --world-size must not be negative");
  if (rank >= 0 || world > 0 || !rendezvous.empty()) {
    if (rank < 0 || world < 1)
      return absl::InvalidArgumentError(
          "--rank, --world-size and --rendezvous go together (--world-size >= 1, --rank in 0..N-1; --rendezvous "
          "HOST:PORT when --world-size > 1)");
    o->group.rank = rank;
    o->group.world_size = world;
    o->group.rendezvous = rendezvous;
  } else if (env_world != nullptr) {
    const char* env_rank = std::getenv("RANK");
    if (env_rank == nullptr) return absl::InvalidArgumentError("WORLD_SIZE is set but RANK is not");
    MFPO_RETURN_IF_ERROR(ParseCount(env_world, "WORLD_SIZE", &o->group.world_size));
    MFPO_RETURN_IF_ERROR(ParseCount(env_rank, "RANK", &o->group.rank));
    const char* addr = std::getenv("MASTER_ADDR");
    const char* port = std::getenv("MASTER_PORT");
    if (o->group.world_size > 1 && (addr == nullptr || port == nullptr))
      return absl::InvalidArgumentError("WORLD_SIZE > 1 needs MASTER_ADDR and MASTER_PORT (or --rendezvous HOST:PORT)");
    if (addr != nullptr && port != nullptr)
      o->group.rendezvous = absl::StrContains(addr, ":") ? absl::StrCat("[", addr, "]:", port) : absl::StrCat(addr, ":", port);
  } else {
    if (std::getenv("RANK") != nullptr) return absl::InvalidArgumentError("RANK is set but WORLD_SIZE is not");
    if (local_rank >= 0) return absl::InvalidArgumentError("--local-rank needs --rank and --world-size");
    return absl::OkStatus();  // one process, or the spec's resources.workers local ranks
  }
  if (o->group.world_size < 1) return absl::InvalidArgumentError("the world size must be >= 1");
  if (o->group.rank >= o->group.world_size)
    return absl::InvalidArgumentError(absl::StrCat("rank ", o->group.rank, " is not in 0..", o->group.world_size - 1));
  if (o->group.world_size > 1 && o->group.rendezvous.empty())
    return absl::InvalidArgumentError("--world-size > 1 needs --rendezvous HOST:PORT (where rank 0 listens)");
  if (local_rank < 0) {
    local_rank = 0;
    if (const char* env = std::getenv("LOCAL_RANK")) MFPO_RETURN_IF_ERROR(ParseCount(env, "LOCAL_RANK", &local_rank));
  }
  o->group.local_rank = local_rank;
  o->group.store_is_external = absl::GetFlag(FLAGS_launcher_store);
  o->launched_locally = o->group.store_is_external;
  o->is_rank = true;
  return absl::OkStatus();
}

int Run(const std::vector<char*>& args, const std::vector<std::string>& given) {
  const int threads = absl::GetFlag(FLAGS_threads);
  if (threads < 0 || threads > 1024) return Exit(absl::InvalidArgumentError("--threads must be in [0, 1024] (0: one per core)"));
  mfpo::SetComputeThreads(threads);
  const std::string command = args[1];
  if (command == "import") {
    if (args.size() != 4) {
      std::cerr << "usage: mfpo import --format F IN.jsonl OUT.jsonl\n";
      return 2;
    }
    mfpo::ImportCommandOptions o;
    o.format = absl::GetFlag(FLAGS_format);
    o.in_path = args[2];
    o.out_path = args[3];
    o.overwrite = absl::GetFlag(FLAGS_overwrite);
    return Exit(mfpo::RunImport(o, std::cout, std::cerr));
  }
  if (args.size() != 2) {
    std::cerr << "mfpo " << command << ": unexpected positional arguments\n\n" << kUsage;
    return 2;
  }
  if (command == "init-model") {
    mfpo::InitModelCommandOptions o;
    o.out_dir = absl::GetFlag(FLAGS_out);
    o.init.preset = absl::GetFlag(FLAGS_preset);
    o.init.seed = absl::GetFlag(FLAGS_seed);
    o.init.init_std = absl::GetFlag(FLAGS_init_std);
    o.init.overwrite = absl::GetFlag(FLAGS_overwrite);
    return Exit(mfpo::RunInitModel(o, std::cout));
  }
  if (command == "world") {
    mfpo::WorldCommandOptions o;
    o.out_dir = absl::GetFlag(FLAGS_out);
    o.world.seed = absl::GetFlag(FLAGS_seed);
    o.world.train = absl::GetFlag(FLAGS_train);
    o.world.val = absl::GetFlag(FLAGS_val);
    o.world.test = absl::GetFlag(FLAGS_test);
    o.world.size = absl::GetFlag(FLAGS_size);
    o.world.cooccur_prior = absl::GetFlag(FLAGS_cooccur_prior);
    o.world.colour_prior = absl::GetFlag(FLAGS_colour_prior);
    o.overwrite = absl::GetFlag(FLAGS_overwrite);
    return Exit(mfpo::RunWorld(o, std::cout));
  }
  if (command == "train") {
    mfpo::TrainCommandOptions o;
    o.spec_path = absl::GetFlag(FLAGS_spec);
    o.stop_after_steps = absl::GetFlag(FLAGS_stop_after_steps);
    o.metrics_address = absl::GetFlag(FLAGS_metrics_address);
    o.threads = threads;
    std::error_code ec;
    o.binary = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    if (ec) o.binary = args[0];
    if (absl::Status s = GroupFromFlagsAndEnvironment(&o); !s.ok()) return Exit(s);
    if (o.is_rank && o.group.world_size > 1)
      spdlog::set_pattern(absl::StrCat("[%H:%M:%S.%e] [rank ", o.group.rank, "] [%^%l%$] %v"));
    // Ctrl-C or a SIGTERM (e.g. from Kubernetes) stops local ranks cleanly.
    std::signal(SIGINT, [](int) { mfpo::RequestLocalRanksStop(); });
    std::signal(SIGTERM, [](int) { mfpo::RequestLocalRanksStop(); });
    if (o.is_rank) {
      std::signal(SIGINT, SIG_DFL);
      std::signal(SIGTERM, SIG_DFL);
    }
    return Exit(mfpo::RunTrainCommand(o, std::cout));
  }
  if (command == "score") {
    mfpo::ScoreCommandOptions o;
    o.suite = absl::GetFlag(FLAGS_suite);
    o.answers_path = absl::GetFlag(FLAGS_answers);
    o.truth_path = absl::GetFlag(FLAGS_truth);
    o.synonyms_path = absl::GetFlag(FLAGS_synonyms);
    o.association_path = absl::GetFlag(FLAGS_association);
    o.safe_words_path = absl::GetFlag(FLAGS_safe_words);
    o.json = absl::GetFlag(FLAGS_json);
    return Exit(mfpo::RunScore(o, std::cout));
  }
  if (command == "perturb") {
    mfpo::PerturbCommandOptions o;
    mfpo::PerturbOptionsFromFlags(&o);
    // Record-level parallelism: each worker thread runs its own LibTorch ops single-threaded.
    mfpo::SetComputeThreads(1);
    auto report = mfpo::RunPerturbCommand(o);
    if (!report.ok()) return Exit(report.status());
    std::cout << mfpo::ShardReportText(*report);
    return Exit(mfpo::CheckShardProducedRecords(*report));
  }
  if (command == "eval") {
    mfpo::EvalCommandOptions o;
    o.model_dir = absl::GetFlag(FLAGS_model);
    o.data_dir = absl::GetFlag(FLAGS_data);
    o.out_dir = absl::GetFlag(FLAGS_out);
    if (std::find(given.begin(), given.end(), "suite") != given.end()) o.suites = List(absl::GetFlag(FLAGS_suite));
    o.split = absl::GetFlag(FLAGS_split);
    o.limit = absl::GetFlag(FLAGS_limit);
    o.batch_size = absl::GetFlag(FLAGS_batch_size);
    o.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
    o.noise_step = absl::GetFlag(FLAGS_noise_step);
    o.seed = absl::GetFlag(FLAGS_seed);
    o.dtype = absl::GetFlag(FLAGS_dtype);
    o.overwrite = absl::GetFlag(FLAGS_overwrite);
    o.short_answer_tokens = absl::GetFlag(FLAGS_short_answer_tokens);
    o.bootstrap_resamples = absl::GetFlag(FLAGS_bootstrap_resamples);
    o.adapter_dir = absl::GetFlag(FLAGS_adapter);
    o.chat_template = absl::GetFlag(FLAGS_chat_template);
    if (o.short_answer_tokens <= 0) return Exit(absl::InvalidArgumentError("--short-answer-tokens must be positive"));
    if (o.bootstrap_resamples < 100 || o.bootstrap_resamples > 100000)
      return Exit(absl::InvalidArgumentError("--bootstrap-resamples must be in [100, 100000]"));
    return Exit(mfpo::RunEval(o, std::cout));
  }
  if (command == "convert-model" || command == "merge-lora") {  // merge-lora: convert-model with an adapter
    mfpo::ConvertModelCommandOptions o;
    o.model_dir = absl::GetFlag(FLAGS_model);
    o.out_dir = absl::GetFlag(FLAGS_out);
    o.dtype = absl::GetFlag(FLAGS_dtype);
    o.overwrite = absl::GetFlag(FLAGS_overwrite);
    if (command == "merge-lora") {
      o.adapter_dir = absl::GetFlag(FLAGS_adapter);
      if (o.adapter_dir.empty()) return Exit(absl::InvalidArgumentError("--adapter is required"));
    }
    return Exit(mfpo::RunConvertModel(o, std::cout));
  }
  if (command == "report") {
    mfpo::ReportCommandOptions o;
    for (const auto& item : absl::StrSplit(absl::GetFlag(FLAGS_runs), ',', absl::SkipEmpty())) {
      auto run = mfpo::ParseReportRun(std::string(item));
      if (!run.ok()) return Exit(run.status());
      o.runs.push_back(*run);
    }
    o.out_dir = absl::GetFlag(FLAGS_out);
    o.title = absl::GetFlag(FLAGS_title);
    o.focus = absl::GetFlag(FLAGS_focus);
    o.notes_path = absl::GetFlag(FLAGS_notes);
    o.claim = List(absl::GetFlag(FLAGS_claim));
    o.claim_against = List(absl::GetFlag(FLAGS_claim_against));
    o.claim_gap_over = absl::GetFlag(FLAGS_claim_gap_over);
    o.resamples = absl::GetFlag(FLAGS_bootstrap_resamples);
    o.seed = absl::GetFlag(FLAGS_seed);
    o.overwrite = absl::GetFlag(FLAGS_overwrite);
    return Exit(mfpo::RunReport(o, std::cout));
  }
  if (command == "pretrain-vision") {
    mfpo::VisionPretrainOptions o;
    o.model_dir = absl::GetFlag(FLAGS_model);
    o.data = absl::GetFlag(FLAGS_data);
    o.out_dir = absl::GetFlag(FLAGS_out);
    o.epochs = absl::GetFlag(FLAGS_epochs);
    o.batch_size = absl::GetFlag(FLAGS_images_per_step);
    o.lr = absl::GetFlag(FLAGS_lr);
    o.eval_split = absl::GetFlag(FLAGS_eval_split);
    o.dense_weight = absl::GetFlag(FLAGS_dense_weight);
    o.seed = absl::GetFlag(FLAGS_seed);
    auto r = mfpo::RunVisionPretrain(o, std::cout);
    if (r.ok()) std::cout << mfpo::VisionPretrainSummary(*r);
    return Exit(r.status());
  }
  if (command == "logits") {
    mfpo::LogitsCommandOptions o;
    o.model_dir = absl::GetFlag(FLAGS_model);
    o.image_path = absl::GetFlag(FLAGS_image);
    o.prompt = absl::GetFlag(FLAGS_prompt);
    o.response = absl::GetFlag(FLAGS_response);
    o.dtype = absl::GetFlag(FLAGS_dtype);
    o.out_path = absl::GetFlag(FLAGS_out);
    o.adapter_dir = absl::GetFlag(FLAGS_adapter);
    o.chat_template = absl::GetFlag(FLAGS_chat_template);
    return Exit(mfpo::RunLogits(o, std::cout));
  }
  if (command == "generate") {
    mfpo::GenerateCommandOptions o;
    o.model_dir = absl::GetFlag(FLAGS_model);
    o.image_path = absl::GetFlag(FLAGS_image);
    o.prompt = absl::GetFlag(FLAGS_prompt);
    o.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
    o.json = absl::GetFlag(FLAGS_json);
    o.dtype = absl::GetFlag(FLAGS_dtype);
    o.adapter_dir = absl::GetFlag(FLAGS_adapter);
    o.chat_template = absl::GetFlag(FLAGS_chat_template);
    return Exit(mfpo::RunGenerate(o, std::cout));
  }
  std::cerr << "mfpo: unknown command '" << command << "'\n\n" << kUsage;
  return 2;
}

}  // namespace
