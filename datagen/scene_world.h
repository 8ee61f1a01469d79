// The embedded scene world: procedural images of simple objects with ground truth, captions,
// questions and preference pairs, deterministic by seed, with deliberate language priors.
//
// Priors (train and val splits only): each "anchor" kind usually appears with its partner kind
// (cooccur_prior) and objects usually have their kind's typical colour (colour_prior). The test
// split breaks both (partners independent, colours uniform), so a model that answers from text
// priors hallucinates partners and typical colours there, as LLaVA does on COCO.
#ifndef MFPO_DATAGEN_SCENE_WORLD_H_
#define MFPO_DATAGEN_SCENE_WORLD_H_

#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "absl/status/status.h"

namespace mfpo {

struct WorldKind {
  std::string name;
  std::vector<std::string> synonyms;  // the first is `name`
  std::string typical_colour;
  std::string partner;  // co-occurring kind (may be empty)
};
struct WorldColour {
  std::string name;
  cv::Vec3b rgb;
};
const std::vector<WorldKind>& WorldKinds();
const std::vector<WorldColour>& WorldColours();

struct WorldObject {
  std::string kind, colour;
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // inclusive-exclusive box in pixels
};

struct WorldQuestion {
  std::string type;  // describe, exist_yes, exist_no, count, colour
  std::string question, chosen, rejected;
  std::string answer;  // the short answer (yes/no, colour, count word) for accuracy checks
};

struct WorldSample {
  std::string id, split;
  std::vector<WorldObject> objects;
  std::string caption;
  std::vector<WorldQuestion> questions;
};

struct WorldOptions {
  uint64_t seed = 0;
  int train = 2000, val = 200, test = 500;
  int size = 64;              // image side in pixels
  double cooccur_prior = 0.85;  // P(partner present | anchor present), train/val
  double colour_prior = 0.85;   // P(typical colour), train/val
  int max_objects = 3;
};

// One sample and its image (RGB). Deterministic for (options.seed, split, index).
WorldSample GenerateWorldSample(const WorldOptions& options, const std::string& split, int index,
                                cv::Mat* image);

// Writes DIR/images/*.png, DIR/{train,val,test}.jsonl (native preference records),
// DIR/annotations.jsonl (ground truth per image), DIR/vocab.txt (synonym table), and
// DIR/world.json (the options). Logs progress.
absl::Status WriteWorld(const std::string& dir, const WorldOptions& options);

// Number words used in answers ("zero".."ten").
std::string NumberWord(int n);

}  // namespace mfpo

#endif  // MFPO_DATAGEN_SCENE_WORLD_H_
