// Child processes for multi-process tests: each in its own process group with stdout and stderr
// in a log file, killed (the whole group) and reaped when the object goes, also when a test
// fails; waits have deadlines. And free loopback ports.
#ifndef MFPO_TESTS_TEST_PROCESS_H_
#define MFPO_TESTS_TEST_PROCESS_H_

#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "common/file_util.h"

namespace mfpo {

class Process {
 public:
  using Clock = std::chrono::steady_clock;
  // Runs `binary` with `args`; stdout and stderr go to `log`.
  Process(const std::string& binary, const std::vector<std::string>& args, const std::filesystem::path& log,
          const std::map<std::string, std::string>& env = {}, const std::filesystem::path& cwd = {})
      : log_(log) {
    std::vector<std::string> argv_s = {binary};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      // Dies with the test even when the test is killed before its destructors run (a SIGTERM
      // from ctest's timeout): no process outlives its test.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      ::setpgid(0, 0);
      FILE* f = std::fopen(log.c_str(), "w");
      if (f) {
        ::dup2(fileno(f), 1);
        ::dup2(fileno(f), 2);
      }
      for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
      if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(126);
      std::vector<char*> argv;
      for (auto& a : argv_s) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::setpgid(pid_, pid_);
  }
  ~Process() { Kill(SIGKILL); }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool running() {
    if (done_) return false;
    if (::waitpid(pid_, &status_, WNOHANG) == pid_) done_ = true;
    return !done_;
  }
  // Sends `sig` to the process only (SIGKILL: the whole group) and, for SIGKILL, reaps it.
  void Kill(int sig) {
    if (!running()) return;
    if (sig == SIGKILL) {
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, &status_, 0);
      done_ = true;
    } else {
      ::kill(pid_, sig);
    }
  }
  // Exit code (128 + signal when killed), or -1 after `seconds` (the group is then killed).
  int Wait(double seconds) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    while (running()) {
      if (Clock::now() > deadline) {
        Kill(SIGKILL);
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
  }
  std::string Log() const { return ReadFileToString(log_.string()).value_or(""); }
  // Waits until the log contains `text` (false after `seconds` or when the process ended).
  bool WaitForLog(const std::string& text, double seconds) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < deadline) {
      if (Log().find(text) != std::string::npos) return true;
      if (!running()) return Log().find(text) != std::string::npos;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

 private:
  std::filesystem::path log_;
  pid_t pid_ = -1;
  int status_ = 0;
  bool done_ = false;
};

// A TCP port on loopback that nothing listens on now.
inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return 0;
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace mfpo

#endif  // MFPO_TESTS_TEST_PROCESS_H_
