// The job service with real processes on loopback: mfpo-coordinator, mfpo-worker trainer agents
// and mfpo-datagen agents, driven with mfpoctl. Every process has a deadline and is killed and
// reaped when its test ends (tests/test_process.h).
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "common/presets.h"
#include "datagen/scene_world.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/metrics_test_util.h"
#include "common/rpc_util.h"
#include "tests/checkpoint_diff.h"
#include "tests/cli_runner.h"
#include "tests/test_process.h"

namespace mfpo {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

fs::path* g_root = nullptr;

// grpc.health.v1 Check over plaintext: the status (1 SERVING), or -1 when the call fails.
int HealthCheck(const std::string& address, const std::string& service) {
  absl::StatusOr<int> s =
      CheckHealth(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()), service, std::chrono::seconds(5));
  return s.ok() ? *s : -1;
}

bool IsFinalState(const nlohmann::json& job) {
  return job["state"] == "SUCCEEDED" || job["state"] == "FAILED" || job["state"] == "CANCELLED";
}

// A number from protobuf's JSON (64-bit integers are written as strings); 0 when absent.
int64_t Int(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return 0;
  const json& v = j[key];
  return v.is_string() ? std::stoll(v.get<std::string>()) : v.get<int64_t>();
}

// A coordinator with its agents on loopback.
class Cluster {
 public:
  explicit Cluster(const std::string& name, int port = 0) : dir_(*g_root / name), port_(port ? port : FreePort()) {
    fs::create_directories(dir_);
  }
  // Starts (or restarts) the coordinator on this cluster's port and database.
  void StartCoordinator(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"--address",        "127.0.0.1:" + std::to_string(port_),
                                      "--database",       (dir_ / "jobs.db").string(),
                                      "--roots",          g_root->string(),
                                      "--heartbeat_interval_s", "0.2",
                                      "--worker_timeout_s", "3",
                                      "--lease_s",        "3",
                                      "--shard_records",  "8",
                                      "--port_file",      (dir_ / "port").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    fs::remove(dir_ / "port");
    coordinator_ = std::make_unique<Process>(MFPO_COORDINATOR, args, dir_ / ("coordinator-" + std::to_string(starts_++) + ".log"));
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    while (!fs::exists(dir_ / "port") && Clock::now() < deadline && coordinator_->running())
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(fs::exists(dir_ / "port")) << coordinator_->Log();
  }
  Process& AddTrainer(const std::vector<std::string>& extra = {}) {
    const int n = static_cast<int>(trainers_.size());
    std::vector<std::string> args = {"--coordinator", address(), "--threads", "1", "--name", "t" + std::to_string(n),
                                     "--work_dir", (dir_ / ("trainer" + std::to_string(n))).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    trainers_.push_back(std::make_unique<Process>(MFPO_WORKER, args, dir_ / ("trainer" + std::to_string(n) + ".log")));
    return *trainers_.back();
  }
  Process& AddDatagen(const std::vector<std::string>& extra = {}) {
    const int n = static_cast<int>(datagen_.size());
    std::vector<std::string> args = {"--coordinator", address(), "--threads", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    datagen_.push_back(std::make_unique<Process>(MFPO_DATAGEN, args, dir_ / ("datagen" + std::to_string(n) + ".log")));
    return *datagen_.back();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // Waits until `n` workers have registered and are idle (a job submitted earlier could form its
  // group from fewer).
  void WaitWorkers(int n) {
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < deadline) {
      Result r = Ctl("workers --json");
      json j = json::parse(r.out, nullptr, false);
      int idle = 0;
      if (j.is_object() && j.contains("workers"))
        for (const json& w : j["workers"]) idle += w.value("state", "") == "idle" ? 1 : 0;
      if (idle >= n) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "fewer than " << n << " workers registered within 60 s\n" << Logs();
  }
  Result Ctl(const std::string& args, int seconds = 60) {
    return RunShell(std::string(MFPOCTL) + " --server " + address() + " " + args, seconds);
  }
  json Job(const std::string& id) {
    Result r = Ctl("get " + id + " --json");
    EXPECT_EQ(r.code, 0) << r.all;
    return json::parse(r.out, nullptr, false);
  }
  // Polls until `pred(job)` holds (false after `seconds`).
  template <typename Pred>
  bool WaitJob(const std::string& id, double seconds, Pred pred) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < deadline) {
      Result r = Ctl("get " + id + " --json");
      if (r.code == 0) {
        json j = json::parse(r.out, nullptr, false);
        if (j.is_object() && pred(j)) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return false;
  }
  std::string Logs() {
    std::string out = coordinator_ ? "== coordinator\n" + coordinator_->Log() : "";
    for (auto& t : trainers_) out += "== trainer\n" + t->Log();
    for (auto& d : datagen_) out += "== datagen\n" + d->Log();
    return out;
  }
  Process& coordinator() { return *coordinator_; }
  Process& trainer(int i) { return *trainers_[i]; }
  Process& datagen(int i) { return *datagen_[i]; }
  const fs::path& dir() const { return dir_; }

 private:
  fs::path dir_;
  int port_;
  int starts_ = 0;
  std::unique_ptr<Process> coordinator_;
  std::vector<std::unique_ptr<Process>> trainers_, datagen_;
};

class ServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    g_root = new fs::path(fs::temp_directory_path() / ("service_test_" + std::to_string(::getpid())));
    fs::remove_all(*g_root);
    InitModelOptions init;
    init.seed = 3;
    ASSERT_TRUE(InitModelDir((*g_root / "model").string(), init).ok());
    WorldOptions world;
    world.train = 24;
    world.val = 0;
    world.test = 4;
    world.size = 32;
    ASSERT_TRUE(WriteWorld((*g_root / "world").string(), world).ok());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*g_root);
    delete g_root;
  }

