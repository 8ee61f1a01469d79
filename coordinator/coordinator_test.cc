// The coordinator's state machine driven directly (no gRPC, no processes): validation at submit,
// scheduling, the worker protocol, datagen leases, elastic re-forming and restarts from the
// SQLite file. tests/service_test.cc runs the real processes.
#include "coordinator/coordinator.h"

#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include <prometheus/text_serializer.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "coordinator/coordinator_metrics.h"

namespace mfpo {
namespace {

namespace fs = std::filesystem;

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / absl::StrCat("coordinator_test_", getpid(), "_",
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "model");
    std::ofstream(root_ / "model" / "config.json") << "{}";
    // 5 records; the first 3 without a rejected image.
    std::ofstream m(root_ / "train.jsonl");
    for (int i = 0; i < 5; ++i)
      m << "{\"id\": \"r" << i << "\", \"image\": \"x.png\", \"question\": \"q\", \"chosen\": \"a\", \"rejected\": \"b\""
        << (i >= 3 ? ", \"rejected_image\": \"y.png\"" : "") << "}\n";
    m.close();
    Open();
  }
  void TearDown() override {
    c_.reset();
    fs::remove_all(root_);
  }
  void Open() {
    CoordinatorOptions o;
    o.database = (root_ / "jobs.db").string();
    o.allowed_roots = {root_.string()};
    o.start_scheduler = false;
    o.worker_timeout_ms = 400;
    o.lease_ms = 400;
    o.shard_records = 2;
    auto c = Coordinator::Open(o);
    ASSERT_TRUE(c.ok()) << c.status();
    c_ = std::move(*c);
  }
  v1::JobSpec Spec(const std::string& variant, int workers = 2) {
    v1::JobSpec s;
    s.set_output_dir((root_ / absl::StrCat("out-", ++outputs_)).string());
    s.mutable_model()->set_path((root_ / "model").string());
    s.mutable_data()->set_train((root_ / "train.jsonl").string());
    s.mutable_objective()->set_variant(variant);
    s.mutable_resources()->set_workers(workers);
    return s;
  }
  std::string AddWorker(v1::WorkerRole role, const std::string& name) {
    v1::RegisterRequest r;
    r.set_role(role);
    r.set_name(name);
    r.set_rendezvous_address(absl::StrCat("127.0.0.1:", 10000 + static_cast<int>(name.size())));
    auto out = c_->Register(r);
    EXPECT_TRUE(out.ok()) << out.status();
    return out->worker_id();
  }
  // A heartbeat reporting `statuses`; returns the response.
  v1::HeartbeatResponse Beat(const std::string& worker, std::vector<v1::AssignmentStatus> statuses = {}) {
    v1::HeartbeatRequest r;
    r.set_worker_id(worker);
    for (auto& s : statuses) *r.add_assignments() = s;
    auto out = c_->Heartbeat(r);
    EXPECT_TRUE(out.ok()) << out.status();
    return *out;
  }
  static v1::AssignmentStatus Done(const std::string& id, bool ok = true, int code = 14) {
    v1::AssignmentStatus s;
    s.set_assignment_id(id);
    s.set_state(ok ? v1::AssignmentStatus::SUCCEEDED : v1::AssignmentStatus::FAILED);
    if (!ok) {
      s.set_error("boom");
      s.set_error_code(code);
    }
    return s;
  }
  v1::Job Job(const std::string& id) {
    auto j = c_->GetJob(id);
    EXPECT_TRUE(j.ok()) << j.status();
    return *j;
  }
  void WriteCurriculum(const v1::JobSpec& spec, int phases) {
    fs::create_directories(spec.output_dir());
    std::string p = "[";
    for (int i = 0; i < phases; ++i) p += absl::StrCat(i ? "," : "", "{\"name\":\"tier", i, "\",\"steps\":2,\"ids\":[]}");
    std::ofstream(fs::path(spec.output_dir()) / "curriculum.json") << "{\"total_steps\":" << 2 * phases
                                                                   << ",\"phases\":" << p << "]}";
  }
  // Runs every stage assignment of `workers` to success until the job leaves `state`.
  void FinishStage(const std::vector<std::string>& workers) {
    std::vector<v1::AssignmentStatus> done;
    for (const auto& w : workers) {
      v1::HeartbeatResponse r = Beat(w);
      for (const auto& a : r.assignments()) Beat(w, {Done(a.id())});
    }
    c_->Tick();
  }

