#include "cli/local_ranks.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "worker/collective.h"

namespace mfpo {
namespace {

volatile sig_atomic_t g_stop_requested = 0;

struct Rank {
  int rank = 0;
  pid_t pid = -1;
  bool running = false;
  int status = 0;  // waitpid status once exited
};

std::string Describe(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return absl::StrCat("was killed by signal ", sig, " (", strsignal(sig), ")");
  }
  return "ended";
}

absl::StatusOr<pid_t> Spawn(const std::string& binary, const std::vector<std::string>& args) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(binary.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return ErrnoStatus(errno, binary, "cannot start a rank");
  if (pid == 0) {
    // The rank dies with the launcher, however the launcher ends.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

void RequestLocalRanksStop() { g_stop_requested = 1; }

absl::Status RunLocalRanks(const LocalRanksOptions& o, std::ostream& log) {
  g_stop_requested = 0;
  MFPO_ASSIGN_OR_RETURN(std::unique_ptr<RendezvousServer> store, RendezvousServer::Start("127.0.0.1", o.timeout_ms));
  const std::string rendezvous = absl::StrCat("127.0.0.1:", store->port());
  log << "== " << o.ranks << " local ranks (" << (o.cuda ? "one GPU" : absl::StrCat(o.threads_per_rank, " CPU threads"))
      << " each), rendezvous " << rendezvous << "\n"
      << std::flush;
  std::vector<Rank> ranks(o.ranks);
  auto stop_all = [&](int sig) {
    for (const Rank& r : ranks)
      if (r.running) kill(r.pid, sig);
  };
  for (int r = 0; r < o.ranks; ++r) {
    std::vector<std::string> args = o.rank_args;
    for (const std::string& a :
         {std::string("--rank"), std::to_string(r), std::string("--world_size"), std::to_string(o.ranks),
          std::string("--rendezvous"), rendezvous, std::string("--launcher_store"), std::string("--local_rank"),
          std::to_string(o.cuda ? r : 0), std::string("--threads"), std::to_string(o.threads_per_rank)})
      args.push_back(a);
    absl::StatusOr<pid_t> pid = Spawn(o.binary, args);
    if (!pid.ok()) {
      stop_all(SIGKILL);
      for (Rank& k : ranks)
        if (k.running) waitpid(k.pid, &k.status, 0);
      return pid.status();
    }
    ranks[r] = Rank{r, *pid, true, 0};
  }
  // Watch the ranks: the first failure (or a stop request) stops the others.
  int first_failed = -1;
  bool stopping = false, killed = false;
  auto deadline = std::chrono::steady_clock::now();
  int running = o.ranks;
  while (running > 0) {
    for (Rank& r : ranks) {
      if (!r.running) continue;
      const pid_t got = waitpid(r.pid, &r.status, WNOHANG);
      if (got == 0) continue;
      r.running = false;
      --running;
      const bool ok = got == r.pid && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0;
      if (!ok && first_failed < 0 && !stopping) first_failed = r.rank;
    }
    if (!stopping && (first_failed >= 0 || g_stop_requested)) {
      stopping = true;
      stop_all(SIGTERM);
      deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(o.grace_ms);
    }
    if (stopping && !killed && running > 0 && std::chrono::steady_clock::now() > deadline) {
      stop_all(SIGKILL);
      killed = true;
    }
    if (running > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (first_failed >= 0) {
    const std::string reason = store->FirstFailure();
    // The store holds the first error a rank reported; a rank killed by a signal reports none,
    // so then the reason is a survivor's view of it.
    return absl::AbortedError(absl::StrCat("rank ", first_failed, " of ", o.ranks, " ", Describe(ranks[first_failed].status),
                                           "; the other ranks were stopped",
                                           reason.empty() ? "" : absl::StrCat(". First error reported: ", reason)));
  }
  if (g_stop_requested) return absl::CancelledError(absl::StrCat("stopped: the ", o.ranks, " ranks were terminated"));
  return absl::OkStatus();
}

}  // namespace mfpo
