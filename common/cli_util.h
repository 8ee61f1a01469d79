// Small pieces every command-line main() shares: flag spelling, per-command flag sets and help,
// and exit codes.
#ifndef MFPO_COMMON_CLI_UTIL_H_
#define MFPO_COMMON_CLI_UTIL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace mfpo {

// absl flag names use underscores; accept the dashed spelling users type (--max-new-tokens).
std::vector<std::string> NormaliseFlagNames(int argc, char** argv);

// One command of a multi-command tool: its synopsis line(s) and the (absl) flags it reads.
struct CommandFlags {
  std::string name;
  std::string synopsis;
  std::vector<std::string> flags;
};

// True when the arguments ask for help (--help, -help, -h, --helpfull) before any "--".
bool WantsHelp(const std::vector<std::string>& args);

// The names of the flags given in `args` (after NormaliseFlagNames): "--lr=3" and "--lr 3" give
// "lr", "--nojson" gives "json" when "json" is a boolean flag. Stops at "--".
std::vector<std::string> GivenFlagNames(const std::vector<std::string>& args);

// INVALID_ARGUMENT when a given flag is neither one of `command`'s nor one of `global`:
// "<program> <command>: --x is not a flag of this command (its flags: --a, --b)".
absl::Status CheckCommandFlags(const std::string& program, const CommandFlags& command,
                               const std::vector<std::string>& global, const std::vector<std::string>& given);

// "<synopsis>\n\nFlags:\n  --name (default: x)\n      help\n..." for `command` and `global`.
std::string CommandHelp(const std::string& program, const CommandFlags& command, const std::vector<std::string>& global);

// Prints a failed status as "<program>: <message>" and returns the exit code: 0 on success, 2
// for bad input (INVALID_ARGUMENT: flags, specs, files), 1 otherwise.
int ExitCode(const absl::Status& status, const char* program);

// A program with one command (mfpo-coordinator, mfpo-worker, mfpoctl's commands): --help and
// --version answered, flags outside `flags` refused, then absl's parsing. Returns -1 to go on
// (the positional arguments in `positional`), or the exit code main() should return.
int ParseSingleCommand(const std::string& program, const std::string& synopsis, const std::vector<std::string>& flags,
                       int argc, char** argv, const char* version, std::vector<std::string>* positional);

}  // namespace mfpo

#endif  // MFPO_COMMON_CLI_UTIL_H_
