// Data-parallel training with real processes on loopback: `mfpo train` as local ranks
// (resources.workers) and as hand-started ranks (--rank/--world-size/--rendezvous on a free
// port). Every process runs under a deadline and is killed and reaped when a test ends, also
// when it fails.
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/file_util.h"
#include "common/presets.h"
#include "common/safetensors.h"
#include "datagen/scene_world.h"
#include "tests/checkpoint_diff.h"
#include "tests/test_process.h"

namespace mfpo {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

class DataParallelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(fs::temp_directory_path() / ("data_parallel_test_" + std::to_string(::getpid())));
    fs::remove_all(*root_);
    for (int seed : {3, 4}) {
      InitModelOptions init;
      init.seed = seed;
      ASSERT_TRUE(InitModelDir((*root_ / ("model" + std::to_string(seed))).string(), init).ok());
    }
    WorldOptions world;
    world.train = 12;
    world.val = 0;
    world.test = 0;
    world.size = 32;
    ASSERT_TRUE(WriteWorld((*root_ / "world").string(), world).ok());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
  }

  struct Job {
    std::string variant = "mfpo";
    int workers = 1, micro = 4, accum = 1, samples = 24;
    bool shard = false;
    int model_seed = 3;
    bool lora = false;  // rank-4 adapters on q_proj and v_proj, no dropout
    int timeout_s = 30;
    // 5e-5: AdamW's step is about lr per weight whatever the gradient's size, so float noise in a
    // near-zero gradient (another padding of a bigger micro-batch, another BLAS thread count)
    // moves a weight by up to ~lr/10 (1.0e-5 was measured at lr 1e-4).
    double lr = 5e-5;
  };
  // Writes NAME.yaml for `job` (output_dir NAME); returns its path.
  static fs::path Spec(const std::string& name, const Job& j) {
    const fs::path path = *root_ / (name + ".yaml");
    std::ofstream(path) << "output_dir: " << (*root_ / name).string() << "\n"
                        << "model: {path: " << (*root_ / ("model" + std::to_string(j.model_seed))).string() << "}\n"
                        << "data: {train: " << (*root_ / "world" / "train.jsonl").string()
                        << ", max_samples: " << j.samples << "}\n"
                        << "objective: {variant: " << j.variant << "}\n"
                        << "optimizer: {lr: " << j.lr << ", micro_batch: " << j.micro << ", grad_accum: " << j.accum
                        << ", warmup_ratio: 0.2, shard_state: " << (j.shard ? "true" : "false")
                        << (j.lora ? ", lora: {rank: 4, alpha: 8, dropout: 0, target_modules: [q_proj, v_proj]}" : "") << "}\n"
                        << "curriculum: {mode: end_to_end}\n"
                        << "checkpoint: {keep_last: 0}\n"
                        << "resources: {workers: " << j.workers << ", threads: 2, collective_timeout_s: " << j.timeout_s
                        << "}\n";
    return path;
  }
  // Runs `mfpo train --spec NAME.yaml EXTRA...` to the end (asserting success) and returns the
  // final checkpoint's directory.
  static fs::path Train(const std::string& name, const Job& j, const std::vector<std::string>& extra = {},
                        const std::string& checkpoint = "step-000003") {
    std::vector<std::string> args = {"train", "--spec", Spec(name, j).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    Process p(MFPO_BIN, args, *root_ / (name + ".log"));
    const int code = p.Wait(240);
    EXPECT_EQ(code, 0) << p.Log();
    return *root_ / name / "checkpoints" / checkpoint;
  }
  // Ranks 0 and 1 of a hand-started group of two on a free port, one thread each (logs NAME-R.log).
  static std::vector<std::unique_ptr<Process>> StartPair(const fs::path& spec, const std::string& name) {
    const std::string rendezvous = "127.0.0.1:" + std::to_string(FreePort());
    std::vector<std::unique_ptr<Process>> ranks;
    for (const char* r : {"0", "1"})
      ranks.push_back(std::make_unique<Process>(
          MFPO_BIN, std::vector<std::string>{"train", "--spec", spec.string(), "--rank", r, "--world-size", "2", "--rendezvous",
                                   rendezvous, "--threads", "1"},
          *root_ / (name + "-" + r + ".log")));
    return ranks;
  }
  // metrics.jsonl's grad_norm of each step of run NAME.
  static std::vector<double> GradNorms(const std::string& name) {
    std::vector<double> out;
    std::ifstream in(*root_ / name / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const auto at = line.find("\"grad_norm\":");
      if (at != std::string::npos) out.push_back(std::atof(line.c_str() + at + 12));
    }
    return out;
  }
  static fs::path* root_;
};
fs::path* DataParallelTest::root_ = nullptr;

