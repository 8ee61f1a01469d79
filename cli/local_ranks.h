// `mfpo train` with resources.workers N on one machine: starts N rank processes of this same
// binary (`mfpo train --rank r --world-size N --rendezvous 127.0.0.1:PORT ...`) around a
// rendezvous store that this process hosts, as torchrun's agent does. Rank 0's progress line is
// the job's (the ranks share this terminal); the other ranks only log. When one rank fails or
// dies, the others are stopped (SIGTERM, then SIGKILL after a grace period) and the error names
// the rank and, when it could say, its reason. Each rank dies with this process
// (PR_SET_PDEATHSIG), so nothing is left running after a kill.
#ifndef MFPO_CLI_LOCAL_RANKS_H_
#define MFPO_CLI_LOCAL_RANKS_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace mfpo {

struct LocalRanksOptions {
  std::string binary;                  // this program (/proc/self/exe)
  std::vector<std::string> rank_args;  // every rank's arguments after the binary ("train", "--spec", ...)
  int ranks = 2;
  int threads_per_rank = 1;
  bool cuda = false;         // rank r uses GPU r (--local-rank r)
  int64_t timeout_ms = 300000;  // the store's timeout (resources.collective_timeout_s)
  int64_t grace_ms = 10000;  // after a failure: how long the other ranks get to exit before SIGKILL
};

// Runs the ranks to the end. OK when every rank exited 0.
absl::Status RunLocalRanks(const LocalRanksOptions& options, std::ostream& log);

// Asks a running RunLocalRanks to stop its ranks (async-signal-safe: for SIGINT/SIGTERM handlers).
void RequestLocalRanksStop();

}  // namespace mfpo

#endif  // MFPO_CLI_LOCAL_RANKS_H_
