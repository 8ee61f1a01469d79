// Small PNG charts drawn with OpenCV for the experiment report: line charts (loss terms and
// reward accuracies per step, one panel per run) and a grouped bar chart with error bars (the
// result table). No plotting library is needed on the machine.
#ifndef MFPO_CLI_CHARTS_H_
#define MFPO_CLI_CHARTS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace mfpo {

struct Series {
  std::string name;
  std::vector<double> x, y;  // same length; non-finite y values are skipped
};
struct LinePanel {
  std::string title, y_label;
  std::vector<Series> series;
};
// Panels side by side in a grid of `columns`; the same colour for the same series name in
// every panel. Writes a PNG (atomically).
absl::Status WriteLineChart(const std::string& path, const std::string& title, const std::vector<LinePanel>& panels,
                            int columns = 2);

struct BarGroup {
  std::string name;                 // a metric
  std::vector<double> value, lo, hi;  // one per bar label (NaN: no bar)
};
// Grouped bars: one group per metric, one bar per label, with [lo, hi] error bars.
absl::Status WriteBarChart(const std::string& path, const std::string& title, const std::string& y_label,
                           const std::vector<std::string>& labels, const std::vector<BarGroup>& groups);

// Trailing moving average over `window` points (the noisy per-step batch means).
std::vector<double> MovingAverage(const std::vector<double>& y, int window);

}  // namespace mfpo

#endif  // MFPO_CLI_CHARTS_H_
