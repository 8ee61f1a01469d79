// The datagen worker's Prometheus metrics (DESIGN.md section 8: mfpo_ prefix, base units,
// bounded labels), fed from the pipeline's PerturbCounters.
#ifndef MFPO_DATAGEN_DATAGEN_METRICS_H_
#define MFPO_DATAGEN_DATAGEN_METRICS_H_

#include <cstdint>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/synchronization/mutex.h"
#include "datagen/perturb_pipeline.h"

namespace mfpo {

// mfpo_datagen_records_total{result="ok|error|skipped"}, mfpo_datagen_global_fallback_total,
// mfpo_datagen_queue_depth, mfpo_datagen_records_in_flight, mfpo_datagen_record_seconds.
class DatagenMetrics {
 public:
  explicit DatagenMetrics(prometheus::Registry& registry);
  // Routes per-record latencies of `counters` into the histogram (call before the shard runs).
  void Attach(PerturbCounters& counters);
  // Brings the metrics up to date with `counters` (call periodically and once at the end).
  void Sync(const PerturbCounters& counters);

 private:
  prometheus::Family<prometheus::Counter>& records_;
  prometheus::Counter &ok_, &error_, &skipped_, &fallback_;
  prometheus::Gauge &queue_, &in_flight_;
  prometheus::Histogram& seconds_;
  absl::Mutex mu_;
  int64_t seen_ok_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t seen_error_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t seen_skipped_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t seen_fallback_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace mfpo

#endif  // MFPO_DATAGEN_DATAGEN_METRICS_H_
