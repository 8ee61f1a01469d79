// mfpoctl: the job service's command line. Talks to mfpo-coordinator's JobService over gRPC.
//
//   mfpoctl submit FILE [--priority N] [--watch]   spec errors are printed with the field path
//   mfpoctl list [--state S[,S]] [--limit N]
//   mfpoctl get ID
//   mfpoctl watch ID [ID...] [--after SEQ]         live progress; exit code = the jobs' outcome
//   mfpoctl cancel ID
//   mfpoctl workers
//
// Every command takes --json (machine-readable output), --server, the TLS flags, --token_file
// and --timeout_s; --config FILE (default ~/.config/mfpo/mfpoctl.yaml when it exists) gives
// defaults for the connection flags. Exit codes: 0 success (watch: the job SUCCEEDED), 1 failure
// (watch: FAILED), 2 bad usage, a rejected spec or an unknown job, 3 the job was CANCELLED, 4 the server could
// not be reached.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/cli_util.h"
#include "common/file_util.h"
#include "common/rpc_util.h"
#include "common/status_macros.h"
#include "mfpo_service.grpc.pb.h"
#include "worker/job_spec.h"

ABSL_FLAG(std::string, server, "", "HOST:PORT of mfpo-coordinator (default 127.0.0.1:7070, or the config file's)");
ABSL_FLAG(std::string, config, "", "YAML with server, tls_ca, tls_cert, tls_key, tls_server_name, token_file");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA that signed the coordinator's certificate (turns TLS on)");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate (mutual TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "", "the name to verify in the coordinator's certificate");
ABSL_FLAG(std::string, token_file, "", "file holding the bearer token");
ABSL_FLAG(bool, json, false, "machine-readable output (JSON; watch: one event per line)");
ABSL_FLAG(double, timeout_s, 10, "deadline of each call");
ABSL_FLAG(int32_t, priority, 0, "submit: higher runs first, in [-1000, 1000]");
ABSL_FLAG(bool, watch, false, "submit: then watch the job");
ABSL_FLAG(std::string, state, "", "list: only jobs in these states (comma-separated, e.g. TRAINING,PENDING)");
ABSL_FLAG(int32_t, limit, 100, "list: at most this many jobs");
ABSL_FLAG(int64_t, after, 0, "watch: only events after this sequence number");
ABSL_FLAG(std::string, service, "", "health: the service to ask about (default: the whole server)");

