#include "datagen/scene_world.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"
#include "datagen/diffusion_noise.h"

namespace mfpo {
namespace fs = std::filesystem;
using json = nlohmann::json;

const std::vector<WorldKind>& WorldKinds() {
  static const std::vector<WorldKind> kinds = {
      {"ball", {"ball", "sphere", "orb"}, "red", "box"},
      {"box", {"box", "cube", "crate"}, "brown", "ball"},
      {"tree", {"tree", "pine"}, "green", "house"},
      {"house", {"house", "home", "cottage", "building"}, "white", "tree"},
      {"car", {"car", "automobile", "vehicle"}, "blue", "kite"},
      {"cup", {"cup", "mug"}, "yellow", "clock"},
      {"star", {"star"}, "yellow", "flower"},
      {"kite", {"kite"}, "purple", "car"},
      {"clock", {"clock"}, "black", "cup"},
      {"flower", {"flower", "blossom"}, "pink", "star"},
  };
  return kinds;
}

const std::vector<WorldColour>& WorldColours() {
  static const std::vector<WorldColour> colours = {
      {"red", {220, 30, 30}},    {"green", {30, 160, 40}},  {"blue", {30, 70, 220}},
      {"yellow", {240, 220, 20}}, {"orange", {245, 140, 20}}, {"purple", {140, 40, 180}},
      {"pink", {245, 120, 190}},  {"brown", {130, 80, 30}},  {"black", {15, 15, 15}},
      {"white", {250, 250, 250}},
  };
  return colours;
}

std::string NumberWord(int n) {
  static const char* kWords[] = {"zero", "one", "two", "three", "four", "five",
                                 "six",  "seven", "eight", "nine", "ten"};
  return n >= 0 && n <= 10 ? kWords[n] : std::to_string(n);
}

namespace {

const WorldKind& Kind(const std::string& name) {
  for (const auto& k : WorldKinds())
    if (k.name == name) return k;
  return WorldKinds()[0];
}

cv::Scalar Rgb(const std::string& colour) {
  for (const auto& c : WorldColours())
    if (c.name == colour) return cv::Scalar(c.rgb[0], c.rgb[1], c.rgb[2]);
  return cv::Scalar(0, 0, 0);
}

std::string Plural(const std::string& kind) {
  return kind == "box" ? "boxes" : kind + "s";
}

// Draws `o` filling (most of) its box; all strokes in the object's exact colour. Drawing goes
// through a view of the box, so nothing can land outside it.
void DrawObject(cv::Mat& full, const WorldObject& box) {
  cv::Mat img = full(cv::Rect(box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0));
  WorldObject o = box;  // local coordinates
  o.x1 -= o.x0;
  o.y1 -= o.y0;
  o.x0 = o.y0 = 0;
  const cv::Scalar c = Rgb(o.colour);
  const int w = o.x1 - o.x0, h = o.y1 - o.y0;
  const cv::Point ctr(o.x0 + w / 2, o.y0 + h / 2);
  const int r = std::min(w, h) / 2;
  auto poly = [&](std::vector<cv::Point> pts) { cv::fillPoly(img, std::vector<std::vector<cv::Point>>{pts}, c); };
  auto px = [&](double fx, double fy) { return cv::Point(o.x0 + int(fx * (w - 1)), o.y0 + int(fy * (h - 1))); };
  if (o.kind == "ball") {
    cv::circle(img, ctr, r, c, cv::FILLED);
  } else if (o.kind == "box") {
    cv::rectangle(img, px(0.05, 0.05), px(0.95, 0.95), c, cv::FILLED);
  } else if (o.kind == "tree") {
    poly({px(0.5, 0.0), px(0.95, 0.75), px(0.05, 0.75)});
    cv::rectangle(img, px(0.4, 0.75), px(0.6, 1.0), c, cv::FILLED);
  } else if (o.kind == "house") {
    poly({px(0.5, 0.0), px(1.0, 0.45), px(0.0, 0.45)});
    cv::rectangle(img, px(0.12, 0.45), px(0.88, 1.0), c, cv::FILLED);
  } else if (o.kind == "car") {
    cv::rectangle(img, px(0.0, 0.3), px(1.0, 0.75), c, cv::FILLED);
    cv::rectangle(img, px(0.25, 0.05), px(0.75, 0.3), c, cv::FILLED);
    cv::circle(img, px(0.22, 0.82), std::max(1, h / 6), c, cv::FILLED);
    cv::circle(img, px(0.78, 0.82), std::max(1, h / 6), c, cv::FILLED);
  } else if (o.kind == "cup") {
    poly({px(0.05, 0.1), px(0.75, 0.1), px(0.62, 1.0), px(0.18, 1.0)});
    cv::ellipse(img, px(0.78, 0.45), cv::Size(std::max(1, w / 6), std::max(1, h / 5)), 0, 0, 360, c,
                std::max(1, w / 14));
  } else if (o.kind == "star") {
    std::vector<cv::Point> pts;
    for (int i = 0; i < 10; ++i) {
      const double a = -M_PI / 2 + i * M_PI / 5, rr = i % 2 == 0 ? 1.0 : 0.45;
      pts.push_back(cv::Point(ctr.x + int(rr * r * std::cos(a)), ctr.y + int(rr * r * std::sin(a))));
    }
    poly(pts);
  } else if (o.kind == "kite") {
    poly({px(0.5, 0.0), px(0.9, 0.4), px(0.5, 0.8), px(0.1, 0.4)});
    cv::line(img, px(0.5, 0.8), px(0.7, 1.0), c, std::max(1, w / 16));
  } else if (o.kind == "clock") {
    cv::circle(img, ctr, r * 5 / 6, c, std::max(2, r / 3));
    cv::line(img, ctr, cv::Point(ctr.x, ctr.y - r * 2 / 3), c, std::max(1, r / 5));
    cv::line(img, ctr, cv::Point(ctr.x + r / 2, ctr.y), c, std::max(1, r / 5));
  } else {  // flower
    for (int i = 0; i < 5; ++i) {
      const double a = i * 2 * M_PI / 5;
      cv::circle(img, cv::Point(ctr.x + int(0.55 * r * std::cos(a)), ctr.y + int(0.55 * r * std::sin(a))),
                 std::max(1, r * 2 / 5), c, cv::FILLED);
    }
    cv::circle(img, ctr, std::max(1, r / 4), c, cv::FILLED);
  }
}

double Iou(const WorldObject& a, const WorldObject& b) {
  const int ix = std::max(0, std::min(a.x1, b.x1) - std::max(a.x0, b.x0));
  const int iy = std::max(0, std::min(a.y1, b.y1) - std::max(a.y0, b.y0));
  const double inter = double(ix) * iy;
  const double uni = double(a.x1 - a.x0) * (a.y1 - a.y0) + double(b.x1 - b.x0) * (b.y1 - b.y0) - inter;
  return uni > 0 ? inter / uni : 0;
}

std::string Phrase(const WorldObject& o) { return absl::StrCat(o.colour == "orange" ? "an " : "a ", o.colour, " ", o.kind); }

std::string ListPhrase(const std::vector<std::string>& items) {
  if (items.size() == 1) return items[0];
  return absl::StrCat(absl::StrJoin(items.begin(), items.end() - 1, ", "), " and ", items.back());
}

}  // namespace

WorldSample GenerateWorldSample(const WorldOptions& o, const std::string& split, int index,
                                cv::Mat* image) {
  WorldSample s;
  s.id = absl::StrCat(split, "-", index);
  s.split = split;
  std::mt19937_64 rng(SampleSeed(o.seed, s.id));
  auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  auto pick = [&](int n) { return static_cast<int>(std::uniform_int_distribution<int>(0, n - 1)(rng)); };
  const bool priors = split != "test";
  const auto& kinds = WorldKinds();
  const auto& colours = WorldColours();

  // Which kinds: an anchor, its partner with the co-occurrence prior, maybe a random extra.
  std::vector<std::string> chosen;
  const WorldKind& anchor = kinds[pick(kinds.size())];
  chosen.push_back(anchor.name);
  if (uniform(0, 1) < (priors ? o.cooccur_prior : 0.15)) chosen.push_back(anchor.partner);
  while (static_cast<int>(chosen.size()) < o.max_objects && uniform(0, 1) < 0.35) {
    const std::string k = kinds[pick(kinds.size())].name;
    // Test images never pair an anchor with its partner by the extra draw either.
    if (!priors && k == anchor.partner) continue;
    chosen.push_back(k);  // repeats allowed: counting questions need them
  }

  // Background: a pale random colour with a gentle gradient and noise.
  const int n = o.size;
  image->create(n, n, CV_8UC3);
  const cv::Vec3d bg(uniform(150, 235), uniform(150, 235), uniform(150, 235));
  const double gx = uniform(-30, 30), gy = uniform(-30, 30);
  std::normal_distribution<double> noise(0, 4);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x)
      for (int c = 0; c < 3; ++c)
        image->at<cv::Vec3b>(y, x)[c] = cv::saturate_cast<uint8_t>(bg[c] + gx * x / n + gy * y / n + noise(rng));

