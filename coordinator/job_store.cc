#include "coordinator/job_store.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace mfpo {
namespace {

constexpr int kSchemaVersion = 1;

// Finalizes a prepared statement however the scope ends.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Statement() { sqlite3_finalize(stmt_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return stmt_; }
  void BindText(int i, const std::string& s) { sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT); }
  void BindBlob(int i, const std::string& s) { sqlite3_bind_blob(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT); }
  void BindInt(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  std::string Blob(int col) {
    const void* p = sqlite3_column_blob(stmt_, col);
    return std::string(static_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_ERROR;
};

}  // namespace

absl::Status JobStore::Error(const char* what) const {
  const int code = sqlite3_errcode(db_);
  std::string message = absl::StrCat(path_, ": ", what, ": ", sqlite3_errmsg(db_));
  if (code == SQLITE_FULL || code == SQLITE_IOERR)
    return absl::ResourceExhaustedError(absl::StrCat(message, " (is the disk full?)"));
  if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB)
    return absl::DataLossError(absl::StrCat(message, " (not a coordinator database, or damaged)"));
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
    return absl::UnavailableError(absl::StrCat(message, " (another coordinator uses this database?)"));
  return absl::InternalError(message);
}

absl::Status JobStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string text = err ? err : "unknown error";
    sqlite3_free(err);
    absl::Status s = Error(sql);
    const int code = sqlite3_errcode(db_);
    const char* hint = code == SQLITE_BUSY || code == SQLITE_LOCKED ? " (another coordinator uses this database)"
                       : code == SQLITE_FULL                       ? " (the disk is full)"
                       : code == SQLITE_NOTADB || code == SQLITE_CORRUPT ? " (not a coordinator database, or damaged)"
                                                                          : "";
    return absl::Status(s.code(), absl::StrCat(path_, ": ", text, hint, " (in: ", sql, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) !=
      SQLITE_OK) {
    std::string message = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat(path, ": cannot open the database: ", message));
  }
  std::unique_ptr<JobStore> store(new JobStore(db, path));
  sqlite3_busy_timeout(db, 2000);
  // A second coordinator on the same file would corrupt the jobs' state machines: take the file
  // exclusively for this process's lifetime.
  MFPO_RETURN_IF_ERROR(store->Exec("PRAGMA locking_mode=EXCLUSIVE"));
  MFPO_RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL"));
  MFPO_RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=FULL"));
  MFPO_RETURN_IF_ERROR(store->Exec(
      "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
      "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, number INTEGER NOT NULL UNIQUE, record BLOB NOT NULL);"
      "CREATE TABLE IF NOT EXISTS events (job_id TEXT NOT NULL, seq INTEGER NOT NULL, event BLOB NOT NULL,"
      "  PRIMARY KEY (job_id, seq));"
      "CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, info BLOB NOT NULL);"));
  {
    Statement q(db, "SELECT value FROM meta WHERE key = 'schema_version'");
    if (!q.ok()) return store->Error("reading the schema version");
    if (sqlite3_step(q.get()) == SQLITE_ROW) {
      const int64_t v = sqlite3_column_int64(q.get(), 0);
      if (v != kSchemaVersion)
        return absl::FailedPreconditionError(absl::StrCat(path, ": database schema version ", v, ", this coordinator reads ",
                                                          kSchemaVersion));
    } else {
      MFPO_RETURN_IF_ERROR(store->Exec(absl::StrCat("INSERT INTO meta VALUES ('schema_version', ", kSchemaVersion, ")").c_str()));
    }
  }
  // A write takes the exclusive lock now (reads alone would only share it).
  MFPO_RETURN_IF_ERROR(store->Exec("INSERT OR REPLACE INTO meta VALUES ('opened', strftime('%s', 'now'))"));
  return store;
}

JobStore::~JobStore() { sqlite3_close(db_); }

absl::StatusOr<int64_t> JobStore::Increment(const std::string& key) {
  MFPO_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  Statement up(db_, "INSERT INTO meta VALUES (?1, 1) ON CONFLICT(key) DO UPDATE SET value = value + 1 RETURNING value");
  if (!up.ok()) {
    absl::Status s = Error("incrementing a counter");
    (void)Exec("ROLLBACK");
    return s;
  }
  up.BindText(1, key);
  if (sqlite3_step(up.get()) != SQLITE_ROW) {
    absl::Status s = Error("incrementing a counter");
    (void)Exec("ROLLBACK");
    return s;
  }
  const int64_t value = sqlite3_column_int64(up.get(), 0);
  sqlite3_reset(up.get());
  MFPO_RETURN_IF_ERROR(Exec("COMMIT"));
  return value;
}

