// The worker side of WorkerService, shared by the trainer agent (mfpo-worker) and the datagen
// agent (mfpo-datagen --coordinator): registers, heartbeats with the status of every task it
// runs, starts the assignments it is given, aborts the ones the coordinator no longer wants, and
// keeps reporting a finished task until the coordinator has recorded it ("forget"). A coordinator
// that is down or restarting is waited for: tasks keep running and their outcome is reported once
// it answers again.
#ifndef MFPO_COMMON_AGENT_RUNNER_H_
#define MFPO_COMMON_AGENT_RUNNER_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/rpc_util.h"
#include "mfpo_service.grpc.pb.h"

namespace mfpo {

struct AgentOptions {
  std::string coordinator;  // HOST:PORT
  ClientSecurity security;
  v1::WorkerRole role = v1::TRAINER;
  std::string name;
  v1::Capacity capacity;
  std::string rendezvous_address;  // trainers
  std::chrono::milliseconds rpc_timeout{5000};
};

class AgentRunner {
 public:
  // One running assignment.
  class Task {
   public:
    virtual ~Task() = default;
    // RUNNING, or the final SUCCEEDED / FAILED with its error; the assignment id is filled in.
    virtual v1::AssignmentStatus Status() = 0;
    // Stops it now (the coordinator no longer wants it); no outcome is reported afterwards.
    virtual void Abort() = 0;
  };
  using Starter = std::function<absl::StatusOr<std::unique_ptr<Task>>(const v1::Assignment&, AgentRunner*)>;

  static absl::StatusOr<std::unique_ptr<AgentRunner>> Create(const AgentOptions& options, Starter starter);
  ~AgentRunner();

  // Runs until `stop` is set (checked at least every 200 ms); aborts every task on the way out.
  // Fails only for what retrying cannot fix (refused registration: a bad token or arguments).
  absl::Status Run(const std::atomic<bool>& stop);
  // Sends progress of a running task; returns true when the coordinator wants it aborted.
  bool SendProgress(const v1::AssignmentStatus& status);
  // Heartbeat now instead of at the next interval (a task finished).
  void Wake();
  const std::string& worker_id() const { return worker_id_; }

 private:
  AgentRunner(const AgentOptions& options, Starter starter, std::shared_ptr<grpc::Channel> channel);
  absl::Status Register(const std::atomic<bool>& stop);
  absl::Status HeartbeatOnce();

  const AgentOptions options_;
  Starter starter_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  std::string worker_id_;
  std::chrono::milliseconds interval_{1000};
  bool coordinator_unreachable_ = false;
  std::map<std::string, std::unique_ptr<Task>> tasks_;  // by assignment id; the Run thread only
  absl::Mutex wake_mu_;
  bool woken_ ABSL_GUARDED_BY(wake_mu_) = false;
};

}  // namespace mfpo

#endif  // MFPO_COMMON_AGENT_RUNNER_H_