class Equivalence : public DataParallelTest, public ::testing::WithParamInterface<std::string> {};

// 2 ranks x micro-batch 4 = 1 rank x micro-batch 4 x accumulation 2 = 1 rank x micro-batch 8,
// also with the optimizer state sharded over the 2 ranks (3 steps, fp32 on CPU).
TEST_P(Equivalence, TwoRanksEqualAccumulationEqualOneBigBatch) {
  const std::string v = GetParam();
  Job big{v, 1, 8, 1};
  Job accumulated{v, 1, 4, 2};
  Job ranks{v, 2, 4, 1};
  Job sharded{v, 2, 4, 1, 24, true};
  const fs::path a = Train(v + "-big", big), b = Train(v + "-accum", accumulated), c = Train(v + "-ranks", ranks),
                 d = Train(v + "-sharded", sharded);
  // Training moved the weights (the comparisons below are not between untouched models).
  EXPECT_GT(MaxDiff(a, *root_ / "model3"), 5e-5);
  // AdamW does not see a gradient's scale, so the weights alone would not catch gradients summed
  // instead of averaged: the logged gradient norms must agree too.
  const std::vector<double> norms = GradNorms(v + "-big");
  ASSERT_EQ(norms.size(), 3u);
  for (const std::string run : {"-accum", "-ranks", "-sharded"}) {
    const std::vector<double> other = GradNorms(v + run);
    ASSERT_EQ(other.size(), norms.size()) << run;
    for (size_t k = 0; k < norms.size(); ++k) EXPECT_NEAR(other[k], norms[k], 1e-4 * norms[k]) << run << " step " << k;
  }
  EXPECT_LE(MaxDiff(a, b), 1e-5);
  EXPECT_LE(MaxDiff(a, c), 1e-5);
  EXPECT_LE(MaxDiff(a, d), 1e-5);
  // Each rank wrote its own optimizer file; sharded, each holds about half of the state.
  const auto size = [](const fs::path& p) { return static_cast<double>(fs::file_size(p)); };
  const double r0 = size(d / "optimizer" / "rank-00000-of-00002.safetensors");
  const double r1 = size(d / "optimizer" / "rank-00001-of-00002.safetensors");
  const double whole = size(c / "optimizer" / "rank-00000-of-00002.safetensors");
  EXPECT_NEAR(r0 / whole, 0.5, 0.1);
  EXPECT_NEAR(r1 / whole, 0.5, 0.1);
  // metrics.jsonl: one line per step with the step time split and the bytes reduced.
  const std::string metrics = ReadFileToString((*root_ / (v + "-ranks") / "metrics.jsonl").string()).value_or("");
  EXPECT_NE(metrics.find("\"allreduce_wait_s\""), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\"bytes_reduced\""), std::string::npos) << metrics;
}

INSTANTIATE_TEST_SUITE_P(Objectives, Equivalence, ::testing::Values("dpo", "mfpo"));

