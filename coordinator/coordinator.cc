#include "coordinator/coordinator.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/jsonl.h"
#include "common/status_macros.h"
#include "worker/job_spec.h"

namespace mfpo {
namespace fs = std::filesystem;
using v1::internal::GroupMember;
using v1::internal::JobRecord;
using v1::internal::ShardRecord;
using json = nlohmann::json;

namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string StateName(v1::JobState s) { return v1::JobState_Name(s); }

// Errors of a stage that a restart cannot fix (bad data, a missing file, a refused spec): the job
// fails at once instead of burning its restarts.
bool Retryable(int code) {
  switch (static_cast<absl::StatusCode>(code)) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kAlreadyExists:
      return false;
    default:
      return true;
  }
}

bool NeedsImages(const v1::JobSpec& spec) {
  const std::string& v = spec.objective().variant();
  return v == "mfpo" && spec.objective().w_image() != 0;
}

// The records of the manifest the job uses ([0, max_samples)) and how many lack a rejected image.
absl::Status CountRecords(const v1::JobSpec& spec, int64_t* records, int64_t* without_image) {
  std::ifstream in(spec.data().train());
  if (!in) return ErrnoStatus(errno, spec.data().train(), "cannot read the preference manifest");
  std::string line;
  *records = 0;
  *without_image = 0;
  const int64_t limit = spec.data().max_samples();
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (limit > 0 && *records >= limit) break;
    ++*records;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("rejected_image")) ++*without_image;
  }
  return absl::OkStatus();
}

}  // namespace

bool IsFinal(v1::JobState s) { return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED; }

Coordinator::Coordinator(const CoordinatorOptions& options, std::unique_ptr<JobStore> store)
    : options_(options), store_(std::move(store)) {}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Open(const CoordinatorOptions& options) {
  if (options.database.empty()) return absl::InvalidArgumentError("--database is required");
  if (options.allowed_roots.empty())
    return absl::InvalidArgumentError("at least one allowed root is required (--roots DIR[,DIR...])");
  CoordinatorOptions o = options;
  for (std::string& root : o.allowed_roots) {
    std::error_code ec;
    fs::path p = fs::weakly_canonical(fs::absolute(root), ec);
    if (ec || !fs::is_directory(p, ec))
      return absl::InvalidArgumentError(absl::StrCat("--roots: ", root, " is not a directory"));
    root = p.string();
  }
  MFPO_ASSIGN_OR_RETURN(std::unique_ptr<JobStore> store, JobStore::Open(o.database));
  std::unique_ptr<Coordinator> c(new Coordinator(o, std::move(store)));
  {
    absl::MutexLock lock(&c->mu_);
    MFPO_ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, c->store_->LoadJobs());
    for (JobRecord& r : jobs) c->jobs_[r.job().id()] = std::move(r);
    MFPO_ASSIGN_OR_RETURN(std::vector<v1::WorkerInfo> workers, c->store_->LoadWorkers());
    const int64_t now = NowMs();
    for (v1::WorkerInfo& w : workers) {
      Worker& worker = c->workers_[w.id()];
      worker.info = std::move(w);
      // A grace period: workers heartbeat again within an interval of the restart.
      worker.last_heartbeat_ms = now;
    }
    int active = 0;
    for (const auto& [id, r] : c->jobs_) active += IsFinal(r.job().state()) ? 0 : 1;
    spdlog::info("database {}: {} jobs ({} active), {} workers", o.database, c->jobs_.size(), active,
                 c->workers_.size());
  }
  if (o.start_scheduler) {
    c->scheduler_ = std::thread([raw = c.get()] {
      for (;;) {
        {
          absl::MutexLock lock(&raw->mu_);
          if (raw->mu_.AwaitWithTimeout(absl::Condition(&raw->stop_), absl::Milliseconds(raw->options_.tick_ms))) return;
        }
        raw->Tick();
      }
    });
  }
  return c;
}

Coordinator::~Coordinator() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    events_cv_.SignalAll();
  }
  if (scheduler_.joinable()) scheduler_.join();
}

// ---- Jobs ------------------------------------------------------------------------------------

absl::Status Coordinator::CheckPaths(const v1::JobSpec& spec) const {
  struct Path {
    const char* field;
    const std::string* value;
  };
  const Path paths[] = {{"output_dir", &spec.output_dir()},       {"model.path", &spec.model().path()},
                        {"model.reference_path", &spec.model().reference_path()},
                        {"data.train", &spec.data().train()},     {"evaluation.data", &spec.evaluation().data()},
                        {"datagen.vocabulary", &spec.datagen().vocabulary()},
                        {"datagen.grounder_model", &spec.datagen().grounder_model()}};
  for (const Path& p : paths) {
    if (p.value->empty()) continue;
    if (!fs::path(*p.value).is_absolute())
      return absl::InvalidArgumentError(absl::StrCat(p.field, ": '", *p.value,
                                                     "' is relative; the service needs absolute paths (mfpoctl "
                                                     "makes them absolute from the directory it runs in)"));
    std::error_code ec;
    // Symbolic links and ".." resolved: what the path really names must be under a root.
    const fs::path real = fs::weakly_canonical(fs::path(*p.value), ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat(p.field, ": '", *p.value, "': ", ec.message()));
    bool inside = false;
    for (const std::string& root_text : options_.allowed_roots) {
      const fs::path root(root_text);
      auto [r, q] = std::mismatch(root.begin(), root.end(), real.begin(), real.end());
      if (r == root.end()) inside = true;
    }
    if (!inside)
      return absl::PermissionDeniedError(absl::StrCat(p.field, ": '", *p.value, "' (", real.string(),
                                                      ") is outside the coordinator's allowed roots (",
                                                      absl::StrJoin(options_.allowed_roots, ", "), ")"));
  }
  // An output_dir that is a root, or holds the model or the data, would mix the job's files
  // into what others read.
  {
    std::error_code e1;
    const fs::path out = fs::weakly_canonical(spec.output_dir(), e1);
    for (const std::string& root : options_.allowed_roots)
      if (out == fs::path(root))
        return absl::InvalidArgumentError(absl::StrCat("output_dir: ", spec.output_dir(),
                                                       " is an allowed root itself; give the job a directory of its own"));
    auto inside = [](const fs::path& inner, const fs::path& outer) {
      return std::mismatch(outer.begin(), outer.end(), inner.begin(), inner.end()).first == outer.end();
    };
    // Directories read by the job (the model, the evaluation world): neither may hold the other.
    for (const std::string* input : {&spec.model().path(), &spec.evaluation().data()}) {
      if (input->empty()) continue;
      const fs::path in = fs::weakly_canonical(*input, e1);
      if (inside(out, in) || inside(in, out))
        return absl::InvalidArgumentError(absl::StrCat("output_dir: ", spec.output_dir(), " and ", *input,
                                                       " are inside one another; the job's outputs need a directory of their own"));
    }
    // The data: not inside output_dir, and output_dir not its very directory.
    const fs::path data = fs::weakly_canonical(spec.data().train(), e1);
    if (inside(data, out) || out == data.parent_path())
      return absl::InvalidArgumentError(absl::StrCat("output_dir: ", spec.output_dir(), " holds data.train (",
                                                     spec.data().train(), "); the job's outputs need a directory of their own"));
  }
  // Inputs checked now, not when a worker reaches them.
  MFPO_RETURN_IF_ERROR(Annotate(CheckRegularFile(spec.data().train(), "preference manifest"), "data.train"));
  if (!spec.datagen().grounder_model().empty())
    MFPO_RETURN_IF_ERROR(
        Annotate(CheckRegularFile(spec.datagen().grounder_model(), "TorchScript grounder"), "datagen.grounder_model"));
  std::error_code ec;
  if (!fs::exists(fs::path(spec.model().path()) / "config.json", ec))
    return absl::InvalidArgumentError(
        absl::StrCat("model.path: ", spec.model().path(), " has no config.json (a Hugging Face LLaVA directory is expected",
                     fs::exists(fs::path(spec.model().path()) / "adapter_config.json", ec)
                         ? "; this is a LoRA adapter: merge it with `mfpo merge-lora` and train from the merged model"
                         : "",
                     ")"));
  if (!spec.evaluation().data().empty() && !fs::exists(fs::path(spec.evaluation().data()) / "annotations.jsonl", ec))
    return absl::InvalidArgumentError(absl::StrCat("evaluation.data: ", spec.evaluation().data(),
                                                   " has no annotations.jsonl (a world directory written by `mfpo "
                                                   "world` is expected)"));
  return absl::OkStatus();
}