  struct JobOptions {
    std::string variant = "mfpo";
    std::string curriculum = "easy_to_hard";
    int samples = 24, micro = 4, workers = 2, every_steps = 0;
    bool evaluate = false;
    std::string train;  // default: the world's train.jsonl
    std::string fill;   // datagen.fill (default: not given, noise)
  };
  static fs::path WriteSpec(const std::string& name, const JobOptions& j, const fs::path& out) {
    const fs::path path = *g_root / (name + ".yaml");
    std::ofstream f(path);
    f << "name: " << name << "\n"
      << "output_dir: " << out.string() << "\n"
      << "model: {path: " << (*g_root / "model").string() << "}\n"
      << "data: {train: " << (j.train.empty() ? (*g_root / "world" / "train.jsonl").string() : j.train)
      << ", max_samples: " << j.samples << "}\n"
      << "objective: {variant: " << j.variant << "}\n"
      << "optimizer: {lr: 5.0e-5, micro_batch: " << j.micro << ", warmup_ratio: 0.2}\n"
      << "curriculum: {mode: " << j.curriculum << "}\n"
      << "checkpoint: {keep_last: 0, every_steps: " << j.every_steps << "}\n"
      << "resources: {workers: " << j.workers << ", threads: 1, collective_timeout_s: 20, max_restarts: 3}\n";
    if (!j.fill.empty()) f << "datagen: {fill: " << j.fill << "}\n";
    if (j.evaluate)
      f << "evaluation: {data: " << (*g_root / "world").string() << ", limit: 2, max_new_tokens: 6, suites: [chair]}\n";
    return path;
  }
  // The DPO job of the failure tests (6 steps of 2 x 2 pairs, a checkpoint after each) on a
  // coordinator with two trainers.
  static JobOptions DpoJob() {
    JobOptions j;
    j.variant = "dpo";
    j.curriculum = "end_to_end";
    j.micro = 2;
    j.samples = 24;
    j.every_steps = 1;
    return j;
  }
  static std::string StartDpoJobOnTwoTrainers(Cluster& c) {
    c.StartCoordinator();
    c.AddTrainer();
    c.AddTrainer();
    c.WaitWorkers(2);
    return Submit(c, WriteSpec(c.dir().filename().string(), DpoJob(), c.dir() / "out"));
  }
  static std::string Submit(Cluster& c, const fs::path& spec) {
    Result r = c.Ctl("submit " + spec.string());
    EXPECT_EQ(r.code, 0) << r.all;
    std::string id = r.out;
    while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
    return id;
  }
};

