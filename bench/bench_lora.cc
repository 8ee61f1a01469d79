// LoRA against full training: peak resident memory and samples/s of an MFPO step (medium preset by
// default), each mode in its own process so that its peak RSS is its own.
//
//   full:         the language model and projector trained by AdamW (fp32 state for every weight);
//                 reference log-probs from the cache (what `mfpo train` does by default);
//   full+online:  the same, with the frozen reference as a second model copy run every step
//                 (objective.online_reference);
//   lora:         rank-16 adapters on every decoder linear, base frozen; reference log-probs from
//                 the cache (computed by the model with its adapters off: the trainer's default);
//   lora+online:  the same, the reference computed every step by the same model with its
//                 adapters off (no second copy).
// Online references run before the policy's forward, as in the trainer. Prints each mode's
// peak RSS (and the part of it after setup: optimizer state, gradients, activations) and
// samples/s, and the ratios of LoRA to full training, cached and online.
//
//   mfpo_bench_lora [PRESET]          (children: mfpo_bench_lora PRESET --mode MODE)
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_examples.h"
#include "bench/bench_util.h"
#include "common/device.h"
#include "common/lora.h"
#include "common/presets.h"
#include "worker/mfpo_objective.h"
#include "worker/preference_step.h"

using Clock = std::chrono::steady_clock;

namespace {

struct Measured {
  double rss_mib = 0, setup_mib = 0, samples_per_s = 0;
  long trainable = 0;
};

long PeakRssKib() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<long>(usage.ru_maxrss);
}

// One mode in this process; prints "MODE <name> <peak KiB> <peak after setup KiB> <samples/s> <trainable>".
int RunMode(const std::string& preset_name, const std::string& mode) {
  mfpo::SetComputeThreads(0);
  torch::manual_seed(0);
  auto preset = mfpo::GetPreset(preset_name);
  if (!preset.ok()) return 1;
  const mfpo::LlavaConfig& c = preset->config;
  const bool lora_mode = mode.rfind("lora", 0) == 0;
  const bool online = mode.find("+online") != std::string::npos;
  mfpo::LlavaModel policy(c, torch::TensorOptions());
  mfpo::InitializeWeights(policy, 0.02, 1);
  mfpo::LlavaModel reference{nullptr};
  if (online && !lora_mode) {
    reference = mfpo::LlavaModel(c, torch::TensorOptions());
    mfpo::InitializeWeights(reference, 0.02, 1);
    for (auto& p : reference->parameters()) p.set_requires_grad(false);
  }
  std::vector<torch::Tensor> params;
  if (lora_mode) {
    mfpo::LoraConfig lora;
    lora.rank = 16;
    lora.dropout = 0;
    if (!mfpo::AttachLora(policy, lora, 1).ok()) return 1;
  }
  for (auto& item : policy->named_parameters(true)) {
    const bool train = lora_mode ? mfpo::IsLoraParameterName(item.key()) : item.key().rfind("vision_tower", 0) != 0;
    item.value().set_requires_grad(train);
    if (train) params.push_back(item.value());
  }
  const int64_t micro = 4;
  std::vector<mfpo::PreferenceExample> examples = mfpo::bench::SyntheticExamples(c, micro);
  mfpo::ObjectiveConfig objective;
  long trainable = 0;
  for (const auto& p : params) trainable += static_cast<long>(p.numel());
  mfpo::ResponseLogps cached;
  if (!online) {
    torch::NoGradGuard ng;
    cached = mfpo::ComputeStepLogps(policy, c.pad_token_id, examples, objective)->logps;
  }
  const long setup_kib = PeakRssKib();  // the model(s), the data and the cache, before any step
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-5));
  auto step = [&] {
    mfpo::ResponseLogps ref = cached;
    if (online) {
      torch::NoGradGuard ng;
      if (lora_mode) {
        mfpo::LoraDisabled base_only(policy);
        ref = mfpo::ComputeStepLogps(policy, c.pad_token_id, examples, objective)->logps;
      } else {
        ref = mfpo::ComputeStepLogps(reference, c.pad_token_id, examples, objective)->logps;
      }
    }
    auto out = mfpo::ComputeStepLogps(policy, c.pad_token_id, examples, objective);
    auto obj = mfpo::ComputeObjective(objective, out->logps, ref, out->chosen_tokens);
    opt.zero_grad();
    obj.loss.backward();
    opt.step();
  };
  step();  // warm-up (allocates the AdamW state)
  const int iters = preset_name == "tiny" ? 6 : 3;
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) step();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count() / iters;
  std::printf("MODE %s %ld %ld %.4f %ld\n", mode.c_str(), PeakRssKib(), setup_kib, micro / secs, trainable);
  return 0;
}

