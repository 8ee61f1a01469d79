// Data parallel on c10d (worker/collective.h, worker/grad_reducer.h), three measurements:
//
//   scaling     2 Gloo ranks x 1 thread against 1 rank x 1 thread, the same per-rank micro-batch
//               of the medium preset's MFPO step: samples/s ratio (target >= 1.8), and the share
//               of the gradient all-reduce hidden behind backward (1 - exposed wait / the same
//               all-reduces run alone).
//   bandwidth   Gloo all-reduce bus bandwidth between 2 ranks on loopback, 1 MB to 256 MB, as a
//               ratio to this machine's memcpy bandwidth.
//   state       optimizer-state bytes per rank with and without shard_state at 2 and 4 ranks,
//               as a ratio to 1/N of the whole (target <= 1.1: the partition is balanced).
//
// The ranks are child processes of this binary (--role rank ...), joined through a TCPStore on
// a free loopback port that the parent hosts.
//
//   mfpo_bench_data_parallel [scaling|bandwidth|state|all]
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_examples.h"
#include "bench/bench_util.h"
#include "common/device.h"
#include "common/presets.h"
#include "worker/collective.h"
#include "worker/grad_reducer.h"
#include "worker/mfpo_objective.h"
#include "worker/optimizer_state.h"
#include "worker/preference_step.h"

using Clock = std::chrono::steady_clock;
namespace {

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::map<std::string, std::string> Args(int argc, char** argv) {
  std::map<std::string, std::string> m;
  for (int i = 1; i + 1 < argc; i += 2) m[argv[i]] = argv[i + 1];
  return m;
}

// The rank processes: "--role rank --task T --rank R --world N --port P --out FILE".
int RankMain(const std::map<std::string, std::string>& a) {
  mfpo::SetComputeThreads(1);
  const int rank = std::stoi(a.at("--rank")), world = std::stoi(a.at("--world"));
  mfpo::GroupOptions g;
  g.rank = rank;
  g.world_size = world;
  g.rendezvous = "127.0.0.1:" + a.at("--port");
  g.store_is_external = true;
  g.timeout_ms = 120000;
  auto group = mfpo::Collective::Join(g, torch::kCPU);
  if (!group.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, group.status().ToString().c_str());
    return 1;
  }
  std::ofstream out(a.at("--out"));
  if (a.at("--task") == "bandwidth") {
    for (int64_t mb : {1, 4, 16, 64, 256}) {
      torch::Tensor t = torch::ones({mb * 262144});  // mb MiB
      (void)(*group)->AllReduceSum(t, "warm-up");
      const int iters = mb >= 64 ? 3 : 10;
      const auto t0 = Clock::now();
      for (int i = 0; i < iters; ++i) (void)(*group)->AllReduceSum(t, "bandwidth");
      out << mb << " " << Since(t0) / iters << "\n";
    }
    return 0;
  }
  // scaling: the medium preset's MFPO step on a micro-batch of 4 per rank.
  auto preset = mfpo::GetPreset("medium");
  if (!preset.ok()) return 1;
  const mfpo::LlavaConfig& c = preset->config;
  torch::manual_seed(0);
  mfpo::LlavaModel policy(c, torch::TensorOptions());
  mfpo::InitializeWeights(policy, 0.02, 1);
  policy->FreezeVisionTower(true);
  std::vector<mfpo::PreferenceExample> examples = mfpo::bench::SyntheticExamples(c, 4, 10 * rank);
  mfpo::ObjectiveConfig objective;
  std::vector<torch::Tensor> params;
  for (auto& item : policy->named_parameters(true)) {
    const bool train = item.key().rfind("vision_tower", 0) != 0;
    item.value().set_requires_grad(train);
    if (train) params.push_back(item.value());
  }
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-5));
  mfpo::ResponseLogps cached;
  {
    torch::NoGradGuard ng;
    cached = mfpo::ComputeStepLogps(policy, c.pad_token_id, examples, objective)->logps;
  }
  std::unique_ptr<mfpo::GradientReducer> reducer;
  if (world > 1) reducer = std::make_unique<mfpo::GradientReducer>(group->get(), params);
  double backward = 0, wait = 0, total = 0;
  const int steps = 4;
  for (int s = -1; s < steps; ++s) {  // step -1: warm-up
    const auto t0 = Clock::now();
    opt.zero_grad();
    auto out_logps = mfpo::ComputeStepLogps(policy, c.pad_token_id, examples, objective);
    auto obj = mfpo::ComputeObjective(objective, out_logps->logps, cached, out_logps->chosen_tokens);
    if (reducer) reducer->Arm();
    const auto tb = Clock::now();
    obj.loss.backward();
    const double b = Since(tb);
    double w = 0;
    if (reducer) {
      mfpo::ReduceStats stats;
      if (!reducer->Finish(&stats).ok()) return 1;
      w = stats.wait_seconds;
    }
    opt.step();
    if (s >= 0) {
      backward += b;
      wait += w;
      total += Since(t0);
    }
  }
  // The same all-reduces alone (no backward to hide behind).
  double alone = 0;
  if (reducer) {
    const auto t0 = Clock::now();
    for (int s = 0; s < steps; ++s) {
      reducer->Arm();
      mfpo::ReduceStats stats;
      if (!reducer->Finish(&stats).ok()) return 1;
    }
    alone = Since(t0);
  }
  out << 4.0 * steps / total << " " << backward / steps << " " << wait / steps << " " << alone / steps << " "
      << (reducer ? reducer->buckets() : 0) << " " << total / steps << "\n";
  return 0;
}