absl::StatusOr<int64_t> JobStore::NextJobNumber() { return Increment("job_number"); }

absl::Status JobStore::PutJob(const v1::internal::JobRecord& record, const std::vector<v1::JobEvent>& events) {
  MFPO_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [&](const char* what) {
    absl::Status s = Error(what);
    (void)Exec("ROLLBACK");
    return s;
  };
  {
    Statement put(db_, "INSERT OR REPLACE INTO jobs (id, number, record) VALUES (?1, ?2, ?3)");
    if (!put.ok()) return fail("storing a job");
    put.BindText(1, record.job().id());
    put.BindInt(2, record.number());
    put.BindBlob(3, record.SerializeAsString());
    if (sqlite3_step(put.get()) != SQLITE_DONE) return fail("storing a job");
  }
  for (const v1::JobEvent& e : events) {
    Statement put(db_, "INSERT INTO events (job_id, seq, event) VALUES (?1, ?2, ?3)");
    if (!put.ok()) return fail("storing an event");
    put.BindText(1, e.job_id());
    put.BindInt(2, e.seq());
    put.BindBlob(3, e.SerializeAsString());
    if (sqlite3_step(put.get()) != SQLITE_DONE) return fail("storing an event");
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return fail("committing");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::internal::JobRecord>> JobStore::LoadJobs() {
  Statement q(db_, "SELECT id, record FROM jobs ORDER BY number");
  if (!q.ok()) return Error("reading jobs");
  std::vector<v1::internal::JobRecord> out;
  int rc;
  while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
    v1::internal::JobRecord r;
    if (!r.ParseFromString(q.Blob(1)))
      return absl::DataLossError(absl::StrCat(path_, ": job ", reinterpret_cast<const char*>(sqlite3_column_text(q.get(), 0)),
                                              ": its record does not parse"));
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return Error("reading jobs");
  return out;
}

absl::StatusOr<std::vector<v1::JobEvent>> JobStore::Events(const std::string& job_id, int64_t after_seq, int limit) {
  Statement q(db_, "SELECT event FROM events WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3");
  if (!q.ok()) return Error("reading events");
  q.BindText(1, job_id);
  q.BindInt(2, after_seq);
  q.BindInt(3, limit);
  std::vector<v1::JobEvent> out;
  int rc;
  while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
    v1::JobEvent e;
    if (!e.ParseFromString(q.Blob(0))) return absl::DataLossError(absl::StrCat(path_, ": an event of job ", job_id, " does not parse"));
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return Error("reading events");
  return out;
}

absl::Status JobStore::PutWorker(const v1::WorkerInfo& worker) {
  Statement put(db_, "INSERT OR REPLACE INTO workers (id, info) VALUES (?1, ?2)");
  if (!put.ok()) return Error("storing a worker");
  put.BindText(1, worker.id());
  put.BindBlob(2, worker.SerializeAsString());
  if (sqlite3_step(put.get()) != SQLITE_DONE) return Error("storing a worker");
  return absl::OkStatus();
}

absl::Status JobStore::DeleteWorker(const std::string& id) {
  Statement del(db_, "DELETE FROM workers WHERE id = ?1");
  if (!del.ok()) return Error("removing a worker");
  del.BindText(1, id);
  if (sqlite3_step(del.get()) != SQLITE_DONE) return Error("removing a worker");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::WorkerInfo>> JobStore::LoadWorkers() {
  Statement q(db_, "SELECT info FROM workers ORDER BY id");
  if (!q.ok()) return Error("reading workers");
  std::vector<v1::WorkerInfo> out;
  int rc;
  while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
    v1::WorkerInfo w;
    if (!w.ParseFromString(q.Blob(0))) return absl::DataLossError(absl::StrCat(path_, ": a worker record does not parse"));
    out.push_back(std::move(w));
  }
  if (rc != SQLITE_DONE) return Error("reading workers");
  return out;
}

}  // namespace mfpo