  for (const std::string& k : chosen) {
    WorldObject obj;
    obj.kind = k;
    obj.colour = uniform(0, 1) < (priors ? o.colour_prior : 0.0) ? Kind(k).typical_colour
                                                                  : colours[pick(colours.size())].name;
    for (int attempt = 0; attempt < 20; ++attempt) {
      const int side = static_cast<int>(n * (uniform(0, 1) < 0.5 ? uniform(0.24, 0.32) : uniform(0.36, 0.46)));
      obj.x0 = pick(n - side);
      obj.y0 = pick(n - side);
      obj.x1 = obj.x0 + side;
      obj.y1 = obj.y0 + side;
      bool ok = true;
      for (const auto& other : s.objects) ok = ok && Iou(obj, other) < 0.1;
      if (ok) break;
    }
    bool ok = true;
    for (const auto& other : s.objects) ok = ok && Iou(obj, other) < 0.1;
    if (!ok) continue;  // no room: fewer objects
    DrawObject(*image, obj);
    s.objects.push_back(obj);
  }

  // Caption and questions. Repeated kinds are counted: "two red balls", "two balls (red and
  // blue)".
  std::map<std::string, int> count;
  std::vector<std::string> order;  // kinds in drawing order
  for (const auto& obj : s.objects)
    if (count[obj.kind]++ == 0) order.push_back(obj.kind);
  std::vector<std::string> phrases;
  for (const std::string& kind : order) {
    std::vector<std::string> kind_colours;
    for (const auto& obj : s.objects)
      if (obj.kind == kind) kind_colours.push_back(obj.colour);
    if (kind_colours.size() == 1) {
      for (const auto& obj : s.objects)
        if (obj.kind == kind) phrases.push_back(Phrase(obj));
    } else if (std::all_of(kind_colours.begin(), kind_colours.end(),
                           [&](const std::string& c) { return c == kind_colours[0]; })) {
      phrases.push_back(absl::StrCat(NumberWord(kind_colours.size()), " ", kind_colours[0], " ", Plural(kind)));
    } else {
      phrases.push_back(absl::StrCat(NumberWord(kind_colours.size()), " ", Plural(kind), " (",
                                     ListPhrase(kind_colours), ")"));
    }
  }
  s.caption = absl::StrCat("There ", count[order[0]] > 1 ? "are " : "is ", ListPhrase(phrases), ".");
  // The tempting absent kind: a present kind's partner if absent, else any absent kind.
  std::string absent;
  for (const auto& obj : s.objects)
    if (!count.count(Kind(obj.kind).partner)) absent = Kind(obj.kind).partner;
  while (absent.empty() || count.count(absent)) absent = kinds[pick(kinds.size())].name;
  const WorldObject& first = s.objects.front();
  const std::string typical_absent_colour = Kind(absent).typical_colour;