  fs::path root_;
  int outputs_ = 0;
  std::unique_ptr<Coordinator> c_;
};

TEST_F(CoordinatorTest, SubmitValidatesLikeTrainAndConfinesPaths) {
  v1::JobSpec bad = Spec("dpo");
  bad.mutable_objective()->set_beta(-1);
  auto s = c_->Submit(bad, 0);
  EXPECT_TRUE(absl::IsInvalidArgument(s.status())) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), "objective.beta")) << s.status();

  v1::JobSpec relative = Spec("dpo");
  relative.set_output_dir("out/x");
  s = c_->Submit(relative, 0);
  EXPECT_TRUE(absl::IsInvalidArgument(s.status())) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), "output_dir")) << s.status();

  v1::JobSpec etc = Spec("dpo");
  etc.mutable_data()->set_train("/etc/passwd");
  s = c_->Submit(etc, 0);
  EXPECT_TRUE(absl::IsPermissionDenied(s.status())) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), "data.train")) << s.status();

  v1::JobSpec escape = Spec("dpo");
  escape.set_output_dir((root_ / ".." / ".." / "tmp" / "x").string());
  s = c_->Submit(escape, 0);
  EXPECT_TRUE(absl::IsPermissionDenied(s.status())) << s.status();

  v1::JobSpec missing = Spec("dpo");
  missing.mutable_data()->set_train((root_ / "nope.jsonl").string());
  s = c_->Submit(missing, 0);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.status().message(), "nope.jsonl")) << s.status();

  EXPECT_TRUE(absl::IsNotFound(c_->GetJob("job-999999").status()));
  EXPECT_TRUE(absl::IsNotFound(c_->Cancel("job-999999").status()));
  ASSERT_TRUE(c_->ListJobs({}).ok());
  EXPECT_EQ(c_->ListJobs({})->jobs_size(), 0);  // nothing refused was stored

  auto ok = c_->Submit(Spec("dpo"), 0);
  ASSERT_TRUE(ok.ok()) << ok.status();
  // The same output directory twice while the first job is active.
  v1::JobSpec same = Spec("dpo");
  same.set_output_dir(Job(*ok).spec().output_dir());
  EXPECT_TRUE(absl::IsAlreadyExists(c_->Submit(same, 0).status()));
}