// 1 coordinator, 2 trainers, 1 datagen worker; submitted with mfpoctl: every stage runs, and the
// model equals `mfpo train` with 2 ranks on the same data.
TEST_F(ServiceTest, WholeJobRunsEveryStageAndEqualsLocalTraining) {
  Cluster c("whole");
  const int coordinator_metrics = FreePort(), trainer_metrics[2] = {FreePort(), FreePort()};
  c.StartCoordinator({"--metrics_address", "127.0.0.1:" + std::to_string(coordinator_metrics)});
  c.AddTrainer({"--metrics_address", "127.0.0.1:" + std::to_string(trainer_metrics[0])});
  c.AddTrainer({"--metrics_address", "127.0.0.1:" + std::to_string(trainer_metrics[1])});
  c.AddDatagen();
  c.WaitWorkers(3);
  JobOptions j;
  j.evaluate = true;
  const std::string id = Submit(c, WriteSpec("whole", j, c.dir() / "out"));
  ASSERT_EQ(id, "job-000001");
  Result watch = c.Ctl("watch " + id, 600);
  ASSERT_EQ(watch.code, 0) << watch.all << c.Logs();
  for (const char* stage : {"DATAGEN", "REFERENCE", "SCORING", "TRAINING easy", "TRAINING medium", "TRAINING hard",
                            "EVALUATING", "SUCCEEDED"})
    EXPECT_NE(watch.out.find(stage), std::string::npos) << stage << "\n" << watch.out;
  json job = c.Job(id);
  EXPECT_EQ(job["state"], "SUCCEEDED");
  EXPECT_TRUE(fs::exists(c.dir() / "out" / "eval" / "report.json"));
  // Metrics: the coordinator counts the job as succeeded; rank 0's agent saw every step.
  const std::string cm = HttpGet(coordinator_metrics, "/metrics");
  EXPECT_NE(cm.find("mfpo_jobs{state=\"SUCCEEDED\"} 1"), std::string::npos) << cm;
  EXPECT_NE(cm.find("mfpo_workers{role=\"trainer\",state=\"idle\"} 2"), std::string::npos) << cm;
  const std::string tm = HttpGet(trainer_metrics[0], "/metrics") + HttpGet(trainer_metrics[1], "/metrics");
  EXPECT_NE(tm.find("mfpo_train_steps_total 3"), std::string::npos) << tm;
  EXPECT_NE(tm.find("mfpo_train_samples_total 24"), std::string::npos) << tm;
  EXPECT_NE(tm.find("mfpo_train_step_part_seconds_count{part=\"allreduce_wait\"} 3"), std::string::npos) << tm;
  EXPECT_NE(tm.find("mfpo_checkpoint_seconds_count 3"), std::string::npos) << tm;
  const std::string manifest = job["data_manifest"];
  EXPECT_EQ(manifest, (c.dir() / "out" / "datagen" / "merged-0-24.jsonl").string());
  {
    std::ifstream in(manifest);
    std::set<std::string> ids;
    int lines = 0;
    for (std::string line; std::getline(in, line); ++lines) {
      json r = json::parse(line, nullptr, false);
      ids.insert(r["id"].get<std::string>());
      EXPECT_TRUE(r.contains("rejected_image"));
    }
    EXPECT_EQ(lines, 24);
    EXPECT_EQ(ids.size(), 24u);
  }
  // The same spec on the merged manifest with `mfpo train`, 2 local ranks of one thread each.
  JobOptions local = j;
  local.train = manifest;
  local.evaluate = false;
  const fs::path local_out = c.dir() / "local";
  Result train = Mfpo("train --threads 2 --spec " + WriteSpec("whole-local", local, local_out).string(), 600);
  ASSERT_EQ(train.code, 0) << train.all;
  const std::string service_ckpt = job["final_checkpoint"];
  ASSERT_FALSE(service_ckpt.empty());
  const fs::path local_ckpt = local_out / "checkpoints" / fs::path(service_ckpt).filename();
  EXPECT_LE(MaxDiff(service_ckpt, local_ckpt), 1e-5) << service_ckpt << " vs " << local_ckpt;
}

// A trainer killed with SIGKILL in the middle of a phase: the group is re-formed from the last
// checkpoint and the job succeeds.
TEST_F(ServiceTest, KilledTrainerIsSurvived) {
  Cluster c("killed-trainer");
  const std::string id = StartDpoJobOnTwoTrainers(c);
  ASSERT_TRUE(c.WaitJob(id, 240, [](const json& job) { return Int(job, "step") >= 2 && job["state"] == "TRAINING"; }))
      << c.Logs();
  c.trainer(1).Kill(SIGKILL);
  Result watch = c.Ctl("watch " + id, 400);
  EXPECT_EQ(watch.code, 0) << watch.all << c.Logs();
  json job = c.Job(id);
  EXPECT_EQ(job["state"], "SUCCEEDED");
  EXPECT_GE(Int(job, "restarts"), 1);
  // Whichever comes first: the coordinator missing its heartbeats, or rank 0's collective failing.
  EXPECT_NE(watch.out.find("restart 1 of 3"), std::string::npos) << watch.out;
}

