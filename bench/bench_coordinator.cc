// The coordinator under simulated load: a real mfpo-coordinator process; 1,000 simulated workers
// heartbeating once a second each (spread over the second), two of them forming a job's training
// group and reporting a step with every heartbeat, and 100 WatchJob streams on that job. Prints
// the coordinator's CPU time as a share of one core (target < 10%) and the heartbeat latency
// percentiles seen by the clients (target p99 < 5 ms). A first phase makes the same number of
// empty calls per second, so that what gRPC and the kernel cost on this machine is known apart
// from what the coordinator does.
//
//   mfpo_bench_coordinator [--workers 1000] [--watchers 100] [--seconds 20]
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "mfpo_service.grpc.pb.h"

namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::vector<std::string> fields;
  size_t at = close + 2;
  while (at < text.size()) {
    size_t sp = text.find(' ', at);
    if (sp == std::string::npos) sp = text.size();
    fields.push_back(text.substr(at, sp - at));
    at = sp + 1;
  }
  // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  return (std::stod(fields.at(11)) + std::stod(fields.at(12))) / ticks;
}

void Result(const std::string& what, double value, const std::string& baseline, const std::string& target) {
  std::printf("RESULT\tcoordinator\t%s\t%.3f\t%s\t%s\n", what.c_str(), value, baseline.c_str(), target.c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int workers = 1000, watchers = 100, seconds = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int value = std::atoi(argv[i + 1]);
    if (flag == "--workers") workers = value;
    else if (flag == "--watchers") watchers = value;
    else if (flag == "--seconds") seconds = value;
    else {
      std::fprintf(stderr, "usage: mfpo_bench_coordinator [--workers N] [--watchers N] [--seconds S]\n");
      return 2;
    }
  }
  if (workers < 2 || watchers < 0 || seconds < 5) {
    std::fprintf(stderr, "need --workers >= 2, --watchers >= 0, --seconds >= 5\n");
    return 2;
  }
  const fs::path dir = fs::temp_directory_path() / ("bench_coordinator_" + std::to_string(getpid()));
  fs::create_directories(dir / "model");
  std::ofstream(dir / "model" / "config.json") << "{}";
  std::ofstream(dir / "train.jsonl") << "{\"id\": \"a\", \"image\": \"x.png\", \"question\": \"q\", \"chosen\": \"c\", \"rejected\": \"r\"}\n";

  const pid_t coordinator = fork();
  if (coordinator == 0) {
    const std::string db = (dir / "jobs.db").string(), roots = dir.string(), port = (dir / "port").string();
    const std::string log = (dir / "coordinator.log").string();
    FILE* f = std::fopen(log.c_str(), "w");
    if (f) dup2(fileno(f), 2);
    execl(MFPO_COORDINATOR, MFPO_COORDINATOR, "--address", "127.0.0.1:0", "--database", db.c_str(), "--roots",
          roots.c_str(), "--port_file", port.c_str(), "--worker_timeout_s", "10", static_cast<char*>(nullptr));
    _exit(127);
  }
  auto cleanup = [&] {
    kill(coordinator, SIGKILL);
    waitpid(coordinator, nullptr, 0);
    fs::remove_all(dir);
  };
  for (int i = 0; i < 200 && !fs::exists(dir / "port"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (!fs::exists(dir / "port")) {
    std::fprintf(stderr, "the coordinator did not start\n");
    cleanup();
    return 1;
  }
  std::string port;
  std::ifstream(dir / "port") >> port;
  const std::string address = "127.0.0.1:" + port;
  // A few channels (as many machines would have one each; more would only load this client).
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < 8; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("bench.channel", i);  // distinct subchannels
    channels.push_back(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  }
  auto worker_stub = [&](int i) { return mfpo::v1::WorkerService::NewStub(channels[i % channels.size()]); };
  auto deadline = [](grpc::ClientContext* c) { c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5)); };

  // Baseline: the same call rate of a call that does next to nothing (GetJob of an unknown id),
  // so that the gRPC transport's own cost on this machine is known.
  double baseline_share = 0;
  {
    std::atomic<int> calls{0};
    std::vector<std::thread> pool;
    const auto b0 = Clock::now();
    const auto b_end = b0 + std::chrono::seconds(std::max(5, seconds / 2));
    const double cpu_b0 = ProcessCpuSeconds(coordinator);
    for (int t = 0; t < 8; ++t)
      pool.emplace_back([&, t] {
        auto stub = mfpo::v1::JobService::NewStub(channels[t]);
        for (int64_t round = 0; Clock::now() < b_end; ++round)
          for (int i = t; i < workers; i += 8) {
            std::this_thread::sleep_until(b0 + std::chrono::milliseconds(round * 1000 + static_cast<int64_t>(i) * 1000 / workers));
            if (Clock::now() >= b_end) break;
            mfpo::v1::GetJobRequest r;
            r.set_job_id("none");
            mfpo::v1::Job out;
            grpc::ClientContext c;
            deadline(&c);
            (void)stub->GetJob(&c, r, &out);
            ++calls;
          }
      });
    for (auto& t : pool) t.join();
    baseline_share = (ProcessCpuSeconds(coordinator) - cpu_b0) /
                     std::chrono::duration<double>(Clock::now() - b0).count();
    std::printf("baseline: %d calls/s of an empty call (GetJob of an unknown id): coordinator CPU %.1f%% of one core\n",
                workers, 100 * baseline_share);
  }

  // Register the workers.
  std::vector<std::string> ids(workers);
  for (int i = 0; i < workers; ++i) {
    mfpo::v1::RegisterRequest r;
    r.set_role(mfpo::v1::TRAINER);
    r.set_name("sim-" + std::to_string(i));
    r.set_rendezvous_address("127.0.0.1:1");
    mfpo::v1::RegisterResponse out;
    grpc::ClientContext c;
    deadline(&c);
    if (!worker_stub(i)->Register(&c, r, &out).ok()) {
      std::fprintf(stderr, "register failed\n");
      cleanup();
      return 1;
    }
    ids[i] = out.worker_id();
  }
  // The job: two of the workers become its group.
  auto jobs = mfpo::v1::JobService::NewStub(channels[0]);
  mfpo::v1::SubmitJobRequest submit;
  submit.mutable_spec()->set_output_dir((dir / "out").string());
  submit.mutable_spec()->mutable_model()->set_path((dir / "model").string());
  submit.mutable_spec()->mutable_data()->set_train((dir / "train.jsonl").string());
  submit.mutable_spec()->mutable_objective()->set_variant("dpo");
  submit.mutable_spec()->mutable_resources()->set_workers(2);
  mfpo::v1::SubmitJobResponse submitted;
  {
    grpc::ClientContext c;
    deadline(&c);
    grpc::Status s = jobs->SubmitJob(&c, submit, &submitted);
    if (!s.ok()) {
      std::fprintf(stderr, "submit failed: %s\n", s.error_message().c_str());
      cleanup();
      return 1;
    }
  }

  std::atomic<bool> stop{false};
  std::atomic<int64_t> events{0};
  std::vector<std::thread> watch_threads;
  std::vector<std::unique_ptr<grpc::ClientContext>> watch_contexts(watchers);
  std::mutex ctx_mu;
  for (int w = 0; w < watchers; ++w) {
    watch_threads.emplace_back([&, w] {
      auto stub = mfpo::v1::JobService::NewStub(channels[w % channels.size()]);
      {
        std::lock_guard<std::mutex> lock(ctx_mu);
        watch_contexts[w] = std::make_unique<grpc::ClientContext>();
      }
      mfpo::v1::WatchJobRequest r;
      r.set_job_id(submitted.job_id());
      auto reader = stub->WatchJob(watch_contexts[w].get(), r);
      mfpo::v1::JobEvent e;
      while (reader->Read(&e)) ++events;
      (void)reader->Finish();
    });
  }

  // Heartbeats: client thread t drives workers t, t+T, ...; each worker once a second at its own
  // offset in the second.
  const int threads = 8;
  std::vector<std::vector<double>> latencies(threads);
  std::vector<std::thread> beat_threads;
  const auto start = Clock::now();
  const auto warmup_end = start + std::chrono::seconds(3);
  const auto end = warmup_end + std::chrono::seconds(seconds);
  for (int t = 0; t < threads; ++t) {
    beat_threads.emplace_back([&, t] {
      auto stub = worker_stub(t);
      std::vector<std::string> running(workers);
      std::vector<int64_t> step(workers, 0);
      for (int64_t round = 0; Clock::now() < end; ++round) {
        for (int i = t; i < workers; i += threads) {
          const auto due = start + std::chrono::milliseconds(round * 1000 + static_cast<int64_t>(i) * 1000 / workers);
          std::this_thread::sleep_until(due);
          if (Clock::now() >= end) break;
          mfpo::v1::HeartbeatRequest r;
          r.set_worker_id(ids[i]);
          if (!running[i].empty()) {
            auto* st = r.add_assignments();
            st->set_assignment_id(running[i]);
            st->set_state(mfpo::v1::AssignmentStatus::RUNNING);
          }
          mfpo::v1::HeartbeatResponse out;
          grpc::ClientContext c;
          deadline(&c);
          const auto t0 = Clock::now();
          const bool ok = stub->Heartbeat(&c, r, &out).ok();
          const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
          if (ok && t0 >= warmup_end) latencies[t].push_back(ms);
          if (ok && out.assignments_size() > 0) running[i] = out.assignments(0).id();
          if (ok && !running[i].empty()) {
            // A group member reports a training step with each heartbeat: an event for every watcher.
            mfpo::v1::ProgressRequest p;
            p.set_worker_id(ids[i]);
            p.mutable_status()->set_assignment_id(running[i]);
            p.mutable_status()->set_step(++step[i]);
            p.mutable_status()->set_loss(0.5);
            mfpo::v1::ProgressResponse pr;
            grpc::ClientContext pc;
            deadline(&pc);
            (void)stub->ReportProgress(&pc, p, &pr);
          }
        }
      }
    });
  }
  std::this_thread::sleep_until(warmup_end);
  const double cpu0 = ProcessCpuSeconds(coordinator);
  const int64_t events0 = events.load();
  std::this_thread::sleep_until(end);
  const double cpu1 = ProcessCpuSeconds(coordinator);
  const int64_t events1 = events.load();
  for (auto& t : beat_threads) t.join();
  {
    std::lock_guard<std::mutex> lock(ctx_mu);
    for (auto& c : watch_contexts)
      if (c) c->TryCancel();
  }
  for (auto& t : watch_threads) t.join();
  cleanup();

  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double q) { return all.empty() ? 0.0 : all[std::min(all.size() - 1, static_cast<size_t>(q * all.size()))]; };
  const double share = (cpu1 - cpu0) / seconds;
  std::printf("coordinator under load: %d workers heartbeating every 1 s, %d watch streams, %d s measured\n", workers,
              watchers, seconds);
  std::printf("  heartbeats measured   %zu (%.0f/s)\n", all.size(), all.size() / static_cast<double>(seconds));
  std::printf("  heartbeat latency     p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms   (target p99 < 5 ms)\n",
              pct(0.5), pct(0.9), pct(0.99), all.empty() ? 0.0 : all.back());
  std::printf("  events delivered      %lld to %d watchers (%.0f/s)\n", static_cast<long long>(events1 - events0),
              watchers, (events1 - events0) / static_cast<double>(seconds));
  std::printf("  coordinator CPU       %.1f%% of one core   (target < 10%%); %.2fx the empty-call baseline\n", 100 * share,
              share / std::max(baseline_share, 1e-9));
  Result("CPU share of one core", share, "1 core", "< 0.10");
  Result("CPU vs empty gRPC calls at the same rate", share / std::max(baseline_share, 1e-9), "empty calls", "-");
  Result("p99 heartbeat latency (ms)", pct(0.99), "-", "< 5");
  return 0;
}
