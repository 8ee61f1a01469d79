// Vision-tower pre-training: the stage that stands in for CLIP's web-scale pre-training when the
// tower starts from random weights (the tiny and medium presets).
//
// LLaVA never trains its vision tower from scratch: CLIP already sees shapes before the projector
// and the language model learn to read it. A random tower trained only through the language
// model's next-token loss learns the cheapest cue (colour) and stops there, so the instruction-
// tuned model names objects by colour. This stage trains the tower on image-caption pairs with
// a bag-of-words objective that needs no text encoder:
//
//   per patch p and caption word w:  s[p, w] = head(features[p])      (features: the LLaVA
//                                                                       feature layer, CLS dropped)
//   per image:                       z[w] = logsumexp_p s[p, w] - log P   (soft max over patches)
//   loss:                            BCE-with-logits(z, multi-hot caption words)
//
// When the lines also carry boxes ({"label", "box"}, as the world's annotations and COCO's
// instances do), each patch is further classified as the label of the box covering at least
// half of it, or background (cross-entropy, weight dense_weight). Inside an object every patch is
// one flat colour, so telling a ball from a box there needs the attention layers to look at the
// object's outline: the dense loss asks exactly that of every patch, where the caption loss only
// asks it of the image as a whole and is satisfied by colour first.
//
// Pooling per-patch scores (rather than reading the CLS token) makes each patch feature itself
// say which object covers it, which is what the projector passes to the language model. The head
// is discarded; only the tower's weights change in the written model directory.
#ifndef MFPO_WORKER_VISION_PRETRAIN_H_
#define MFPO_WORKER_VISION_PRETRAIN_H_

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mfpo {

struct VisionPretrainOptions {
  std::string model_dir;  // starting model (Hugging Face LLaVA layout)
  // Captions: a JSONL file of {"image", "captions": [..], "split"?, "boxes"?} lines (an embedded world's
  // annotations.jsonl; COCO-style), or a directory holding annotations.jsonl. Image paths are
  // relative to the file's directory.
  std::string data;
  std::string train_split = "train";  // lines whose "split" differs are skipped (no field: train)
  std::string eval_split = "val";     // lines scored after training ("" = none; may equal train)
  std::string out_dir;                // the new model directory (must not exist)
  int64_t epochs = 8;
  int64_t batch_size = 128;
  double lr = 1e-3;
  double weight_decay = 0.05;
  double warmup_ratio = 0.05;
  int64_t min_word_count = 5;  // vocabulary: caption words in at least this many train images
  // Weight of the per-patch box-label loss, used when the lines carry "boxes" (0: captions only).
  double dense_weight = 1.0;
  uint64_t seed = 0;
};

struct WordScore {
  double train_frequency = 0;  // fraction of train images whose captions contain the word
  int64_t tp = 0, fp = 0, fn = 0;
  double F1() const { return tp == 0 ? 0.0 : 2.0 * tp / (2.0 * tp + fp + fn); }
};

struct VisionPretrainResult {
  int64_t train_images = 0, eval_images = 0, steps = 0;
  std::vector<std::string> record_errors;  // "file:line: reason" (those records were skipped)
  std::vector<double> epoch_losses;        // mean train loss of each epoch
  // Scores on the eval split (empty without one). "Informative" words are those in fewer than
  // half of the train captions; micro F1 over them is the headline number.
  std::map<std::string, WordScore> words;
  double informative_f1 = 0;
  int64_t box_labels = 0;            // classes of the per-patch loss (0: not used)
  int64_t eval_object_patches = 0;   // eval patches covered by a box
  double object_patch_accuracy = 0;  // fraction of those given their box's label
};

// Splits a caption into lower-case words of letters (the unit of the bag-of-words targets).
std::vector<std::string> CaptionWords(const std::string& caption);

// Trains the tower, writes out_dir (all weights, the tower's updated; tokenizer and processor
// files copied; vision_pretrain.json with options, vocabulary and scores) atomically.
// Progress goes to `progress`. A bad record (missing field, unreadable image) is skipped and
// listed; a missing file, an empty train split or an existing out_dir is an error.
absl::StatusOr<VisionPretrainResult> RunVisionPretrain(const VisionPretrainOptions& options,
                                                       std::ostream& progress);

// Human-readable result: counts, skipped records, and the eval scores per informative word.
std::string VisionPretrainSummary(const VisionPretrainResult& result);

}  // namespace mfpo

#endif  // MFPO_WORKER_VISION_PRETRAIN_H_
