// The flags of the image-preference pipeline, shared by `mfpo perturb` and `mfpo-datagen` (both
// binaries link perturb_flags.cc). --model, --out, --seed, --threads and --noise_step serve other
// commands of `mfpo` too, so each binary's main() defines them; this file declares them.
#ifndef MFPO_DATAGEN_PERTURB_FLAGS_H_
#define MFPO_DATAGEN_PERTURB_FLAGS_H_

#include <string>
#include <vector>

#include "datagen/perturb_command.h"

namespace mfpo {

// Fills the options from the flags.
void PerturbOptionsFromFlags(PerturbCommandOptions* options);

// Help text of those flags, for usage messages.
const char* PerturbFlagsHelp();

// The names of the flags PerturbOptionsFromFlags reads.
std::vector<std::string> PerturbFlagNames();

}  // namespace mfpo

#endif  // MFPO_DATAGEN_PERTURB_FLAGS_H_
