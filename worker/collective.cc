// The c10d seam (see collective.h). Compiled with USE_C10D_GLOO and USE_DISTRIBUTED, which the
// c10d headers need; the only file of the project that includes them.
#include "worker/collective.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>
#ifdef MFPO_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include <spdlog/spdlog.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"

namespace mfpo {
namespace {

// LibTorch 1.13's process groups derive from c10d::ProcessGroup; 2.x's from c10d::Backend
// (ProcessGroup became a dispatcher over backends). Both bases have the collectives used here
// with the same signatures, so the group is held through this alias.
#if TORCH_VERSION_MAJOR >= 2
using Backend = c10d::Backend;
#else
using Backend = c10d::ProcessGroup;
#endif

constexpr const char* kFailureKey = "mfpo/first_failure";

std::string ReadFailure(c10d::Store& store) {
  std::string cause;
  (void)CatchAll("reading the failure", [&] {
    if (store.check({kFailureKey})) {
      const std::vector<uint8_t> v = store.get(kFailureKey);
      cause = std::string(v.begin(), v.end());
    }
  });
  return cause;
}


// A group of one: every collective is the identity.
class LocalGroup final : public Collective {
 public:
  class Done final : public Pending {
   public:
    absl::Status Wait() override { return absl::OkStatus(); }
  };
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "none"; }
  absl::StatusOr<std::unique_ptr<Pending>> AllReduceSumAsync(torch::Tensor, const std::string&) override {
    return std::unique_ptr<Pending>(new Done());
  }
  absl::Status Broadcast(torch::Tensor, int, const std::string&) override { return absl::OkStatus(); }
  absl::StatusOr<torch::Tensor> AllGather(const torch::Tensor& t, const std::string&) override { return t.unsqueeze(0); }
  absl::Status Barrier(const std::string&) override { return absl::OkStatus(); }
  void ReportFailure(const absl::Status&) override {}
  std::string FirstFailure() override { return ""; }
};

class C10dGroup final : public Collective {
 public:
  C10dGroup(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<Backend> pg, int rank, int size,
            std::string backend, int64_t timeout_ms, torch::Device device)
      : store_(std::move(store)), pg_(std::move(pg)), rank_(rank), size_(size), backend_(std::move(backend)),
        timeout_ms_(timeout_ms), device_(device) {}

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return backend_; }

  // NCCL only moves device memory: host tensors (flags, metrics, checksums) travel through a
  // device copy that is copied back when the collective is done.
  class Work final : public Pending {
   public:
    Work(C10dGroup* group, c10::intrusive_ptr<c10d::Work> work, std::string what, torch::Tensor host,
         torch::Tensor staged)
        : group_(group), work_(std::move(work)), what_(std::move(what)), host_(std::move(host)),
          staged_(std::move(staged)) {}
    absl::Status Wait() override {
      if (!work_) return absl::OkStatus();
      absl::Status s = CatchAll(what_, [&] {
        work_->wait();
        if (staged_.defined()) host_.copy_(staged_.to(torch::kCPU));
      });
      work_.reset();
      return s.ok() ? s : group_->Explain(s);
    }

   private:
    C10dGroup* group_;
    c10::intrusive_ptr<c10d::Work> work_;
    std::string what_;
    torch::Tensor host_, staged_;
  };

  absl::StatusOr<std::unique_ptr<Pending>> AllReduceSumAsync(torch::Tensor tensor, const std::string& what) override {
    torch::Tensor staged = Staged(tensor);
    std::vector<at::Tensor> tensors{staged.defined() ? staged : tensor};
    absl::StatusOr<c10::intrusive_ptr<c10d::Work>> work = CatchAll(what, [&] { return pg_->allreduce(tensors); });
    if (!work.ok()) return Explain(work.status());
    return std::unique_ptr<Pending>(new Work(this, *work, what, tensor, staged));
  }

