#include "worker/trainer_agent.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"
#include "worker/collective.h"
#include "worker/stage_runner.h"

namespace mfpo {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string LastLines(const std::string& path, size_t max_chars) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::replace(text.begin(), text.end(), '\r', '\n');
  while (!text.empty() && text.back() == '\n') text.pop_back();
  if (text.size() > max_chars) text = "..." + text.substr(text.size() - max_chars);
  return text;
}

// One stage in a child process.
class StageTask final : public AgentRunner::Task {
 public:
  static absl::StatusOr<std::unique_ptr<AgentRunner::Task>> Start(const v1::Assignment& a, AgentRunner* runner,
                                                                  const TrainerAgentOptions& o) {
    const std::string safe = absl::StrReplaceAll(a.id(), {{"/", "_"}});
    const std::string assignment_path = (fs::path(o.work_dir) / (safe + ".pb")).string();
    const std::string log_path = (fs::path(o.work_dir) / (safe + ".log")).string();
    MFPO_RETURN_IF_ERROR(WriteFileAtomically(assignment_path, a.SerializeAsString()));
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe", "cannot start a stage");
    const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      close(out[0]);
      close(out[1]);
      return ErrnoStatus(errno, log_path, "cannot open the stage log");
    }
    std::vector<std::string> args = {o.binary, "stage", "--assignment", assignment_path, "--threads",
                                      std::to_string(o.threads)};
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
      close(out[0]);
      close(out[1]);
      close(log_fd);
      return ErrnoStatus(errno, o.binary, "cannot start a stage");
    }
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // the stage dies with its agent
      if (getppid() != parent) _exit(1);
      dup2(out[1], STDOUT_FILENO);
      dup2(log_fd, STDERR_FILENO);
      execv(o.binary.c_str(), argv.data());
      _exit(127);
    }
    close(out[1]);
    close(log_fd);
    auto task = std::unique_ptr<StageTask>(new StageTask(a, runner, pid, out[0], log_path, assignment_path, o.metrics));
    spdlog::info("{}: {} {}rank {}/{} started (pid {}, log {})", a.id(), v1::JobState_Name(a.stage()),
                 a.stage() == v1::TRAINING ? absl::StrCat("phase ", a.phase(), " ") : "", a.rank(), a.world_size(), pid,
                 log_path);
    task->reader_ = std::thread([t = task.get()] { t->Read(); });
    return std::unique_ptr<AgentRunner::Task>(std::move(task));
  }

  ~StageTask() override {
    Abort();
    if (reader_.joinable()) reader_.join();
  }

  v1::AssignmentStatus Status() override {
    absl::MutexLock lock(&mu_);
    return status_;
  }

  void Abort() override {
    {
      absl::MutexLock lock(&mu_);
      if (aborted_ || exited_) return;
      aborted_ = true;
    }
    kill(pid_, SIGKILL);
  }

 private:
  StageTask(const v1::Assignment& a, AgentRunner* runner, pid_t pid, int fd, std::string log, std::string file,
            TrainerMetrics* metrics)
      : assignment_(a), runner_(runner), pid_(pid), fd_(fd), log_path_(std::move(log)), assignment_path_(std::move(file)),
        metrics_(metrics), started_(std::chrono::steady_clock::now()) {
    status_.set_assignment_id(a.id());
    status_.set_state(v1::AssignmentStatus::RUNNING);
  }

  void Line(const std::string& line) {
    if (absl::StartsWith(line, "PROGRESS ")) {
      json j = json::parse(line.substr(9), nullptr, false);
      if (!j.is_object()) return;
      if (metrics_) metrics_->OnStep(j);
      v1::AssignmentStatus st;
      st.set_assignment_id(assignment_.id());
      st.set_state(v1::AssignmentStatus::RUNNING);
      st.set_step(j.value("step", int64_t{-1}) + 1);
      st.set_loss(j.value("loss", 0.0));
      st.set_loss_text(j.value("loss_text", 0.0));
      st.set_loss_image(j.value("loss_image", 0.0));
      st.set_loss_margin(j.value("loss_margin", 0.0));
      st.set_text_reward_accuracy(j.value("reward_acc_text", 0.0));
      st.set_image_reward_accuracy(j.value("reward_acc_image", 0.0));
      st.set_samples_per_second(j.value("samples_per_second", 0.0));
      if (runner_->SendProgress(st)) Abort();
    } else if (absl::StartsWith(line, "CHECKPOINT ")) {
      json j = json::parse(line.substr(11), nullptr, false);
      if (metrics_ && j.is_object()) metrics_->OnCheckpoint(j.value("step", int64_t{0}), j.value("seconds", 0.0));
    } else if (absl::StartsWith(line, "RESULT ")) {
      result_ = json::parse(line.substr(7), nullptr, false);
    }
  }

  void Read() {
    std::string buffer;
    char chunk[4096];
    for (;;) {
      const ssize_t n = read(fd_, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      buffer.append(chunk, static_cast<size_t>(n));
      for (size_t nl; (nl = buffer.find('\n')) != std::string::npos;) {
        Line(buffer.substr(0, nl));
        buffer.erase(0, nl + 1);
      }
    }
    close(fd_);
    int wstatus = 0;
    while (waitpid(pid_, &wstatus, 0) < 0 && errno == EINTR) {
    }
    std::error_code ec;
    fs::remove(assignment_path_, ec);  // the stage's log stays
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    absl::MutexLock lock(&mu_);
    exited_ = true;
    if (aborted_) {
      if (metrics_) metrics_->OnStage("aborted", false);
      return;
    }
    if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
      status_.set_state(v1::AssignmentStatus::SUCCEEDED);
      if (result_.is_object()) status_.set_checkpoint(result_.value("checkpoint", ""));
      spdlog::info("{}: done in {:.1f} s", assignment_.id(), secs);
      if (metrics_) metrics_->OnStage("succeeded", false);
    } else {
      status_.set_state(v1::AssignmentStatus::FAILED);
      if (result_.is_object() && result_.value("code", 0) != 0) {
        status_.set_error(result_.value("message", "failed"));
        status_.set_error_code(result_.value("code", 2));
      } else {
        status_.set_error(absl::StrCat("the stage process ",
                                       WIFSIGNALED(wstatus) ? absl::StrCat("was killed by signal ", WTERMSIG(wstatus))
                                                            : absl::StrCat("exited with status ", WEXITSTATUS(wstatus)),
                                       "; its log (", log_path_, ") ends: ", LastLines(log_path_, 600)));
        status_.set_error_code(static_cast<int>(absl::StatusCode::kUnknown));
      }
      spdlog::error("{}: failed after {:.1f} s: {}", assignment_.id(), secs, status_.error());
      if (metrics_) metrics_->OnStage("failed", absl::StrContains(status_.error(), "the loss is not finite"));
    }
    runner_->Wake();
  }

  const v1::Assignment assignment_;
  AgentRunner* runner_;
  const pid_t pid_;
  const int fd_;
  const std::string log_path_;
  const std::string assignment_path_;
  TrainerMetrics* const metrics_;
  const std::chrono::steady_clock::time_point started_;
  json result_;  // the reader thread only
  absl::Mutex mu_;
  v1::AssignmentStatus status_ ABSL_GUARDED_BY(mu_);
  bool aborted_ ABSL_GUARDED_BY(mu_) = false;
  bool exited_ ABSL_GUARDED_BY(mu_) = false;
  std::thread reader_;
};

}  // namespace

