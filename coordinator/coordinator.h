// The coordinator's core: jobs and their state machine, the registered workers, scheduling,
// leases and elastic recovery. The gRPC services (service.h) are a thin layer over this class;
// tests and the benchmark drive it directly or through them.
//
// A job goes PENDING -> DATAGEN -> REFERENCE -> SCORING -> TRAINING (one stage per curriculum
// phase) -> EVALUATING -> SUCCEEDED, or ends FAILED / CANCELLED:
//   DATAGEN    the manifest's records [0, max_samples) cut into shards; each shard is leased to
//              one datagen worker (lease renewed by its heartbeats, re-issued when the worker is
//              lost or the lease expires); when every shard is done their manifests are merged,
//              once, in record order. Skipped when the objective needs no rejected image or
//              every record has one.
//   REFERENCE / SCORING / TRAINING / EVALUATING
//              run on a training group: up to resources.workers idle trainers (at least
//              resources.min_workers; fewer that keep the global batch workers x grad_accum are
//              accepted), one job per group, the queue ordered by priority then submission.
//              Each stage is one assignment per member (rank, world size, rendezvous = rank 0's
//              agent store, a store prefix unique to the assignment); the trainer library
//              resumes from what earlier stages left in output_dir. A member that fails or stops
//              heartbeating ends the group: the others are told to abort, and a new group is
//              formed from the trainers then available, from the last checkpoint, at most
//              resources.max_restarts times. EVALUATING runs on one trainer.
//
// Every change is written to the JobStore (SQLite) before anyone is told about it; a restarted
// coordinator loads jobs and workers and goes on (workers keep running their assignments and
// report them in their next heartbeat).
#ifndef MFPO_COORDINATOR_COORDINATOR_H_
#define MFPO_COORDINATOR_COORDINATOR_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/job_store.h"
#include "coordinator_state.pb.h"
#include "mfpo_service.pb.h"

namespace mfpo {

struct CoordinatorOptions {
  std::string database;                    // SQLite file (created when missing)
  std::vector<std::string> allowed_roots;  // paths in job specs must lie under one of these
  int64_t heartbeat_interval_ms = 1000;    // told to workers at registration
  int64_t worker_timeout_ms = 10000;       // no heartbeat for this long: the worker is lost
  int64_t lease_ms = 30000;                // a datagen lease lasts this long past its last renewal
  int64_t forget_lost_worker_ms = 600000;  // a lost worker in no group is forgotten after this
  int64_t shard_records = 64;              // records per datagen shard
  int64_t tick_ms = 200;                   // scheduler period
  bool start_scheduler = true;             // false: the caller calls Tick() (tests)
};

// Counters the metrics layer reads (service.h); monotonically increasing.
struct CoordinatorCounters {
  int64_t heartbeats = 0;
  int64_t group_restarts = 0;
  int64_t leases_reissued = 0;
};

class Coordinator {
 public:
  static absl::StatusOr<std::unique_ptr<Coordinator>> Open(const CoordinatorOptions& options);
  ~Coordinator();  // stops the scheduler thread

  // ---- JobService
  // Fills defaults, validates as `mfpo train --spec` does, confines paths to the allowed roots,
  // stores the job and returns its id ("job-000001").
  absl::StatusOr<std::string> Submit(const v1::JobSpec& spec, int priority);
  absl::StatusOr<v1::Job> GetJob(const std::string& id);
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& request);
  absl::StatusOr<v1::Job> Cancel(const std::string& id);
  // Events of job `id` after `after_seq`, waiting up to `wait` when there are none yet. `*final`
  // is set when the job has ended and no event after the returned ones will come.
  absl::StatusOr<std::vector<v1::JobEvent>> WaitEvents(const std::string& id, int64_t after_seq, absl::Duration wait,
                                                       bool* final);
  std::vector<v1::WorkerInfo> Workers();

  // ---- WorkerService
  absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& request);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request);
  absl::StatusOr<v1::ProgressResponse> Progress(const v1::ProgressRequest& request);

  // One scheduling pass (the scheduler thread calls it every tick_ms).
  void Tick();

  // What the metrics show (coordinator_metrics.h), taken under the lock in one go.
  struct Snapshot {
    std::map<v1::JobState, int> jobs_by_state;
    struct ActiveJob {
      v1::Job job;
      v1::JobEvent last_progress;  // the newest PROGRESS event (empty before the first step)
    };
    std::vector<ActiveJob> active;                       // jobs not in a final state
    std::map<std::pair<std::string, std::string>, int> workers;  // (role, state) -> count
    CoordinatorCounters counters;
  };
  Snapshot TakeSnapshot();

 private:
  struct Worker {
    v1::WorkerInfo info;
    int64_t last_heartbeat_ms = 0;
    bool lost = false;
    bool left = false;                      // lost because it said it stops (a clean stop)
    bool heard_since_start = false;        // false after a coordinator restart until it heartbeats
    std::set<std::string> running;          // assignment ids it reported running
  };
  explicit Coordinator(const CoordinatorOptions& options, std::unique_ptr<JobStore> store);

  absl::Status CheckPaths(const v1::JobSpec& spec) const;
  v1::internal::JobRecord* FindJob(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::internal::JobRecord* JobOfAssignment(const std::string& assignment_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Appends an event (seq and time filled in) to be written with the job's next Persist.
  void Emit(v1::internal::JobRecord& r, v1::JobEvent event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetState(v1::internal::JobRecord& r, v1::JobState state, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes the job and its unwritten events; on failure they stay queued and are retried.
  absl::Status Persist(v1::internal::JobRecord& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void Advance(v1::internal::JobRecord& r, int64_t now, bool* trainer_queue_blocked) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartFirstStage(v1::internal::JobRecord& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AdvanceDatagen(v1::internal::JobRecord& r, int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status MergeShards(v1::internal::JobRecord& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AdvanceGroupStage(v1::internal::JobRecord& r, int64_t now, bool* trainer_queue_blocked)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool FormGroup(v1::internal::JobRecord& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void IssueStage(v1::internal::JobRecord& r, int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a job's current training group has this worker (a member's entry must outlive it).
  bool InAnyGroup(const std::string& worker_id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets a worker that is gone (registry and database).
  void ForgetWorker(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndGroup(v1::internal::JobRecord& r, const std::string& reason, bool failure, bool retryable)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StageDone(v1::internal::JobRecord& r, int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool WorkerAvailable(const Worker& w) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Assignment BuildAssignment(const v1::internal::JobRecord& r, const v1::internal::GroupMember* member,
                                 const v1::internal::ShardRecord* shard) const;
  void RefreshWorkerStates() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CoordinatorOptions options_;
  absl::Mutex mu_;
  absl::CondVar events_cv_;
  std::unique_ptr<JobStore> store_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::internal::JobRecord> jobs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<v1::JobEvent>> unwritten_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::JobEvent> last_progress_ ABSL_GUARDED_BY(mu_);  // active jobs only
  std::map<std::string, Worker> workers_ ABSL_GUARDED_BY(mu_);
  CoordinatorCounters counters_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread scheduler_;
};

// Is the job in a final state?
bool IsFinal(v1::JobState state);

}  // namespace mfpo

#endif  // MFPO_COORDINATOR_COORDINATOR_H_
