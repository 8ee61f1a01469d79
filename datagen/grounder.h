// Region mapping (MFPO paper section 3.1): keyword -> mask over the image, through one interface
// with three implementations.
//
//   regions      the boxes / polygons that come with the record (label matched to the keyword,
//                singular forms and an optional synonym table); no extra weights.
//   torchscript  a user-supplied TorchScript segmentation model, the path for SAM / LISA-style
//                exports. Contract of its forward():
//                  forward(image: Tensor[1, 3, H, W] float32 RGB in [0, 1], text: str)
//                    -> Tensor mask logits, [H', W'], [1, H', W'] or [1, 1, H', W'] (any size)
//                The logits are resized bilinearly to the image and thresholded at 0 (p = 0.5).
//   model        no extra weights: the aligned LLaVA model itself, two heat maps over the image
//                patch features (the tokens the language model reads):
//                  cosine    cosine similarity of each patch feature with the keyword's input
//                            embedding (mean over its sub-word pieces);
//                  gradient  how much each patch feature supports the keyword: the gradient of
//                            log p("Yes" | image, "Is there a {keyword} in the image?") with
//                            respect to the patch features, times the features, summed over
//                            channels, negative parts dropped (gradient x input). With
//                            `require_yes`, a keyword the model answers "No" for is not found.
//                The map is upsampled bilinearly to the image and min-max normalised; pixels
//                above `threshold` form the mask, cleaned by a morphological opening and
//                closing; components smaller than `min_area` of the image are dropped.
// Every grounder returns an empty mask (not an error) when the keyword is not found; the caller
// then falls back to global noise and records it.
#ifndef MFPO_DATAGEN_GROUNDER_H_
#define MFPO_DATAGEN_GROUNDER_H_

#include <memory>
#include <optional>
#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "absl/status/statusor.h"
#include "datagen/preference_formats.h"
#include "common/text/object_text.h"

namespace mfpo {

class Grounder {
 public:
  virtual ~Grounder() = default;
  virtual std::string name() const = 0;
  // CV_8UC1 mask of `rgb`'s size, 255 inside the keyword's region; an empty cv::Mat when the
  // keyword is not found. `regions` are the record's annotations (used by `regions` only).
  // Safe to call from several threads (the TorchScript grounder serialises its module).
  virtual absl::StatusOr<cv::Mat> Ground(const cv::Mat& rgb, const std::string& keyword,
                                         const std::vector<PreferenceRegion>& regions) = 0;
};

// A region matches a keyword when their singular forms are equal or, with a vocabulary, when
// both map to the same canonical object (so "sphere" finds a region labelled "ball").
std::unique_ptr<Grounder> MakeRegionsGrounder(std::optional<ObjectVocabulary> vocabulary);

absl::StatusOr<std::unique_ptr<Grounder>> MakeTorchScriptGrounder(const std::string& path);

struct ModelGrounderOptions {
  std::string heat = "cosine";  // "cosine" or "gradient" (see above)
  double threshold = 0.6;  // on the min-max normalised heat map
  double min_area = 0.01;  // smallest kept component, as a fraction of the image
  double min_contrast = 0.05;  // cosine: heat-map max - min below this: not found
  bool require_yes = true;     // gradient: not found when p("No") > p("Yes")
};
// Loads the LLaVA model directory (weights, tokenizer, preprocessor) on the CPU.
absl::StatusOr<std::unique_ptr<Grounder>> MakeModelGrounder(const std::string& model_dir,
                                                            const ModelGrounderOptions& options);

// Ablation grounders (the paper's Table 8): `random` ignores the keyword and returns one box
// covering `fraction` of the image at a position drawn from (seed, image content); `global`
// finds nothing, so every record gets global noise.
std::unique_ptr<Grounder> MakeRandomGrounder(double fraction, uint64_t seed);
std::unique_ptr<Grounder> MakeGlobalGrounder();

// Union of the masks of several keywords (each grounded separately); empty when none is found.
// Also returns which keywords were found.
struct GroundedMask {
  cv::Mat mask;                     // empty: nothing found
  std::vector<std::string> found;   // keywords with a region
};
absl::StatusOr<GroundedMask> GroundKeywords(Grounder& grounder, const cv::Mat& rgb,
                                            const std::vector<std::string>& keywords,
                                            const std::vector<PreferenceRegion>& regions);

// Mask of the given regions (boxes, or polygons where present), clipped to `size`.
cv::Mat RegionsMask(const std::vector<PreferenceRegion>& regions, cv::Size size);

// Intersection over union of two binary masks (non-zero = inside); 0 when both are empty.
double MaskIou(const cv::Mat& a, const cv::Mat& b);

}  // namespace mfpo

#endif  // MFPO_DATAGEN_GROUNDER_H_