// The coordinator killed with SIGKILL and restarted on its database: the job goes on, and a
// watcher that reconnects sees every event exactly once.
TEST_F(ServiceTest, CoordinatorRestartLosesNothing) {
  Cluster c("restart");
  const std::string id = StartDpoJobOnTwoTrainers(c);
  Process watcher(MFPOCTL, {"watch", id, "--json", "--server", c.address()}, c.dir() / "watch.log");
  ASSERT_TRUE(c.WaitJob(id, 240, [](const json& job) { return job["state"] == "TRAINING"; })) << c.Logs();
  c.coordinator().Kill(SIGKILL);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  c.StartCoordinator();
  ASSERT_EQ(watcher.Wait(400), 0) << watcher.Log() << c.Logs();
  json job = c.Job(id);
  EXPECT_EQ(job["state"], "SUCCEEDED") << c.Logs();
  std::vector<int64_t> seqs;
  std::ifstream in(c.dir() / "watch.log");
  for (std::string line; std::getline(in, line);) {
    json e = json::parse(line, nullptr, false);
    if (e.is_object() && e.contains("seq")) seqs.push_back(Int(e, "seq"));
  }
  const int64_t last = Int(job, "last_event_seq");
  ASSERT_EQ(static_cast<int64_t>(seqs.size()), last) << watcher.Log();
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(seqs[i], static_cast<int64_t>(i + 1));
  // A second submit after the restart gets the next id: nothing was lost or reused.
  EXPECT_EQ(Submit(c, WriteSpec("restart-2", DpoJob(), c.dir() / "out-2")), "job-000002");
}

// A datagen worker killed holding a lease: the lease is re-issued and every record is made
// exactly once. The job's datagen.fill reaches the agents (inpainted, not noised, regions).
TEST_F(ServiceTest, KilledDatagenWorkerLeaseIsReissued) {
  Cluster c("killed-datagen");
  c.StartCoordinator();
  Process& first = c.AddDatagen();
  JobOptions j;
  j.fill = "inpaint";
  const std::string id = Submit(c, WriteSpec("killed-datagen", j, c.dir() / "out"));
  ASSERT_TRUE(first.WaitForLog("records [", 60)) << c.Logs();
  first.Kill(SIGKILL);
  c.AddDatagen();
  ASSERT_TRUE(c.WaitJob(id, 120, [](const json& job) { return job["state"] == "PENDING" && job.contains("data_manifest") &&
                                                               job["data_manifest"].get<std::string>().find("datagen") != std::string::npos; }))
      << c.Logs();
  Result events = c.Ctl("watch " + id + " --json", 5);  // the job waits for trainers: cut by the deadline
  EXPECT_NE(events.out.find("re-issued"), std::string::npos) << events.out;
  std::ifstream in(c.dir() / "out" / "datagen" / "merged-0-24.jsonl");
  std::set<std::string> ids;
  int lines = 0, inpainted = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    const json record = json::parse(line);
    ids.insert(record["id"].get<std::string>());
    inpainted += record["perturbation"].value("fill", "") == "inpaint" ? 1 : 0;
  }
  EXPECT_EQ(lines, 24);
  EXPECT_GT(inpainted, 12) << "datagen.fill: inpaint did not reach the agents";
  EXPECT_EQ(ids.size(), 24u);
  EXPECT_EQ(c.Ctl("cancel " + id).code, 0);
  EXPECT_EQ(c.Ctl("watch " + id).code, 3);  // CANCELLED
}

