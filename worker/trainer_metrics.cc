#include "worker/trainer_metrics.h"

#include <chrono>

#include "common/metrics_server.h"

namespace mfpo {
namespace {

double Now() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

const prometheus::Histogram::BucketBoundaries& TimeBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                                     0.5,   1,      2.5,   5,    10,    30,   60,  120};
  return *b;
}

}  // namespace

TrainerMetrics::TrainerMetrics(prometheus::Registry& r, const std::string& component, const std::string& version)
    : steps_(prometheus::BuildCounter().Name("mfpo_train_steps_total").Help("Optimizer steps finished").Register(r).Add({})),
      samples_(prometheus::BuildCounter()
                   .Name("mfpo_train_samples_total")
                   .Help("Preference pairs trained on (all ranks of the group)")
                   .Register(r)
                   .Add({})),
      tokens_(prometheus::BuildCounter()
                  .Name("mfpo_train_tokens_total")
                  .Help("Response tokens trained on (all ranks of the group)")
                  .Register(r)
                  .Add({})),
      nonfinite_(prometheus::BuildCounter()
                     .Name("mfpo_train_nonfinite_loss_total")
                     .Help("Stages stopped because the loss was not finite")
                     .Register(r)
                     .Add({})),
      part_seconds_(prometheus::BuildHistogram()
                        .Name("mfpo_train_step_part_seconds")
                        .Help("Rank 0's time per optimizer step by part: data, forward, backward, allreduce_wait "
                              "(exposed, not overlapped with backward), optimizer")
                        .Register(r)),
      step_seconds_(prometheus::BuildHistogram()
                        .Name("mfpo_train_step_seconds")
                        .Help("Wall time of one optimizer step")
                        .Register(r)
                        .Add({}, TimeBuckets())),
      loss_(prometheus::BuildGauge().Name("mfpo_train_loss").Help("Loss of the newest step, total and by term").Register(r)),
      reward_accuracy_(prometheus::BuildGauge()
                           .Name("mfpo_train_reward_accuracy")
                           .Help("Newest step's reward accuracy by modality (text: y_w over y_l; image: m over m')")
                           .Register(r)),
      reward_(prometheus::BuildGauge()
                  .Name("mfpo_train_reward")
                  .Help("Newest step's mean reward beta*(logp - logp_ref), by response: chosen, rejected, "
                        "chosen_perturbed (y_w on m')")
                  .Register(r)),
      grad_norm_(prometheus::BuildGauge().Name("mfpo_train_grad_norm").Help("Gradient norm before clipping").Register(r).Add({})),
      lr_(prometheus::BuildGauge().Name("mfpo_train_learning_rate").Help("Learning rate of the newest step").Register(r).Add({})),
      last_step_time_(prometheus::BuildGauge()
                          .Name("mfpo_train_last_step_timestamp_seconds")
                          .Help("Unix time of the newest finished step")
                          .Register(r)
                          .Add({})),
      checkpoint_seconds_(prometheus::BuildHistogram()
                              .Name("mfpo_checkpoint_seconds")
                              .Help("Time to write one checkpoint (weights, optimizer state, RNG, record)")
                              .Register(r)
                              .Add({}, TimeBuckets())),
      last_checkpoint_time_(prometheus::BuildGauge()
                                .Name("mfpo_checkpoint_last_timestamp_seconds")
                                .Help("Unix time of the newest checkpoint written (its age: time() - this)")
                                .Register(r)
                                .Add({})),
      stages_(prometheus::BuildCounter()
                  .Name("mfpo_trainer_stages_total")
                  .Help("Stages this trainer ran, by result (succeeded, failed, aborted)")
                  .Register(r)) {
  RegisterProcessInfo(r, version, component);
  for (const char* result : {"succeeded", "failed", "aborted"}) stages_.Add({{"result", result}});
  // Series exist from the start (at 0), so that rates over them are defined from the first step.
  for (const char* part : {"data", "forward", "backward", "allreduce_wait", "optimizer"})
    part_seconds_.Add({{"part", part}}, TimeBuckets());
}

void TrainerMetrics::OnStep(const nlohmann::json& line) {
  steps_.Increment();
  if (line.contains("samples") && line["samples"].is_number()) samples_.Increment(line["samples"].get<double>());
  if (line.contains("tokens") && line["tokens"].is_number()) tokens_.Increment(line["tokens"].get<double>());
  if (line.contains("time") && line["time"].is_object()) {
    const nlohmann::json& t = line["time"];
    for (const char* part : {"data", "forward", "backward", "allreduce_wait", "optimizer"}) {
      const std::string key = std::string(part) + "_s";
      if (t.contains(key) && t[key].is_number())
        part_seconds_.Add({{"part", part}}, TimeBuckets()).Observe(t[key].get<double>());
    }
    if (t.contains("step_s") && t["step_s"].is_number()) step_seconds_.Observe(t["step_s"].get<double>());
  }
  auto gauge = [&](prometheus::Family<prometheus::Gauge>& f, const char* label, const char* value, const char* key) {
    if (line.contains(key) && line[key].is_number()) f.Add({{label, value}}).Set(line[key].get<double>());
  };
  gauge(loss_, "term", "total", "loss");
  gauge(loss_, "term", "text", "loss_text");
  gauge(loss_, "term", "image", "loss_image");
  gauge(loss_, "term", "margin", "loss_margin");
  gauge(loss_, "term", "sft", "loss_sft");
  gauge(reward_accuracy_, "modality", "text", "reward_acc_text");
  gauge(reward_accuracy_, "modality", "image", "reward_acc_image");
  gauge(reward_, "response", "chosen", "reward_chosen");
  gauge(reward_, "response", "rejected", "reward_rejected");
  gauge(reward_, "response", "chosen_perturbed", "reward_chosen_perturbed");
  if (line.contains("grad_norm") && line["grad_norm"].is_number()) grad_norm_.Set(line["grad_norm"].get<double>());
  if (line.contains("lr") && line["lr"].is_number()) lr_.Set(line["lr"].get<double>());
  last_step_time_.Set(Now());
}

void TrainerMetrics::OnCheckpoint(int64_t, double seconds) {
  checkpoint_seconds_.Observe(seconds);
  last_checkpoint_time_.Set(Now());
}

void TrainerMetrics::OnStage(const std::string& result, bool nonfinite_loss) {
  stages_.Add({{"result", result}}).Increment();
  if (nonfinite_loss) nonfinite_.Increment();
}

}  // namespace mfpo
