// The data-parallel group of a training job: PyTorch's c10d process group (ProcessGroupGloo on
// CPU, ProcessGroupNCCL on CUDA when built with MFPO_WITH_NCCL), joined through a c10d TCPStore.
//
// This header is the seam: nothing outside collective.cc includes c10d, so the API differences
// between Debian's LibTorch 1.13 and an official LibTorch 2.x live in that one file. Every
// failure comes back as a Status naming the operation and this rank; a rank that fails first
// leaves its reason in the store (ReportFailure), and the peers that then fail in a collective
// quote it ("rank 1 failed first: ...").
//
// A group of one is a no-op group: no store, no sockets, every collective returns at once, so
// single-process training is exactly what it was before data parallelism.
#ifndef MFPO_WORKER_COLLECTIVE_H_
#define MFPO_WORKER_COLLECTIVE_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mfpo {

// How this process joins its group (`mfpo train --rank/--world-size/--rendezvous`, the
// torchrun / PyTorchJob variables, or the local launcher).
struct GroupOptions {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;          // the GPU of this rank on its machine (CUDA)
  std::string rendezvous;      // HOST:PORT of the TCPStore
  bool store_is_external = false;  // the store is hosted by the launcher, not by rank 0
  std::string store_prefix;        // keys of this group in a shared store (a trainer agent's); "" = none
  int64_t timeout_ms = 300000;     // rendezvous and every collective (resources.collective_timeout_s)
};

// "HOST:PORT" -> host and port (IPv6 as [ADDR]:PORT); an error names the text.
absl::Status ParseHostPort(const std::string& text, std::string* host, uint16_t* port);

class Collective {
 public:
  // An asynchronous collective; Wait() returns its outcome once (and how long it blocked).
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual absl::Status Wait() = 0;
  };

  // Joins the group (blocks until every rank has joined or the timeout passes). world_size 1
  // returns the no-op group without touching the network.
  static absl::StatusOr<std::unique_ptr<Collective>> Join(const GroupOptions& options, const torch::Device& device);
  virtual ~Collective() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "none", "gloo" or "nccl"

  // Sum over ranks, in place. `what` names the operation in errors ("all-reduce of gradient bucket 3").
  virtual absl::StatusOr<std::unique_ptr<Pending>> AllReduceSumAsync(torch::Tensor tensor, const std::string& what) = 0;
  absl::Status AllReduceSum(torch::Tensor tensor, const std::string& what);
  // Copies rank `root`'s tensor into every rank's, in place.
  virtual absl::Status Broadcast(torch::Tensor tensor, int root, const std::string& what) = 0;
  // Every rank's `tensor` (same shape everywhere), stacked: [size, ...].
  virtual absl::StatusOr<torch::Tensor> AllGather(const torch::Tensor& tensor, const std::string& what) = 0;
  virtual absl::Status Barrier(const std::string& what) = 0;

  // Leaves `status` in the store as this rank's reason for failing (first reporter wins), so
  // that the peers' errors can name the rank and the cause.
  virtual void ReportFailure(const absl::Status& status) = 0;
  // The first reported failure ("rank R failed first: ..."), or "" when none.
  virtual std::string FirstFailure() = 0;

  // Joins every rank's outcome of something that can fail on some ranks only (a bad file, a
  // full disk): OK everywhere when every rank succeeded; otherwise an error on every rank, its
  // own or the first failing rank's reason, instead of the others blocking in a later collective.
  // `also_sum`, when given, is summed over the ranks in the same collective (e.g. a step's
  // metrics); it is left unchanged when the group has one rank.
  absl::Status Agree(const absl::Status& mine, const std::string& what, torch::Tensor* also_sum = nullptr);
};

// The rendezvous store hosted by a launcher (`mfpo train` starting its local ranks with
// store_is_external): a TCPStore server on `host` and a free port while this object lives. It
// outlives any rank, so the first failure a rank reports can still be read after that rank died.
class RendezvousServer {
 public:
  static absl::StatusOr<std::unique_ptr<RendezvousServer>> Start(const std::string& host, int64_t timeout_ms);
  virtual ~RendezvousServer() = default;
  virtual uint16_t port() const = 0;
  virtual std::string FirstFailure() = 0;
};

}  // namespace mfpo

#endif  // MFPO_WORKER_COLLECTIVE_H_
