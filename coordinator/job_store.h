// The coordinator's durable state in one SQLite file: jobs (JobRecord protos), their events
// (append-only, sequence numbers per job) and the registered workers. Every write is a
// transaction committed with synchronous=FULL before the caller acknowledges anything, so a
// coordinator killed at any point and restarted with the same file continues every job.
//
// Not thread-safe: the Coordinator serialises access under its mutex.
#ifndef MFPO_COORDINATOR_JOB_STORE_H_
#define MFPO_COORDINATOR_JOB_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator_state.pb.h"
#include "mfpo_service.pb.h"

struct sqlite3;

namespace mfpo {

class JobStore {
 public:
  // Opens (creating when missing) the database at `path`; checks its schema version.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // The next job number (1, 2, ...), persisted with the job by PutJob.
  absl::StatusOr<int64_t> NextJobNumber();
  // Inserts or replaces the job, together with `events` (appended) in one transaction.
  absl::Status PutJob(const v1::internal::JobRecord& record, const std::vector<v1::JobEvent>& events = {});
  absl::StatusOr<std::vector<v1::internal::JobRecord>> LoadJobs();
  // Events of a job with seq > after_seq, in order, at most `limit`.
  absl::StatusOr<std::vector<v1::JobEvent>> Events(const std::string& job_id, int64_t after_seq, int limit);

  absl::Status PutWorker(const v1::WorkerInfo& worker);
  absl::Status DeleteWorker(const std::string& id);
  absl::StatusOr<std::vector<v1::WorkerInfo>> LoadWorkers();
  // A counter kept in the meta table (e.g. worker ids).
  absl::StatusOr<int64_t> Increment(const std::string& key);

  const std::string& path() const { return path_; }

 private:
  JobStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  absl::Status Exec(const char* sql);
  absl::Status Error(const char* what) const;
  sqlite3* db_;
  std::string path_;
};

}  // namespace mfpo

#endif  // MFPO_COORDINATOR_JOB_STORE_H_