namespace mfpo {
namespace {

namespace fs = std::filesystem;
constexpr int kExitUnreachable = 4;
constexpr int kExitCancelled = 3;

const std::vector<std::string> kGlobal = {"server", "config", "tls_ca", "tls_cert", "tls_key", "tls_server_name",
                                          "token_file", "json", "timeout_s"};

struct Options {
  std::string server;
  ClientSecurity security;
  bool json = false;
  std::chrono::milliseconds timeout{10000};
};

int Fail(const absl::Status& s) {
  if (s.ok()) return 0;
  std::cerr << "mfpoctl: " << s.message() << "\n";
  if (absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) return kExitUnreachable;
  // An unknown job id is a usage error, not a failed job (watch's 1).
  return absl::IsInvalidArgument(s) || absl::IsPermissionDenied(s) || absl::IsAlreadyExists(s) || absl::IsNotFound(s)
             ? 2
             : 1;
}

// Flags over the config file over the defaults. Relative paths in the config file are relative
// to the file.
absl::StatusOr<Options> LoadOptions(const std::string& home) {
  Options o;
  std::string config = absl::GetFlag(FLAGS_config);
  const bool explicit_config = !config.empty();
  if (config.empty() && !home.empty()) config = home + "/.config/mfpo/mfpoctl.yaml";
  std::string token_file;
  std::error_code ec;
  if (!config.empty() && (explicit_config || fs::exists(config, ec))) {
    MFPO_ASSIGN_OR_RETURN(std::string text, ReadFileToString(config, "mfpoctl config"));
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(config, ": not valid YAML: ", e.what()));
    }
    if (!root.IsMap() && !root.IsNull()) return absl::InvalidArgumentError(absl::StrCat(config, ": must be a mapping"));
    const fs::path dir = fs::path(config).parent_path();
    auto path_of = [&](const std::string& v) { return fs::path(v).is_absolute() ? v : (dir / v).string(); };
    for (const auto& kv : root) {
      const std::string key = kv.first.as<std::string>();
      if (!kv.second.IsScalar()) return absl::InvalidArgumentError(absl::StrCat(config, ": ", key, ": must be a string"));
      const std::string value = kv.second.as<std::string>();
      if (key == "server") o.server = value;
      else if (key == "tls_ca") o.security.ca = path_of(value);
      else if (key == "tls_cert") o.security.cert = path_of(value);
      else if (key == "tls_key") o.security.key = path_of(value);
      else if (key == "tls_server_name") o.security.server_name = value;
      else if (key == "token_file") token_file = path_of(value);
      else
        return absl::InvalidArgumentError(absl::StrCat(config, ": unknown key '", key,
                                                       "' (known: server, tls_ca, tls_cert, tls_key, tls_server_name, token_file)"));
    }
  }
  if (!absl::GetFlag(FLAGS_server).empty()) o.server = absl::GetFlag(FLAGS_server);
  if (o.server.empty()) o.server = "127.0.0.1:7070";
  if (!absl::GetFlag(FLAGS_tls_ca).empty()) o.security.ca = absl::GetFlag(FLAGS_tls_ca);
  if (!absl::GetFlag(FLAGS_tls_cert).empty()) o.security.cert = absl::GetFlag(FLAGS_tls_cert);
  if (!absl::GetFlag(FLAGS_tls_key).empty()) o.security.key = absl::GetFlag(FLAGS_tls_key);
  if (!absl::GetFlag(FLAGS_tls_server_name).empty()) o.security.server_name = absl::GetFlag(FLAGS_tls_server_name);
  if (!absl::GetFlag(FLAGS_token_file).empty()) token_file = absl::GetFlag(FLAGS_token_file);
  if (!token_file.empty()) {
    MFPO_ASSIGN_OR_RETURN(o.security.token, ReadTokenFile(token_file));
  }
  o.json = absl::GetFlag(FLAGS_json);
  const double t = absl::GetFlag(FLAGS_timeout_s);
  if (!(t > 0 && t <= 3600)) return absl::InvalidArgumentError("--timeout_s must be in (0, 3600]");
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(t * 1000));
  return o;
}

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions p;
  p.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, p);
  return out;
}

// Text from the server shown on a terminal: control characters (escape sequences, line breaks in
// a reason) would redraw the screen or break the table.
std::string Printable(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (c == '\n' || c == '\r' || c == '\t') out += ' ';
    else if (c < 0x20 || c == 0x7f) out += '?';
    else out += static_cast<char>(c);
  }
  return out;
}

std::string Duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e8) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
}

class Client {
 public:
  static absl::StatusOr<Client> Connect(const Options& o) {
    MFPO_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, MakeChannel(o.server, o.security));
    return Client(o, channel);
  }
  template <typename Req, typename Resp, typename Call>
  absl::StatusOr<Resp> Unary(const char* name, const Req& request, Call call) {
    grpc::ClientContext context;
    PrepareCall(&context, o_.security, o_.timeout);
    Resp response;
    grpc::Status s = (stub_.get()->*call)(&context, request, &response);
    if (!s.ok()) return FromGrpcStatus(s, absl::StrCat(name, " (", o_.server, ")"));
    return response;
  }
  v1::JobService::Stub* stub() { return stub_.get(); }
  const Options& options() const { return o_; }

 private:
  Client(const Options& o, std::shared_ptr<grpc::Channel> channel)
      : o_(o), channel_(std::move(channel)), stub_(v1::JobService::NewStub(channel_)) {}
  Options o_;
  std::shared_ptr<grpc::Channel> channel_;
  std::shared_ptr<v1::JobService::Stub> stub_;
};

