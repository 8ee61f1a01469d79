#include "common/cli_util.h"

#include <algorithm>
#include <cctype>
#include <iostream>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace mfpo {

std::vector<std::string> NormaliseFlagNames(int argc, char** argv) {
  std::vector<std::string> out(argv, argv + argc);
  for (size_t i = 1; i < out.size(); ++i) {
    std::string& a = out[i];
    if (a == "--") break;
    if (a.size() < 3 || a.compare(0, 2, "--") != 0) continue;
    const size_t end = std::min(a.find('='), a.size());
    for (size_t k = 2; k < end; ++k)
      if (a[k] == '-') a[k] = '_';
  }
  return out;
}

bool WantsHelp(const std::vector<std::string>& args) {
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--") break;
    if (args[i] == "--help" || args[i] == "-help" || args[i] == "-h" || args[i] == "--helpfull") return true;
  }
  return false;
}

std::vector<std::string> GivenFlagNames(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") break;
    if (a.size() < 2 || a[0] != '-' || a == "-") continue;
    if (std::isdigit(static_cast<unsigned char>(a[1])) || a[1] == '.') continue;  // a negative number: a value
    std::string name = a.substr(a[1] == '-' ? 2 : 1);
    name = name.substr(0, name.find('='));
    if (absl::FindCommandLineFlag(name) == nullptr && absl::StartsWith(name, "no")) {
      const absl::CommandLineFlag* f = absl::FindCommandLineFlag(name.substr(2));
      if (f != nullptr && f->IsOfType<bool>()) name = name.substr(2);
    }
    out.push_back(name);
  }
  return out;
}

absl::Status CheckCommandFlags(const std::string& program, const CommandFlags& command,
                               const std::vector<std::string>& global, const std::vector<std::string>& given) {
  for (const std::string& name : given) {
    const bool ok = std::find(command.flags.begin(), command.flags.end(), name) != command.flags.end() ||
                    std::find(global.begin(), global.end(), name) != global.end();
    if (ok) continue;
    std::vector<std::string> all;
    for (const auto& f : command.flags) all.push_back("--" + f);
    for (const auto& f : global)
      if (std::find(command.flags.begin(), command.flags.end(), f) == command.flags.end()) all.push_back("--" + f);
    const std::string who = command.name.empty() ? program : absl::StrCat(program, " ", command.name);
    return absl::InvalidArgumentError(absl::StrCat(who, ": --", name, " is not a flag of ",
                                                   command.name.empty() ? "this program" : "this command", " (its flags: ",
                                                   absl::StrJoin(all, ", "), "; see ", who, " --help)"));
  }
  return absl::OkStatus();
}

std::string CommandHelp(const std::string& program, const CommandFlags& command, const std::vector<std::string>& global) {
  std::string out = absl::StrCat(program, command.name.empty() ? "" : " ", command.name, " ", command.synopsis, "\n\nFlags:\n");
  auto describe = [&](const std::string& name) {
    const absl::CommandLineFlag* f = absl::FindCommandLineFlag(name);
    if (f == nullptr) return;
    std::string dashed = name;
    std::replace(dashed.begin(), dashed.end(), '_', '-');
    const std::string def = f->DefaultValue();
    absl::StrAppend(&out, "  --", dashed, def.empty() ? "" : absl::StrCat(" (default: ", def, ")"), "\n      ", f->Help(),
                    "\n");
  };
  for (const auto& name : command.flags) describe(name);
  for (const auto& name : global)
    if (std::find(command.flags.begin(), command.flags.end(), name) == command.flags.end()) describe(name);
  return out;
}

int ExitCode(const absl::Status& status, const char* program) {
  if (status.ok()) return 0;
  // Messages that already name the program (CheckCommandFlags's) are not prefixed twice.
  const absl::string_view message = status.message();
  if (absl::StartsWith(message, absl::StrCat(program, ": ")) || absl::StartsWith(message, absl::StrCat(program, " ")))
    std::cerr << message << "\n";
  else
    std::cerr << program << ": " << message << "\n";
  return absl::IsInvalidArgument(status) ? 2 : 1;
}

}  // namespace mfpo

namespace mfpo {

int ParseSingleCommand(const std::string& program, const std::string& synopsis, const std::vector<std::string>& flags,
                       int argc, char** argv, const char* version, std::vector<std::string>* positional) {
  std::vector<std::string> normalised = NormaliseFlagNames(argc, argv);
  // CommandHelp starts with the program's name: a synopsis that does too is not said twice.
  const CommandFlags command{"", absl::StartsWith(synopsis, program + " ") ? synopsis.substr(program.size() + 1) : synopsis,
                             flags};
  if (WantsHelp(normalised)) {
    std::cout << CommandHelp(program, command, {});
    return 0;
  }
  for (const std::string& a : normalised)
    if (a == "--version") {
      std::cout << program << " " << version << "\n";
      return 0;
    }
  if (absl::Status s = CheckCommandFlags(program, command, {}, GivenFlagNames(normalised)); !s.ok()) {
    std::cerr << s.message() << "\n";  // already "<program>: ..."
    return 2;
  }
  std::vector<char*> raw;
  for (auto& a : normalised) raw.push_back(a.data());
  std::vector<char*> args = absl::ParseCommandLine(static_cast<int>(raw.size()), raw.data());
  positional->assign(args.begin() + 1, args.end());
  return -1;
}

}  // namespace mfpo
