// `mfpo report`: the experiment report over several evaluated runs (command 1, the ablations):
// the result table with 95% bootstrap intervals over the test images, paired differences of one
// model against the others, means over seeds, and PNG plots of the training curves and of the
// table. Reads what `mfpo eval` / `mfpo train` wrote; writes report.md, report.json, *.png.
#ifndef MFPO_CLI_REPORT_COMMAND_H_
#define MFPO_CLI_REPORT_COMMAND_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mfpo {

struct ReportRun {
  std::string label;  // the table's row, e.g. "+ MFPO"
  std::string seed;   // the training seed it belongs to ("" when one seed only)
  // A `mfpo train` output_dir (its eval/ and metrics.jsonl are read) or a `mfpo eval --out` dir.
  std::string dir;
};
// "LABEL=DIR" or "LABEL@SEED=DIR".
absl::StatusOr<ReportRun> ParseReportRun(const std::string& text);

struct ReportCommandOptions {
  std::vector<ReportRun> runs;
  std::string out_dir;
  std::string title = "MFPO on the scene world";
  std::string focus;        // the label compared with every other (default: the last label)
  std::string notes_path;   // markdown appended to report.md (which seeds and worlds did what)
  // Metrics (ReportMetrics names) for which `focus` must beat every other label.
  std::vector<std::string> claim = {"chair_s", "chair_i"};
  // The labels `focus` must beat on `claim` (empty: every other label), each with disjoint
  // intervals and recall at most 2 points lower.
  std::vector<std::string> claim_against;
  // When set, `focus`'s reliance gap must also be above this label's (it uses the image more).
  std::string claim_gap_over;
  int resamples = 2000;
  uint64_t seed = 0;
  bool overwrite = false;
};
absl::Status RunReport(const ReportCommandOptions& options, std::ostream& out);

}  // namespace mfpo

#endif  // MFPO_CLI_REPORT_COMMAND_H_