// Paths in a spec are read relative to where mfpoctl runs (as `mfpo train` reads them); the
// service needs them absolute.
void MakePathsAbsolute(v1::JobSpec* spec) {
  auto fix = [](std::string* p) {
    if (!p->empty() && !fs::path(*p).is_absolute()) *p = fs::absolute(*p).lexically_normal().string();
  };
  fix(spec->mutable_output_dir());
  fix(spec->mutable_model()->mutable_path());
  if (spec->model().has_reference_path()) fix(spec->mutable_model()->mutable_reference_path());
  fix(spec->mutable_data()->mutable_train());
  if (spec->evaluation().has_data()) fix(spec->mutable_evaluation()->mutable_data());
  if (spec->datagen().has_vocabulary()) fix(spec->mutable_datagen()->mutable_vocabulary());
  if (spec->datagen().has_grounder_model()) fix(spec->mutable_datagen()->mutable_grounder_model());
}

int Watch(Client& client, const std::vector<std::string>& ids, int64_t after);

int Submit(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 1) return Fail(absl::InvalidArgumentError("usage: mfpoctl submit FILE (YAML or JSON job spec)"));
  absl::StatusOr<v1::JobSpec> spec = LoadJobSpec(args[0]);
  if (!spec.ok()) return Fail(spec.status());
  MakePathsAbsolute(&*spec);
  v1::SubmitJobRequest request;
  *request.mutable_spec() = *spec;
  request.set_priority(absl::GetFlag(FLAGS_priority));
  absl::StatusOr<v1::SubmitJobResponse> r =
      client.Unary<v1::SubmitJobRequest, v1::SubmitJobResponse>("SubmitJob", request, &v1::JobService::Stub::SubmitJob);
  if (!r.ok()) return Fail(Annotate(r.status(), args[0]));
  if (client.options().json)
    std::cout << ToJson(*r) << "\n";
  else
    std::cout << r->job_id() << "\n";
  std::cout << std::flush;
  if (absl::GetFlag(FLAGS_watch)) return Watch(client, {r->job_id()}, 0);
  return 0;
}

std::string JobLine(const v1::Job& j) {
  const std::string steps = j.total_steps() > 0 ? absl::StrCat(j.step(), "/", j.total_steps()) : "-";
  const double age = (absl::ToUnixMillis(absl::Now()) - j.created_unix_ms()) / 1000.0;
  return absl::StrFormat("%-11s %-20s %-10s %-7s %-9s %4d %7s  %s", j.id(), Printable(j.name().substr(0, 20)),
                         v1::JobState_Name(j.state()), j.phase().empty() ? "-" : Printable(j.phase()), steps,
                         j.priority(), Duration(age), Printable(j.reason()));
}

int List(Client& client) {
  v1::ListJobsRequest request;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_state), ',', absl::SkipEmpty())) {
    v1::JobState state;
    if (!v1::JobState_Parse(std::string(s), &state) || state == v1::JOB_STATE_UNSPECIFIED)
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--state: unknown state '", s, "' (PENDING, DATAGEN, REFERENCE, SCORING, TRAINING, EVALUATING, SUCCEEDED, FAILED, CANCELLED)")));
    request.add_states(state);
  }
  const int limit = absl::GetFlag(FLAGS_limit);
  if (limit < 1) return Fail(absl::InvalidArgumentError("--limit must be >= 1"));
  std::vector<v1::Job> jobs;
  for (;;) {
    request.set_page_size(std::min(limit - static_cast<int>(jobs.size()), 500));
    absl::StatusOr<v1::ListJobsResponse> r =
        client.Unary<v1::ListJobsRequest, v1::ListJobsResponse>("ListJobs", request, &v1::JobService::Stub::ListJobs);
    if (!r.ok()) return Fail(r.status());
    for (const v1::Job& j : r->jobs()) jobs.push_back(j);
    if (r->next_page_token().empty() || static_cast<int>(jobs.size()) >= limit) break;
    request.set_page_token(r->next_page_token());
  }
  if (client.options().json) {
    v1::ListJobsResponse all;
    for (const auto& j : jobs) *all.add_jobs() = j;
    std::cout << ToJson(all) << "\n";
    return 0;
  }
  std::cout << absl::StrFormat("%-11s %-20s %-10s %-7s %-9s %4s %7s  %s\n", "ID", "NAME", "STATE", "PHASE", "STEP",
                               "PRIO", "AGE", "REASON");
  for (const auto& j : jobs) std::cout << JobLine(j) << "\n";
  return 0;
}