absl::Status RunTrainerAgent(const TrainerAgentOptions& options, const std::atomic<bool>& stop) {
  TrainerAgentOptions o = options;
  const bool own_work_dir = o.work_dir.empty();
  if (own_work_dir) o.work_dir = (fs::temp_directory_path() / absl::StrCat("mfpo-worker-", getpid())).string();
  std::error_code ec;
  fs::create_directories(o.work_dir, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--work_dir ", o.work_dir, ": ", ec.message()));
  // The store of the groups this trainer is rank 0 of, for the agent's lifetime; each group uses
  // its own key prefix.
  MFPO_ASSIGN_OR_RETURN(std::unique_ptr<RendezvousServer> store, RendezvousServer::Start(o.advertise_host, 3600 * 1000));
  o.agent.role = v1::TRAINER;
  o.agent.rendezvous_address = absl::StrCat(o.advertise_host, ":", store->port());
  spdlog::info("rendezvous store at {}; stage logs in {}", o.agent.rendezvous_address, o.work_dir);
  MFPO_ASSIGN_OR_RETURN(std::unique_ptr<AgentRunner> runner,
                        AgentRunner::Create(o.agent, [&o](const v1::Assignment& a, AgentRunner* r) {
                          return StageTask::Start(a, r, o);
                        }));
  absl::Status s = runner->Run(stop);
  runner.reset();  // stages stopped
  if (own_work_dir) fs::remove_all(o.work_dir, ec);
  return s;
}

int RunStageChild(const std::string& assignment_path, int threads) {
  auto result = [](const absl::Status& s, const std::string& checkpoint) {
    std::cout << "RESULT "
              << json{{"code", static_cast<int>(s.code())}, {"message", std::string(s.message())}, {"checkpoint", checkpoint}}
                     .dump(-1, ' ', false, json::error_handler_t::replace)
              << std::endl;
    if (!s.ok()) std::cerr << "mfpo-worker stage: " << s.message() << std::endl;
    return s.ok() ? 0 : 1;
  };
  absl::StatusOr<std::string> bytes = ReadFileToString(assignment_path, "assignment");
  if (!bytes.ok()) return result(bytes.status(), "");
  v1::Assignment a;
  if (!a.ParseFromString(*bytes))
    return result(absl::InvalidArgumentError(absl::StrCat(assignment_path, ": not an assignment")), "");
  std::mutex out_mu;
  absl::StatusOr<StageOutcome> outcome = CatchAll(absl::StrCat("stage ", a.id()), [&] {
    return RunStage(
        a, threads,
        [&](const std::string& line) {
          std::lock_guard<std::mutex> lock(out_mu);
          std::cout << "PROGRESS " << line << std::endl;
        },
        [&](int64_t step, double seconds) {
          std::lock_guard<std::mutex> lock(out_mu);
          std::cout << "CHECKPOINT " << json{{"step", step}, {"seconds", seconds}}.dump() << std::endl;
        },
        std::cerr);
  });
  std::cerr << std::endl;
  if (!outcome.ok()) return result(outcome.status(), "");
  return result(absl::OkStatus(), outcome->checkpoint);
}

}  // namespace mfpo