  std::vector<std::string> hallucinated = phrases;
  hallucinated.push_back(absl::StrCat(typical_absent_colour == "orange" ? "an " : "a ", typical_absent_colour, " ", absent));
  s.questions.push_back({"describe", "Describe the image.", s.caption,
                         absl::StrCat("There ", count[order[0]] > 1 ? "are " : "is ", ListPhrase(hallucinated), "."), ""});
  s.questions.push_back({"exist_yes", absl::StrCat("Is there a ", first.kind, " in the image?"),
                         absl::StrCat("Yes, there is ", Phrase(first), "."),
                         absl::StrCat("No, there is no ", first.kind, "."), "yes"});
  s.questions.push_back({"exist_no", absl::StrCat("Is there a ", absent, " in the image?"),
                         absl::StrCat("No, there is no ", absent, "."),
                         absl::StrCat("Yes, there is a ", typical_absent_colour, " ", absent, "."), "no"});
  const int c = count[first.kind];
  const int wrong = c == 1 ? 2 : c - 1;
  s.questions.push_back({"count", absl::StrCat("How many ", Plural(first.kind), " are there?"),
                         c == 1 ? absl::StrCat("There is one ", first.kind, ".")
                                : absl::StrCat("There are ", NumberWord(c), " ", Plural(first.kind), "."),
                         wrong == 1 ? absl::StrCat("There is one ", first.kind, ".")
                                    : absl::StrCat("There are ", NumberWord(wrong), " ", Plural(first.kind), "."),
                         NumberWord(c)});
  if (c == 1) {
    std::string other = Kind(first.kind).typical_colour;
    while (other == first.colour) other = colours[pick(colours.size())].name;
    s.questions.push_back({"colour", absl::StrCat("What color is the ", first.kind, "?"),
                           absl::StrCat("The ", first.kind, " is ", first.colour, "."),
                           absl::StrCat("The ", first.kind, " is ", other, "."), first.colour});
  }
  return s;
}

