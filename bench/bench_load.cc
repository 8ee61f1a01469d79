// Checkpoint load benchmark.
//
// Writes a >= 1 GiB LLaVA checkpoint (F32, sharded like the hub's), then in this same run:
//  1. plain sequential read() of the same files (the baseline; page cache warm for both),
//  2. LoadModelDir in a fresh child process (so that its peak RSS is the load's alone).
// Prints load throughput / read throughput (target >= 0.8) and
// (peak RSS - RSS before loading) / checkpoint size (target <= 1.1).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "common/model_dir.h"
#include "common/presets.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

int64_t StatusKb(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(std::strlen(key)));
  return -1;
}

mfpo::LlavaConfig BenchConfig() {
  auto preset = mfpo::GetPreset("tiny");
  mfpo::LlavaConfig c = preset->config;
  c.text.vocab_size = 32064;
  c.text.hidden_size = 2048;
  c.text.intermediate_size = 5632;
  c.text.num_hidden_layers = 3;
  c.text.num_attention_heads = 16;
  c.text.num_key_value_heads = 16;
  c.text.head_dim = 128;
  c.image_token_index = 32000;
  c.pad_token_id = 32001;
  return c;
}

// Child: load and report seconds, baseline and peak RSS (kB) on stdout.
int ChildLoad(const std::string& dir) {
  const int64_t before = StatusKb("VmRSS:");
  mfpo::LoadModelOptions o;
  o.load_tokenizer = false;
  const auto t0 = Clock::now();
  auto m = mfpo::LoadModelDir(dir, o);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!m.ok()) {
    std::cerr << m.status() << "\n";
    return 1;
  }
  std::cout << secs << " " << before << " " << StatusKb("VmHWM:") << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--child_load") return ChildLoad(argv[2]);
  const fs::path dir = argc > 1 ? fs::path(argv[1]) : fs::temp_directory_path() / "mfpo_bench_ckpt";
  if (!fs::exists(dir / "model.safetensors.index.json")) {
    std::cout << "writing benchmark checkpoint to " << dir << " ..." << std::flush;
    mfpo::LlavaModel model(BenchConfig(), torch::TensorOptions());
    mfpo::InitializeWeights(model, 0.02, 1);
    mfpo::CheckpointWriteOptions w;
    w.max_shard_bytes = 400ull << 20;
    if (auto s = mfpo::SaveModelWeights(dir.string(), model, w); !s.ok()) {
      std::cerr << s << "\n";
      return 1;
    }
    std::cout << " done\n";
  }
  uint64_t bytes = 0;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") {
      files.push_back(e.path());
      bytes += fs::file_size(e.path());
    }
  const double gib = bytes / double(1 << 30);

  std::printf("checkpoint: %.2f GiB in %zu files\n", gib, files.size());
  // Evicts the files from the page cache (clean pages; no root needed) for the cold runs.
  auto evict = [&] {
    for (const auto& f : files) {
      int fd = ::open(f.c_str(), O_RDONLY);
      ::fdatasync(fd);
      ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      ::close(fd);
    }
  };
  // Baseline: plain sequential read() of the same files through an 8 MiB buffer.
  auto sequential_read = [&] {
    std::vector<char> buf(8 << 20);
    const auto t0 = Clock::now();
    for (const auto& f : files) {
      int fd = ::open(f.c_str(), O_RDONLY);
      while (::read(fd, buf.data(), buf.size()) > 0) {
      }
      ::close(fd);
    }
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  auto child_load = [&](double* secs, double* rss_ratio) {
    std::FILE* p = ::popen((self + " --child_load " + dir.string()).c_str(), "r");
    long long before_kb = 0, peak_kb = 0;
    const bool ok = p != nullptr && std::fscanf(p, "%lf %lld %lld", secs, &before_kb, &peak_kb) == 3;
    if (p != nullptr) ::pclose(p);
    *rss_ratio = (peak_kb - before_kb) * 1024.0 / bytes;
    return ok;
  };
  // Medians of 5 alternating runs: this machine's disk and memory are shared and noisy.
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  for (const char* mode : {"cold", "warm"}) {
    const bool cold = std::string(mode) == "cold";
    std::vector<double> reads, loads, rss;
    for (int rep = 0; rep < 5; ++rep) {
      if (cold) evict(); else sequential_read();
      reads.push_back(sequential_read());
      if (cold) evict();
      double load_secs = 0, rss_ratio = 0;
      if (!child_load(&load_secs, &rss_ratio)) {
        std::cerr << "child load failed\n";
        return 1;
      }
      loads.push_back(load_secs);
      rss.push_back(rss_ratio);
    }
    const double read_secs = median(reads), load_secs = median(loads);
    const double rss_ratio = *std::max_element(rss.begin(), rss.end());
    const double read_tp = gib / read_secs, load_tp = gib / load_secs;
    std::printf("[%s cache] sequential read %.2f GiB/s, load %.2f GiB/s (%.2f s): "
                "load/read = %.2f (target >= 0.8), worst peak RSS growth / checkpoint = %.2f (target <= 1.1)\n",
                mode, read_tp, load_tp, load_secs, load_tp / read_tp, rss_ratio);
    mfpo::bench::Result("load", std::string("load throughput, ") + mode + " cache", load_tp / read_tp,
                        "sequential read() of the files", ">= 0.8");
    mfpo::bench::Result("load", std::string("peak RSS growth / checkpoint size, ") + mode + " cache", rss_ratio,
                        "checkpoint bytes", "<= 1.1");
  }
  return 0;
}