int Get(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 1) return Fail(absl::InvalidArgumentError("usage: mfpoctl get JOB_ID"));
  v1::GetJobRequest request;
  request.set_job_id(args[0]);
  absl::StatusOr<v1::Job> j = client.Unary<v1::GetJobRequest, v1::Job>("GetJob", request, &v1::JobService::Stub::GetJob);
  if (!j.ok()) return Fail(j.status());
  if (client.options().json) {
    std::cout << ToJson(*j) << "\n";
    return 0;
  }
  std::cout << "id:          " << j->id() << "\nname:        " << Printable(j->name()) << "\nstate:       "
            << v1::JobState_Name(j->state()) << (j->phase().empty() ? "" : " (" + Printable(j->phase()) + ")")
            << "\nreason:      " << Printable(j->reason()) << "\nstep:        " << j->step() << " / " << j->total_steps()
            << "\nrestarts:    " << j->restarts() << "\nworkers:     " << absl::StrJoin(j->workers(), ", ")
            << "\npriority:    " << j->priority() << "\noutput_dir:  " << j->spec().output_dir()
            << "\nvariant:     " << j->spec().objective().variant() << "\nmanifest:    " << j->data_manifest()
            << "\ncheckpoint:  " << j->final_checkpoint() << "\nevents:      " << j->last_event_seq() << "\n";
  return 0;
}

int Cancel(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 1) return Fail(absl::InvalidArgumentError("usage: mfpoctl cancel JOB_ID"));
  v1::CancelJobRequest request;
  request.set_job_id(args[0]);
  absl::StatusOr<v1::Job> j =
      client.Unary<v1::CancelJobRequest, v1::Job>("CancelJob", request, &v1::JobService::Stub::CancelJob);
  if (!j.ok()) return Fail(j.status());
  if (client.options().json)
    std::cout << ToJson(*j) << "\n";
  else
    std::cout << j->id() << " " << v1::JobState_Name(j->state()) << "\n";
  return 0;
}

int Workers(Client& client) {
  absl::StatusOr<v1::ListWorkersResponse> r = client.Unary<v1::ListWorkersRequest, v1::ListWorkersResponse>(
      "ListWorkers", v1::ListWorkersRequest(), &v1::JobService::Stub::ListWorkers);
  if (!r.ok()) return Fail(r.status());
  if (client.options().json) {
    std::cout << ToJson(*r) << "\n";
    return 0;
  }
  std::cout << absl::StrFormat("%-13s %-8s %-6s %-22s %-11s %-9s %s\n", "ID", "ROLE", "STATE", "NAME", "JOB", "HEARTBEAT",
                               "CAPACITY");
  const int64_t now = absl::ToUnixMillis(absl::Now());
  for (const v1::WorkerInfo& w : r->workers())
    std::cout << absl::StrFormat("%-13s %-8s %-6s %-22s %-11s %-9s %s %d threads%s\n", w.id(),
                                 w.role() == v1::TRAINER ? "trainer" : "datagen", w.state(), Printable(w.name().substr(0, 22)),
                                 w.job_id().empty() ? "-" : w.job_id(),
                                 Duration((now - w.last_heartbeat_unix_ms()) / 1000.0) + " ago", w.capacity().device(),
                                 w.capacity().threads(), w.capacity().gpus() > 0 ? absl::StrCat(", ", w.capacity().gpus(), " GPUs") : "");
  return 0;
}

std::string ProgressLine(const v1::JobEvent& e) {
  std::string line = absl::StrCat("[", e.job_id(), "] ", v1::JobState_Name(e.state()), e.phase().empty() ? "" : " " + e.phase(),
                                  "  step ", e.step(), "/", e.total_steps());
  absl::StrAppendFormat(&line, "  loss %.4f (text %.3f image %.3f margin %.3f)  acc text %.2f image %.2f", e.loss(),
                        e.loss_text(), e.loss_image(), e.loss_margin(), e.text_reward_accuracy(),
                        e.image_reward_accuracy());
  absl::StrAppendFormat(&line, "  %.2f samples/s  ETA %s", e.samples_per_second(), Duration(e.eta_seconds()));
  return line;
}