absl::Status WriteWorld(const std::string& dir, const WorldOptions& o) {
  if (o.size < 16 || o.size > 1024) return absl::InvalidArgumentError("--size must be in [16, 1024]");
  if (o.train < 0 || o.val < 0 || o.test < 0) return absl::InvalidArgumentError("split sizes must be >= 0");
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "images", ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  // Text files are written whole at the end (errors then say what the OS said); world.json last.
  std::string annotations;
  const auto t0 = std::chrono::steady_clock::now();
  const int total = o.train + o.val + o.test;
  int done = 0;
  for (auto [split, n] : std::vector<std::pair<std::string, int>>{{"train", o.train}, {"val", o.val}, {"test", o.test}}) {
    std::string manifest;
    for (int i = 0; i < n; ++i, ++done) {
      cv::Mat rgb;
      WorldSample s = GenerateWorldSample(o, split, i, &rgb);
      const std::string rel = absl::StrCat("images/", s.id, ".png");
      cv::Mat bgr;
      cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
      auto written = CatchAll(rel, [&] { return cv::imwrite((fs::path(dir) / rel).string(), bgr); });
      if (!written.ok()) return written.status();
      if (!*written) return absl::InternalError(absl::StrCat(dir, "/", rel, ": write failed"));
      json objects = json::array(), boxes = json::array(), regions = json::array();
      for (const auto& obj : s.objects) {
        objects.push_back(obj.kind);
        boxes.push_back({{"label", obj.kind}, {"colour", obj.colour}, {"box", {obj.x0, obj.y0, obj.x1, obj.y1}}});
        regions.push_back({{"label", obj.kind}, {"box", {obj.x0, obj.y0, obj.x1, obj.y1}}});
      }
      annotations += json{{"id", s.id}, {"split", split}, {"image", rel}, {"objects", objects},
                          {"boxes", boxes}, {"captions", {s.caption}}}.dump() + "\n";
      for (const auto& q : s.questions) {
        json rec = {{"id", absl::StrCat(s.id, "-", q.type)}, {"image", rel}, {"image_id", s.id},
                    {"question", q.question}, {"chosen", q.chosen}, {"rejected", q.rejected},
                    {"type", q.type}, {"regions", regions}};
        if (!q.answer.empty()) rec["answer"] = q.answer;
        manifest += rec.dump() + "\n";
      }
      if ((done + 1) % 1000 == 0 || done + 1 == total) {
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double rate = (done + 1) / std::max(secs, 1e-9);
        spdlog::info("world: {}/{} images ({:.0f}/s, ETA {:.1f} s)", done + 1, total, rate,
                     (total - done - 1) / rate);
      }
    }
    MFPO_RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / (split + ".jsonl")).string(), manifest));
  }
  MFPO_RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / "annotations.jsonl").string(), annotations));
  std::string vocab;
  for (const auto& k : WorldKinds()) vocab += absl::StrJoin(k.synonyms, ", ") + "\n";
  MFPO_RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / "vocab.txt").string(), vocab));
  return WriteFileAtomically((fs::path(dir) / "world.json").string(),
                             json{{"seed", o.seed}, {"train", o.train}, {"val", o.val}, {"test", o.test}, {"size", o.size},
                                  {"cooccur_prior", o.cooccur_prior}, {"colour_prior", o.colour_prior},
                                  {"max_objects", o.max_objects}}.dump(2) + "\n");
}

}  // namespace mfpo
