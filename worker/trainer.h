// The MFPO trainer, as the stages that the coordinator schedules one by one (and `mfpo train
// --spec job.yaml` runs in a row, RunTraining):
//
//   TrainingJob::Open      load the policy, read and tokenise the preference manifest (bad records
//                          are reported in output_dir/data_errors.txt and skipped), make each
//                          record's perturbed image (its rejected_image, or global DDPM noise at
//                          objective.noise_step, seeded per image; mDPO: always a random crop,
//                          seeded per sample), check output_dir's run record (run.json).
//   ReferencePass          frozen reference log-probs of (y_w|m), (y_l|m), (y_w|m') and the
//                          policy's mean token entropy on y_w (the same forward pass when the
//                          reference is the starting policy) -> reference_logps.safetensors,
//                          keyed by a fingerprint of the reference weights, tokenizer and data.
//   ScoreDifficulty        the curriculum: samples sorted by entropy into easy / medium / hard
//                          (or one shuffled phase) -> curriculum.json.
//   TrainPhase(p)          AdamW with linear warm-up and cosine decay over the whole run,
//                          clipping and accumulation, from the newest complete checkpoint to the
//                          end of phase p -> checkpoints/step-N (phase ends and every N steps),
//                          metrics.jsonl.
//
// Each stage's output is on disk, so any stage can run in a fresh process after the ones before
// it; a stage whose output exists and matches reuses it.
//
// Data parallel (GroupOptions with world_size N > 1): every rank runs the same stages in step.
// Open checks that all ranks loaded the same weights and data and broadcasts rank 0's weights;
// the reference pass scores disjoint shards and all-reduces them; each optimizer step's batch
// (resources.workers x micro_batch x grad_accum examples, the same as one process would take)
// is split into fixed micro-batches, rank r taking its share, with gradients averaged in
// buckets during backward (grad_reducer.h); with optimizer.shard_state each rank keeps 1/N of
// the AdamW state (optimizer_state.h). Rank 0 writes the run's files, each rank its optimizer
// shard; a failure on one rank fails every rank with that rank's reason.
#ifndef MFPO_WORKER_TRAINER_H_
#define MFPO_WORKER_TRAINER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mfpo_job.pb.h"
#include "worker/collective.h"

namespace mfpo {

class SafetensorsFile;

struct TrainControl {
  // Stop (after checkpointing) once this many optimizer steps have run in total; 0 = run to the
  // end. Lets tests and operators interrupt a run at a known point.
  int64_t stop_after_steps = 0;
  bool resume = true;  // continue from the newest checkpoint in output_dir
  // Called on rank 0 after each optimizer step with that step's metrics.jsonl line (the trainer
  // agent forwards it to the coordinator as progress).
  std::function<void(const std::string& metrics_line)> on_step;
  // Called on rank 0 after each checkpoint is written: its step and how long writing took.
  std::function<void(int64_t step, double seconds)> on_checkpoint;
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

// The curriculum of a job (ScoreDifficulty's output).
struct Curriculum {
  std::vector<std::string> phase_names;      // easy, medium, hard / tier<i> / all
  std::vector<std::vector<int64_t>> phases;  // example indices of each phase, easiest first
  std::vector<int64_t> phase_steps;          // optimizer steps of each phase (all epochs)
  int64_t total_steps = 0;
};

// One training job's state between its stages (its loaded policy and data, the reference
// log-probs, the curriculum). Holds output_dir's lock while open.
class TrainingJob {
 public:
  // Validates the spec, joins the data-parallel group (`group`; the default is one process),
  // loads the policy and the data, and takes output_dir (run record, lock; rank 0).
  static absl::StatusOr<std::unique_ptr<TrainingJob>> Open(const v1::JobSpec& spec, const GroupOptions& group = {});
  ~TrainingJob();

  // Reference log-probs and entropy: reuses reference_logps.safetensors when its fingerprint
  // matches, refuses one that does not, computes and writes it otherwise.
  absl::Status ReferencePass();
  // Curriculum from the entropy of ReferencePass (curriculum.json, rewritten identically).
  absl::StatusOr<Curriculum> ScoreDifficulty();
  // Trains phase `phase` of `curriculum` from the newest checkpoint (steps before it are skipped;
  // a checkpoint past this phase makes this a no-op). `control.stop_after_steps` may stop it
  // early with a checkpoint (result.completed false).
  absl::StatusOr<TrainResult> TrainPhase(const Curriculum& curriculum, int phase, const TrainControl& control,
                                         std::ostream& progress);
  int64_t samples() const;
  int rank() const;

 private:
  struct State;
  explicit TrainingJob(std::unique_ptr<State> state);
  absl::Status SaveCheckpoint(const Curriculum& curriculum, int64_t step, int phase);
  absl::Status BuildOptimizer();
  absl::Status Resume(const TrainControl& control);
  absl::Status ShareUpdatedShards();
  absl::Status LoadMasters(const std::vector<std::shared_ptr<SafetensorsFile>>& files);
  std::unique_ptr<State> s_;
};

// The newest complete checkpoint directory in output_dir/checkpoints ("" when none).
std::string NewestCheckpoint(const std::string& output_dir);

// Runs a whole local job: the stages above in a row. Does not run the spec's evaluation
// (`mfpo train`, cli/train_command.cc, does).
absl::StatusOr<TrainResult> RunTraining(const v1::JobSpec& spec, const TrainControl& control,
                                        std::ostream& progress, const GroupOptions& group = {});

}  // namespace mfpo

#endif  // MFPO_WORKER_TRAINER_H_
