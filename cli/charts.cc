#include "cli/charts.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"

namespace mfpo {
namespace {

const cv::Scalar kBlack(0, 0, 0), kGrey(200, 200, 200), kWhite(255, 255, 255);
// Tableau-like palette (BGR).
const std::vector<cv::Scalar> kPalette = {{180, 119, 31}, {14, 127, 255}, {44, 160, 44},  {40, 39, 214},
                                          {189, 103, 148}, {75, 86, 140}, {194, 119, 227}, {127, 127, 127}};
constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;

void Text(cv::Mat& img, const std::string& s, cv::Point at, double scale = 0.45, cv::Scalar colour = kBlack,
          int thickness = 1) {
  cv::putText(img, s, at, kFont, scale, colour, thickness, cv::LINE_AA);
}
int TextWidth(const std::string& s, double scale = 0.45) {
  int base = 0;
  return cv::getTextSize(s, kFont, scale, 1, &base).width;
}

// "Nice" tick step for a range.
double TickStep(double span) {
  if (!(span > 0)) return 1;
  const double raw = span / 5, p = std::pow(10, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * p) return m * p;
  return 10 * p;
}

std::string TickLabel(double v, double step) {
  const int decimals = step >= 1 ? 0 : std::min(6, static_cast<int>(std::ceil(-std::log10(step))));
  return absl::StrFormat("%.*f", decimals, v);
}

struct Frame {
  cv::Rect plot;  // the data area
  double x0, x1, y0, y1;
  cv::Point At(double x, double y) const {
    const double fx = x1 > x0 ? (x - x0) / (x1 - x0) : 0.5, fy = y1 > y0 ? (y - y0) / (y1 - y0) : 0.5;
    return {plot.x + static_cast<int>(std::lround(fx * plot.width)),
            plot.y + plot.height - static_cast<int>(std::lround(fy * plot.height))};
  }
};

// Axes with y grid lines and tick labels; x ticks when `x_ticks`.
void DrawAxes(cv::Mat& img, const Frame& f, bool x_ticks, const std::string& y_label) {
  const double ys = TickStep(f.y1 - f.y0);
  for (double v = std::ceil(f.y0 / ys) * ys; v <= f.y1 + 1e-12; v += ys) {
    const cv::Point p = f.At(f.x0, v);
    cv::line(img, {f.plot.x, p.y}, {f.plot.x + f.plot.width, p.y}, kGrey, 1);
    const std::string l = TickLabel(std::abs(v) < ys * 1e-9 ? 0 : v, ys);
    Text(img, l, {f.plot.x - 6 - TextWidth(l, 0.4), p.y + 4}, 0.4);
  }
  if (x_ticks) {
    const double xs = TickStep(f.x1 - f.x0);
    for (double v = std::ceil(f.x0 / xs) * xs; v <= f.x1 + 1e-12; v += xs) {
      const cv::Point p = f.At(v, f.y0);
      cv::line(img, {p.x, p.y}, {p.x, p.y + 4}, kBlack, 1);
      const std::string l = TickLabel(v, xs);
      Text(img, l, {p.x - TextWidth(l, 0.4) / 2, p.y + 18}, 0.4);
    }
  }
  cv::rectangle(img, f.plot, kBlack, 1);
  if (!y_label.empty()) Text(img, y_label, {f.plot.x, f.plot.y - 6}, 0.4);
}

absl::Status WritePng(const std::string& path, const cv::Mat& img) {
  MFPO_ASSIGN_OR_RETURN(std::vector<uchar> bytes, CatchAll(path, [&] {
                          std::vector<uchar> b;
                          if (!cv::imencode(".png", img, b)) b.clear();
                          return b;
                        }));
  if (bytes.empty()) return absl::InternalError(absl::StrCat(path, ": PNG encoding failed"));
  return WriteFileAtomically(path, std::string(bytes.begin(), bytes.end()));
}

}  // namespace

std::vector<double> MovingAverage(const std::vector<double>& y, int window) {
  std::vector<double> out(y.size(), std::nan(""));
  double sum = 0;
  int n = 0;
  std::vector<double> ring;
  for (size_t i = 0; i < y.size(); ++i) {
    if (std::isfinite(y[i])) {
      ring.push_back(y[i]);
      sum += y[i];
      ++n;
      if (n > window) {
        sum -= ring[ring.size() - 1 - window];
        --n;
      }
    }
    if (n > 0) out[i] = sum / n;
  }
  return out;
}

absl::Status WriteLineChart(const std::string& path, const std::string& title, const std::vector<LinePanel>& panels,
                            int columns) {
  if (panels.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no panels to draw"));
  columns = std::max(1, std::min<int>(columns, panels.size()));
  const int rows = (static_cast<int>(panels.size()) + columns - 1) / columns;
  const int pw = 580, ph = 300, top = 40;
  cv::Mat img(top + rows * ph, columns * pw, CV_8UC3, kWhite);
  Text(img, title, {16, 26}, 0.6, kBlack, 1);
  std::map<std::string, cv::Scalar> colour_of;
  for (const auto& p : panels)
    for (const auto& s : p.series)
      if (!colour_of.count(s.name)) colour_of[s.name] = kPalette[colour_of.size() % kPalette.size()];
  for (size_t k = 0; k < panels.size(); ++k) {
    const LinePanel& p = panels[k];
    const int ox = static_cast<int>(k % columns) * pw, oy = top + static_cast<int>(k / columns) * ph;
    Frame f{cv::Rect(ox + 60, oy + 40, pw - 210, ph - 80), 0, 1, 0, 1};
    bool any = false;
    for (const auto& s : p.series)
      for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
        if (!std::isfinite(s.y[i])) continue;
        if (!any) f.x0 = f.x1 = s.x[i], f.y0 = f.y1 = s.y[i];
        any = true;
        f.x0 = std::min(f.x0, s.x[i]), f.x1 = std::max(f.x1, s.x[i]);
        f.y0 = std::min(f.y0, s.y[i]), f.y1 = std::max(f.y1, s.y[i]);
      }
    if (f.y1 - f.y0 < 1e-9) f.y0 -= 0.5, f.y1 += 0.5;
    const double pad = 0.05 * (f.y1 - f.y0);
    f.y0 -= pad, f.y1 += pad;
    Text(img, p.title, {ox + 60, oy + 22}, 0.5);
    DrawAxes(img, f, any, p.y_label);
    int legend_y = oy + 52;
    for (const auto& s : p.series) {
      const cv::Scalar c = colour_of[s.name];
      std::vector<cv::Point> pts;
      for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
        if (std::isfinite(s.y[i])) pts.push_back(f.At(s.x[i], s.y[i]));
      if (pts.size() == 1) cv::circle(img, pts[0], 2, c, cv::FILLED, cv::LINE_AA);
      if (pts.size() > 1) cv::polylines(img, pts, false, c, 2, cv::LINE_AA);
      cv::line(img, {f.plot.x + f.plot.width + 8, legend_y - 4}, {f.plot.x + f.plot.width + 24, legend_y - 4}, c, 2);
      Text(img, s.name, {f.plot.x + f.plot.width + 28, legend_y}, 0.38);
      legend_y += 16;
    }
    Text(img, "step", {f.plot.x + f.plot.width / 2 - 12, f.plot.y + f.plot.height + 34}, 0.4);
  }
  return WritePng(path, img);
}

absl::Status WriteBarChart(const std::string& path, const std::string& title, const std::string& y_label,
                           const std::vector<std::string>& labels, const std::vector<BarGroup>& groups) {
  if (groups.empty() || labels.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no bars to draw"));
  const int group_w = std::max(120, 26 * static_cast<int>(labels.size()) + 40);
  const int width = 80 + group_w * static_cast<int>(groups.size()) + 150, height = 420;
  cv::Mat img(height, width, CV_8UC3, kWhite);
  Text(img, title, {16, 26}, 0.6);
  Frame f{cv::Rect(70, 50, group_w * static_cast<int>(groups.size()), height - 120), 0, 1, 0, 0};
  for (const auto& g : groups)
    for (size_t i = 0; i < labels.size(); ++i)
      for (double v : {i < g.value.size() ? g.value[i] : NAN, i < g.lo.size() ? g.lo[i] : NAN,
                       i < g.hi.size() ? g.hi[i] : NAN})
        if (std::isfinite(v)) f.y0 = std::min(f.y0, v), f.y1 = std::max(f.y1, v);
  if (f.y1 - f.y0 < 1e-9) f.y1 = f.y0 + 1;
  f.y1 += 0.05 * (f.y1 - f.y0);
  DrawAxes(img, f, false, y_label);
  const int bar_w = (group_w - 40) / static_cast<int>(labels.size());
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const BarGroup& g = groups[gi];
    const int gx = f.plot.x + static_cast<int>(gi) * group_w + 20;
    for (size_t i = 0; i < labels.size(); ++i) {
      const double v = i < g.value.size() ? g.value[i] : NAN;
      if (!std::isfinite(v)) continue;
      const cv::Scalar c = kPalette[i % kPalette.size()];
      const int x = gx + static_cast<int>(i) * bar_w;
      const cv::Point base = f.At(0, 0), tip = f.At(0, v);
      cv::rectangle(img, cv::Point(x + 2, std::min(base.y, tip.y)), cv::Point(x + bar_w - 2, std::max(base.y, tip.y)),
                    c, cv::FILLED);
      const double lo = i < g.lo.size() ? g.lo[i] : NAN, hi = i < g.hi.size() ? g.hi[i] : NAN;
      if (std::isfinite(lo) && std::isfinite(hi)) {
        const int cx = x + bar_w / 2, ylo = f.At(0, lo).y, yhi = f.At(0, hi).y;
        cv::line(img, {cx, ylo}, {cx, yhi}, kBlack, 1, cv::LINE_AA);
        cv::line(img, {cx - 4, ylo}, {cx + 4, ylo}, kBlack, 1, cv::LINE_AA);
        cv::line(img, {cx - 4, yhi}, {cx + 4, yhi}, kBlack, 1, cv::LINE_AA);
      }
    }
    Text(img, g.name, {gx + (group_w - 40) / 2 - TextWidth(g.name, 0.42) / 2, f.plot.y + f.plot.height + 22}, 0.42);
  }
  int ly = 60;
  for (size_t i = 0; i < labels.size(); ++i, ly += 20) {
    const int lx = f.plot.x + f.plot.width + 16;
    cv::rectangle(img, cv::Point(lx, ly - 10), cv::Point(lx + 12, ly + 2), kPalette[i % kPalette.size()], cv::FILLED);
    Text(img, labels[i], {lx + 18, ly}, 0.42);
  }
  Text(img, "error bars: 95% bootstrap interval over the test images", {70, height - 20}, 0.4);
  return WritePng(path, img);
}

}  // namespace mfpo
