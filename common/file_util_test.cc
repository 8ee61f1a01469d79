#include "common/file_util.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "common/jsonl.h"

namespace mfpo {
namespace {
namespace fs = std::filesystem;

class FileUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("file_util_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(FileUtilTest, DirectoriesDevicesAndFifosAreRefusedNotReadForever) {
  const fs::path fifo = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  const auto t0 = std::chrono::steady_clock::now();
  for (const std::string& path : {dir_.string(), std::string("/dev/null"), std::string("/dev/zero"), fifo.string()}) {
    absl::StatusOr<std::string> r = ReadFileToString(path, "manifest");
    ASSERT_FALSE(r.ok()) << path;
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
    EXPECT_TRUE(absl::StrContains(r.status().message(), path + ": manifest is a")) << r.status();
    nlohmann::json j;
    EXPECT_FALSE(ReadJsonFile(path, &j).ok()) << path;
    EXPECT_FALSE(ReadJsonl(path, [](int, const nlohmann::json&) { return absl::OkStatus(); }).ok()) << path;
  }
  EXPECT_TRUE(absl::StrContains(ReadFileToString(fifo.string()).status().message(), "a FIFO"));
  EXPECT_TRUE(absl::StrContains(ReadFileToString("/dev/null").status().message(), "a character device"));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_TRUE(absl::IsNotFound(ReadFileToString((dir_ / "missing").string()).status()));
  EXPECT_FALSE(ReadFileToString("").ok());
}

TEST_F(FileUtilTest, AWriteBlockedByADirectoryIsAPathErrorAndLeavesNoTemporaryFile) {
  fs::create_directories(dir_ / "blocked");
  absl::Status s = WriteFileAtomically((dir_ / "blocked").string(), "x");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_FALSE(IsStorageWideError(s));
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir_)) entries += e.path().filename() != "blocked";
  EXPECT_EQ(entries, 0) << "a temporary file was left behind";
}

// A full disk, simulated without privileges: a file-size limit makes write() fail (EFBIG, the
// same class as ENOSPC) in a child process.
TEST_F(FileUtilTest, AFullDiskIsAStorageWideErrorAndKeepsTheOldFile) {
  const fs::path target = dir_ / "data.bin";
  ASSERT_TRUE(WriteFileAtomically(target.string(), "old").ok());
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit{4096, 4096};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    absl::Status s = WriteFileAtomically(target.string(), std::string(1 << 20, 'x'));
    const bool ok = !s.ok() && absl::IsResourceExhausted(s) && IsStorageWideError(s) &&
                    absl::StrContains(s.message(), "File too large");
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the write did not fail as RESOURCE_EXHAUSTED";
  EXPECT_EQ(ReadFileToString(target.string()).value_or(""), "old");
  int entries = 0;
  for (auto it = fs::directory_iterator(dir_); it != fs::directory_iterator(); ++it) ++entries;
  EXPECT_EQ(entries, 1) << "a temporary file was left behind";
}

TEST(ErrnoStatusTest, CodesSayWhatKindOfFailure) {
  EXPECT_TRUE(absl::IsResourceExhausted(ErrnoStatus(ENOSPC, "p", "write")));
  EXPECT_TRUE(absl::IsResourceExhausted(ErrnoStatus(EDQUOT, "p", "write")));
  EXPECT_TRUE(absl::IsPermissionDenied(ErrnoStatus(EROFS, "p", "write")));
  EXPECT_TRUE(absl::IsNotFound(ErrnoStatus(ENOENT, "p", "open")));
  EXPECT_TRUE(absl::IsFailedPrecondition(ErrnoStatus(ENAMETOOLONG, "p", "open")));
  EXPECT_EQ(ErrnoStatus(ENOSPC, "/x/y", "write failed").message(), "/x/y: write failed: No space left on device");
}

TEST(ParseJsonTest, NestingIsBoundedBeforeParsing) {
  EXPECT_TRUE(ParseJson(std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']')).ok());
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  absl::StatusOr<nlohmann::json> j = ParseJson(deep);
  ASSERT_FALSE(j.ok());
  EXPECT_TRUE(absl::StrContains(j.status().message(), "nested deeper than 64")) << j.status();
  // Brackets inside strings do not count.
  EXPECT_TRUE(ParseJson("{\"a\": \"" + std::string(1000, '[') + "\\\"\"}").ok());
  EXPECT_FALSE(ParseJson("{\"a\": ").ok());
}

TEST_F(FileUtilTest, ADeepLineIsThatLinesErrorInJsonl) {
  std::ofstream(dir_ / "m.jsonl") << "{\"id\": \"a\"}\n{\"x\": " << std::string(50000, '[') << "\n{\"id\": \"b\"}\n";
  std::vector<std::string> ids, errors;
  absl::Status s = ReadJsonl(
      (dir_ / "m.jsonl").string(),
      [&](int, const nlohmann::json& j) {
        ids.push_back(j.value("id", ""));
        return absl::OkStatus();
      },
      [&](int line, const std::string& why) { errors.push_back(std::to_string(line) + ": " + why); });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], "2: JSON nested deeper than 64 levels");
}