TEST_F(CoordinatorTest, WholeJobOnTwoTrainersAndEventsSurviveRestart) {
  const std::string t0 = AddWorker(v1::TRAINER, "a"), t1 = AddWorker(v1::TRAINER, "bb");
  v1::JobSpec spec = Spec("dpo");
  auto id = c_->Submit(spec, 0);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(Job(*id).state(), v1::PENDING);
  c_->Tick();
  EXPECT_EQ(Job(*id).state(), v1::REFERENCE);
  v1::HeartbeatResponse r0 = Beat(t0), r1 = Beat(t1);
  ASSERT_EQ(r0.assignments_size(), 1);
  ASSERT_EQ(r1.assignments_size(), 1);
  EXPECT_EQ(r0.assignments(0).rank(), 0);
  EXPECT_EQ(r1.assignments(0).rank(), 1);
  EXPECT_EQ(r0.assignments(0).world_size(), 2);
  EXPECT_EQ(r1.assignments(0).rendezvous(), r0.assignments(0).rendezvous());
  EXPECT_EQ(r0.assignments(0).store_prefix(), r1.assignments(0).store_prefix());
  // A lost response: the next heartbeat hands the same assignment again.
  EXPECT_EQ(Beat(t0).assignments(0).id(), r0.assignments(0).id());
  // One rank done: still REFERENCE; both: SCORING.
  EXPECT_EQ(Beat(t0, {Done(r0.assignments(0).id())}).forget(0), r0.assignments(0).id());
  c_->Tick();
  EXPECT_EQ(Job(*id).state(), v1::REFERENCE);
  Beat(t1, {Done(r1.assignments(0).id())});
  c_->Tick();
  EXPECT_EQ(Job(*id).state(), v1::SCORING);
  WriteCurriculum(spec, 3);
  FinishStage({t0, t1});
  EXPECT_EQ(Job(*id).state(), v1::TRAINING);
  EXPECT_EQ(Job(*id).phase(), "tier0");
  EXPECT_EQ(Job(*id).total_steps(), 6);

  // Restart in the middle of a phase: same state, same events, the workers go on.
  const int64_t seq = Job(*id).last_event_seq();
  c_.reset();
  Open();
  EXPECT_EQ(Job(*id).state(), v1::TRAINING);
  EXPECT_EQ(Job(*id).last_event_seq(), seq);
  bool final = false;
  auto events = c_->WaitEvents(*id, 0, absl::ZeroDuration(), &final);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(static_cast<int64_t>(events->size()), seq);
  for (size_t i = 0; i < events->size(); ++i) EXPECT_EQ((*events)[i].seq(), static_cast<int64_t>(i + 1));
  EXPECT_FALSE(final);

  for (int phase = 0; phase < 3; ++phase) FinishStage({t0, t1});
  EXPECT_EQ(Job(*id).state(), v1::SUCCEEDED) << Job(*id).reason();  // no evaluation.data
  events = c_->WaitEvents(*id, seq, absl::ZeroDuration(), &final);
  ASSERT_TRUE(events.ok());
  EXPECT_TRUE(final);
  EXPECT_EQ(events->back().state(), v1::SUCCEEDED);
  // Both trainers are free again.
  for (const auto& w : c_->Workers()) EXPECT_EQ(w.state(), "idle") << w.id();
}

TEST_F(CoordinatorTest, LostTrainerReformsTheGroupKeepingTheGlobalBatch) {
  const std::string t0 = AddWorker(v1::TRAINER, "a"), t1 = AddWorker(v1::TRAINER, "bb");
  v1::JobSpec spec = Spec("dpo");
  spec.mutable_resources()->set_max_restarts(1);
  auto id = c_->Submit(spec, 0);
  ASSERT_TRUE(id.ok());
  c_->Tick();
  const std::string a0 = Beat(t0).assignments(0).id();
  Beat(t1);
  // t1 goes silent; t0 keeps running its stage.
  for (int i = 0; i < 6; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    v1::AssignmentStatus running;
    running.set_assignment_id(a0);
    running.set_state(v1::AssignmentStatus::RUNNING);
    Beat(t0, {running});
    c_->Tick();
  }
  v1::Job j = Job(*id);
  EXPECT_EQ(j.restarts(), 1);
  // t0 is told to abort the old stage, then gets the same stage on a group of one with twice
  // the accumulation.
  v1::AssignmentStatus running;
  running.set_assignment_id(a0);
  running.set_state(v1::AssignmentStatus::RUNNING);
  v1::HeartbeatResponse r = Beat(t0, {running});
  ASSERT_EQ(r.abort_size(), 1);
  EXPECT_EQ(r.abort(0), a0);
  c_->Tick();
  EXPECT_EQ(Beat(t0).assignments_size(), 0);  // busy with the old stage until this heartbeat
  c_->Tick();
  r = Beat(t0);
  ASSERT_EQ(r.assignments_size(), 1);
  EXPECT_EQ(r.assignments(0).world_size(), 1);
  EXPECT_EQ(r.assignments(0).grad_accum(), 2);
  EXPECT_EQ(r.assignments(0).stage(), v1::REFERENCE);
  // A second failure exhausts max_restarts 1.
  Beat(t0, {Done(r.assignments(0).id(), false)});
  c_->Tick();
  EXPECT_EQ(Job(*id).state(), v1::FAILED);
  EXPECT_TRUE(absl::StrContains(Job(*id).reason(), "boom")) << Job(*id).reason();
  EXPECT_TRUE(absl::StrContains(Job(*id).reason(), "max_restarts")) << Job(*id).reason();
}