// Starts `world` rank processes for `task` around a store hosted here; returns each rank's output.
std::vector<std::string> RunRanks(const char* self, const std::string& task, int world) {
  auto store = mfpo::RendezvousServer::Start("127.0.0.1", 120000);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    std::exit(1);
  }
  std::vector<pid_t> pids;
  std::vector<std::string> outs;
  for (int r = 0; r < world; ++r) {
    const std::string out = "/tmp/mfpo_bench_dp_" + std::to_string(getpid()) + "_" + std::to_string(r);
    outs.push_back(out);
    const pid_t pid = fork();
    if (pid == 0) {
      const std::vector<std::string> args = {self,      "--role",  "rank", "--task",  task,
                                             "--rank",  std::to_string(r), "--world", std::to_string(world),
                                             "--port",  std::to_string((*store)->port()), "--out", out};
      std::vector<char*> argv;
      for (const auto& s : args) argv.push_back(const_cast<char*>(s.c_str()));
      argv.push_back(nullptr);
      execv(self, argv.data());
      _exit(127);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "a rank of %s failed\n", task.c_str());
      std::exit(1);
    }
  }
  std::vector<std::string> results;
  for (const auto& out : outs) {
    std::ifstream in(out);
    results.emplace_back((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::remove(out.c_str());
  }
  return results;
}

double MemcpyBandwidth() {
  torch::Tensor a = torch::ones({256 * 262144}), b = torch::empty_like(a);
  b.copy_(a);
  const int iters = 5;
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) b.copy_(a);
  return 1024.0 * 1024 * 1024 * iters / Since(t0);  // bytes/s (256 MiB x 4 bytes = 1 GiB)
}

void Scaling(const char* self) {
  double one[6], two[6];
  std::sscanf(RunRanks(self, "scaling", 1)[0].c_str(), "%lf %lf %lf %lf %lf %lf", &one[0], &one[1], &one[2], &one[3], &one[4],
              &one[5]);
  std::sscanf(RunRanks(self, "scaling", 2)[0].c_str(), "%lf %lf %lf %lf %lf %lf", &two[0], &two[1], &two[2], &two[3], &two[4],
              &two[5]);
  // Samples/s of the group: each rank's micro-batch per step time.
  two[0] *= 2;
  std::printf("step time: 1 rank %.0f ms (backward %.0f ms); 2 ranks %.0f ms (backward %.0f ms)\n", one[5] * 1e3,
              one[1] * 1e3, two[5] * 1e3, two[1] * 1e3);
  const double ratio = two[0] / one[0];
  const double hidden = two[3] > 0 ? std::max(0.0, 1.0 - two[2] / two[3]) : 0.0;
  std::printf("1 rank x 1 thread: %.2f samples/s; 2 ranks x 1 thread: %.2f samples/s (%.0f gradient buckets)\n", one[0],
              two[0], two[4]);
  std::printf("scaling 2 ranks / 1 rank = %.2f (target >= 1.8)\n", ratio);
  std::printf("all-reduce per step: %.0f ms alone, %.0f ms exposed after a %.0f ms backward: %.0f%% hidden\n",
              two[3] * 1e3, two[2] * 1e3, two[1] * 1e3, hidden * 100);
  mfpo::bench::Result("data_parallel", "medium MFPO step, 2 Gloo ranks / 1 rank samples/s", ratio,
                      "1 rank x 1 thread, same micro-batch", ">= 1.8");
  mfpo::bench::Result("data_parallel", "share of gradient all-reduce hidden behind backward", hidden,
                      "the same all-reduces run alone");
}