  absl::Status Broadcast(torch::Tensor tensor, int root, const std::string& what) override {
    torch::Tensor staged = Staged(tensor);
    std::vector<at::Tensor> tensors{staged.defined() ? staged : tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    MFPO_RETURN_IF_ERROR(Finish(what, [&] { return pg_->broadcast(tensors, options); }));
    if (staged.defined()) return CatchAll(what, [&] { tensor.copy_(staged.to(torch::kCPU)); });
    return absl::OkStatus();
  }

  absl::StatusOr<torch::Tensor> AllGather(const torch::Tensor& tensor, const std::string& what) override {
    torch::Tensor staged = Staged(tensor);
    const torch::Tensor input = (staged.defined() ? staged : tensor).contiguous();
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int r = 0; r < size_; ++r) outputs[0].push_back(torch::empty_like(input));
    std::vector<at::Tensor> inputs{input};
    MFPO_RETURN_IF_ERROR(Finish(what, [&] { return pg_->allgather(outputs, inputs); }));
    return torch::stack(outputs[0]).to(tensor.device());
  }

  absl::Status Barrier(const std::string& what) override {
    return Finish(what, [&] { return pg_->barrier(); });
  }

  void ReportFailure(const absl::Status& status) override {
    const std::string text = absl::StrCat("rank ", rank_, " failed first: ", status.message());
    // compareSet with an empty expected value sets the key only if it is absent.
    (void)CatchAll("reporting the failure", [&] {
      store_->compareSet(kFailureKey, {}, std::vector<uint8_t>(text.begin(), text.end()));
    });
  }

  std::string FirstFailure() override { return ReadFailure(*store_); }

  // A collective's error, with this rank and (when a peer left it) the first failure's reason.
  absl::Status Explain(const absl::Status& s) {
    const std::string cause = FirstFailure();
    return absl::Status(
        s.code() == absl::StatusCode::kInternal ? absl::StatusCode::kAborted : s.code(),
        absl::StrCat("rank ", rank_, " of ", size_, ": ", s.message(),
                     cause.empty() ? absl::StrCat(" (a peer rank died, hung or failed; collective timeout ",
                                                  timeout_ms_ / 1000.0, " s)")
                                   : absl::StrCat(" (", cause, ")")));
  }

 private:
  // A device copy of a host tensor when the backend needs one (NCCL); undefined otherwise.
  torch::Tensor Staged(const torch::Tensor& t) const {
    if (backend_ != "nccl" || !t.device().is_cpu()) return torch::Tensor();
    return t.to(device_);
  }

  template <typename Launch>
  absl::Status Finish(const std::string& what, Launch&& launch) {
    absl::Status s = CatchAll(what, [&] { launch()->wait(); });
    return s.ok() ? s : Explain(s);
  }

  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<Backend> pg_;
  int rank_, size_;
  std::string backend_;
  int64_t timeout_ms_;
  torch::Device device_;
};

class TcpRendezvousServer final : public RendezvousServer {
 public:
  explicit TcpRendezvousServer(c10::intrusive_ptr<c10d::TCPStore> store) : store_(std::move(store)) {}
  uint16_t port() const override { return store_->getPort(); }
  std::string FirstFailure() override { return ReadFailure(*store_); }

 private:
  c10::intrusive_ptr<c10d::TCPStore> store_;
};

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

}  // namespace

absl::Status ParseHostPort(const std::string& text, std::string* host, uint16_t* port) {
  std::string h, p;
  if (!text.empty() && text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return absl::InvalidArgumentError(absl::StrCat("rendezvous '", text, "': expected [IPV6]:PORT"));
    h = text.substr(1, close - 1);
    p = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0)
      return absl::InvalidArgumentError(absl::StrCat("rendezvous '", text, "': expected HOST:PORT"));
    h = text.substr(0, colon);
    p = text.substr(colon + 1);
  }
  int value = 0;
  if (!absl::SimpleAtoi(p, &value) || value < 1 || value > 65535)
    return absl::InvalidArgumentError(absl::StrCat("rendezvous '", text, "': port '", p, "' is not 1-65535"));
  *host = h;
  *port = static_cast<uint16_t>(value);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RendezvousServer>> RendezvousServer::Start(const std::string& host, int64_t timeout_ms) {
  c10d::TCPStoreOptions options;
  options.port = 0;  // a free port, chosen by the system
  options.isServer = true;
  options.waitWorkers = false;
  options.timeout = std::chrono::milliseconds(timeout_ms);
  absl::StatusOr<c10::intrusive_ptr<c10d::TCPStore>> store =
      CatchAll(absl::StrCat("starting the rendezvous store on ", host),
               [&] { return c10::make_intrusive<c10d::TCPStore>(host, options); });
  if (!store.ok()) return absl::UnavailableError(store.status().message());
  return std::unique_ptr<RendezvousServer>(new TcpRendezvousServer(*store));
}