// LoRA on 2 ranks = 1 rank with the whole batch; only the adapters' gradients are all-reduced.
TEST_F(DataParallelTest, LoraTwoRanksEqualOneBigBatch) {
  Job big{"mfpo", 1, 8, 1};
  big.lora = true;
  Job ranks{"mfpo", 2, 4, 1};
  ranks.lora = true;
  ranks.lr = big.lr = 1e-3;
  const fs::path a = Train("lora-big", big), c = Train("lora-ranks", ranks);
  const fs::path fa = a / "adapter_model.safetensors", fc = c / "adapter_model.safetensors";
  ASSERT_TRUE(fs::exists(fa) && fs::exists(fc));
  EXPECT_FALSE(fs::exists(c / "model.safetensors"));
  auto ta = SafetensorsFile::Open(fa.string());
  auto tc = SafetensorsFile::Open(fc.string());
  ASSERT_TRUE(ta.ok() && tc.ok());
  std::vector<std::string> names;
  for (const auto& e : (*ta)->entries()) names.push_back(e.name);
  ASSERT_EQ((*ta)->entries().size(), (*tc)->entries().size());
  double worst = 0, moved = 0;
  for (const auto& name : names) {
    torch::Tensor x = *(*ta)->Load(name, torch::kFloat64), y = *(*tc)->Load(name, torch::kFloat64);
    worst = std::max(worst, (x - y).abs().max().item<double>());
    if (name.find("lora_B") != std::string::npos) moved = std::max(moved, x.abs().max().item<double>());
  }
  EXPECT_GT(moved, 1e-4) << "B stayed at zero: nothing trained";
  EXPECT_LE(worst, 1e-5);
  const std::vector<double> na = GradNorms("lora-big"), nc = GradNorms("lora-ranks");
  ASSERT_EQ(na.size(), 3u);
  ASSERT_EQ(nc.size(), na.size());
  for (size_t k = 0; k < na.size(); ++k) EXPECT_NEAR(nc[k], na[k], 1e-4 * na[k]) << "step " << k;
  // The all-reduced bytes per step are exactly the adapters' fp32 gradients, (in + out) x rank
  // floats per adapted layer: no base weight is in the buckets.
  const std::string metrics = ReadFileToString((*root_ / "lora-ranks" / "metrics.jsonl").string()).value_or("");
  const auto at = metrics.find("\"bytes_reduced\":");
  ASSERT_NE(at, std::string::npos) << metrics;
  const double bytes = std::atof(metrics.c_str() + at + 16);
  int64_t adapter_floats = 0;
  for (const auto& name : names) adapter_floats += (*ta)->Load(name, torch::kFloat32)->numel();
  EXPECT_EQ(bytes, 4.0 * adapter_floats) << metrics.substr(at, 40);
}

// Stop in the middle of the phase and continue on another number of ranks: the global batch is
// kept (accumulation adjusted) and the weights equal an uninterrupted run's.
TEST_F(DataParallelTest, ResumeOnAnotherWorldSizeContinuesTheSameRun) {
  const fs::path reference = Train("resume-reference", Job{"mfpo", 1, 4, 2});
  // 2 ranks -> 1 rank (the same spec, --world-size 1).
  Train("two-to-one", Job{"mfpo", 2, 4, 1}, {"--stop_after_steps", "1"}, "step-000001");
  const fs::path two_to_one = Train("two-to-one", Job{"mfpo", 2, 4, 1}, {"--rank", "0", "--world-size", "1"});
  EXPECT_LE(MaxDiff(reference, two_to_one), 1e-5);
  // 1 rank -> 2 ranks (the spec changed from accumulation 2 to 2 workers: the same global batch).
  Train("one-to-two", Job{"mfpo", 1, 4, 2}, {"--stop_after_steps", "1"}, "step-000001");
  const fs::path one_to_two = Train("one-to-two", Job{"mfpo", 2, 4, 1});
  EXPECT_LE(MaxDiff(reference, one_to_two), 1e-5);
  // After the resume the gradient buckets still go out during backward (hooks on the parameters'
  // current gradient accumulators).
  const std::string metrics = ReadFileToString((*root_ / "one-to-two" / "metrics.jsonl").string()).value_or("");
  EXPECT_NE(metrics.find("\"buckets_launched_in_backward\":"), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("\"buckets_launched_in_backward\":0"), std::string::npos) << metrics;
  // A changed global batch is refused by name.
  Process p(MFPO_BIN, {"train", "--spec", Spec("one-to-two", Job{"mfpo", 2, 4, 2}).string()}, *root_ / "changed.log");
  EXPECT_NE(p.Wait(120), 0);
  EXPECT_NE(p.Log().find("resources.workers x optimizer.grad_accum"), std::string::npos) << p.Log();
}