// Bad requests get the right codes and messages.
TEST_F(ServiceTest, BadRequestsAreRefusedClearly) {
  Cluster c("bad");
  std::ofstream(c.dir() / "token") << "s3cret\n";
  std::ofstream(c.dir() / "wrong-token") << "guess\n";
  c.StartCoordinator({"--token_file", (c.dir() / "token").string()});
  const std::string token = " --token_file " + (c.dir() / "token").string();
  JobOptions j;
  const fs::path good = WriteSpec("bad-good", j, c.dir() / "out");

  Result r = c.Ctl("list");
  EXPECT_EQ(r.code, 1) << r.all;
  EXPECT_NE(r.all.find("bearer token"), std::string::npos) << r.all;
  r = c.Ctl("list --token_file " + (c.dir() / "wrong-token").string());
  EXPECT_NE(r.all.find("wrong bearer token"), std::string::npos) << r.all;
  r = c.Ctl("list" + token);
  EXPECT_EQ(r.code, 0) << r.all;

  std::ofstream(*g_root / "bad-beta.yaml") << "output_dir: " << (c.dir() / "x").string() << "\nmodel: {path: "
                                           << (*g_root / "model").string() << "}\ndata: {train: "
                                           << (*g_root / "world" / "train.jsonl").string() << "}\nobjective: {beta: -1}\n";
  r = c.Ctl("submit " + (*g_root / "bad-beta.yaml").string() + token);
  EXPECT_EQ(r.code, 2) << r.all;
  EXPECT_NE(r.all.find("objective.beta"), std::string::npos) << r.all;

  std::ofstream(*g_root / "bad-root.yaml") << "output_dir: /etc/mfpo-x\nmodel: {path: " << (*g_root / "model").string()
                                           << "}\ndata: {train: " << (*g_root / "world" / "train.jsonl").string() << "}\n";
  r = c.Ctl("submit " + (*g_root / "bad-root.yaml").string() + token);
  EXPECT_EQ(r.code, 2) << r.all;
  EXPECT_NE(r.all.find("outside the coordinator's allowed roots"), std::string::npos) << r.all;

  std::ofstream(*g_root / "bad-dots.yaml") << "output_dir: " << (*g_root / ".." / ".." / "tmp2").string()
                                           << "\nmodel: {path: " << (*g_root / "model").string() << "}\ndata: {train: "
                                           << (*g_root / "world" / "train.jsonl").string() << "}\n";
  r = c.Ctl("submit " + (*g_root / "bad-dots.yaml").string() + token);
  EXPECT_EQ(r.code, 2) << r.all;

  r = c.Ctl("get job-424242" + token);
  EXPECT_EQ(r.code, 2) << r.all;  // an unknown job is a usage error
  EXPECT_NE(r.all.find("no job 'job-424242'"), std::string::npos) << r.all;
  r = c.Ctl("watch job-424242" + token);
  EXPECT_EQ(r.code, 2) << r.all;
  r = c.Ctl("watch" + token);
  EXPECT_EQ(r.code, 2) << r.all;
  r = c.Ctl("watch job-424242 job-424242" + token);
  EXPECT_EQ(r.code, 2) << r.all;
  EXPECT_NE(r.all.find("named twice"), std::string::npos) << r.all;
  r = c.Ctl("watch job-424242 job-434343" + token);  // several jobs: the first that did not succeed
  EXPECT_EQ(r.code, 2) << r.all;
  EXPECT_NE(r.all.find("no job 'job-434343'"), std::string::npos) << r.all;
  std::ofstream(*g_root / "bad-grounder.yaml") << "output_dir: " << (c.dir() / "y").string() << "\nmodel: {path: "
                                               << (*g_root / "model").string() << "}\ndata: {train: "
                                               << (*g_root / "world" / "train.jsonl").string()
                                               << "}\ndatagen: {grounder: torchscript}\n";
  r = c.Ctl("submit " + (*g_root / "bad-grounder.yaml").string() + token);
  EXPECT_EQ(r.code, 2) << r.all;
  EXPECT_NE(r.all.find("datagen.grounder_model"), std::string::npos) << r.all;
  std::ofstream(*g_root / "bad-segmenter.yaml") << "output_dir: " << (c.dir() / "y").string() << "\nmodel: {path: "
                                                << (*g_root / "model").string() << "}\ndata: {train: "
                                                << (*g_root / "world" / "train.jsonl").string()
                                                << "}\ndatagen: {grounder: torchscript, grounder_model: "
                                                << (c.dir() / "missing.pt").string() << "}\n";
  r = c.Ctl("submit " + (*g_root / "bad-segmenter.yaml").string() + token);
  EXPECT_EQ(r.code, 2) << r.all;  // checked at submit, not after 3 datagen attempts
  EXPECT_NE(r.all.find("missing.pt"), std::string::npos) << r.all;
  std::ofstream(*g_root / "bad-key.yaml") << "output_dir: " << (c.dir() / "y").string() << "\nbogus: 1\n";
  r = c.Ctl("submit " + (*g_root / "bad-key.yaml").string() + token);
  EXPECT_EQ(r.code, 2) << r.all;
  EXPECT_NE(r.all.find("unknown key 'bogus'"), std::string::npos) << r.all;
  r = c.Ctl("cancel nope" + token);
  EXPECT_EQ(r.code, 2) << r.all;
  r = c.Ctl("frobnicate");
  EXPECT_EQ(r.code, 2) << r.all;
  r = c.Ctl("list --state BOGUS" + token);
  EXPECT_EQ(r.code, 2) << r.all;

  // Nothing listens: exit 4 with a hint, within the deadline.
  r = RunShell(std::string(MFPOCTL) + " --server 127.0.0.1:" + std::to_string(FreePort()) + " list --timeout_s 2", 30);
  EXPECT_EQ(r.code, 4) << r.all;

  // A worker with a wrong token is refused and exits.
  Process& w = c.AddTrainer({"--token_file", (c.dir() / "wrong-token").string()});
  EXPECT_EQ(w.Wait(30), 1) << w.Log();
  EXPECT_NE(w.Log().find("wrong bearer token"), std::string::npos) << w.Log();
}

