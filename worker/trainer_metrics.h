// Training metrics of a trainer process (docs/metrics.md): what rank 0 reports after each step
// (its metrics.jsonl line) and each checkpoint, as Prometheus series. Served by the trainer agent
// (`mfpo-worker --metrics_address`) and by `mfpo train --metrics_address`. Torch-free.
#ifndef MFPO_WORKER_TRAINER_METRICS_H_
#define MFPO_WORKER_TRAINER_METRICS_H_

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace mfpo {

class TrainerMetrics {
 public:
  TrainerMetrics(prometheus::Registry& registry, const std::string& component, const std::string& version);
  // One metrics.jsonl line of a finished optimizer step.
  void OnStep(const nlohmann::json& line);
  void OnCheckpoint(int64_t step, double seconds);
  // A stage's end: "succeeded", "failed" or "aborted"; `nonfinite_loss` when it stopped on one.
  void OnStage(const std::string& result, bool nonfinite_loss);

 private:
  prometheus::Counter &steps_, &samples_, &tokens_, &nonfinite_;
  prometheus::Family<prometheus::Histogram>& part_seconds_;
  prometheus::Histogram& step_seconds_;
  prometheus::Family<prometheus::Gauge>& loss_;
  prometheus::Family<prometheus::Gauge>& reward_accuracy_;
  prometheus::Family<prometheus::Gauge>& reward_;
  prometheus::Gauge &grad_norm_, &lr_, &last_step_time_;
  prometheus::Histogram& checkpoint_seconds_;
  prometheus::Gauge& last_checkpoint_time_;
  prometheus::Family<prometheus::Counter>& stages_;
};

}  // namespace mfpo

#endif  // MFPO_WORKER_TRAINER_METRICS_H_
