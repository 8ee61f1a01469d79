// Small pieces every command-line main() shares.
#ifndef MFPO_COMMON_CLI_UTIL_H_
#define MFPO_COMMON_CLI_UTIL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace mfpo {

// absl flag names use underscores; accept the dashed spelling users type (--max-new-tokens).
std::vector<std::string> NormaliseFlagNames(int argc, char** argv);

// Prints a failed status as "<program>: <message>" and returns the exit code: 0 on success, 2
// for bad input (INVALID_ARGUMENT: flags, specs, files), 1 otherwise.
int ExitCode(const absl::Status& status, const char* program);

}  // namespace mfpo

#endif  // MFPO_COMMON_CLI_UTIL_H_
