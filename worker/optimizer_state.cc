#include "worker/optimizer_state.h"

#include <algorithm>
#include <numeric>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace mfpo {
namespace {

// LibTorch keys an optimizer's per-parameter state by the parameter's TensorImpl: as a string
// in 1.13, as the pointer itself in 2.x. The key type is read off the map, not the version.
using StateMap = std::remove_cv_t<std::remove_reference_t<decltype(std::declval<torch::optim::Optimizer&>().state())>>;
template <typename Key>
Key StateKeyAs(const torch::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    return c10::guts::to_string(p.unsafeGetTensorImpl());
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}
StateMap::key_type StateKey(const torch::Tensor& p) { return StateKeyAs<StateMap::key_type>(p); }

}  // namespace

NamedTensors AdamWStateTensors(const torch::optim::AdamW& optimizer, const NamedParams& params) {
  NamedTensors out;
  const auto& state = optimizer.state();
  for (const auto& [name, p] : params) {
    auto it = state.find(StateKey(p));
    if (it == state.end()) continue;
    const auto& s = static_cast<const torch::optim::AdamWParamState&>(*it->second);
    out.emplace_back(name + ".exp_avg", s.exp_avg());
    out.emplace_back(name + ".exp_avg_sq", s.exp_avg_sq());
    out.emplace_back(name + ".step", torch::tensor({s.step()}, torch::kInt64));
    if (s.max_exp_avg_sq().defined()) out.emplace_back(name + ".max_exp_avg_sq", s.max_exp_avg_sq());
  }
  return out;
}

absl::Status LoadAdamWState(torch::optim::AdamW& optimizer, const NamedParams& params,
                            const std::vector<std::shared_ptr<SafetensorsFile>>& files) {
  auto find = [&](const std::string& key) -> std::pair<const SafetensorsFile*, const TensorEntry*> {
    for (const auto& f : files)
      if (const TensorEntry* e = f->Find(key)) return {f.get(), e};
    return {nullptr, nullptr};
  };
  auto& state = optimizer.state();
  for (const auto& [name, p] : params) {
    auto [file, entry] = find(name + ".step");
    if (!file)
      return absl::DataLossError(absl::StrCat("optimizer state: no entry for parameter '", name, "' in ",
                                              files.empty() ? std::string("(no files)") : files.front()->path(),
                                              files.size() > 1 ? " or the other ranks' files" : ""));
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    auto load = [&](const std::string& suffix, torch::ScalarType dtype) -> absl::StatusOr<torch::Tensor> {
      auto [f, e] = find(name + suffix);
      if (!f) return absl::DataLossError(absl::StrCat("optimizer state: '", name + suffix, "' is missing"));
      return f->Load(name + suffix, dtype);
    };
    absl::StatusOr<torch::Tensor> step = load(".step", torch::kInt64);
    if (!step.ok()) return step.status();
    s->step(step->item<int64_t>());
    for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
      absl::StatusOr<torch::Tensor> t = load(suffix, p.scalar_type());
      if (!t.ok()) return t.status();
      if (!t->sizes().equals(p.sizes()))
        return absl::DataLossError(absl::StrCat("optimizer state: '", name, suffix, "' has the wrong shape"));
      *t = t->to(p.device());
      if (std::string(suffix) == ".exp_avg") s->exp_avg(*t); else s->exp_avg_sq(*t);
    }
    if (find(name + ".max_exp_avg_sq").first) {
      absl::StatusOr<torch::Tensor> t = load(".max_exp_avg_sq", p.scalar_type());
      if (!t.ok()) return t.status();
      s->max_exp_avg_sq(t->to(p.device()));
    }
    state[StateKey(p)] = std::move(s);
  }
  return absl::OkStatus();
}

int64_t AdamWStateBytes(const torch::optim::AdamW& optimizer) {
  int64_t bytes = 0;
  for (const auto& [key, base] : optimizer.state()) {
    const auto& s = static_cast<const torch::optim::AdamWParamState&>(*base);
    for (const torch::Tensor& t : {s.exp_avg(), s.exp_avg_sq(), s.max_exp_avg_sq()})
      if (t.defined()) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  }
  return bytes;
}

std::vector<int> OwnerOfParams(const std::vector<int64_t>& numels, int world) {
  std::vector<int> order(numels.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return numels[a] > numels[b]; });
  std::vector<int64_t> load(std::max(1, world), 0);
  std::vector<int> owner(numels.size(), 0);
  for (int i : order) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = r;
    load[r] += numels[i];
  }
  return owner;
}

}  // namespace mfpo