// The progress of one job among several on one terminal line.
std::string ShortProgressLine(const v1::JobEvent& e) {
  return absl::StrCat("[", e.job_id(), "] ", e.phase().empty() ? v1::JobState_Name(e.state()) : e.phase(), " ", e.step(),
                      "/", e.total_steps(), absl::StrFormat(" loss %.3f", e.loss()), " ETA ", Duration(e.eta_seconds()));
}

// The terminal (or log) that the watchers of several jobs share: event lines are printed whole;
// on a terminal the latest progress of every running job shares one line that is redrawn.
class WatchOutput {
 public:
  WatchOutput(bool json, bool tty, bool several) : json_(json), tty_(tty && !json), several_(several) {}

  void Show(const v1::JobEvent& e) {
    absl::MutexLock lock(&mu_);
    if (json_) {
      std::cout << ToJson(e) << "\n" << std::flush;
      return;
    }
    if (e.kind() == v1::JobEvent::PROGRESS) {
      progress_[e.job_id()] = e;
      if (!tty_) {
        std::cout << ProgressLine(e) << "\n" << std::flush;
        return;
      }
      std::string line;
      if (!several_) {
        line = ProgressLine(e);
      } else {
        for (const auto& [id, p] : progress_) absl::StrAppend(&line, line.empty() ? "" : "  |  ", ShortProgressLine(p));
      }
      std::cout << "\r\033[K" << line << std::flush;
      progress_shown_ = true;
      return;
    }
    if (progress_shown_) std::cout << "\n";
    progress_shown_ = false;
    const std::string what = e.kind() == v1::JobEvent::STATE
                                 ? absl::StrCat(v1::JobState_Name(e.state()), e.phase().empty() ? "" : " " + e.phase(), ": ")
                                 : "";
    std::cout << absl::FormatTime("%H:%M:%S", absl::FromUnixMillis(e.time_unix_ms()), absl::LocalTimeZone()) << " ["
              << e.job_id() << "] " << what << Printable(e.message()) << "\n"
              << std::flush;
    // A job that left its running states no longer shares the progress line.
    if (e.kind() == v1::JobEvent::STATE && e.state() != v1::TRAINING) progress_.erase(e.job_id());
  }

  void Note(const std::string& message) {
    absl::MutexLock lock(&mu_);
    if (json_) return;
    if (progress_shown_) std::cout << "\n";
    progress_shown_ = false;
    std::cerr << message << "\n";
  }

  void Finish() {
    absl::MutexLock lock(&mu_);
    if (progress_shown_) std::cout << "\n";
    progress_shown_ = false;
  }

 private:
  const bool json_, tty_, several_;
  absl::Mutex mu_;
  bool progress_shown_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, v1::JobEvent> progress_ ABSL_GUARDED_BY(mu_);
};

