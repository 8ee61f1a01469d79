#include "common/agent_runner.h"

#include <spdlog/spdlog.h>

#include <thread>

#include "absl/strings/str_cat.h"

namespace mfpo {

absl::StatusOr<std::unique_ptr<AgentRunner>> AgentRunner::Create(const AgentOptions& options, Starter starter) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(options.coordinator, options.security);
  if (!channel.ok()) return channel.status();
  return std::unique_ptr<AgentRunner>(new AgentRunner(options, std::move(starter), *channel));
}

AgentRunner::AgentRunner(const AgentOptions& options, Starter starter, std::shared_ptr<grpc::Channel> channel)
    : options_(options), starter_(std::move(starter)), channel_(std::move(channel)),
      stub_(v1::WorkerService::NewStub(channel_)) {}

AgentRunner::~AgentRunner() {
  for (auto& [id, task] : tasks_) task->Abort();
}

void AgentRunner::Wake() {
  absl::MutexLock lock(&wake_mu_);
  woken_ = true;
}

absl::Status AgentRunner::Register(const std::atomic<bool>& stop) {
  auto backoff = std::chrono::milliseconds(200);
  bool told = false;
  while (!stop.load()) {
    v1::RegisterRequest request;
    request.set_role(options_.role);
    request.set_name(options_.name);
    *request.mutable_capacity() = options_.capacity;
    request.set_rendezvous_address(options_.rendezvous_address);
    request.set_worker_id(worker_id_);
    v1::RegisterResponse response;
    grpc::ClientContext context;
    PrepareCall(&context, options_.security, options_.rpc_timeout);
    const grpc::Status s = stub_->Register(&context, request, &response);
    if (s.ok()) {
      worker_id_ = response.worker_id();
      interval_ = std::chrono::milliseconds(std::max<int64_t>(50, response.heartbeat_interval_ms()));
      spdlog::info("registered with {} as {}", options_.coordinator, worker_id_);
      coordinator_unreachable_ = false;
      return absl::OkStatus();
    }
    const absl::Status status = FromGrpcStatus(s, absl::StrCat("registering with ", options_.coordinator));
    if (absl::IsUnauthenticated(status) || absl::IsInvalidArgument(status) || absl::IsPermissionDenied(status))
      return status;
    if (!told) spdlog::warn("{}; retrying", std::string(status.message()));
    told = true;
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
  }
  return absl::CancelledError("stopped before registering");
}

absl::Status AgentRunner::HeartbeatOnce() {
  v1::HeartbeatRequest request;
  request.set_worker_id(worker_id_);
  for (auto& [id, task] : tasks_) {
    v1::AssignmentStatus st = task->Status();
    st.set_assignment_id(id);
    *request.add_assignments() = st;
  }
  v1::HeartbeatResponse response;
  grpc::ClientContext context;
  PrepareCall(&context, options_.security, options_.rpc_timeout);
  const grpc::Status s = stub_->Heartbeat(&context, request, &response);
  if (!s.ok()) {
    absl::Status status = FromGrpcStatus(s, absl::StrCat("heartbeat to ", options_.coordinator));
    if (!coordinator_unreachable_)
      spdlog::warn("{}; tasks keep running and are reported when it answers", std::string(status.message()));
    coordinator_unreachable_ = true;
    return status;
  }
  if (coordinator_unreachable_) spdlog::info("coordinator {} answers again", options_.coordinator);
  coordinator_unreachable_ = false;
  if (response.reregister()) return absl::NotFoundError("the coordinator does not know this worker");
  for (const std::string& id : response.abort()) {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) continue;
    spdlog::warn("{}: aborted by the coordinator", id);
    it->second->Abort();
    tasks_.erase(it);
  }
  for (const std::string& id : response.forget()) tasks_.erase(id);
  for (const v1::Assignment& a : response.assignments()) {
    if (tasks_.count(a.id())) continue;
    spdlog::info("{}: assigned", a.id());
    absl::StatusOr<std::unique_ptr<Task>> task = starter_(a, this);
    if (!task.ok()) {
      // Reported as a failed task.
      struct Failed final : Task {
        v1::AssignmentStatus st;
        v1::AssignmentStatus Status() override { return st; }
        void Abort() override {}
      };
      auto failed = std::make_unique<Failed>();
      failed->st.set_state(v1::AssignmentStatus::FAILED);
      failed->st.set_error(std::string(task.status().message()));
      failed->st.set_error_code(static_cast<int>(task.status().code()));
      spdlog::error("{}: could not start: {}", a.id(), std::string(task.status().message()));
      tasks_[a.id()] = std::move(failed);
      Wake();
      continue;
    }
    tasks_[a.id()] = std::move(*task);
  }
  return absl::OkStatus();
}

absl::Status AgentRunner::Run(const std::atomic<bool>& stop) {
  absl::Status registered = Register(stop);
  if (!registered.ok()) return absl::IsCancelled(registered) ? absl::OkStatus() : registered;
  auto next = std::chrono::steady_clock::now();
  while (!stop.load()) {
    bool woken = false;
    {
      absl::MutexLock lock(&wake_mu_);
      woken = woken_;
      woken_ = false;
    }
    if (woken || std::chrono::steady_clock::now() >= next) {
      absl::Status s = HeartbeatOnce();
      if (absl::IsNotFound(s)) {
        absl::Status again = Register(stop);
        if (!again.ok()) return absl::IsCancelled(again) ? absl::OkStatus() : again;
      } else if (absl::IsUnauthenticated(s) || absl::IsPermissionDenied(s)) {
        return s;
      }
      next = std::chrono::steady_clock::now() + interval_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (auto& [id, task] : tasks_) task->Abort();
  tasks_.clear();
  // Say goodbye (best effort): the coordinator re-forms this worker's group at once.
  v1::HeartbeatRequest request;
  request.set_worker_id(worker_id_);
  request.set_leaving(true);
  v1::HeartbeatResponse response;
  grpc::ClientContext context;
  PrepareCall(&context, options_.security, std::chrono::milliseconds(1000));
  (void)stub_->Heartbeat(&context, request, &response);
  return absl::OkStatus();
}

bool AgentRunner::SendProgress(const v1::AssignmentStatus& status) {
  v1::ProgressRequest request;
  request.set_worker_id(worker_id_);
  *request.mutable_status() = status;
  v1::ProgressResponse response;
  grpc::ClientContext context;
  PrepareCall(&context, options_.security, options_.rpc_timeout);
  if (!stub_->ReportProgress(&context, request, &response).ok()) return false;  // retried with the next step
  return response.abort();
}

}  // namespace mfpo
