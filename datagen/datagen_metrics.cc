#include "datagen/datagen_metrics.h"

namespace mfpo {

DatagenMetrics::DatagenMetrics(prometheus::Registry& r)
    : records_(prometheus::BuildCounter()
                   .Name("mfpo_datagen_records_total")
                   .Help("Records finished by this worker, by result")
                   .Register(r)),
      ok_(records_.Add({{"result", "ok"}})),
      error_(records_.Add({{"result", "error"}})),
      skipped_(records_.Add({{"result", "skipped"}})),
      fallback_(prometheus::BuildCounter()
                    .Name("mfpo_datagen_global_fallback_total")
                    .Help("Records whose keywords had no region (global noise)")
                    .Register(r)
                    .Add({})),
      queue_(prometheus::BuildGauge()
                 .Name("mfpo_datagen_queue_depth")
                 .Help("Records of the shard not finished yet")
                 .Register(r)
                 .Add({})),
      in_flight_(prometheus::BuildGauge()
                     .Name("mfpo_datagen_records_in_flight")
                     .Help("Records being processed now")
                     .Register(r)
                     .Add({})),
      seconds_(prometheus::BuildHistogram()
                   .Name("mfpo_datagen_record_seconds")
                   .Help("Wall time per record (decode, keywords, grounding, noise, encode, write)")
                   .Register(r)
                   .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                                     0.5, 1, 2.5})) {}

void DatagenMetrics::Attach(PerturbCounters& counters) {
  counters.observe_record = [this](double s) { seconds_.Observe(s); };
}

void DatagenMetrics::Sync(const PerturbCounters& c) {
  absl::MutexLock lock(&mu_);
  auto bump = [](prometheus::Counter& counter, int64_t& seen, int64_t now) {
    if (now > seen) counter.Increment(static_cast<double>(now - seen));
    seen = now;
  };
  bump(ok_, seen_ok_, c.done.load());
  bump(error_, seen_error_, c.errors.load());
  bump(skipped_, seen_skipped_, c.skipped.load());
  bump(fallback_, seen_fallback_, c.fallbacks.load());
  in_flight_.Set(static_cast<double>(c.in_flight.load()));
  queue_.Set(static_cast<double>(c.total.load() - c.done.load() - c.errors.load() - c.skipped.load()));
}

}  // namespace mfpo