// Streams one job's events; reconnects (from the last sequence number seen) when the stream
// breaks, so a coordinator restart loses the watcher nothing. Returns the exit code of its
// outcome.
int WatchOne(Client& client, const std::string& id, int64_t after, WatchOutput& out) {
  auto last_ok = std::chrono::steady_clock::now();
  bool warned = false;
  v1::JobState final_state = v1::JOB_STATE_UNSPECIFIED;
  for (;;) {
    grpc::ClientContext context;
    // A stream has no overall deadline (jobs take hours); liveness comes from the reconnects.
    if (!client.options().security.token.empty())
      context.AddMetadata("authorization", absl::StrCat("Bearer ", client.options().security.token));
    v1::WatchJobRequest request;
    request.set_job_id(id);
    request.set_after_seq(after);
    std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = client.stub()->WatchJob(&context, request);
    v1::JobEvent e;
    while (reader->Read(&e)) {
      last_ok = std::chrono::steady_clock::now();
      if (warned) out.Note(absl::StrCat("mfpoctl: ", id, ": reconnected"));
      warned = false;
      if (e.seq() <= after) continue;  // never shown twice
      after = e.seq();
      out.Show(e);
      if (e.kind() == v1::JobEvent::STATE && (e.state() == v1::SUCCEEDED || e.state() == v1::FAILED || e.state() == v1::CANCELLED))
        final_state = e.state();
    }
    grpc::Status s = reader->Finish();
    if (s.ok()) break;  // the job ended and every event was delivered
    absl::Status status = FromGrpcStatus(s, absl::StrCat("WatchJob ", id, " (", client.options().server, ")"));
    if (!absl::IsUnavailable(status) && !absl::IsInternal(status) && !absl::IsCancelled(status) &&
        !absl::IsUnknown(status)) {
      out.Finish();
      return Fail(status);
    }
    // The coordinator went away (restart): try again for up to 10 minutes.
    if (std::chrono::steady_clock::now() - last_ok > std::chrono::minutes(10)) {
      out.Finish();
      return Fail(status);
    }
    if (!warned) out.Note(absl::StrCat("mfpoctl: ", status.message(), "; reconnecting (for up to 10 minutes)"));
    warned = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  if (final_state == v1::JOB_STATE_UNSPECIFIED) {
    // Watching from a sequence number past the final event: ask for the outcome.
    v1::GetJobRequest request;
    request.set_job_id(id);
    absl::StatusOr<v1::Job> j = client.Unary<v1::GetJobRequest, v1::Job>("GetJob", request, &v1::JobService::Stub::GetJob);
    if (!j.ok()) return Fail(j.status());
    final_state = j->state();
  }
  if (final_state == v1::SUCCEEDED) return 0;
  if (final_state == v1::CANCELLED) return kExitCancelled;
  return 1;
}

// Watches every job at once until all have ended. The exit code is the first job's that did not
// succeed (in the order given), 0 when all succeeded.
int Watch(Client& client, const std::vector<std::string>& ids, int64_t after) {
  WatchOutput out(client.options().json, isatty(STDOUT_FILENO) != 0, ids.size() > 1);
  std::vector<int> codes(ids.size(), 0);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < ids.size(); ++i)
    threads.emplace_back([&, i] { codes[i] = WatchOne(client, ids[i], after, out); });
  for (std::thread& t : threads) t.join();
  out.Finish();
  for (int code : codes)
    if (code != 0) return code;
  return 0;
}

struct Command {
  const char* name;
  const char* synopsis;
  std::vector<std::string> flags;
};

const std::vector<Command>& Commands() {
  static const auto* c = new std::vector<Command>{
      {"submit", "mfpoctl submit FILE [--priority N] [--watch]", {"priority", "watch"}},
      {"list", "mfpoctl list [--state S[,S...]] [--limit N]", {"state", "limit"}},
      {"get", "mfpoctl get JOB_ID", {}},
      {"watch", "mfpoctl watch JOB_ID [JOB_ID...] [--after SEQ]", {"after"}},
      {"cancel", "mfpoctl cancel JOB_ID", {}},
      {"workers", "mfpoctl workers", {}},
      {"health", "mfpoctl health [--service S]  (exit 0 when SERVING: container and exec probes)", {"service"}},
  };
  return *c;
}

std::string Usage() {
  std::string out = "mfpoctl: the MFPO job service's command line\n\n";
  for (const Command& c : Commands()) absl::StrAppend(&out, "  ", c.synopsis, "\n");
  absl::StrAppend(&out,
                  "\nEvery command: [--server HOST:PORT] [--json] [--timeout_s S] [--config FILE]\n"
                  "  [--tls_ca PEM [--tls_cert PEM --tls_key PEM] [--tls_server_name N]] [--token_file F]\n"
                  "Exit codes: 0 ok (watch: SUCCEEDED), 1 failed (watch: FAILED), 2 bad usage, spec or job id,\n"
                  "  3 CANCELLED, 4 server unreachable. `mfpoctl COMMAND --help` lists a command's flags.\n");
  return out;
}

}  // namespace
}  // namespace mfpo