// TLS: a client that trusts another CA cannot talk to the coordinator; one with the right CA can.
TEST_F(ServiceTest, TlsWithTheWrongCertificateIsRefused) {
  Cluster c("tls");
  const fs::path d = c.dir();
  const std::string ssl =
      "cd " + d.string() +
      " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem"
      " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca -keyout other.key -out other.pem"
      " && openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr"
      " && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext"
      " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.pem"
      " && openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout client.key -out client.csr"
      " && openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out client.pem";
  Result gen = RunShell(ssl + " 2>&1", 120);
  ASSERT_EQ(gen.code, 0) << gen.all;
  const int health_port = FreePort();
  c.StartCoordinator({"--tls_cert", (d / "server.pem").string(), "--tls_key", (d / "server.key").string(),
                      "--health_address", "127.0.0.1:" + std::to_string(health_port)});
  // The probes' port answers in plaintext, for the server and each service; unknown: an error.
  const std::string health = "127.0.0.1:" + std::to_string(health_port);
  EXPECT_EQ(HealthCheck(health, ""), 1);
  EXPECT_EQ(HealthCheck(health, "mfpo.v1.JobService"), 1);
  EXPECT_EQ(HealthCheck(health, "no.such.Service"), -1);
  Result h = RunShell(std::string(MFPOCTL) + " health --server " + health + " --service mfpo.v1.WorkerService", 30);
  EXPECT_EQ(h.code, 0) << h.all;
  EXPECT_NE(h.out.find("SERVING"), std::string::npos) << h.all;
  h = c.Ctl("health --tls_ca " + (d / "ca.pem").string());  // the TLS port answers too
  EXPECT_EQ(h.code, 0) << h.all;
  Result r = c.Ctl("list --tls_ca " + (d / "ca.pem").string());
  EXPECT_EQ(r.code, 0) << r.all << c.coordinator().Log();
  r = c.Ctl("list --timeout_s 3 --tls_ca " + (d / "other.pem").string());
  EXPECT_EQ(r.code, 4) << r.all;
  r = c.Ctl("list --timeout_s 3");  // plaintext against TLS
  EXPECT_EQ(r.code, 4) << r.all;
  r = c.Ctl("list --tls_ca " + (d / "server.key").string());  // not a certificate
  EXPECT_EQ(r.code, 2) << r.all;
  EXPECT_NE(r.all.find("server.key"), std::string::npos) << r.all;

  // Mutual TLS: without a client certificate signed by the CA, no call gets through.
  c.coordinator().Kill(SIGKILL);
  c.StartCoordinator({"--tls_cert", (d / "server.pem").string(), "--tls_key", (d / "server.key").string(),
                      "--tls_client_ca", (d / "ca.pem").string()});
  r = c.Ctl("list --timeout_s 3 --tls_ca " + (d / "ca.pem").string());
  EXPECT_NE(r.code, 0) << r.all;
  r = c.Ctl("list --tls_ca " + (d / "ca.pem").string() + " --tls_cert " + (d / "client.pem").string() + " --tls_key " +
            (d / "client.key").string());
  EXPECT_EQ(r.code, 0) << r.all;
}

