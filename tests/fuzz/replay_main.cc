// Replays a fuzz target over corpus files without libFuzzer (the normal gcc build):
//   mfpo_fuzz_replay_<name> [-timeout=SECONDS] [-rss_limit_mb=MB] DIR_OR_FILE...
// Calls LLVMFuzzerTestOneInput once per regular file (directories are walked recursively, in
// name order) and names each file before running it, so that a crash names its input.
// -timeout bounds each input (SIGALRM ends the process); -rss_limit_mb caps the address space
// (RLIMIT_AS), so that an input that would allocate without bound fails instead of swapping.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

char g_current[4096] = "";

void OnAlarm(int) {
  const char msg[] = "replay: timeout on ";
  (void)!::write(2, msg, sizeof(msg) - 1);
  (void)!::write(2, g_current, std::strlen(g_current));
  (void)!::write(2, "\n", 1);
  std::_Exit(70);
}

bool ParseFlag(const char* arg, const char* name, long* value) {
  const size_t n = std::strlen(name);
  if (std::strncmp(arg, name, n) != 0 || arg[n] != '=') return false;
  char* end = nullptr;
  *value = std::strtol(arg + n + 1, &end, 10);
  return end != arg + n + 1 && *end == '\0' && *value >= 0;
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  long timeout_s = 0, rss_limit_mb = 0;
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    if (argv[i][0] == '-') {
      if (!ParseFlag(argv[i], "-timeout", &timeout_s) && !ParseFlag(argv[i], "-rss_limit_mb", &rss_limit_mb)) {
        std::fprintf(stderr, "%s: unknown flag %s\n", argv[0], argv[i]);
        return 2;
      }
      continue;
    }
    const fs::path p(argv[i]);
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (const auto& e : fs::recursive_directory_iterator(p, ec))
        if (e.is_regular_file()) files.push_back(e.path());
      if (ec) {
        std::fprintf(stderr, "%s: %s\n", argv[i], ec.message().c_str());
        return 2;
      }
    } else if (fs::is_regular_file(p, ec)) {
      files.push_back(p);
    } else {
      std::fprintf(stderr, "%s: not a file or directory\n", argv[i]);
      return 2;
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "usage: %s [-timeout=S] [-rss_limit_mb=MB] CORPUS_DIR_OR_FILE...\n", argv[0]);
    return 2;
  }
  if (rss_limit_mb > 0) {
    const rlim_t bytes = static_cast<rlim_t>(rss_limit_mb) << 20;
    struct rlimit lim = {bytes, bytes};
    if (::setrlimit(RLIMIT_AS, &lim) != 0) std::perror("setrlimit(RLIMIT_AS)");
  }
  if (timeout_s > 0) std::signal(SIGALRM, OnAlarm);
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "%s: cannot open\n", f.c_str());
      return 2;
    }
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::snprintf(g_current, sizeof(g_current), "%s", f.c_str());
    std::fprintf(stderr, "replay %s (%zu bytes)\n", f.c_str(), bytes.size());
    std::fflush(stderr);
    if (timeout_s > 0) ::alarm(static_cast<unsigned>(timeout_s));
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    ::alarm(0);
  }
  std::fprintf(stderr, "replayed %zu inputs\n", files.size());
  return 0;
}