int main(int argc, char** argv) {
  using namespace mfpo;
  // Flags may come before the command (`mfpoctl --server H:P list`): move the command first.
  std::vector<std::string> reordered = {argv[0]};
  {
    int command_at = -1;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--") break;
      if (a.size() > 1 && a[0] == '-') {
        const std::string name = a.substr(a.find_first_not_of('-'));
        const bool boolean = name == "json" || name == "watch" || name == "nojson" || name == "nowatch";
        if (a.find('=') == std::string::npos && !boolean && name != "help" && name != "h" && name != "version") ++i;
        continue;
      }
      command_at = i;
      break;
    }
    if (command_at > 1) reordered.push_back(argv[command_at]);
    for (int i = 1; i < argc; ++i)
      if (i != command_at || command_at <= 1) reordered.push_back(argv[i]);
  }
  std::vector<char*> reordered_argv;
  for (auto& a : reordered) reordered_argv.push_back(a.data());
  argc = static_cast<int>(reordered_argv.size());
  argv = reordered_argv.data();
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" || std::string(argv[1]) == "help") {
    std::cout << Usage();
    return argc < 2 ? 2 : 0;
  }
  if (std::string(argv[1]) == "--version") {
    std::cout << "mfpoctl " << MFPO_VERSION << "\n";
    return 0;
  }
  const std::string name = argv[1];
  if (name.size() > 1 && name[0] == '-') {
    std::cerr << "mfpoctl: no command given (flags go with a command: mfpoctl list --server HOST:PORT)\n\n" << Usage();
    return 2;
  }
  const Command* command = nullptr;
  for (const Command& c : Commands())
    if (name == c.name) command = &c;
  if (!command) {
    std::cerr << "mfpoctl: unknown command '" << name << "'\n\n" << Usage();
    return 2;
  }
  std::vector<std::string> flags = command->flags;
  flags.insert(flags.end(), kGlobal.begin(), kGlobal.end());
  std::vector<std::string> args;
  const int code = ParseSingleCommand(absl::StrCat("mfpoctl ", name), command->synopsis, flags, argc - 1, argv + 1,
                                      MFPO_VERSION, &args);
  if (code >= 0) return code;
  const char* home = std::getenv("HOME");  // main() only: the default config file's place
  absl::StatusOr<Options> options = LoadOptions(home ? home : "");
  if (!options.ok()) return Fail(options.status());
  absl::StatusOr<Client> client = Client::Connect(*options);
  if (!client.ok()) return Fail(client.status());
  if (name == "submit") return Submit(*client, args);
  if (!args.empty() && (name == "list" || name == "workers" || name == "health"))
    return Fail(absl::InvalidArgumentError(absl::StrCat("mfpoctl ", name, " takes no arguments")));
  if (name == "list") return List(*client);
  if (name == "get") return Get(*client, args);
  if (name == "cancel") return Cancel(*client, args);
  if (name == "workers") return Workers(*client);
  if (name == "health") {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(options->server, options->security);
    if (!channel.ok()) return Fail(channel.status());
    absl::StatusOr<int> status = CheckHealth(*channel, absl::GetFlag(FLAGS_service), options->timeout);
    if (!status.ok()) return Fail(status.status());
    const char* names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
    const std::string name = *status >= 0 && *status <= 3 ? names[*status] : "?";
    if (options->json)
      std::cout << "{\"status\":\"" << name << "\"}\n";
    else
      std::cout << name << "\n";
    return *status == 1 ? 0 : 1;
  }
  if (args.empty()) return Fail(absl::InvalidArgumentError("usage: mfpoctl watch JOB_ID [JOB_ID...]"));
  std::set<std::string> distinct(args.begin(), args.end());
  if (distinct.size() != args.size()) return Fail(absl::InvalidArgumentError("mfpoctl watch: a job is named twice"));
  if (args.size() > 64) return Fail(absl::InvalidArgumentError("mfpoctl watch: at most 64 jobs at once"));
  return Watch(*client, args, absl::GetFlag(FLAGS_after));
}