absl::StatusOr<std::string> Coordinator::Submit(const v1::JobSpec& given, int priority) {
  absl::StatusOr<v1::JobSpec> spec = CompleteJobSpec(given);
  if (!spec.ok()) return absl::InvalidArgumentError(absl::StrCat("job spec: ", spec.status().message()));
  MFPO_RETURN_IF_ERROR(CheckPaths(*spec));
  if (priority < -1000 || priority > 1000) return absl::InvalidArgumentError("priority must be in [-1000, 1000]");
  absl::MutexLock lock(&mu_);
  // Two jobs writing one output directory would destroy each other's checkpoints.
  for (const auto& [id, r] : jobs_)
    if (!IsFinal(r.job().state()) &&
        fs::weakly_canonical(r.job().spec().output_dir()) == fs::weakly_canonical(spec->output_dir()))
      return absl::AlreadyExistsError(absl::StrCat("output_dir: ", spec->output_dir(), " belongs to job ", id,
                                                   ", which is still ", StateName(r.job().state()), " (mfpoctl watch ",
                                                   id, " follows it; mfpoctl cancel ", id, " ends it)"));
  MFPO_ASSIGN_OR_RETURN(const int64_t number, store_->NextJobNumber());
  JobRecord r;
  r.set_number(number);
  v1::Job& job = *r.mutable_job();
  job.set_id(absl::StrFormat("job-%06d", number));
  job.set_name(spec->name());
  job.set_priority(priority);
  *job.mutable_spec() = *spec;
  job.set_created_unix_ms(NowMs());
  job.set_data_manifest(spec->data().train());
  v1::JobEvent queued;
  queued.set_kind(v1::JobEvent::STATE);
  queued.set_state(v1::PENDING);
  queued.set_message("queued");
  queued.set_job_id(job.id());
  queued.set_seq(1);
  queued.set_time_unix_ms(job.created_unix_ms());
  job.set_state(v1::PENDING);
  job.set_reason("queued");
  job.set_last_event_seq(1);
  job.set_updated_unix_ms(job.created_unix_ms());
  // Written before the id is returned: an acknowledged job survives any crash, and a refused
  // one leaves nothing behind.
  MFPO_RETURN_IF_ERROR(store_->PutJob(r, {queued}));
  spdlog::info("{}: submitted ({}, {}, priority {})", job.id(), job.name(), spec->objective().variant(), priority);
  jobs_[job.id()] = r;
  events_cv_.SignalAll();
  return job.id();
}