TEST_F(CoordinatorTest, BadDataFailsAtOnceWithoutRestarts) {
  const std::string t0 = AddWorker(v1::TRAINER, "a");
  auto id = c_->Submit(Spec("dpo", 1), 0);
  ASSERT_TRUE(id.ok());
  c_->Tick();
  const std::string a = Beat(t0).assignments(0).id();
  Beat(t0, {Done(a, false, static_cast<int>(absl::StatusCode::kInvalidArgument))});
  c_->Tick();
  EXPECT_EQ(Job(*id).state(), v1::FAILED);
  EXPECT_EQ(Job(*id).restarts(), 0);
}

TEST_F(CoordinatorTest, DatagenLeasesAreReissuedAndMergedOnce) {
  const std::string d0 = AddWorker(v1::DATAGEN_WORKER, "d0"), d1 = AddWorker(v1::DATAGEN_WORKER, "d11");
  v1::JobSpec spec = Spec("mfpo", 1);
  auto id = c_->Submit(spec, 0);
  ASSERT_TRUE(id.ok());
  c_->Tick();
  v1::Job j = Job(*id);
  ASSERT_EQ(j.state(), v1::DATAGEN) << j.reason();
  // 5 records in shards of 2: [0,2) [2,4) [4,5); each worker holds one lease at a time.
  v1::HeartbeatResponse r0 = Beat(d0), r1 = Beat(d1);
  ASSERT_EQ(r0.assignments_size(), 1);
  ASSERT_EQ(r1.assignments_size(), 1);
  EXPECT_EQ(r0.assignments(0).begin(), 0);
  EXPECT_EQ(r0.assignments(0).end(), 2);
  auto write_shard = [&](const v1::Assignment& a) {
    std::ofstream out(fs::path(a.out_dir()) / absl::StrCat("manifest-", a.begin(), "-", a.end(), ".jsonl"));
    for (int64_t i = a.begin(); i < a.end(); ++i) out << "{\"id\": \"r" << i << "\", \"rejected_image\": \"z.png\"}\n";
  };
  // d1 dies holding [2,4): the lease goes to d0 once d0 is free.
  write_shard(r0.assignments(0));
  Beat(d0, {Done(r0.assignments(0).id())});
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  Beat(d0);
  c_->Tick();
  bool reissued = false;
  bool final = false;
  auto events = c_->WaitEvents(*id, 0, absl::ZeroDuration(), &final);
  ASSERT_TRUE(events.ok());
  for (const auto& e : *events) reissued |= absl::StrContains(e.message(), "re-issued");
  EXPECT_TRUE(reissued);
  // d0 takes the re-issued shard and then the last one.
  for (int round = 0; round < 2; ++round) {
    v1::HeartbeatResponse r = Beat(d0);
    ASSERT_EQ(r.assignments_size(), 1) << round;
    write_shard(r.assignments(0));
    Beat(d0, {Done(r.assignments(0).id())});
    c_->Tick();
  }
  // The dead worker's late report of its old lease is ignored (forgotten, not merged).
  Beat(d1, {Done(r1.assignments(0).id())});
  c_->Tick();
  j = Job(*id);
  EXPECT_EQ(j.state(), v1::PENDING) << j.reason();
  EXPECT_EQ(j.data_manifest(), (fs::path(spec.output_dir()) / "datagen" / "merged-0-5.jsonl").string());
  EXPECT_EQ(j.spec().data().max_samples(), 0);  // the user's spec as submitted
  std::ifstream merged(j.data_manifest());
  int lines = 0;
  for (std::string line; std::getline(merged, line);) ++lines;
  EXPECT_EQ(lines, 5);
}