// A real Prometheus (Debian's) scrapes the coordinator and the agents during a job; every
// expression of the Grafana dashboard and of the alert rules is a well-formed query, and each
// one the job feeds returns data (the DCGM GPU panels have no exporter here).
TEST_F(ServiceTest, PrometheusScrapesEveryProcessAndTheDashboardQueriesWork) {
  const char* prometheus = "/usr/bin/prometheus";
  ASSERT_TRUE(fs::exists(prometheus)) << "Debian's prometheus package is missing (scripts/install-deps.sh)";
  Cluster c("prometheus");
  const int cm = FreePort(), tm0 = FreePort(), tm1 = FreePort(), dm = FreePort(), web = FreePort();
  c.StartCoordinator({"--metrics_address", "127.0.0.1:" + std::to_string(cm)});
  c.AddTrainer({"--metrics_address", "127.0.0.1:" + std::to_string(tm0)});
  c.AddTrainer({"--metrics_address", "127.0.0.1:" + std::to_string(tm1)});
  c.AddDatagen({"--metrics_address", "127.0.0.1:" + std::to_string(dm)});
  c.WaitWorkers(3);
  const fs::path config = c.dir() / "prometheus.yml";
  {
    std::ofstream f(config);
    auto target = [](int port) { return "\"127.0.0.1:" + std::to_string(port) + "\""; };
    f << "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
      << "rule_files: [" << (fs::path(MFPO_SOURCE_DIR) / "deploy" / "prometheus" / "rules.yml").string() << "]\n"
      << "scrape_configs:\n"
      << "  - {job_name: mfpo-coordinator, static_configs: [{targets: [" << target(cm) << "]}]}\n"
      << "  - {job_name: mfpo-trainer, static_configs: [{targets: [" << target(tm0) << ", " << target(tm1) << "]}]}\n"
      << "  - {job_name: mfpo-datagen, static_configs: [{targets: [" << target(dm) << "]}]}\n";
  }
  Process prom(prometheus,
               {"--config.file=" + config.string(), "--storage.tsdb.path=" + (c.dir() / "tsdb").string(),
                "--web.listen-address=127.0.0.1:" + std::to_string(web), "--log.level=warn"},
               c.dir() / "prometheus.log");
  auto encode = [](const std::string& q) {
    std::string out;
    for (unsigned char ch : q) {
      if (std::isalnum(ch) || ch == '_' || ch == '.' || ch == '-') out += static_cast<char>(ch);
      else out += absl::StrFormat("%%%02X", ch);
    }
    return out;
  };
  auto query = [&](const std::string& expr, double at) {
    const std::string response = HttpGet(web, "/api/v1/query?query=" + encode(expr) + "&time=" + std::to_string(at));
    const size_t body = response.find("\r\n\r\n");
    return json::parse(body == std::string::npos ? "" : response.substr(body + 4), nullptr, false);
  };
  auto now = [] { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); };
  // Prometheus scrapes every target before the job starts (it may take a few seconds to come
  // up; a short job could otherwise train before the first scrape).
  const auto scraping_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    json up = query("sum(up)", now());
    if (up.is_object() && up["status"] == "success" && !up["data"]["result"].empty() &&
        up["data"]["result"][0]["value"][1] == "4")
      break;
    ASSERT_LT(std::chrono::steady_clock::now(), scraping_deadline) << "Prometheus never scraped the 4 targets: "
                                                                  << up.dump() << prom.Log();
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  JobOptions j;
  j.curriculum = "end_to_end";
  j.micro = 2;
  j.every_steps = 1;
  const std::string id = Submit(c, WriteSpec("prometheus", j, c.dir() / "out"));
  // A moment of training that Prometheus has scraped: queries are evaluated at that time.
  double during = 0;
  ASSERT_TRUE(c.WaitJob(id, 300, [&](const json& job) {
    if (job["state"] == "TRAINING" && Int(job, "step") >= 3 && during == 0)
      during = now();
    return IsFinalState(job);
  })) << c.Logs();
  ASSERT_GT(during, 0) << "the job never showed 3 steps while training";
  std::this_thread::sleep_for(std::chrono::seconds(3));
  // Every target was up.
  json up = query("up", during);
  ASSERT_TRUE(up.is_object() && up["status"] == "success") << up.dump() << prom.Log();
  EXPECT_EQ(up["data"]["result"].size(), 4u) << up.dump();
  for (const json& r : up["data"]["result"]) EXPECT_EQ(r["value"][1], "1") << r.dump();
  // The dashboard's expressions and the rules'.
  std::vector<std::pair<std::string, bool>> exprs;  // expression, must have data
  json dashboard = json::parse(
      ReadFileToString((fs::path(MFPO_SOURCE_DIR) / "deploy" / "grafana" / "dashboards" / "mfpo.json").string()).value_or(""),
      nullptr, false);
  ASSERT_TRUE(dashboard.is_object());
  for (const json& p : dashboard["panels"])
    for (const json& t : p["targets"]) {
      const std::string e = t["expr"];
      exprs.emplace_back(e, e.find("DCGM_") == std::string::npos);
    }
  YAML::Node rules = YAML::LoadFile((fs::path(MFPO_SOURCE_DIR) / "deploy" / "prometheus" / "rules.yml").string());
  for (const auto& g : rules["groups"])
    for (const auto& r : g["rules"]) {
      // An alert is empty while nothing is wrong; its metrics must exist (checked below).
      exprs.emplace_back(r["expr"].as<std::string>(), false);
      const std::string e = r["expr"].as<std::string>();
      const std::regex metric("mfpo_[a-z_]+");
      for (std::sregex_iterator it(e.begin(), e.end(), metric), end; it != end; ++it)
        exprs.emplace_back("count(" + it->str() + ")", true);
    }
  for (const auto& [expr, needs_data] : exprs) {
    json r = query(expr, during);
    ASSERT_TRUE(r.is_object()) << expr;
    EXPECT_EQ(r["status"], "success") << expr << ": " << r.dump();
    if (needs_data) EXPECT_FALSE(r["data"]["result"].empty()) << expr << " returned nothing during training";
  }
  // The datagen agent's records are counted while its leases run (24 records, none failed).
  json records = query("sum(mfpo_datagen_records_total)", during);
  ASSERT_FALSE(records["data"]["result"].empty()) << records.dump();
  EXPECT_EQ(std::stod(records["data"]["result"][0]["value"][1].get<std::string>()), 24) << records.dump();
  // Every process says what it is: one build_info series per component.
  json info = query("count by (component) (mfpo_build_info)", during);
  std::set<std::string> components;
  for (const json& series : info["data"]["result"]) components.insert(series["metric"]["component"].get<std::string>());
  EXPECT_EQ(components, (std::set<std::string>{"coordinator", "trainer", "datagen"})) << info.dump();
  json queue = query("sum(mfpo_datagen_queue_depth)", during);
  ASSERT_FALSE(queue["data"]["result"].empty()) << queue.dump();
  EXPECT_EQ(std::stod(queue["data"]["result"][0]["value"][1].get<std::string>()), 0) << queue.dump();
  // The image-reward accuracy is MFPO's own signal: present and a share.
  json acc = query("mfpo_job_reward_accuracy{modality=\"image\"}", during);
  ASSERT_FALSE(acc["data"]["result"].empty());
  const double v = std::stod(acc["data"]["result"][0]["value"][1].get<std::string>());
  EXPECT_GE(v, 0);
  EXPECT_LE(v, 1);
}