// An output that exists and is not a regular file is never replaced (`--out /dev/null` must not
// delete the device); a symlink is written through.
TEST_F(FileUtilTest, OutputsThatAreDevicesOrFifosAreRefusedAndSymlinksWrittenThrough) {
  const fs::path fifo = dir_ / "out.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  for (const fs::path& p : {fifo, fs::path("/dev/null")}) {
    absl::Status s = WriteFileAtomically(p.string(), "x");
    ASSERT_FALSE(s.ok()) << p;
    EXPECT_TRUE(absl::StrContains(s.message(), "refusing to replace it")) << s;
  }
  EXPECT_TRUE(fs::is_fifo(fifo));
  EXPECT_TRUE(fs::is_character_file("/dev/null"));
  ASSERT_TRUE(WriteFileAtomically((dir_ / "target.txt").string(), "old").ok());
  fs::create_symlink(dir_ / "target.txt", dir_ / "link.txt");
  ASSERT_TRUE(WriteFileAtomically((dir_ / "link.txt").string(), "new").ok());
  EXPECT_TRUE(fs::is_symlink(dir_ / "link.txt"));
  EXPECT_EQ(ReadFileToString((dir_ / "target.txt").string()).value_or(""), "new");
  absl::Status streamed = WriteFileStreamed((dir_ / "s.bin").string(), [](const PieceWriter& write) {
    write("ab", 2);
    write("cd", 2);
    return absl::OkStatus();
  });
  ASSERT_TRUE(streamed.ok()) << streamed;
  EXPECT_EQ(ReadFileToString((dir_ / "s.bin").string()).value_or(""), "abcd");
}

// A file larger than the caller's limit is refused from its size, before a byte is read (a 64 GB
// "image" used to be read into memory first).
TEST_F(FileUtilTest, OversizedFilesAreRefusedBeforeReading) {
  const fs::path big = dir_ / "big.png";
  { std::ofstream(big) << "x"; }
  fs::resize_file(big, int64_t{64} << 30);  // sparse: no disk used
  const auto t0 = std::chrono::steady_clock::now();
  auto r = ReadFileToString(big.string(), "image", 256 << 20);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(r.status())) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "68719476736 bytes, above the limit of 268435456")) << r.status();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST_F(FileUtilTest, StaleTemporaryFilesOfDeadProcessesAreRemoved) {
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  std::string tag = host;
  for (char& c : tag)
    if (c == '.' || c == '/') c = '_';
  const std::string dead = "a.png.tmp." + tag + "-999999999.0";  // no such process
  const std::string alive = "b.png.tmp." + tag + "-" + std::to_string(::getpid()) + ".0";
  const std::string foreign = "c.png.tmp.other_machine-1.0";  // recent: its writer may be alive
  for (const auto& name : {dead, alive, foreign}) std::ofstream(dir_ / name) << "partial";
  EXPECT_EQ(RemoveStaleTemporaryFiles(dir_.string()), 1);
  EXPECT_FALSE(fs::exists(dir_ / dead));
  EXPECT_TRUE(fs::exists(dir_ / alive));
  EXPECT_TRUE(fs::exists(dir_ / foreign));
  EXPECT_EQ(RemoveStaleTemporaryFiles(dir_.string(), /*min_age_seconds=*/0), 1);
  EXPECT_FALSE(fs::exists(dir_ / foreign));
}

TEST_F(FileUtilTest, NewOutputDirectoriesMustBeEmptyUnlessOverwriting) {
  EXPECT_TRUE(CheckNewOutputDir((dir_ / "new").string(), false).ok());
  fs::create_directories(dir_ / "empty");
  EXPECT_TRUE(CheckNewOutputDir((dir_ / "empty").string(), false).ok());
  std::ofstream(dir_ / "empty" / "f") << "x";
  absl::Status s = CheckNewOutputDir((dir_ / "empty").string(), false);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "--overwrite")) << s;
  EXPECT_TRUE(CheckNewOutputDir((dir_ / "empty").string(), true).ok());
  EXPECT_FALSE(CheckNewOutputDir((dir_ / "empty" / "f").string(), true).ok());
}

TEST_F(FileUtilTest, ADirectoryLockExcludesASecondWriter) {
  auto first = DirectoryLock::Acquire(dir_.string());
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = DirectoryLock::Acquire(dir_.string());
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(absl::StrContains(second.status().message(), "another process is writing this directory")) << second.status();
  first->reset();
  EXPECT_TRUE(DirectoryLock::Acquire(dir_.string()).ok());
}

}  // namespace
}  // namespace mfpo
