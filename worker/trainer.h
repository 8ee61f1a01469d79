// The single-process MFPO trainer: `mfpo train --spec job.yaml`.
//
// Pipeline: load the policy -> read the preference manifest (bad records are reported and
// skipped) -> make each record's perturbed image (its rejected_image, or global DDPM noise at
// objective.noise_step, seeded per image; mDPO: always a random crop, seeded per sample) -> reference
// pass (frozen reference, log-probs of (y_w|m), (y_l|m), (y_w|m') cached on disk under a
// fingerprint of the reference weights, tokenizer and perturbation) -> difficulty = the policy's
// mean token entropy on y_w -> easy / medium / hard phases (or one shuffled phase) -> AdamW with
// linear warm-up and cosine decay, clipping and accumulation -> a checkpoint directory per
// phase end (and every N steps) -> resume from the newest complete checkpoint.
#ifndef MFPO_WORKER_TRAINER_H_
#define MFPO_WORKER_TRAINER_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mfpo_job.pb.h"

namespace mfpo {

struct TrainControl {
  // Stop (after checkpointing) once this many optimizer steps have run in total; 0 = run to the
  // end. Lets tests and operators interrupt a run at a known point.
  int64_t stop_after_steps = 0;
  bool resume = true;  // continue from the newest checkpoint in output_dir
};

// Learning rate at optimizer step `step` (0-based) of `total`: linear warm-up over
// ceil(warmup_ratio * total) steps to `peak`, then cosine decay to 0.
double ScheduledLearningRate(double peak, double warmup_ratio, int64_t step, int64_t total);

// Where a record's corrupted image m' comes from. mDPO always crops (a rejected image in the
// record is MFPO's, not mDPO's); MFPO and the term-subset ablations use the record's
// rejected_image, else global noise.
enum class PerturbedImageSource { kRandomCrop, kRejectedImage, kGlobalNoise };
PerturbedImageSource PerturbedImageSourceFor(const std::string& variant, bool record_has_rejected_image);

struct TrainResult {
  std::string final_checkpoint;  // newest checkpoint directory
  int64_t steps = 0;             // optimizer steps done in total (including before a resume)
  bool completed = false;        // false when stopped early by TrainControl::stop_after_steps
};

// Runs a whole local job: reference pass (or its cache), difficulty scoring, the curriculum's
// phases, checkpoints and metrics.jsonl. Does not run the spec's evaluation (RunTrainJob does).
absl::StatusOr<TrainResult> RunTraining(const v1::JobSpec& spec, const TrainControl& control,
                                        std::ostream& progress);

}  // namespace mfpo

#endif  // MFPO_WORKER_TRAINER_H_
