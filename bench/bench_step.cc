// Forward+backward throughput of the tiny and medium presets.
//
// Each step scores a padded batch of LLaVA sequences (image tokens + prompt + answer), takes
// the mean response log-prob as the loss and runs backward through projector and language
// model (vision tower frozen, as in training). Prints tokens/s and the achieved FLOP/s as a
// ratio to this LibTorch's own fp32 matmul FLOP/s measured in the same run.
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "common/llava_model.h"
#include "common/device.h"
#include "bench/bench_util.h"
#include "common/presets.h"

using Clock = std::chrono::steady_clock;

namespace {

void Bench(const std::string& name, double matmul_flops) {
  auto preset = mfpo::GetPreset(name);
  const mfpo::LlavaConfig& c = preset->config;
  mfpo::LlavaModel model(c, torch::TensorOptions());
  mfpo::InitializeWeights(model, 0.02, 0);
  model->train();
  const int64_t batch = 8, text = 48, answer = 24;
  const int64_t len = c.image_tokens() + text;
  torch::Tensor ids = torch::randint(3, 900, {batch, len}, torch::kInt64);
  ids.slice(1, 2, 2 + c.image_tokens()).fill_(c.image_token_index);
  torch::Tensor labels = torch::full({batch, len}, -100, torch::kInt64);
  labels.slice(1, len - answer).copy_(ids.slice(1, len - answer));
  torch::Tensor pixels = torch::randn({batch, 3, c.vision.image_size, c.vision.image_size});
  int64_t trainable = 0;
  for (const auto& p : model->parameters())
    if (p.requires_grad()) trainable += p.numel();
  auto step = [&] {
    mfpo::LlavaBatch b;
    b.input_ids = ids;
    b.image_features = model->EncodeImages(pixels);
    torch::Tensor loss = -model->ScoreResponses(b, labels).logp.mean();
    model->zero_grad();
    loss.backward();
  };
  for (int i = 0; i < 2; ++i) step();
  const int iters = name == "tiny" ? 10 : 4;
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) step();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count() / iters;
  const double tokens = double(batch * len);
  // 6 FLOPs per trainable parameter per token (forward 2, backward 4) for the language model
  // and projector; the frozen tower's forward (2 per parameter per patch) and attention are
  // left out, so the ratio is a lower bound.
  const double flops = 6.0 * trainable * tokens;
  std::printf("%-6s  %8.0f tokens/s  %6.1f ms/step  batch %lld x %lld tokens  achieved/matmul FLOP/s = %.2f\n",
              name.c_str(), tokens / secs, secs * 1e3, (long long)batch, (long long)len,
              flops / secs / matmul_flops);
  mfpo::bench::Result("step", name + " forward+backward achieved FLOP/s", flops / secs / matmul_flops,
                      "LibTorch fp32 matmul FLOP/s");
}

}  // namespace

int main() {
  torch::manual_seed(0);
  mfpo::SetComputeThreads(0);
  const double mm = mfpo::bench::MatmulFlops();
  std::printf("LibTorch fp32 matmul (1024^3): %.1f GFLOP/s on %d threads\n", mm / 1e9,
              torch::get_num_threads());
  Bench("tiny", mm);
  Bench("medium", mm);
  return 0;
}
