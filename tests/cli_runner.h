// Runs the project's executables as separate processes for end-to-end tests, each under a
// deadline (`timeout`), so that a hang fails the test instead of stalling the suite.
#ifndef MFPO_TESTS_CLI_RUNNER_H_
#define MFPO_TESTS_CLI_RUNNER_H_

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace mfpo {

struct Result {
  int code;         // exit status; 124 when the deadline killed it
  std::string out;  // stdout
  std::string all;  // stdout + stderr
};

// `s` as one shell word.
inline std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs `command` through /bin/sh (so the caller may set `ulimit`s, traps and redirections) with
// a deadline of `seconds`.
inline Result RunShell(const std::string& command, int seconds = 600) {
  namespace fs = std::filesystem;
  static int counter = 0;
  const fs::path err =
      fs::temp_directory_path() / ("cli_err_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  const std::string cmd = "timeout -k 10 " + std::to_string(seconds) + " sh -c " + ShellQuote(command) + " 2>" + err.string();
  Result r;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream e(err);
  std::stringstream ss;
  ss << e.rdbuf();
  r.all = r.out + ss.str();
  fs::remove(err);
  return r;
}

#ifdef MFPO_BIN
// The `mfpo` tool with `args`.
inline Result Mfpo(const std::string& args, int seconds = 600) { return RunShell(std::string(MFPO_BIN) + " " + args, seconds); }
#endif

}  // namespace mfpo

#endif  // MFPO_TESTS_CLI_RUNNER_H_