TEST_F(CoordinatorTest, QueueByPriorityAndCancelAborts) {
  const std::string t0 = AddWorker(v1::TRAINER, "a");
  auto low = c_->Submit(Spec("dpo", 1), 0);
  auto high = c_->Submit(Spec("dpo", 1), 5);
  ASSERT_TRUE(low.ok() && high.ok());
  c_->Tick();
  EXPECT_EQ(Job(*high).state(), v1::REFERENCE);
  EXPECT_EQ(Job(*low).state(), v1::PENDING);
  const std::string a = Beat(t0).assignments(0).id();
  ASSERT_TRUE(c_->Cancel(*high).ok());
  EXPECT_EQ(Job(*high).state(), v1::CANCELLED);
  EXPECT_TRUE(absl::IsFailedPrecondition(c_->Cancel(*high).status()));
  v1::AssignmentStatus running;
  running.set_assignment_id(a);
  running.set_state(v1::AssignmentStatus::RUNNING);
  v1::HeartbeatResponse r = Beat(t0, {running});
  ASSERT_EQ(r.abort_size(), 1);
  c_->Tick();
  EXPECT_EQ(Job(*low).state(), v1::PENDING);  // t0 still runs the aborted stage
  Beat(t0);                                    // it no longer does
  c_->Tick();
  EXPECT_EQ(Job(*low).state(), v1::REFERENCE);
  // Paging.
  v1::ListJobsRequest page;
  page.set_page_size(1);
  auto p1 = c_->ListJobs(page);
  ASSERT_TRUE(p1.ok());
  ASSERT_EQ(p1->jobs_size(), 1);
  EXPECT_FALSE(p1->next_page_token().empty());
  page.set_page_token(p1->next_page_token());
  auto p2 = c_->ListJobs(page);
  ASSERT_EQ(p2->jobs_size(), 1);
  EXPECT_NE(p2->jobs(0).id(), p1->jobs(0).id());
  EXPECT_TRUE(p2->next_page_token().empty());
  page.set_page_token("x");
  EXPECT_TRUE(absl::IsInvalidArgument(c_->ListJobs(page).status()));
}

TEST_F(CoordinatorTest, AJobWantingMoreTrainersThanExistDoesNotBlockTheQueue) {
  const std::string t0 = AddWorker(v1::TRAINER, "a");
  v1::JobSpec big = Spec("dpo", 4);
  big.mutable_resources()->set_min_workers(4);
  auto first = c_->Submit(big, 0);
  auto second = c_->Submit(Spec("dpo", 1), 0);
  ASSERT_TRUE(first.ok() && second.ok());
  c_->Tick();
  EXPECT_EQ(Job(*first).state(), v1::PENDING);
  EXPECT_TRUE(absl::StrContains(Job(*first).reason(), "at least 4 needed, 1 registered")) << Job(*first).reason();
  EXPECT_EQ(Job(*second).state(), v1::REFERENCE);
}

TEST_F(CoordinatorTest, OutputDirMustBeItsOwn) {
  v1::JobSpec in_root = Spec("dpo");
  in_root.set_output_dir(root_.string());
  EXPECT_TRUE(absl::IsInvalidArgument(c_->Submit(in_root, 0).status()));
  v1::JobSpec in_model = Spec("dpo");
  in_model.set_output_dir((root_ / "model" / "out").string());
  EXPECT_TRUE(absl::IsInvalidArgument(c_->Submit(in_model, 0).status()));
  v1::JobSpec named = Spec("dpo");
  named.set_name("bad\x1b[2Jname");
  auto s = c_->Submit(named, 0);
  EXPECT_TRUE(absl::StrContains(s.status().message(), "name")) << s.status();
}