// A rank killed mid-step: the other rank fails with an error naming the operation and itself,
// within the collective timeout + 10 s; through the local launcher, the launcher stops the rest
// and exits non-zero, leaving no process behind.
TEST_F(DataParallelTest, KilledRankStopsTheOthers) {
  Job slow{"mfpo", 2, 1, 1, 24};  // 12 steps of one example per rank
  slow.timeout_s = 20;
  const fs::path spec = Spec("killed", slow);
  auto ranks = StartPair(spec, "killed");
  Process& r0 = *ranks[0];
  Process& r1 = *ranks[1];
  ASSERT_TRUE(r0.WaitForLog("step 2/", 120)) << r0.Log() << r1.Log();
  ::kill(r1.pid(), SIGKILL);
  const auto t0 = Clock::now();
  const int code = r0.Wait(slow.timeout_s + 10);
  EXPECT_NE(code, -1) << "rank 0 did not exit within the timeout + 10 s";
  EXPECT_NE(code, 0);
  EXPECT_LE(std::chrono::duration<double>(Clock::now() - t0).count(), slow.timeout_s + 10);
  EXPECT_NE(r0.Log().find("rank 0 of 2"), std::string::npos) << r0.Log();

  // The launcher: kill one of its ranks.
  fs::remove_all(*root_ / "killed");
  Process launcher(MFPO_BIN, {"train", "--spec", spec.string()}, *root_ / "killed-launcher.log");
  ASSERT_TRUE(launcher.WaitForLog("step 2/", 120)) << launcher.Log();
  std::vector<pid_t> children;
  {
    std::ifstream in("/proc/" + std::to_string(launcher.pid()) + "/task/" + std::to_string(launcher.pid()) + "/children");
    pid_t c;
    while (in >> c) children.push_back(c);
  }
  ASSERT_EQ(children.size(), 2u);
  ::kill(children[1], SIGKILL);
  const int launcher_code = launcher.Wait(slow.timeout_s + 10 + 5);
  EXPECT_NE(launcher_code, -1) << "the launcher did not exit in time";
  EXPECT_NE(launcher_code, 0);
  EXPECT_NE(launcher.Log().find("was killed by signal 9"), std::string::npos) << launcher.Log();
  for (pid_t c : children) EXPECT_NE(::kill(c, 0), 0) << "rank process " << c << " is still there";
}

// A rank that hangs (stopped with SIGSTOP) makes the other fail at the collective timeout with
// the operation's name, never a silent wait.
TEST_F(DataParallelTest, HungRankFailsTheOthersAtTheTimeout) {
  Job slow{"dpo", 2, 1, 1, 24};
  slow.timeout_s = 5;
  const fs::path spec = Spec("hung", slow);
  auto ranks = StartPair(spec, "hung");
  Process& r0 = *ranks[0];
  Process& r1 = *ranks[1];
  ASSERT_TRUE(r0.WaitForLog("step 2/", 120)) << r0.Log() << r1.Log();
  ::kill(r1.pid(), SIGSTOP);
  const int code = r0.Wait(slow.timeout_s + 10);
  ::kill(r1.pid(), SIGKILL);
  EXPECT_NE(code, -1) << "rank 0 waited past the timeout + 10 s: " << r0.Log();
  EXPECT_NE(code, 0);
  EXPECT_NE(r0.Log().find("rank 0 of 2: "), std::string::npos) << r0.Log();
  EXPECT_NE(r0.Log().find("collective timeout 5 s"), std::string::npos) << r0.Log();
}

// Ranks that loaded different weights (the same spec, a relative model.path on two "machines")
// or run different specs are refused, every one of them, before anything is trained.
TEST_F(DataParallelTest, RanksWithDifferentWeightsOrSpecsAreRefused) {
  for (int seed : {3, 4}) {
    const fs::path machine = *root_ / ("machine" + std::to_string(seed));
    fs::create_directories(machine);
    fs::create_symlink(*root_ / ("model" + std::to_string(seed)), machine / "model");
  }
  const fs::path spec = *root_ / "relative.yaml";
  {
    std::string text = ReadFileToString(Spec("weights", Job{"dpo", 2, 4, 1}).string()).value_or("");
    const std::string abs = "model: {path: " + (*root_ / "model3").string() + "}";
    text.replace(text.find(abs), abs.size(), "model: {path: model}");
    std::ofstream(spec) << text;
  }
  std::string rendezvous = "127.0.0.1:" + std::to_string(FreePort());
  Process r0(MFPO_BIN, {"train", "--spec", spec.string(), "--rank", "0", "--world-size", "2", "--rendezvous", rendezvous},
             *root_ / "weights-0.log", {}, *root_ / "machine3");
  Process r1(MFPO_BIN, {"train", "--spec", spec.string(), "--rank", "1", "--world-size", "2", "--rendezvous", rendezvous},
             *root_ / "weights-1.log", {}, *root_ / "machine4");
  EXPECT_NE(r0.Wait(120), 0);
  EXPECT_NE(r1.Wait(60), 0);
  for (Process* p : {&r0, &r1})
    EXPECT_NE(p->Log().find("rank 1 loaded other weights than rank 0 (first difference: "), std::string::npos) << p->Log();
  EXPECT_FALSE(fs::exists(*root_ / "weights" / "checkpoints")) << "nothing may be trained";

  Job other{"dpo", 2, 4, 1};
  other.lr = 1e-2;
  rendezvous = "127.0.0.1:" + std::to_string(FreePort());
  Process s0(MFPO_BIN, {"train", "--spec", Spec("specs", Job{"dpo", 2, 4, 1}).string(), "--rank", "0", "--world-size", "2",
              "--rendezvous", rendezvous},
             *root_ / "specs-0.log");
  Process s1(MFPO_BIN, {"train", "--spec", Spec("specs-other", other).string(), "--rank", "1", "--world-size", "2",
              "--rendezvous", rendezvous},
             *root_ / "specs-1.log");
  EXPECT_NE(s0.Wait(120), 0);
  EXPECT_NE(s1.Wait(60), 0);
  for (Process* p : {&s0, &s1}) EXPECT_NE(p->Log().find("rank 1's job spec differs from rank 0's"), std::string::npos) << p->Log();
}