JobRecord* Coordinator::FindJob(const std::string& id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

JobRecord* Coordinator::JobOfAssignment(const std::string& assignment_id) {
  return FindJob(assignment_id.substr(0, assignment_id.find('/')));
}

absl::StatusOr<v1::Job> Coordinator::GetJob(const std::string& id) {
  absl::MutexLock lock(&mu_);
  JobRecord* r = FindJob(id);
  if (!r) return absl::NotFoundError(absl::StrCat("no job '", id, "' (mfpoctl list shows the jobs)"));
  return r->job();
}

absl::StatusOr<v1::ListJobsResponse> Coordinator::ListJobs(const v1::ListJobsRequest& request) {
  const int size = request.page_size() <= 0 ? 50 : std::min(request.page_size(), 500);
  int64_t after = 0;
  if (!request.page_token().empty() && !absl::SimpleAtoi(request.page_token(), &after))
    return absl::InvalidArgumentError(absl::StrCat("page_token '", request.page_token(), "' is not one ListJobs returned"));
  std::set<int> states(request.states().begin(), request.states().end());
  absl::MutexLock lock(&mu_);
  std::vector<const JobRecord*> sorted;
  for (const auto& [id, r] : jobs_) sorted.push_back(&r);
  std::sort(sorted.begin(), sorted.end(), [](const JobRecord* a, const JobRecord* b) { return a->number() < b->number(); });
  v1::ListJobsResponse out;
  for (const JobRecord* r : sorted) {
    if (r->number() <= after) continue;
    if (!states.empty() && !states.count(r->job().state())) continue;
    if (out.jobs_size() == size) {  // more to come: the token is the last listed job's number
      out.set_next_page_token(std::to_string(after));
      break;
    }
    *out.add_jobs() = r->job();
    after = r->number();
  }
  return out;
}

absl::StatusOr<v1::Job> Coordinator::Cancel(const std::string& id) {
  absl::MutexLock lock(&mu_);
  JobRecord* r = FindJob(id);
  if (!r) return absl::NotFoundError(absl::StrCat("no job '", id, "'"));
  if (IsFinal(r->job().state()))
    return absl::FailedPreconditionError(absl::StrCat(id, " has already ended (", StateName(r->job().state()), ")"));
  const JobRecord before = *r;
  const std::vector<v1::JobEvent> unwritten_before = unwritten_[id];
  // Its assignments are no longer current: workers are told to abort them at their next heartbeat.
  r->clear_group();
  for (ShardRecord& s : *r->mutable_shards())
    if (s.state() == ShardRecord::LEASED) s.set_state(ShardRecord::PENDING);
  SetState(*r, v1::CANCELLED, "cancelled by the user");
  if (absl::Status s = Persist(*r); !s.ok()) {
    // Not cancelled: what a later `get` says must be what a restart would find.
    *r = before;
    unwritten_[id] = unwritten_before;
    return s;
  }
  return r->job();
}

absl::StatusOr<std::vector<v1::JobEvent>> Coordinator::WaitEvents(const std::string& id, int64_t after_seq,
                                                                  absl::Duration wait, bool* final) {
  *final = false;
  const absl::Time deadline = absl::Now() + wait;
  absl::MutexLock lock(&mu_);
  for (;;) {
    JobRecord* r = FindJob(id);
    if (!r) return absl::NotFoundError(absl::StrCat("no job '", id, "'"));
    // Only written events are handed out: a watcher never sees one that a crash could take back.
    const int64_t written = r->job().last_event_seq() - static_cast<int64_t>(unwritten_[id].size());
    if (written > after_seq) {
      MFPO_ASSIGN_OR_RETURN(std::vector<v1::JobEvent> events, store_->Events(id, after_seq, 1000));
      *final = IsFinal(r->job().state()) && !events.empty() && events.back().seq() == r->job().last_event_seq();
      return events;
    }
    if (IsFinal(r->job().state()) && unwritten_[id].empty()) {
      *final = true;
      return std::vector<v1::JobEvent>{};
    }
    if (stop_ || events_cv_.WaitWithDeadline(&mu_, deadline)) return std::vector<v1::JobEvent>{};
  }
}

void Coordinator::Emit(JobRecord& r, v1::JobEvent e) {
  v1::Job& job = *r.mutable_job();
  e.set_job_id(job.id());
  e.set_seq(job.last_event_seq() + 1);
  e.set_time_unix_ms(NowMs());
  job.set_last_event_seq(e.seq());
  job.set_updated_unix_ms(e.time_unix_ms());
  unwritten_[job.id()].push_back(std::move(e));
}

void Coordinator::SetState(JobRecord& r, v1::JobState state, const std::string& reason) {
  v1::Job& job = *r.mutable_job();
  job.set_state(state);
  job.set_reason(reason);
  if (state != v1::TRAINING) job.set_phase("");
  if (IsFinal(state)) last_progress_.erase(job.id());
  v1::JobEvent e;
  e.set_kind(v1::JobEvent::STATE);
  e.set_state(state);
  e.set_phase(job.phase());
  e.set_message(reason);
  e.set_step(job.step());
  e.set_total_steps(job.total_steps());
  Emit(r, std::move(e));
  if (!job.id().empty()) spdlog::info("{}: {}{} ({})", job.id(), StateName(state), job.phase().empty() ? "" : " " + job.phase(), reason);
}

absl::Status Coordinator::Persist(JobRecord& r) {
  std::vector<v1::JobEvent>& pending = unwritten_[r.job().id()];
  absl::Status s = store_->PutJob(r, pending);
  if (!s.ok()) {
    spdlog::error("{}: could not write its state (will retry): {}", r.job().id(), std::string(s.message()));
    return s;
  }
  pending.clear();
  events_cv_.SignalAll();
  return absl::OkStatus();
}

std::vector<v1::WorkerInfo> Coordinator::Workers() {
  absl::MutexLock lock(&mu_);
  RefreshWorkerStates();
  std::vector<v1::WorkerInfo> out;
  for (const auto& [id, w] : workers_) out.push_back(w.info);
  return out;
}


Coordinator::Snapshot Coordinator::TakeSnapshot() {
  absl::MutexLock lock(&mu_);
  RefreshWorkerStates();
  Snapshot out;
  for (v1::JobState s : {v1::PENDING, v1::DATAGEN, v1::REFERENCE, v1::SCORING, v1::TRAINING, v1::EVALUATING,
                         v1::SUCCEEDED, v1::FAILED, v1::CANCELLED})
    out.jobs_by_state[s] = 0;
  for (const auto& [id, r] : jobs_) {
    ++out.jobs_by_state[r.job().state()];
    if (IsFinal(r.job().state())) continue;
    Snapshot::ActiveJob a;
    a.job = r.job();
    a.job.clear_spec();
    if (auto it = last_progress_.find(id); it != last_progress_.end()) a.last_progress = it->second;
    out.active.push_back(std::move(a));
  }
  for (const char* role : {"trainer", "datagen"})
    for (const char* state : {"idle", "busy", "lost", "left", "unconfirmed"}) out.workers[{role, state}] = 0;
  for (const auto& [id, w] : workers_)
    ++out.workers[{w.info.role() == v1::TRAINER ? "trainer" : "datagen", w.info.state()}];
  out.counters = counters_;
  return out;
}


// ---- Workers ---------------------------------------------------------------------------------

absl::StatusOr<v1::RegisterResponse> Coordinator::Register(const v1::RegisterRequest& request) {
  if (request.role() != v1::TRAINER && request.role() != v1::DATAGEN_WORKER)
    return absl::InvalidArgumentError("role must be TRAINER or DATAGEN_WORKER");
  if (request.role() == v1::TRAINER && request.rendezvous_address().empty())
    return absl::InvalidArgumentError("a trainer must give the address of its rendezvous store");
  if (request.name().size() > 100) return absl::InvalidArgumentError("the worker's name is longer than 100 bytes");
  for (unsigned char ch : request.name())
    if (ch < 0x20 || ch == 0x7f) return absl::InvalidArgumentError("the worker's name contains a control character");
  absl::MutexLock lock(&mu_);
  std::string id = request.worker_id();
  if (id.empty() || !workers_.count(id)) {
    if (id.empty()) {
      MFPO_ASSIGN_OR_RETURN(const int64_t n, store_->Increment("worker_number"));
      id = absl::StrFormat("%s-%04d", request.role() == v1::TRAINER ? "trainer" : "datagen", n);
    }
  }
  // An agent restarted under its old name (a StatefulSet pod, `local-cluster.sh` again) replaces
  // the entry it left behind, which would otherwise stay listed as lost.
  std::vector<std::string> replaced;
  for (const auto& [other_id, other] : workers_)
    if (other_id != id && other.lost && other.info.role() == request.role() && other.info.name() == request.name() &&
        !request.name().empty() && !InAnyGroup(other_id))
      replaced.push_back(other_id);
  for (const std::string& other_id : replaced) {
    spdlog::info("worker {} replaces {} (same name '{}')", id, other_id, request.name());
    ForgetWorker(other_id);
  }
  Worker& w = workers_[id];
  w.info.set_id(id);
  w.info.set_role(request.role());
  w.info.set_name(request.name());
  *w.info.mutable_capacity() = request.capacity();
  w.info.set_rendezvous_address(request.rendezvous_address());
  w.last_heartbeat_ms = NowMs();
  w.lost = false;
  w.left = false;
  w.heard_since_start = true;
  w.running.clear();
  w.info.set_last_heartbeat_unix_ms(w.last_heartbeat_ms);
  MFPO_RETURN_IF_ERROR(store_->PutWorker(w.info));
  spdlog::info("worker {} registered ({}, {}, {})", id, v1::WorkerRole_Name(request.role()), request.name(),
               request.rendezvous_address());
  v1::RegisterResponse out;
  out.set_worker_id(id);
  out.set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
  return out;
}

bool Coordinator::WorkerAvailable(const Worker& w) const {
  if (w.lost || !w.heard_since_start || !w.running.empty()) return false;
  for (const auto& [id, r] : jobs_) {
    if (IsFinal(r.job().state())) continue;
    for (const GroupMember& m : r.group())
      if (m.worker_id() == w.info.id()) return false;
    for (const ShardRecord& s : r.shards())
      if (s.state() == ShardRecord::LEASED && s.worker_id() == w.info.id()) return false;
  }
  return true;
}

void Coordinator::RefreshWorkerStates() {
  for (auto& [id, w] : workers_) {
    w.info.set_last_heartbeat_unix_ms(w.last_heartbeat_ms);
    w.info.clear_assignment_id();
    w.info.clear_job_id();
    for (const auto& [jid, r] : jobs_) {
      if (IsFinal(r.job().state())) continue;
      for (const GroupMember& m : r.group())
        if (m.worker_id() == id) {
          w.info.set_assignment_id(m.assignment_id());
          w.info.set_job_id(jid);
        }
      for (const ShardRecord& s : r.shards())
        if (s.state() == ShardRecord::LEASED && s.worker_id() == id) {
          w.info.set_assignment_id(s.assignment_id());
          w.info.set_job_id(jid);
        }
    }
    w.info.set_state(w.left                                                    ? "left"
                     : w.lost                                                  ? "lost"
                     : (!w.info.assignment_id().empty() || !w.running.empty()) ? "busy"
                     : !w.heard_since_start ? "unconfirmed"  // not heard from since the coordinator started
                                            : "idle");
  }
}

v1::Assignment Coordinator::BuildAssignment(const JobRecord& r, const GroupMember* m, const ShardRecord* shard) const {
  v1::Assignment a;
  a.set_job_id(r.job().id());
  *a.mutable_spec() = r.job().spec();
  if (r.job().data_manifest() != r.job().spec().data().train()) {
    // Datagen's merged manifest holds exactly the records [0, max_samples) of data.train.
    a.mutable_spec()->mutable_data()->set_train(r.job().data_manifest());
    a.mutable_spec()->mutable_data()->set_max_samples(0);
  }
  if (shard) {
    a.set_id(shard->assignment_id());
    a.set_kind(v1::Assignment::DATAGEN_SHARD);
    a.set_manifest(r.job().spec().data().train());
    a.set_begin(shard->begin());
    a.set_end(shard->end());
    a.set_out_dir(r.datagen_dir());
    std::string vocab = r.job().spec().datagen().vocabulary();
    if (vocab.empty()) {
      const fs::path next_to = fs::path(r.job().spec().data().train()).parent_path() / "vocab.txt";
      std::error_code ec;
      if (fs::exists(next_to, ec)) vocab = next_to.string();
    }
    a.set_vocabulary(vocab);
    a.set_lease_expiry_unix_ms(shard->lease_expiry_unix_ms());
    return a;
  }
  a.set_id(m->assignment_id());
  a.set_kind(v1::Assignment::TRAIN_STAGE);
  a.set_stage(r.job().state());
  a.set_phase(r.phase_index());
  a.set_rank(m->rank());
  a.set_world_size(r.group_size());
  a.set_grad_accum(r.group_grad_accum());
  a.mutable_spec()->mutable_resources()->set_workers(r.group_size());
  a.mutable_spec()->mutable_optimizer()->set_grad_accum(r.group_grad_accum());
  auto rank0 = workers_.find(r.group(0).worker_id());
  if (rank0 != workers_.end()) a.set_rendezvous(rank0->second.info.rendezvous_address());
  a.set_store_prefix(m->assignment_id().substr(0, m->assignment_id().rfind('/')) + "/");
  a.set_resume_checkpoint(r.job().final_checkpoint());  // the newest one reported (the trainer finds it itself)
  return a;
}

absl::StatusOr<v1::HeartbeatResponse> Coordinator::Heartbeat(const v1::HeartbeatRequest& request) {
  absl::MutexLock lock(&mu_);
  ++counters_.heartbeats;
  v1::HeartbeatResponse out;
  auto wit = workers_.find(request.worker_id());
  if (wit == workers_.end()) {
    out.set_reregister(true);
    return out;
  }
  Worker& w = wit->second;
  const int64_t now = NowMs();
  if (request.leaving()) {
    // A clean stop: lost now, not after the heartbeat timeout, so its group re-forms at once
    // (without using up one of the job's restarts: nothing failed).
    w.lost = true;
    w.left = true;
    w.running.clear();
    spdlog::info("worker {} left", w.info.id());
    return out;
  }
  w.last_heartbeat_ms = now;
  if (w.lost) spdlog::info("worker {} is back", w.info.id());
  w.lost = false;
  w.left = false;
  w.heard_since_start = true;
  w.running.clear();
  std::set<std::string> listed;
  std::vector<JobRecord*> changed;
  for (const v1::AssignmentStatus& st : request.assignments()) {
    listed.insert(st.assignment_id());
    JobRecord* r = JobOfAssignment(st.assignment_id());
    GroupMember* member = nullptr;
    ShardRecord* shard = nullptr;
    if (r && !IsFinal(r->job().state())) {
      for (GroupMember& m : *r->mutable_group())
        if (m.assignment_id() == st.assignment_id() && m.worker_id() == w.info.id()) member = &m;
      for (ShardRecord& s : *r->mutable_shards())
        if (s.assignment_id() == st.assignment_id() && s.state() == ShardRecord::LEASED && s.worker_id() == w.info.id())
          shard = &s;
    }
    const bool current = member || shard;
    if (st.state() == v1::AssignmentStatus::RUNNING) {
      w.running.insert(st.assignment_id());
      if (!current) {
        out.add_abort(st.assignment_id());  // cancelled, re-formed, or its lease re-issued
      } else if (shard) {
        shard->set_lease_expiry_unix_ms(now + options_.lease_ms);
        shard->set_records_done(st.records_done());
      }
      continue;
    }
    // Finished (SUCCEEDED / FAILED): recorded once, then the worker may forget it.
    out.add_forget(st.assignment_id());
    if (member && (member->state() == v1::AssignmentStatus::RUNNING ||
                   member->state() == v1::AssignmentStatus::STATE_UNSPECIFIED)) {
      member->set_state(st.state());
      member->set_error(st.error());
      member->set_error_code(st.error_code());
      if (!st.checkpoint().empty()) r->mutable_job()->set_final_checkpoint(st.checkpoint());
      changed.push_back(r);
    } else if (shard) {
      if (st.state() == v1::AssignmentStatus::SUCCEEDED) {
        shard->set_state(ShardRecord::DONE);
        shard->set_records_done(st.records_done());
      } else {
        // A failed shard (not a failed record: those are in its errors file) is tried again by
        // another lease, a few times.
        shard->set_state(ShardRecord::PENDING);
        v1::JobEvent e;
        e.set_kind(v1::JobEvent::MESSAGE);
        e.set_message(absl::StrCat("datagen shard [", shard->begin(), ", ", shard->end(), ") failed on ", w.info.id(),
                                   ": ", st.error()));
        Emit(*r, e);
        if (shard->issues() >= 3)
          SetState(*r, v1::FAILED, absl::StrCat("datagen shard [", shard->begin(), ", ", shard->end(), ") failed ",
                                                shard->issues(), " times; last: ", st.error()));
      }
      changed.push_back(r);
    }
  }
  // Work for this worker that it does not list yet (new, or its last response was lost).
  for (auto& [id, r] : jobs_) {
    if (IsFinal(r.job().state())) continue;
    for (const GroupMember& m : r.group())
      if (m.worker_id() == w.info.id() && !m.assignment_id().empty() &&
          m.state() == v1::AssignmentStatus::RUNNING && !listed.count(m.assignment_id()))
        *out.add_assignments() = BuildAssignment(r, &m, nullptr);
    for (const ShardRecord& s : r.shards())
      if (s.state() == ShardRecord::LEASED && s.worker_id() == w.info.id() && !listed.count(s.assignment_id()))
        *out.add_assignments() = BuildAssignment(r, nullptr, &s);
  }
  for (JobRecord* r : changed) MFPO_RETURN_IF_ERROR(Persist(*r));
  return out;
}

absl::StatusOr<v1::ProgressResponse> Coordinator::Progress(const v1::ProgressRequest& request) {
  absl::MutexLock lock(&mu_);
  v1::ProgressResponse out;
  const v1::AssignmentStatus& st = request.status();
  JobRecord* r = JobOfAssignment(st.assignment_id());
  const GroupMember* member = nullptr;
  if (r && !IsFinal(r->job().state()))
    for (const GroupMember& m : r->group())
      if (m.assignment_id() == st.assignment_id() && m.worker_id() == request.worker_id()) member = &m;
  if (!member) {
    out.set_abort(true);
    return out;
  }
  if (st.step() <= r->job().step() && st.total_steps() == r->job().total_steps()) return out;
  const int64_t now = NowMs();
  v1::Job& job = *r->mutable_job();
  job.set_step(st.step());
  if (st.total_steps() > 0) job.set_total_steps(st.total_steps());
  v1::JobEvent e;
  e.set_kind(v1::JobEvent::PROGRESS);
  e.set_state(job.state());
  e.set_phase(job.phase());
  e.set_step(st.step());
  e.set_total_steps(job.total_steps());
  e.set_loss(st.loss());
  e.set_loss_text(st.loss_text());
  e.set_loss_image(st.loss_image());
  e.set_loss_margin(st.loss_margin());
  e.set_text_reward_accuracy(st.text_reward_accuracy());
  e.set_image_reward_accuracy(st.image_reward_accuracy());
  e.set_samples_per_second(st.samples_per_second());
  const int64_t done = st.step() - r->stage_start_step();
  if (done > 0 && now > r->stage_started_unix_ms())
    e.set_eta_seconds(static_cast<double>(job.total_steps() - st.step()) * (now - r->stage_started_unix_ms()) / done /
                      1000.0);
  e.set_time_unix_ms(now);
  last_progress_[job.id()] = e;
  Emit(*r, e);
  MFPO_RETURN_IF_ERROR(Persist(*r));
  return out;
}

// ---- Scheduling ------------------------------------------------------------------------------

void Coordinator::Tick() {
  absl::MutexLock lock(&mu_);
  const int64_t now = NowMs();
  for (auto& [id, w] : workers_) {
    if (!w.lost && now - w.last_heartbeat_ms > options_.worker_timeout_ms) {
      w.lost = true;
      w.running.clear();
      spdlog::warn("worker {} lost: no heartbeat for {:.1f} s", id, (now - w.last_heartbeat_ms) / 1000.0);
    }
  }
  // Workers gone for 10 minutes (and in no group) are forgotten: a lost entry stays visible long
  // enough to be noticed (mfpoctl workers, the MfpoWorkerDown alert), not forever.
  {
    std::vector<std::string> gone;
    for (const auto& [id, w] : workers_)
      if (w.lost && now - w.last_heartbeat_ms > options_.forget_lost_worker_ms && !InAnyGroup(id)) gone.push_back(id);
    for (const std::string& id : gone) {
      spdlog::info("worker {} forgotten: gone for {:.0f} s", id, (now - workers_[id].last_heartbeat_ms) / 1000.0);
      ForgetWorker(id);
    }
  }
  std::vector<JobRecord*> order;
  for (auto& [id, r] : jobs_)
    if (!IsFinal(r.job().state())) order.push_back(&r);
  std::sort(order.begin(), order.end(), [](const JobRecord* a, const JobRecord* b) {
    if (a->job().priority() != b->job().priority()) return a->job().priority() > b->job().priority();
    return a->number() < b->number();
  });
  // Strict queue for trainers: once a job waits for a group, later jobs do not take trainers
  // before it (no starvation of large jobs by small ones).
  bool trainer_queue_blocked = false;
  for (JobRecord* r : order) {
    const std::string before = r->SerializeAsString();
    Advance(*r, now, &trainer_queue_blocked);
    if (r->SerializeAsString() != before || !unwritten_[r->job().id()].empty()) (void)Persist(*r);
  }
}

void Coordinator::Advance(JobRecord& r, int64_t now, bool* trainer_queue_blocked) {
  switch (r.job().state()) {
    case v1::PENDING:
      if (!r.datagen_checked()) StartFirstStage(r);
      if (r.job().state() == v1::DATAGEN) AdvanceDatagen(r, now);
      if (r.job().state() == v1::PENDING) AdvanceGroupStage(r, now, trainer_queue_blocked);
      return;
    case v1::DATAGEN:
      AdvanceDatagen(r, now);
      return;
    case v1::REFERENCE:
    case v1::SCORING:
    case v1::TRAINING:
    case v1::EVALUATING:
      AdvanceGroupStage(r, now, trainer_queue_blocked);
      return;
    default:
      return;
  }
}

void Coordinator::StartFirstStage(JobRecord& r) {
  const v1::JobSpec& spec = r.job().spec();
  int64_t records = 0, without_image = 0;
  if (absl::Status s = CountRecords(spec, &records, &without_image); !s.ok()) {
    SetState(r, v1::FAILED, std::string(s.message()));
    return;
  }
  if (records == 0) {
    SetState(r, v1::FAILED, absl::StrCat("data.train: ", spec.data().train(), " has no records"));
    return;
  }
  r.set_datagen_checked(true);
  if (!NeedsImages(spec) || without_image == 0) {
    v1::JobEvent e;
    e.set_kind(v1::JobEvent::MESSAGE);
    e.set_message(NeedsImages(spec) ? "every record has a rejected image: no datagen"
                                    : "the objective needs no rejected images: no datagen");
    Emit(r, e);
    return;
  }
  r.set_datagen_dir((fs::path(spec.output_dir()) / "datagen").string());
  std::error_code ec;
  fs::create_directories(r.datagen_dir(), ec);
  if (ec) {
    SetState(r, v1::FAILED, absl::StrCat(r.datagen_dir(), ": cannot create: ", ec.message()));
    return;
  }
  const int64_t per = std::max<int64_t>(1, options_.shard_records);
  for (int64_t b = 0; b < records; b += per) {
    ShardRecord* s = r.add_shards();
    s->set_begin(b);
    s->set_end(std::min(records, b + per));
  }
  SetState(r, v1::DATAGEN,
           absl::StrCat(records, " records (", without_image, " without a rejected image) in ", r.shards_size(), " shards"));
}

void Coordinator::AdvanceDatagen(JobRecord& r, int64_t now) {
  for (ShardRecord& s : *r.mutable_shards()) {
    if (s.state() != ShardRecord::LEASED) continue;
    auto w = workers_.find(s.worker_id());
    const bool lost = w == workers_.end() || w->second.lost;
    if (lost || now > s.lease_expiry_unix_ms()) {
      s.set_state(ShardRecord::PENDING);
      ++counters_.leases_reissued;
      v1::JobEvent e;
      e.set_kind(v1::JobEvent::MESSAGE);
      e.set_message(absl::StrCat("datagen shard [", s.begin(), ", ", s.end(), ") re-issued: ",
                                 lost ? absl::StrCat("worker ", s.worker_id(), " lost") : "its lease expired"));
      Emit(r, e);
    }
  }
  int done = 0;
  for (ShardRecord& s : *r.mutable_shards()) {
    if (s.state() == ShardRecord::DONE) {
      ++done;
      continue;
    }
    if (s.state() != ShardRecord::PENDING) continue;
    Worker* idle = nullptr;
    for (auto& [id, w] : workers_)
      if (w.info.role() == v1::DATAGEN_WORKER && WorkerAvailable(w)) {
        idle = &w;
        break;
      }
    if (!idle) break;
    s.set_issues(s.issues() + 1);
    s.set_state(ShardRecord::LEASED);
    s.set_worker_id(idle->info.id());
    s.set_assignment_id(absl::StrCat(r.job().id(), "/shard-", s.begin(), "-", s.end(), "/", s.issues()));
    s.set_lease_expiry_unix_ms(now + options_.lease_ms);
    idle->running.insert(s.assignment_id());  // busy until its next heartbeat says otherwise
  }
  if (done < r.shards_size()) {
    int live = 0;
    for (const auto& [id, w] : workers_) live += w.info.role() == v1::DATAGEN_WORKER && !w.lost ? 1 : 0;
    r.mutable_job()->set_reason(live == 0 ? absl::StrCat(done, " of ", r.shards_size(),
                                                         " shards done; waiting for datagen workers: none registered")
                                          : absl::StrCat(done, " of ", r.shards_size(), " shards done"));
    return;
  }
  if (absl::Status s = MergeShards(r); !s.ok()) {
    SetState(r, v1::FAILED, absl::StrCat("merging the datagen shards: ", s.message()));
    return;
  }
  SetState(r, v1::PENDING, absl::StrCat("datagen done (", r.job().data_manifest(), "); waiting for trainers"));
}

absl::Status Coordinator::MergeShards(JobRecord& r) {
  // Each shard's manifest, in record order, once: the merged manifest is written atomically and
  // recorded in the job in the same persisted step, so no shard is merged twice.
  std::string merged;
  int64_t records = 0, errors = 0;
  std::set<std::string> ids;
  for (const ShardRecord& s : r.shards()) {
    const std::string path =
        (fs::path(r.datagen_dir()) / absl::StrCat("manifest-", s.begin(), "-", s.end(), ".jsonl")).string();
    MFPO_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, "datagen shard manifest"));
    for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      json j = json::parse(line, nullptr, false);
      if (!j.is_object() || !j.contains("id")) return absl::DataLossError(absl::StrCat(path, ": a line is not a record"));
      const std::string id = j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump();
      if (!ids.insert(id).second) return absl::DataLossError(absl::StrCat(path, ": record ", id, " appears twice"));
      absl::StrAppend(&merged, line, "\n");
      ++records;
    }
    const std::string errors_path =
        (fs::path(r.datagen_dir()) / absl::StrCat("manifest-", s.begin(), "-", s.end(), ".errors.jsonl")).string();
    if (absl::StatusOr<std::string> error_text = ReadFileToString(errors_path); error_text.ok())
      for (absl::string_view line : absl::StrSplit(*error_text, '\n', absl::SkipEmpty())) {
        (void)line;
        ++errors;
      }
  }
  if (records == 0) return absl::InvalidArgumentError("no record got a rejected image (see the shards' errors files)");
  // Named by the records it covers: another job in this output_dir over other records writes
  // another file instead of changing the manifest a finished run was trained on.
  const std::string out =
      (fs::path(r.datagen_dir()) / absl::StrCat("merged-0-", r.shards(r.shards_size() - 1).end(), ".jsonl")).string();
  MFPO_RETURN_IF_ERROR(WriteFileAtomically(out, merged));
  r.mutable_job()->set_data_manifest(out);
  if (errors > 0) {
    v1::JobEvent e;
    e.set_kind(v1::JobEvent::MESSAGE);
    e.set_message(absl::StrCat(errors, " records failed in datagen and are left out (", r.datagen_dir(),
                               "/manifest-*.errors.jsonl)"));
    Emit(r, e);
  }
  return absl::OkStatus();
}

