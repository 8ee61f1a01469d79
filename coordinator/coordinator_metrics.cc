#include "coordinator/coordinator_metrics.h"

#include <chrono>

#include "common/metrics_server.h"

namespace mfpo {
namespace {

prometheus::Family<prometheus::Gauge>& Gauge(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}
prometheus::Counter& Counter(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
}

}  // namespace

CoordinatorMetrics::CoordinatorMetrics(prometheus::Registry& r, const std::string& version)
    : jobs_(Gauge(r, "mfpo_jobs", "Jobs known to the coordinator, by state")),
      job_info_(Gauge(r, "mfpo_job_info", "1 for each active job, with its name, state and phase")),
      step_(Gauge(r, "mfpo_job_step", "Optimizer steps done by the active job")),
      total_steps_(Gauge(r, "mfpo_job_total_steps", "Optimizer steps of the whole job (known after SCORING)")),
      loss_(Gauge(r, "mfpo_job_loss", "Loss of the newest step, total and by term (text, image, margin)")),
      reward_accuracy_(Gauge(r, "mfpo_job_reward_accuracy",
                             "Share of the newest step's pairs whose reward prefers the chosen answer, by modality: "
                             "text (y_w over y_l on m) and image (y_w on m over y_w on m')")),
      samples_per_second_(Gauge(r, "mfpo_job_samples_per_second", "Training throughput of the active job")),
      eta_(Gauge(r, "mfpo_job_eta_seconds", "Estimated time left of the active job's training")),
      last_progress_(Gauge(r, "mfpo_job_last_progress_timestamp_seconds",
                           "Unix time of the active job's newest step (or of its last state change before any)")),
      job_restarts_(Gauge(r, "mfpo_job_restarts", "Times the active job's training group was re-formed")),
      workers_(Gauge(r, "mfpo_workers", "Registered workers by role and state")),
      heartbeat_(prometheus::BuildHistogram()
                     .Name("mfpo_coordinator_heartbeat_seconds")
                     .Help("Time the coordinator takes to handle one worker heartbeat")
                     .Register(r)
                     .Add({}, prometheus::Histogram::BucketBoundaries{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                                       0.01, 0.025, 0.05, 0.1})),
      heartbeats_(Counter(r, "mfpo_coordinator_heartbeats_total", "Worker heartbeats handled")),
      restarts_(Counter(r, "mfpo_coordinator_group_restarts_total",
                        "Training groups ended by a failure or a lost trainer (each is re-formed or fails its job)")),
      reissued_(Counter(r, "mfpo_coordinator_leases_reissued_total",
                        "Datagen shard leases re-issued after their worker was lost or the lease expired")) {
  RegisterProcessInfo(r, version, "coordinator");
}

void CoordinatorMetrics::Sync(const Coordinator::Snapshot& snap) {
  absl::MutexLock lock(&mu_);
  for (const auto& [state, n] : snap.jobs_by_state) jobs_.Add({{"state", v1::JobState_Name(state)}}).Set(n);
  for (const auto& [key, n] : snap.workers) workers_.Add({{"role", key.first}, {"state", key.second}}).Set(n);
  auto bump = [](prometheus::Counter& c, int64_t& seen, int64_t now) {
    if (now > seen) c.Increment(static_cast<double>(now - seen));
    seen = now;
  };
  bump(heartbeats_, seen_.heartbeats, snap.counters.heartbeats);
  bump(restarts_, seen_.group_restarts, snap.counters.group_restarts);
  bump(reissued_, seen_.leases_reissued, snap.counters.leases_reissued);

  // Per-job series: rebuilt for the active jobs, removed for the others.
  std::set<std::string> active;
  for (const auto& a : snap.active) {
    const std::string& id = a.job.id();
    active.insert(id);
    auto& mine = series_[id];
    for (auto& [family, gauge] : mine) family->Remove(gauge);
    mine.clear();
    auto set = [&](prometheus::Family<prometheus::Gauge>& f, const std::map<std::string, std::string>& extra, double v) {
      std::map<std::string, std::string> labels = extra;
      labels["job_id"] = id;  // not "job": Prometheus gives that name to the scrape job
      prometheus::Gauge& g = f.Add(labels);
      g.Set(v);
      mine.emplace_back(&f, &g);
    };
    set(job_info_, {{"name", a.job.name()}, {"state", v1::JobState_Name(a.job.state())}, {"phase", a.job.phase()}}, 1);
    set(step_, {}, static_cast<double>(a.job.step()));
    set(total_steps_, {}, static_cast<double>(a.job.total_steps()));
    set(job_restarts_, {}, a.job.restarts());
    const v1::JobEvent& p = a.last_progress;
    const bool has_progress = p.kind() == v1::JobEvent::PROGRESS;
    set(last_progress_, {}, (has_progress ? p.time_unix_ms() : a.job.updated_unix_ms()) / 1000.0);
    if (!has_progress) continue;
    set(loss_, {{"term", "total"}}, p.loss());
    set(loss_, {{"term", "text"}}, p.loss_text());
    set(loss_, {{"term", "image"}}, p.loss_image());
    set(loss_, {{"term", "margin"}}, p.loss_margin());
    set(reward_accuracy_, {{"modality", "text"}}, p.text_reward_accuracy());
    set(reward_accuracy_, {{"modality", "image"}}, p.image_reward_accuracy());
    set(samples_per_second_, {}, p.samples_per_second());
    set(eta_, {}, p.eta_seconds());
  }
  for (auto it = series_.begin(); it != series_.end();) {
    if (active.count(it->first)) {
      ++it;
      continue;
    }
    for (auto& [family, gauge] : it->second) family->Remove(gauge);
    it = series_.erase(it);
  }
}

}  // namespace mfpo