// Runs this binary in `mode` and reads its line.
bool Child(const std::string& preset, const std::string& mode, Measured* m) {
  int fds[2];
  if (pipe(fds) != 0) return false;
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execl("/proc/self/exe", "mfpo_bench_lora", preset.c_str(), "--mode", mode.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  std::string text;
  char buf[512];
  for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) > 0;) text.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  const auto at = text.find("MODE ");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || at == std::string::npos) {
    std::fprintf(stderr, "mode %s failed: %s\n", mode.c_str(), text.c_str());
    return false;
  }
  char name[64];
  long kib = 0, setup = 0;
  double rate = 0;
  if (std::sscanf(text.c_str() + at, "MODE %63s %ld %ld %lf %ld", name, &kib, &setup, &rate, &m->trainable) != 5)
    return false;
  m->rss_mib = kib / 1024.0;
  m->setup_mib = setup / 1024.0;
  m->samples_per_s = rate;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string preset = argc > 1 && argv[1][0] != '-' ? argv[1] : "medium";
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--mode") == 0) return RunMode(preset, argv[i + 1]);
  const std::vector<std::string> modes = {"full", "full+online", "lora", "lora+online"};
  std::map<std::string, Measured> m;
  for (const auto& mode : modes)
    if (!Child(preset, mode, &m[mode])) return 1;
  std::printf("preset %s, micro-batch 4 (x3 sequences), MFPO step, fp32 on CPU\n", preset.c_str());
  for (const auto& mode : modes)
    std::printf("  %-12s %9ld trainable   peak RSS %7.1f MiB (%6.1f MiB of it after setup: optimizer, gradients, "
                "activations)   %5.2f samples/s\n",
                mode.c_str(), m[mode].trainable, m[mode].rss_mib, m[mode].rss_mib - m[mode].setup_mib,
                m[mode].samples_per_s);
  const Measured &lora = m["lora"], &lora_online = m["lora+online"], &full = m["full"], &online = m["full+online"];
  auto training = [](const Measured& x) { return x.rss_mib - x.setup_mib; };
  mfpo::bench::Result("lora", preset + " LoRA r16 peak RSS / full training's (cached reference)",
                      lora.rss_mib / full.rss_mib, "full training, cached reference", "< 1");
  mfpo::bench::Result("lora", preset + " LoRA r16 memory after setup / full training's (cached reference)",
                      training(lora) / training(full), "full training, cached reference", "< 1");
  mfpo::bench::Result("lora", preset + " LoRA r16 online reference (adapters off): peak RSS / full training's",
                      lora_online.rss_mib / online.rss_mib, "full training + second reference copy", "< 1");
  mfpo::bench::Result("lora", preset + " LoRA r16 samples/s / full training's (cached reference)",
                      lora.samples_per_s / full.samples_per_s, "full training, cached reference");
  mfpo::bench::Result("lora", preset + " LoRA r16 online reference: samples/s / full training's",
                      lora_online.samples_per_s / online.samples_per_s, "full training + second reference copy");
  return 0;
}