bool Coordinator::FormGroup(JobRecord& r) {
  const v1::JobSpec& spec = r.job().spec();
  std::vector<Worker*> idle;
  for (auto& [id, w] : workers_)
    if (w.info.role() == v1::TRAINER && WorkerAvailable(w)) idle.push_back(&w);
  const int wanted = r.job().state() == v1::EVALUATING ? 1 : spec.resources().workers();
  const int minimum = r.job().state() == v1::EVALUATING ? 1 : spec.resources().min_workers();
  const int64_t product = static_cast<int64_t>(spec.resources().workers()) * spec.optimizer().grad_accum();
  int k = 0;
  for (int n = std::min<int>(wanted, static_cast<int>(idle.size())); n >= minimum; --n)
    if (product % n == 0) {
      k = n;
      break;
    }
  if (k == 0) {
    r.mutable_job()->set_reason(absl::StrCat("waiting for trainers: ", idle.size(), " idle, at least ", minimum,
                                             " needed (of ", wanted, ")"));
    return false;
  }
  r.clear_group();
  r.set_attempt(r.attempt() + 1);
  r.set_group_grad_accum(static_cast<int32_t>(product / k));
  v1::JobEvent e;
  e.set_kind(v1::JobEvent::WORKERS);
  r.mutable_job()->clear_workers();
  for (int i = 0; i < k; ++i) {
    GroupMember* m = r.add_group();
    m->set_worker_id(idle[i]->info.id());
    m->set_rank(i);
    r.mutable_job()->add_workers(idle[i]->info.id());
    e.add_workers(idle[i]->info.id());
  }
  e.set_message(absl::StrCat("training group ", r.attempt(), ": ", k, " trainer", k > 1 ? "s" : "", " (",
                             absl::StrJoin(r.job().workers(), ", "), "), grad_accum ", r.group_grad_accum()));
  Emit(r, e);
  spdlog::info("{}: {}", r.job().id(), e.message());
  return true;
}