// A rank whose peers never come fails at the rendezvous within its timeout, saying where.
TEST_F(DataParallelTest, ALonelyRankFailsAtTheRendezvous) {
  Job j{"dpo", 2, 4, 1};
  j.timeout_s = 3;
  const std::string rendezvous = "127.0.0.1:" + std::to_string(FreePort());
  Process r1(MFPO_BIN, {"train", "--spec", Spec("lonely", j).string(), "--rank", "1", "--world-size", "2", "--rendezvous",
              rendezvous},
             *root_ / "lonely.log");
  const auto t0 = Clock::now();
  EXPECT_NE(r1.Wait(60), 0);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 45);
  EXPECT_NE(r1.Log().find("rendezvous at " + rendezvous), std::string::npos) << r1.Log();
  // Rank 0 alone: it listens, nobody comes.
  Process r0(MFPO_BIN, {"train", "--spec", Spec("lonely", j).string(), "--rank", "0", "--world-size", "2", "--rendezvous",
              "127.0.0.1:" + std::to_string(FreePort())},
             *root_ / "lonely-0.log");
  EXPECT_NE(r0.Wait(60), 0);
  EXPECT_NE(r0.Log().find("only 1 of 2 ranks joined within 3 s"), std::string::npos) << r0.Log();
}

// Wrong launch settings are refused before anything runs, naming the flag or variable.
TEST_F(DataParallelTest, LaunchSettingsAreChecked) {
  const fs::path spec = Spec("flags", Job{"dpo", 2, 4, 1});
  struct Case {
    std::vector<std::string> args;
    std::map<std::string, std::string> env;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"--rank", "0"}, {}, "--rank, --world-size and --rendezvous go together"},
      {{"--rank", "2", "--world-size", "2", "--rendezvous", "127.0.0.1:1"}, {}, "rank 2 is not in 0..1"},
      {{"--rank", "0", "--world-size", "2"}, {}, "needs --rendezvous"},
      {{"--rank", "0", "--world-size", "2", "--rendezvous", "nohost"}, {}, "expected HOST:PORT"},
      {{"--rank", "0", "--world-size", "2", "--rendezvous", "127.0.0.1:99999"}, {}, "is not 1-65535"},
      {{"--rank", "0", "--world-size", "3", "--rendezvous", "127.0.0.1:1"}, {}, "does not divide"},
      {{}, {{"WORLD_SIZE", "2"}, {"RANK", "0"}}, "needs MASTER_ADDR and MASTER_PORT"},
      {{}, {{"WORLD_SIZE", "two"}, {"RANK", "0"}}, "WORLD_SIZE = 'two'"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"train", "--spec", spec.string()};
    args.insert(args.end(), c.args.begin(), c.args.end());
    Process p(MFPO_BIN, args, *root_ / "flags.log", c.env);
    EXPECT_NE(p.Wait(60), 0);
    EXPECT_NE(p.Log().find(c.says), std::string::npos) << p.Log();
  }
  EXPECT_FALSE(fs::exists(*root_ / "flags")) << "a refused launch wrote its output_dir";
}

}  // namespace
}  // namespace mfpo
