// The coordinator's Prometheus metrics (docs/metrics.md lists them): jobs by state, per active
// job its step, loss terms, text and image reward accuracy, throughput, ETA and last progress
// time; workers by role and state; heartbeat handling time; group restarts, re-issued leases;
// start time and build info. Per-job series carry the job id and are removed when the job
// ends, so the label set stays bounded by the active jobs.
#ifndef MFPO_COORDINATOR_COORDINATOR_METRICS_H_
#define MFPO_COORDINATOR_COORDINATOR_METRICS_H_

#include <map>
#include <memory>
#include <set>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/synchronization/mutex.h"
#include "coordinator/coordinator.h"

namespace mfpo {

class CoordinatorMetrics {
 public:
  CoordinatorMetrics(prometheus::Registry& registry, const std::string& version);
  // Brings every gauge up to date with `snapshot` (called periodically and before a scrape).
  void Sync(const Coordinator::Snapshot& snapshot);
  // Server-side time of one WorkerService.Heartbeat call.
  void ObserveHeartbeat(double seconds) { heartbeat_.Observe(seconds); }

 private:
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Gauge>& job_info_;
  prometheus::Family<prometheus::Gauge>& step_;
  prometheus::Family<prometheus::Gauge>& total_steps_;
  prometheus::Family<prometheus::Gauge>& loss_;
  prometheus::Family<prometheus::Gauge>& reward_accuracy_;
  prometheus::Family<prometheus::Gauge>& samples_per_second_;
  prometheus::Family<prometheus::Gauge>& eta_;
  prometheus::Family<prometheus::Gauge>& last_progress_;
  prometheus::Family<prometheus::Gauge>& job_restarts_;
  prometheus::Family<prometheus::Gauge>& workers_;
  prometheus::Histogram& heartbeat_;
  prometheus::Counter& heartbeats_;
  prometheus::Counter& restarts_;
  prometheus::Counter& reissued_;
  absl::Mutex mu_;
  CoordinatorCounters seen_ ABSL_GUARDED_BY(mu_);
  // The per-job series of each active job, removed when it ends.
  std::map<std::string, std::vector<std::pair<prometheus::Family<prometheus::Gauge>*, prometheus::Gauge*>>> series_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace mfpo

#endif  // MFPO_COORDINATOR_COORDINATOR_METRICS_H_