void Coordinator::IssueStage(JobRecord& r, int64_t now) {
  r.set_stage_serial(r.stage_serial() + 1);
  for (GroupMember& m : *r.mutable_group()) {
    m.set_assignment_id(absl::StrCat(r.job().id(), "/", r.attempt(), ".", r.stage_serial(), "/", m.rank()));
    m.set_state(v1::AssignmentStatus::RUNNING);
    m.clear_error();
    workers_[m.worker_id()].running.insert(m.assignment_id());
  }
  r.set_stage_started_unix_ms(now);
  r.set_stage_start_step(r.job().step());
}

bool Coordinator::InAnyGroup(const std::string& worker_id) const {
  for (const auto& [jid, r] : jobs_)
    for (const GroupMember& m : r.group())
      if (m.worker_id() == worker_id) return true;
  return false;
}

void Coordinator::ForgetWorker(const std::string& id) {
  workers_.erase(id);
  if (absl::Status s = store_->DeleteWorker(id); !s.ok())
    spdlog::warn("worker {}: cannot delete it from the database: {}", id, std::string(s.message()));
}

void Coordinator::EndGroup(JobRecord& r, const std::string& reason, bool failure, bool retryable) {
  // The members' assignments stop being current: each is told to abort at its next heartbeat and
  // stays unavailable until it no longer reports it running.
  r.clear_group();
  r.mutable_job()->clear_workers();
  if (!failure) return;
  ++counters_.group_restarts;
  if (!retryable) {
    SetState(r, v1::FAILED, reason);
    return;
  }
  if (r.job().restarts() >= r.job().spec().resources().max_restarts()) {
    SetState(r, v1::FAILED, absl::StrCat(reason, " (after ", r.job().spec().resources().max_restarts(),
                                         " restarts: resources.max_restarts)"));
    return;
  }
  r.mutable_job()->set_restarts(r.job().restarts() + 1);
  v1::JobEvent e;
  e.set_kind(v1::JobEvent::MESSAGE);
  e.set_message(absl::StrCat("restart ", r.job().restarts(), " of ", r.job().spec().resources().max_restarts(), ": ",
                             reason, "; the group is re-formed from the last checkpoint"));
  Emit(r, e);
  spdlog::warn("{}: {}", r.job().id(), e.message());
}