TEST_F(CoordinatorTest, AWorkerThatLeavesEndsItsGroupAtOnce) {
  const std::string t0 = AddWorker(v1::TRAINER, "a"), t1 = AddWorker(v1::TRAINER, "bb");
  auto id = c_->Submit(Spec("dpo"), 0);
  ASSERT_TRUE(id.ok());
  c_->Tick();
  Beat(t0);
  v1::HeartbeatRequest bye;
  bye.set_worker_id(t1);
  bye.set_leaving(true);
  ASSERT_TRUE(c_->Heartbeat(bye).ok());
  c_->Tick();
  // A clean stop is not a failure: the group ends, no restart is used up.
  EXPECT_EQ(Job(*id).restarts(), 0);
  EXPECT_EQ(Job(*id).workers_size(), 0);
  auto state_of = [&](const std::string& worker) {
    for (const v1::WorkerInfo& w : c_->Workers())
      if (w.id() == worker) return w.state();
    return std::string("(forgotten)");
  };
  EXPECT_EQ(state_of(t1), "left");
  // The agent started again under its name replaces the entry it left behind.
  const std::string again = AddWorker(v1::TRAINER, "bb");
  EXPECT_NE(again, t1);
  EXPECT_EQ(state_of(t1), "(forgotten)");
  EXPECT_EQ(state_of(again), "idle");
}

TEST_F(CoordinatorTest, MetricsFollowJobsAndDropEndedJobsSeries) {
  prometheus::Registry registry;
  CoordinatorMetrics metrics(registry, "test");
  auto text = [&] {
    metrics.Sync(c_->TakeSnapshot());
    return prometheus::TextSerializer().Serialize(registry.Collect());
  };
  const std::string t0 = AddWorker(v1::TRAINER, "a");
  auto id = c_->Submit(Spec("dpo", 1), 0);
  ASSERT_TRUE(id.ok());
  c_->Tick();
  const std::string a = Beat(t0).assignments(0).id();
  v1::ProgressRequest p;
  p.set_worker_id(t0);
  p.mutable_status()->set_assignment_id(a);
  p.mutable_status()->set_step(3);
  p.mutable_status()->set_loss(0.5);
  p.mutable_status()->set_loss_image(0.25);
  p.mutable_status()->set_image_reward_accuracy(0.75);
  ASSERT_TRUE(c_->Progress(p).ok());
  std::string t = text();
  EXPECT_TRUE(absl::StrContains(t, "mfpo_jobs{state=\"REFERENCE\"} 1")) << t;
  EXPECT_TRUE(absl::StrContains(t, "mfpo_job_step{job_id=\"" + *id + "\"} 3")) << t;
  EXPECT_TRUE(absl::StrContains(t, "mfpo_job_loss{job_id=\"" + *id + "\",term=\"image\"} 0.25")) << t;
  EXPECT_TRUE(absl::StrContains(t, "mfpo_job_reward_accuracy{job_id=\"" + *id + "\",modality=\"image\"} 0.75")) << t;
  EXPECT_TRUE(absl::StrContains(t, "mfpo_workers{role=\"trainer\",state=\"busy\"} 1")) << t;
  EXPECT_TRUE(absl::StrContains(t, "mfpo_coordinator_heartbeats_total 1")) << t;
  ASSERT_TRUE(c_->Cancel(*id).ok());
  t = text();
  EXPECT_TRUE(absl::StrContains(t, "mfpo_jobs{state=\"CANCELLED\"} 1")) << t;
  EXPECT_FALSE(absl::StrContains(t, "job_id=\"" + *id + "\"")) << t;
}

TEST_F(CoordinatorTest, AnotherCoordinatorOnTheSameDatabaseIsRefused) {
  CoordinatorOptions o;
  o.database = (root_ / "jobs.db").string();
  o.allowed_roots = {root_.string()};
  o.start_scheduler = false;
  auto second = Coordinator::Open(o);
  EXPECT_FALSE(second.ok());
  EXPECT_TRUE(absl::StrContains(second.status().message(), "another coordinator")) << second.status();
}

}  // namespace
}  // namespace mfpo
