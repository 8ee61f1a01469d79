// The flags of the image-preference pipeline, shared by `mfpo perturb` and `mfpo-datagen` (both
// binaries link perturb_flags.cc). Flags both binaries already define for other commands
// (--model, --out, --seed, --threads, --noise_step) are read by each main().
#ifndef MFPO_DATAGEN_PERTURB_FLAGS_H_
#define MFPO_DATAGEN_PERTURB_FLAGS_H_

#include "datagen/perturb_command.h"

namespace mfpo {

// Fills everything but model_dir, out_dir, seed, threads and noise_step from the flags.
void PerturbOptionsFromFlags(PerturbCommandOptions* options);

// Help text of those flags, for usage messages.
const char* PerturbFlagsHelp();

}  // namespace mfpo

#endif  // MFPO_DATAGEN_PERTURB_FLAGS_H_
