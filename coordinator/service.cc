#include "coordinator/service.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "mfpo_service.grpc.pb.h"

namespace mfpo {
namespace {

// The token check, then the call's result into `out` (or its status).
template <typename T>
grpc::Status Reply(const grpc::ServerContext& ctx, const std::string& token, absl::StatusOr<T> result, T* out) {
  if (absl::Status s = CheckBearerToken(ctx, token); !s.ok()) return ToGrpcStatus(s);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *out = std::move(*result);
  return grpc::Status::OK;
}

}  // namespace

class CoordinatorServer::JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(Coordinator* c, std::string token) : c_(c), token_(std::move(token)) {}

  grpc::Status SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req, v1::SubmitJobResponse* out) override {
    if (absl::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return ToGrpcStatus(s);
    absl::StatusOr<std::string> id = c_->Submit(req->spec(), req->priority());
    if (!id.ok()) return ToGrpcStatus(id.status());
    out->set_job_id(*id);
    return grpc::Status::OK;
  }
  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* out) override {
    return Reply(*ctx, token_, c_->GetJob(req->job_id()), out);
  }
  grpc::Status ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req, v1::ListJobsResponse* out) override {
    return Reply(*ctx, token_, c_->ListJobs(*req), out);
  }
  grpc::Status CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* out) override {
    if (absl::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return ToGrpcStatus(s);
    return Reply(*ctx, token_, c_->Cancel(req->job_id()), out);
  }
  grpc::Status ListWorkers(grpc::ServerContext* ctx, const v1::ListWorkersRequest*, v1::ListWorkersResponse* out) override {
    if (absl::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return ToGrpcStatus(s);
    for (v1::WorkerInfo& w : c_->Workers()) *out->add_workers() = std::move(w);
    return grpc::Status::OK;
  }
  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    if (absl::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return ToGrpcStatus(s);
    int64_t after = req->after_seq();
    for (;;) {
      if (ctx->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "the watcher went away");
      bool final = false;
      absl::StatusOr<std::vector<v1::JobEvent>> events = c_->WaitEvents(req->job_id(), after, absl::Seconds(1), &final);
      if (!events.ok()) return ToGrpcStatus(events.status());
      for (const v1::JobEvent& e : *events) {
        if (!writer->Write(e)) return grpc::Status(grpc::StatusCode::CANCELLED, "the watcher went away");
        after = e.seq();
      }
      if (final) return grpc::Status::OK;
    }
  }

 private:
  Coordinator* c_;
  const std::string token_;
};

class CoordinatorServer::WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  WorkerServiceImpl(Coordinator* c, std::string token, std::function<void(double)> observe)
      : c_(c), token_(std::move(token)), observe_(std::move(observe)) {}
  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req, v1::RegisterResponse* out) override {
    return Reply(*ctx, token_, c_->Register(*req), out);
  }
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req, v1::HeartbeatResponse* out) override {
    const auto t0 = std::chrono::steady_clock::now();
    grpc::Status s = Reply(*ctx, token_, c_->Heartbeat(*req), out);
    if (observe_) observe_(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return s;
  }
  grpc::Status ReportProgress(grpc::ServerContext* ctx, const v1::ProgressRequest* req, v1::ProgressResponse* out) override {
    return Reply(*ctx, token_, c_->Progress(*req), out);
  }

 private:
  Coordinator* c_;
  const std::string token_;
  const std::function<void(double)> observe_;
};

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(Coordinator* coordinator,
                                                                           const ServerOptions& options) {
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = MakeServerCredentials(options.security);
  if (!credentials.ok()) return credentials.status();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->jobs_ = std::make_unique<JobServiceImpl>(coordinator, options.security.token);
  server->workers_ = std::make_unique<WorkerServiceImpl>(coordinator, options.security.token, options.observe_heartbeat);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.address, *credentials, &server->port_);
  builder.RegisterService(server->jobs_.get());
  builder.RegisterService(server->workers_.get());
  builder.SetMaxReceiveMessageSize(16 << 20);
  // gRPC sets SO_REUSEPORT by default: a second coordinator on a port in use would then share it
  // silently, each answering half of the calls.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || server->port_ == 0)
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.address,
                                               " (in use, or not an address of this machine?)"));
  auto serving = [](grpc::Server* s) {
    if (grpc::HealthCheckServiceInterface* health = s->GetHealthCheckService()) {
      health->SetServingStatus(true);
      health->SetServingStatus("mfpo.v1.JobService", true);
      health->SetServingStatus("mfpo.v1.WorkerService", true);
    }
  };
  serving(server->server_.get());
  if (!options.health_address.empty()) {
    grpc::ServerBuilder health;
    health.AddListeningPort(options.health_address, grpc::InsecureServerCredentials(), &server->health_port_);
    health.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    server->health_server_ = health.BuildAndStart();
    if (!server->health_server_ || server->health_port_ == 0)
      return absl::UnavailableError(absl::StrCat("cannot listen on ", options.health_address, " (--health_address)"));
    serving(server->health_server_.get());
  }
  return server;
}

void CoordinatorServer::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_ || !server_) return;
  shut_down_ = true;
  for (grpc::Server* s : {server_.get(), health_server_.get()}) {
    if (!s) continue;
    if (grpc::HealthCheckServiceInterface* health = s->GetHealthCheckService()) health->Shutdown();
    s->Shutdown(std::chrono::system_clock::now() + grace);
    s->Wait();
  }
}

CoordinatorServer::~CoordinatorServer() { Shutdown(std::chrono::milliseconds(2000)); }

}  // namespace mfpo
