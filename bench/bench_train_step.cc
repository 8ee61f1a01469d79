// Training-step throughput: the optimised MFPO step against a naive one, same model, same data,
// same process (medium preset by default).
//
//   optimised: one forward over the micro-batch's (m,y_w), (m,y_l), (m',y_w) rows, each image
//              encoded once, reference log-probs from the cache (a tensor lookup);
//   naive:     one forward per sequence (the image encoded again for each), and the reference
//              model run online for every sequence.
// Prints samples/s of both, their ratio (target >= 2), and the optimised step's achieved FLOP/s
// as a ratio to LibTorch's fp32 matmul FLOP/s measured here.
#include <chrono>
#include <functional>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_examples.h"
#include "bench/bench_util.h"
#include "common/device.h"
#include "common/presets.h"
#include "worker/mfpo_objective.h"
#include "worker/preference_step.h"

using Clock = std::chrono::steady_clock;
int main(int argc, char** argv) {
  mfpo::SetComputeThreads(0);
  torch::manual_seed(0);
  const std::string preset_name = argc > 1 ? argv[1] : "medium";
  auto preset = mfpo::GetPreset(preset_name);
  if (!preset.ok()) return 1;
  const mfpo::LlavaConfig& c = preset->config;
  mfpo::LlavaModel policy(c, torch::TensorOptions()), reference(c, torch::TensorOptions());
  mfpo::InitializeWeights(policy, 0.02, 1);
  mfpo::InitializeWeights(reference, 0.02, 1);
  const int64_t micro = 4;
  std::vector<mfpo::PreferenceExample> examples = mfpo::bench::SyntheticExamples(c, micro);
  mfpo::ObjectiveConfig objective;
  std::vector<torch::Tensor> params;
  for (const auto& p : policy->parameters())
    if (p.requires_grad()) params.push_back(p);
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-5));
  mfpo::ResponseLogps cached;
  {
    torch::NoGradGuard ng;
    cached = mfpo::ComputeStepLogps(reference, c.pad_token_id, examples, objective)->logps;
  }
  auto optimised = [&] {
    auto out = mfpo::ComputeStepLogps(policy, c.pad_token_id, examples, objective);
    auto obj = mfpo::ComputeObjective(objective, out->logps, cached, out->chosen_tokens);
    opt.zero_grad();
    obj.loss.backward();
    opt.step();
  };
  auto naive = [&] {
    std::vector<torch::Tensor> w, l, wp, rw, rl, rwp, tokens;
    for (const auto& ex : examples) {
      for (int kind = 0; kind < 3; ++kind) {
        mfpo::PreferenceExample one = ex;
        if (kind == 1) one.chosen = ex.rejected;
        if (kind == 2) one.image = ex.perturbed_image;
        mfpo::ObjectiveConfig sft;  // chosen row only
        sft.variant = mfpo::ObjectiveVariant::kSft;
        auto p = mfpo::ComputeStepLogps(policy, c.pad_token_id, {one}, sft);
        torch::Tensor r;
        {
          torch::NoGradGuard ng;
          r = mfpo::ComputeStepLogps(reference, c.pad_token_id, {one}, sft)->logps.chosen;
        }
        (kind == 0 ? w : kind == 1 ? l : wp).push_back(p->logps.chosen);
        (kind == 0 ? rw : kind == 1 ? rl : rwp).push_back(r);
        if (kind == 0) tokens.push_back(p->chosen_tokens);
      }
    }
    mfpo::ResponseLogps pol{torch::cat(w), torch::cat(l), torch::cat(wp)}, ref{torch::cat(rw), torch::cat(rl), torch::cat(rwp)};
    auto obj = mfpo::ComputeObjective(objective, pol, ref, torch::cat(tokens));
    opt.zero_grad();
    obj.loss.backward();
    opt.step();
  };
  auto time = [&](const std::function<void()>& step, int iters) {
    step();  // warm-up
    const auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) step();
    return std::chrono::duration<double>(Clock::now() - t0).count() / iters;
  };
  const int iters = preset_name == "tiny" ? 6 : 3;
  const double t_opt = time(optimised, iters), t_naive = time(naive, iters);
  int64_t trainable = 0;
  for (const auto& p : params) trainable += p.numel();
  const double tokens = 3.0 * micro * examples[0].chosen.ids.size();
  const double flops = 6.0 * trainable * tokens;  // LM + projector fwd+bwd; frozen tower left out
  const double mm = mfpo::bench::MatmulFlops();
  std::printf("preset %s, micro-batch %lld (x3 sequences of %zu tokens)\n", preset_name.c_str(), (long long)micro,
              examples[0].chosen.ids.size());
  std::printf("optimised step: %.2f samples/s (%.0f ms)   naive step: %.2f samples/s (%.0f ms)\n", micro / t_opt,
              t_opt * 1e3, micro / t_naive, t_naive * 1e3);
  std::printf("optimised / naive throughput = %.2f   (target >= 2)\n", t_naive / t_opt);
  std::printf("achieved FLOP/s / matmul FLOP/s (%.0f GFLOP/s) = %.2f\n", mm / 1e9, flops / t_opt / mm);
  mfpo::bench::Result("train_step", preset_name + " MFPO step throughput", t_naive / t_opt,
                      "naive step (one forward per sequence, online reference)", ">= 2");
  mfpo::bench::Result("train_step", preset_name + " MFPO step achieved FLOP/s", flops / t_opt / mm,
                      "LibTorch fp32 matmul FLOP/s");
  return 0;
}