// scripts/local-cluster.sh: `run` starts the cluster, runs the command and stops everything,
// also when interrupted (Ctrl-C); nothing is left running.
TEST_F(ServiceTest, LocalClusterScriptStopsEverything) {
  const fs::path dir = *g_root / "local-cluster";
  const std::string port = std::to_string(FreePort());
  const std::string script = std::string("bash ") + MFPO_SOURCE_DIR + "/scripts/local-cluster.sh";
  const std::string common = " --dir " + dir.string() + " --port " + port + " --trainers 1 --datagen 1 --threads 1 --build " +
                             MFPO_BINARY_DIR;
  // The cluster's processes all name its port (a regex whose own text does not match itself).
  auto left = [&] { return RunShell("pgrep -af 'mfpo-(coordinator|worker|datagen) .*127[.]0[.]0[.]1:" + port + "' || true", 10).out; };
  Result r = RunShell(script + " run" + common + " -- " + MFPOCTL + " --server 127.0.0.1:" + port + " workers", 120);
  EXPECT_EQ(r.code, 0) << r.all;
  EXPECT_NE(r.out.find("trainer"), std::string::npos) << r.all;
  EXPECT_NE(r.out.find("datagen"), std::string::npos) << r.all;
  EXPECT_NE(r.out.find("local-cluster: stopped"), std::string::npos) << r.all;
  EXPECT_EQ(left(), "");
  // Interrupted while its command runs.
  Process run("/bin/bash", {std::string(MFPO_SOURCE_DIR) + "/scripts/local-cluster.sh", "run", "--dir", dir.string(),
                            "--port", port, "--trainers", "1", "--datagen", "1", "--threads", "1", "--build",
                            MFPO_BINARY_DIR, "--", "sleep", "300"},
              *g_root / "local-cluster-int.log");
  ASSERT_TRUE(run.WaitForLog("local-cluster: coordinator", 60)) << run.Log();
  ::kill(-run.pid(), SIGINT);  // what Ctrl-C sends: the whole foreground group
  EXPECT_EQ(run.Wait(60), 130) << run.Log();
  EXPECT_NE(run.Log().find("local-cluster: stopped"), std::string::npos) << run.Log();
  EXPECT_EQ(left(), "");
  // A second start while one runs is refused; stop is idempotent.
  r = RunShell(script + " start" + common, 120);
  ASSERT_EQ(r.code, 0) << r.all;
  r = RunShell(script + " start" + common, 60);
  EXPECT_EQ(r.code, 2) << r.all;
  EXPECT_NE(r.all.find("already runs"), std::string::npos) << r.all;
  EXPECT_EQ(RunShell(script + " stop --dir " + dir.string(), 60).code, 0);
  EXPECT_EQ(RunShell(script + " stop --dir " + dir.string(), 60).code, 0);
  EXPECT_EQ(left(), "");
}

}  // namespace
}  // namespace mfpo