void Coordinator::AdvanceGroupStage(JobRecord& r, int64_t now, bool* trainer_queue_blocked) {
  if (r.group_size() > 0) {
    // A member lost or failed ends the group.
    for (const GroupMember& m : r.group()) {
      auto w = workers_.find(m.worker_id());
      if (w != workers_.end() && w->second.left) {
        // Stopped on purpose (SIGTERM, Ctrl-C, a pod deleted): re-formed without counting a restart.
        const std::string worker_id = m.worker_id();  // `m` dies with the group
        const int rank = m.rank();
        EndGroup(r, "", false, false);
        v1::JobEvent e;
        e.set_kind(v1::JobEvent::MESSAGE);
        e.set_message(absl::StrCat("trainer ", worker_id, " (rank ", rank,
                                   ") was stopped; the group is re-formed from the last checkpoint when trainers "
                                   "are available (not counted against resources.max_restarts)"));
        Emit(r, e);
        spdlog::info("{}: {}", r.job().id(), e.message());
        return;
      }
      if (w == workers_.end() || w->second.lost) {
        EndGroup(r, absl::StrCat("trainer ", m.worker_id(), " (rank ", m.rank(), ") lost: no heartbeat for ",
                                 options_.worker_timeout_ms / 1000.0, " s"),
                 true, true);
        return;
      }
    }
    for (const GroupMember& m : r.group()) {
      if (m.state() != v1::AssignmentStatus::FAILED) continue;
      EndGroup(r, absl::StrCat(StateName(r.job().state()), r.job().phase().empty() ? "" : " " + r.job().phase(),
                               " failed on ", m.worker_id(), " (rank ", m.rank(), "): ", m.error()),
               true, Retryable(m.error_code()));
      return;
    }
    bool all_done = true;
    for (const GroupMember& m : r.group()) all_done &= m.state() == v1::AssignmentStatus::SUCCEEDED;
    if (all_done) StageDone(r, now);
    return;
  }
  if (*trainer_queue_blocked) {
    r.mutable_job()->set_reason("queued behind an earlier job that waits for trainers");
    return;
  }
  if (!FormGroup(r)) {
    // It blocks the jobs behind it only if the trainers registered now could ever serve it;
    // one that wants more than exist lets others pass until more trainers register.
    int live = 0;
    for (const auto& [id, w] : workers_) live += w.info.role() == v1::TRAINER && !w.lost ? 1 : 0;
    const int minimum = r.job().state() == v1::EVALUATING ? 1 : r.job().spec().resources().min_workers();
    if (live >= minimum) {
      *trainer_queue_blocked = true;
    } else {
      r.mutable_job()->set_reason(absl::StrCat("waiting for trainers: at least ", minimum, " needed, ", live,
                                               " registered (jobs behind it may run meanwhile)"));
    }
    return;
  }
  if (r.job().state() == v1::PENDING) SetState(r, v1::REFERENCE, "training group formed");
  IssueStage(r, now);
}

