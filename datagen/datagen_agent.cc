#include "datagen/datagen_agent.h"

#include <thread>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/torch_seam.h"

namespace mfpo {

PerturbCommandOptions PerturbOptionsForLease(const v1::Assignment& a, int threads) {
  PerturbCommandOptions o;
  const v1::JobSpec& spec = a.spec();
  o.shard.manifest = a.manifest();
  o.shard.out_dir = a.out_dir();
  o.shard.begin = a.begin();
  o.shard.end = a.end();
  o.shard.threads = threads;
  o.grounder = spec.datagen().grounder();
  o.vocabulary_path = a.vocabulary();
  // As `mfpo perturb`: the model serves the model grounder (and then its word vectors).
  if (o.grounder == "model") o.model_dir = spec.model().path();
  o.torchscript_path = spec.datagen().grounder_model();
  o.perturb.keywords.top_k = spec.datagen().top_k();
  o.perturb.noise_step = spec.objective().noise_step();
  o.perturb.seed = spec.datagen().seed();
  o.fill = spec.datagen().has_fill() ? spec.datagen().fill() : "noise";
  return o;
}

namespace {

class ShardTask final : public AgentRunner::Task {
 public:
  ShardTask(const v1::Assignment& a, int threads, PerturbCounters* shared, AgentRunner* runner)
      : id_(a.id()), shared_(shared) {
    const PerturbCommandOptions options = PerturbOptionsForLease(a, threads);
    if (shared_) counters_.observe_record = shared_->observe_record;  // per-record latency, live
    spdlog::info("{}: records [{}, {}) of {} into {}", a.id(), a.begin(), a.end(), a.manifest(), a.out_dir());
    thread_ = std::thread([this, options, runner] {
      absl::StatusOr<ShardReport> report =
          CatchAll(absl::StrCat("shard ", id_), [&] { return RunPerturbCommand(options, &counters_); });
      Mirror(/*final=*/true);
      absl::MutexLock lock(&mu_);
      done_ = true;
      if (report.ok()) {
        spdlog::info("{}: {}", id_, ShardReportText(*report));
        status_ok_ = true;
      } else {
        error_ = report.status();
        if (!counters_.cancel.load()) spdlog::error("{}: {}", id_, std::string(report.status().message()));
      }
      runner->Wake();
    });
  }
  ~ShardTask() override {
    Abort();
    thread_.join();
  }
  v1::AssignmentStatus Status() override {
    Mirror(/*final=*/false);
    v1::AssignmentStatus st;
    st.set_assignment_id(id_);
    st.set_records_done(counters_.done.load() + counters_.skipped.load() + counters_.errors.load());
    absl::MutexLock lock(&mu_);
    if (!done_) {
      st.set_state(v1::AssignmentStatus::RUNNING);
    } else if (status_ok_) {
      st.set_state(v1::AssignmentStatus::SUCCEEDED);
    } else {
      st.set_state(v1::AssignmentStatus::FAILED);
      st.set_error(std::string(error_.message()));
      st.set_error_code(static_cast<int>(error_.code()));
    }
    return st;
  }
  void Abort() override { counters_.cancel = true; }

 private:
  // Adds what this lease did since the last call to the agent's counters (which the metrics
  // follow), so that records, queue depth and in-flight records show while the lease runs.
  void Mirror(bool final) {
    if (!shared_) return;
    absl::MutexLock lock(&mirror_mu_);
    auto add = [](std::atomic<int64_t>& to, int64_t now, int64_t& seen) {
      to += now - seen;
      seen = now;
    };
    add(shared_->total, counters_.total.load(), seen_total_);
    add(shared_->done, counters_.done.load(), seen_done_);
    add(shared_->errors, counters_.errors.load(), seen_errors_);
    add(shared_->skipped, counters_.skipped.load(), seen_skipped_);
    add(shared_->fallbacks, counters_.fallbacks.load(), seen_fallbacks_);
    add(shared_->in_flight, final ? 0 : counters_.in_flight.load(), seen_in_flight_);
    if (final) {
      // Records never reached (a cancelled lease) leave the queue too.
      const int64_t left = seen_total_ - seen_done_ - seen_errors_ - seen_skipped_;
      shared_->total -= left;
      seen_total_ -= left;
    }
  }

  const std::string id_;
  PerturbCounters* const shared_;
  absl::Mutex mirror_mu_;
  int64_t seen_total_ ABSL_GUARDED_BY(mirror_mu_) = 0, seen_done_ ABSL_GUARDED_BY(mirror_mu_) = 0;
  int64_t seen_errors_ ABSL_GUARDED_BY(mirror_mu_) = 0, seen_skipped_ ABSL_GUARDED_BY(mirror_mu_) = 0;
  int64_t seen_fallbacks_ ABSL_GUARDED_BY(mirror_mu_) = 0, seen_in_flight_ ABSL_GUARDED_BY(mirror_mu_) = 0;
  PerturbCounters counters_;
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool status_ok_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace

absl::Status RunDatagenAgent(const DatagenAgentOptions& options, const std::atomic<bool>& stop) {
  AgentOptions agent = options.agent;
  agent.role = v1::DATAGEN_WORKER;
  absl::StatusOr<std::unique_ptr<AgentRunner>> runner =
      AgentRunner::Create(agent, [&options](const v1::Assignment& a, AgentRunner* r) -> absl::StatusOr<std::unique_ptr<AgentRunner::Task>> {
        if (a.kind() != v1::Assignment::DATAGEN_SHARD)
          return absl::InvalidArgumentError(absl::StrCat(a.id(), ": a datagen worker takes shard leases only"));
        return std::unique_ptr<AgentRunner::Task>(new ShardTask(a, options.threads, options.counters, r));
      });
  if (!runner.ok()) return runner.status();
  return (*runner)->Run(stop);
}

}  // namespace mfpo