absl::Status Collective::AllReduceSum(torch::Tensor tensor, const std::string& what) {
  absl::StatusOr<std::unique_ptr<Pending>> pending = AllReduceSumAsync(std::move(tensor), what);
  if (!pending.ok()) return pending.status();
  return (*pending)->Wait();
}

absl::Status Collective::Agree(const absl::Status& mine, const std::string& what, torch::Tensor* also_sum) {
  if (size() == 1) return mine;
  if (!mine.ok()) ReportFailure(mine);
  torch::Tensor flag = torch::tensor({mine.ok() ? 0.0 : 1.0}, torch::kFloat64);
  torch::Tensor both = also_sum ? torch::cat({flag, also_sum->reshape({-1}).to(torch::kFloat64)}) : flag;
  absl::Status s = AllReduceSum(both, absl::StrCat("agreeing on ", what));
  if (!mine.ok()) return mine;
  if (!s.ok()) return s;
  if (also_sum) also_sum->copy_(both.slice(0, 1).reshape(also_sum->sizes()));
  if (both[0].item<double>() == 0) return absl::OkStatus();
  const std::string cause = FirstFailure();
  return absl::AbortedError(absl::StrCat("rank ", rank(), " of ", size(), ": stopped at ", what, " because ",
                                         cause.empty() ? std::string("another rank failed") : cause));
}