void Coordinator::StageDone(JobRecord& r, int64_t now) {
  v1::Job& job = *r.mutable_job();
  const v1::JobSpec& spec = job.spec();
  switch (job.state()) {
    case v1::REFERENCE: {
      // Records the trainer could not read are skipped and listed there: say so in the events.
      if (absl::StatusOr<std::string> errors =
              ReadFileToString((fs::path(spec.output_dir()) / "data_errors.txt").string());
          errors.ok() && !errors->empty()) {
        const int64_t n = std::count(errors->begin(), errors->end(), '\n');
        v1::JobEvent e;
        e.set_kind(v1::JobEvent::MESSAGE);
        e.set_message(absl::StrCat(n, " records of ", job.data_manifest(), " could not be used and are skipped (",
                                   spec.output_dir(), "/data_errors.txt)"));
        Emit(r, e);
      }
      SetState(r, v1::SCORING, "reference log-probs done");
      break;
    }
    case v1::SCORING: {
      // The curriculum that ScoreDifficulty wrote: phase names and steps.
      const std::string path = (fs::path(spec.output_dir()) / "curriculum.json").string();
      json c;
      absl::Status s = ReadJsonFile(path, &c);
      if (s.ok() && (!c.contains("phases") || !c["phases"].is_array() || c["phases"].empty()))
        s = absl::DataLossError(absl::StrCat(path, ": no phases"));
      if (!s.ok()) {
        SetState(r, v1::FAILED, std::string(s.message()));
        EndGroup(r, "", false, false);
        return;
      }
      r.clear_phase_names();
      r.clear_phase_steps();
      for (const json& p : c["phases"]) {
        r.add_phase_names(p.value("name", "phase"));
        r.add_phase_steps(p.value("steps", int64_t{0}));
      }
      job.set_total_steps(c.value("total_steps", int64_t{0}));
      r.set_phase_index(0);
      job.set_phase(r.phase_names(0));
      SetState(r, v1::TRAINING, absl::StrCat("curriculum: ", absl::StrJoin(r.phase_names(), ", ")));
      break;
    }
    case v1::TRAINING:
      if (r.phase_index() + 1 < r.phase_names_size()) {
        r.set_phase_index(r.phase_index() + 1);
        job.set_phase(r.phase_names(r.phase_index()));
        SetState(r, v1::TRAINING, absl::StrCat("phase ", r.phase_names(r.phase_index() - 1), " done"));
        break;
      }
      if (spec.evaluation().data().empty()) {
        EndGroup(r, "", false, false);
        SetState(r, v1::SUCCEEDED, "trained (no evaluation.data: no evaluation)");
        return;
      }
      // Evaluation needs one trainer: the group shrinks to its rank 0.
      while (r.group_size() > 1) r.mutable_group()->RemoveLast();
      job.clear_workers();
      job.add_workers(r.group(0).worker_id());
      r.set_group_grad_accum(static_cast<int32_t>(static_cast<int64_t>(spec.resources().workers()) *
                                                  spec.optimizer().grad_accum()));
      SetState(r, v1::EVALUATING, "training done");
      break;
    case v1::EVALUATING:
      EndGroup(r, "", false, false);
      SetState(r, v1::SUCCEEDED, absl::StrCat("evaluated: ", (fs::path(spec.output_dir()) / "eval/report.md").string()));
      return;
    default:
      return;
  }
  IssueStage(r, now);
}

}  // namespace mfpo