void Bandwidth(const char* self) {
  const double memcpy_bw = MemcpyBandwidth();
  std::printf("memcpy: %.2f GB/s\n", memcpy_bw / 1e9);
  const std::string out = RunRanks(self, "bandwidth", 2)[0];
  std::istringstream in(out);
  int64_t mb;
  double secs;
  while (in >> mb >> secs) {
    // Bus bandwidth of an all-reduce over n ranks: bytes x 2(n-1)/n / time (= bytes / time for n = 2).
    const double bus = mb * 1048576.0 * 2 * (2 - 1) / 2 / secs;  // mb MiB of float32
    std::printf("all-reduce %4lld MB: %.1f ms, bus bandwidth %.2f GB/s = %.3f x memcpy\n", static_cast<long long>(mb),
                secs * 1e3, bus / 1e9, bus / memcpy_bw);
    mfpo::bench::Result("data_parallel", "Gloo all-reduce bus bandwidth, 2 ranks, " + std::to_string(mb) + " MB",
                        bus / memcpy_bw, "memcpy bandwidth");
  }
}

void State() {
  auto preset = mfpo::GetPreset("medium");
  if (!preset.ok()) std::exit(1);
  mfpo::LlavaModel model(preset->config, torch::TensorOptions());
  std::vector<torch::Tensor> params;
  std::vector<int64_t> numels;
  for (auto& item : model->named_parameters(true))
    if (item.key().rfind("vision_tower", 0) != 0) {
      params.push_back(item.value());
      numels.push_back(item.value().numel());
    }
  // The real AdamW state after one step, for the parameters a rank keeps.
  auto state_bytes = [&](const std::vector<int>& owner, int rank) {
    std::vector<torch::Tensor> mine;
    for (size_t k = 0; k < params.size(); ++k)
      if (owner[k] == rank) {
        mine.push_back(params[k]);
        params[k].mutable_grad() = torch::ones_like(params[k]);
      }
    torch::optim::AdamW opt(mine, torch::optim::AdamWOptions(1e-5));
    opt.step();
    return static_cast<double>(mfpo::AdamWStateBytes(opt));
  };
  const double whole = state_bytes(std::vector<int>(params.size(), 0), 0);
  std::printf("AdamW state of the medium preset's trainable parameters: %.1f MB in one process\n", whole / 1e6);
  for (int n : {2, 4}) {
    const std::vector<int> owner = mfpo::OwnerOfParams(numels, n);
    double worst = 0;
    for (int r = 0; r < n; ++r) worst = std::max(worst, state_bytes(owner, r));
    std::printf("%d ranks: without shard_state %.1f MB per rank (%.2f x 1/N); with shard_state at most %.1f MB (%.2f x 1/N)\n",
                n, whole / 1e6, whole / (whole / n), worst / 1e6, worst / (whole / n));
    mfpo::bench::Result("data_parallel", std::to_string(n) + " ranks: optimizer state per rank without shard_state",
                        whole / (whole / n), "1/N of the whole state");
    mfpo::bench::Result("data_parallel", std::to_string(n) + " ranks: optimizer state per rank with shard_state (largest)",
                        worst / (whole / n), "1/N of the whole state", "<= 1.1");
  }
}

}  // namespace

int main(int argc, char** argv) {
  const auto args = Args(argc, argv);
  if (args.count("--role")) return RankMain(args);
  const std::string what = argc > 1 ? argv[1] : "all";
  if (what != "all" && what != "scaling" && what != "bandwidth" && what != "state") {
    std::fprintf(stderr, "usage: mfpo_bench_data_parallel [scaling|bandwidth|state|all]\n");
    return 2;
  }
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return 1;
  self[n] = '\0';
  if (what == "all" || what == "state") State();
  if (what == "all" || what == "bandwidth") Bandwidth(self);
  if (what == "all" || what == "scaling") Scaling(self);
  return 0;
}