absl::StatusOr<std::unique_ptr<Collective>> Collective::Join(const GroupOptions& o, const torch::Device& device) {
  if (o.world_size < 1) return absl::InvalidArgumentError(absl::StrCat("world size ", o.world_size, " must be >= 1"));
  if (o.rank < 0 || o.rank >= o.world_size)
    return absl::InvalidArgumentError(absl::StrCat("rank ", o.rank, " is not in 0..", o.world_size - 1));
  if (o.world_size == 1 && o.rendezvous.empty()) return std::unique_ptr<Collective>(new LocalGroup());
  std::string host;
  uint16_t port = 0;
  MFPO_RETURN_IF_ERROR(ParseHostPort(o.rendezvous, &host, &port));
  if (o.timeout_ms <= 0) return absl::InvalidArgumentError("the collective timeout must be positive");
  const auto timeout = std::chrono::milliseconds(o.timeout_ms);

  c10d::TCPStoreOptions store_options;
  store_options.port = port;
  store_options.isServer = o.rank == 0 && !o.store_is_external;
  store_options.waitWorkers = false;  // the ranks check in below, with a count in the error
  store_options.timeout = timeout;
  const std::string where = absl::StrCat("rank ", o.rank, " of ", o.world_size, ": rendezvous at ", o.rendezvous);
  // The store is connected on a thread of its own: a peer that accepts the connection but never
  // answers (not a TCPStore) would otherwise block here past any timeout.
  struct Connect {
    std::mutex mu;
    std::condition_variable done_cv;
    bool done = false;
    absl::StatusOr<c10::intrusive_ptr<c10d::TCPStore>> store = absl::UnknownError("not connected");
  };
  auto connect = std::make_shared<Connect>();
  std::thread([connect, host, store_options, where] {
    auto store = CatchAll(where, [&] { return c10::make_intrusive<c10d::TCPStore>(host, store_options); });
    std::lock_guard<std::mutex> lock(connect->mu);
    connect->store = std::move(store);
    connect->done = true;
    connect->done_cv.notify_all();
  }).detach();
  absl::StatusOr<c10::intrusive_ptr<c10d::TCPStore>> tcp_store = absl::UnknownError("");
  {
    std::unique_lock<std::mutex> lock(connect->mu);
    if (!connect->done_cv.wait_for(lock, timeout + std::chrono::seconds(5), [&] { return connect->done; }))
      return absl::DeadlineExceededError(absl::StrCat(where, ": no answer within ", o.timeout_ms / 1000.0,
                                                      " s (is what listens there an mfpo rank 0?)"));
    tcp_store = connect->store;
  }
  if (!tcp_store.ok())
    return absl::UnavailableError(absl::StrCat(
        tcp_store.status().message(),
        store_options.isServer ? " (this is rank 0, which listens there: is the port free?)"
                               : absl::StrCat(" (is rank 0 running, and the address reachable? timeout ", o.timeout_ms / 1000.0, " s)")));
  // A long-lived store (a trainer agent's, serving one group after another) keeps each group's
  // keys apart under its prefix.
  absl::StatusOr<c10::intrusive_ptr<c10d::Store>> store = c10::intrusive_ptr<c10d::Store>(*tcp_store);
  if (!o.store_prefix.empty())
    store = c10::intrusive_ptr<c10d::Store>(c10::make_intrusive<c10d::PrefixStore>(o.store_prefix, *tcp_store));
  // Every rank checks in and waits for the others, so that a missing rank is named as such.
  absl::Status joined = CatchAll(where, [&]() -> absl::Status {
    int64_t count = (*store)->add("mfpo/joined", 1);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (count < o.world_size) {
      if (std::chrono::steady_clock::now() > deadline)
        return absl::DeadlineExceededError(absl::StrCat(where, ": only ", count, " of ", o.world_size,
                                                        " ranks joined within ", o.timeout_ms / 1000.0,
                                                        " s (start every rank with the same --rendezvous and --world-size)"));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      count = (*store)->add("mfpo/joined", 0);
    }
    return absl::OkStatus();
  });
  MFPO_RETURN_IF_ERROR(joined);

  if (device.is_cuda()) {
#ifdef MFPO_WITH_NCCL
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    absl::StatusOr<c10::intrusive_ptr<Backend>> pg = CatchAll(absl::StrCat(where, ": creating the NCCL group"), [&] {
      return c10::intrusive_ptr<Backend>(c10::make_intrusive<c10d::ProcessGroupNCCL>(*store, o.rank, o.world_size, options));
    });
    if (!pg.ok()) return pg.status();
    return std::unique_ptr<Collective>(new C10dGroup(*store, *pg, o.rank, o.world_size, "nccl", o.timeout_ms, device));
#else
    return absl::FailedPreconditionError(
        "data-parallel training on CUDA needs the NCCL path: build with -DMFPO_WITH_NCCL=ON against a CUDA LibTorch");
#endif
  }
  absl::StatusOr<c10::intrusive_ptr<Backend>> pg = CatchAll(absl::StrCat(where, ": creating the Gloo group"), [&] {
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    // Loopback rendezvous (one machine): Gloo on loopback too; otherwise the interface that this
    // machine's hostname resolves to, as PyTorch's default.
    options->devices.push_back(IsLoopback(host) ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                                : c10d::ProcessGroupGloo::createDefaultDevice());
    return c10::intrusive_ptr<Backend>(c10::make_intrusive<c10d::ProcessGroupGloo>(*store, o.rank, o.world_size, options));
  });
  if (!pg.ok()) return absl::UnavailableError(pg.status().message());
  spdlog::info("rank {} of {}: joined the gloo group at {}", o.rank, o.world_size, o.rendezvous);
  return std::unique_ptr<Collective>(new C10dGroup(*store, *pg, o.rank, o.world_size, "gloo", o.timeout_ms, torch::kCPU));
}

}  // namespace mfpo
