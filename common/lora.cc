#include "common/lora.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/file_util.h"
#include "common/jsonl.h"
#include "common/lora_targets.h"
#include "common/model_dir.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"

namespace mfpo {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr char kPeftPrefix[] = "base_model.model.";
constexpr char kConfigFile[] = "adapter_config.json";
constexpr char kWeightsFile[] = "adapter_model.safetensors";

// Every linear layer with its (legacy) module name.
std::vector<std::pair<std::string, nn::Linear>> LinearLayers(LlavaModel& model) {
  std::vector<std::pair<std::string, nn::Linear>> out;
  for (const auto& item : model->named_modules("", /*include_self=*/false))
    if (auto linear = std::dynamic_pointer_cast<nn::LinearImpl>(item.value())) out.emplace_back(item.key(), nn::Linear(linear));
  return out;
}

// Adapters go on the decoder layers and the projector (not the vision tower, not lm_head).
bool IsAdaptable(const std::string& name) {
  return absl::StartsWith(name, "language_model.model.layers.") || absl::StartsWith(name, "multi_modal_projector.");
}

// The linear layers adapters may go on.
std::vector<std::pair<std::string, nn::Linear>> CandidateLayers(LlavaModel& model) {
  std::vector<std::pair<std::string, nn::Linear>> out;
  for (auto& [name, layer] : LinearLayers(model))
    if (IsAdaptable(name)) out.emplace_back(name, layer);
  return out;
}

std::vector<std::pair<std::string, nn::Linear>> AdaptedLayers(LlavaModel& model) {
  std::vector<std::pair<std::string, nn::Linear>> out;
  for (auto& [name, layer] : CandidateLayers(model))
    if (layer->lora_A.defined()) out.emplace_back(name, layer);
  return out;
}

std::string LastComponent(const std::string& name) { return name.substr(name.rfind('.') + 1); }

// The newer transformers name of a legacy module name (what PEFT sees on a newer model).
std::string NewerName(const std::string& legacy) {
  if (absl::StartsWith(legacy, "language_model.model."))
    return absl::StrCat("model.language_model.", legacy.substr(std::strlen("language_model.model.")));
  return absl::StrCat("model.", legacy);
}

// The regular expression written to adapter_config.json for a list of layer names.
std::string TargetRegex(const std::vector<std::string>& names) {
  std::vector<std::string> text, projector;
  for (const auto& n : names) (absl::StartsWith(n, "linear_") ? projector : text).push_back(n);
  std::vector<std::string> parts;
  if (!text.empty()) parts.push_back(absl::StrCat(".*language_model.*\\.(", absl::StrJoin(text, "|"), ")"));
  if (!projector.empty()) parts.push_back(absl::StrCat(".*multi_modal_projector\\.(", absl::StrJoin(projector, "|"), ")"));
  return parts.size() == 1 ? parts[0] : absl::StrCat("(", absl::StrJoin(parts, ")|("), ")");
}

}  // namespace

bool IsLoraParameterName(const std::string& name) {
  return absl::StrContains(name, ".lora_A.") || absl::StrContains(name, ".lora_B.");
}

bool HasLora(LlavaModel& model) { return !AdaptedLayers(model).empty(); }

absl::StatusOr<int> AttachLora(LlavaModel& model, const LoraConfig& config, uint64_t seed) {
  if (config.rank < 1) return absl::InvalidArgumentError(absl::StrCat("LoRA rank ", config.rank, " must be >= 1"));
  if (!(config.alpha > 0)) return absl::InvalidArgumentError("LoRA alpha must be > 0");
  if (!(config.dropout >= 0 && config.dropout < 1)) return absl::InvalidArgumentError("LoRA dropout must be in [0, 1)");
  if (HasLora(model)) return absl::FailedPreconditionError("the model already has LoRA adapters");
  std::vector<std::pair<std::string, nn::Linear>> chosen;
  if (!config.target_regex.empty()) {
    std::regex re;
    try {
      re = std::regex(config.target_regex, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(absl::StrCat("target_modules: '", config.target_regex, "' is not a regular expression: ", e.what()));
    }
    for (auto& [name, layer] : LinearLayers(model)) {
      if (!std::regex_match(name, re) && !std::regex_match(NewerName(name), re)) continue;
      // A layer this implementation does not adapt must not match either (PEFT would adapt it).
      if (!IsAdaptable(name))
        return absl::UnimplementedError(absl::StrCat("target_modules matches ", name,
                                                     ": adapters go on the language model's layers and the projector only"));
      chosen.emplace_back(name, layer);
    }
  } else {
    std::set<std::string> wanted;
    for (const auto& t : config.target_modules) {
      if (!IsLoraTarget(t))
        return absl::InvalidArgumentError(absl::StrCat("target_modules: '", t, "' is not one of ",
                                                       absl::StrJoin(LoraTargetNames(), ", ")));
      if (!wanted.insert(t).second)
        return absl::InvalidArgumentError(absl::StrCat("target_modules: '", t, "' is named twice"));
    }
    std::set<std::string> found;
    for (auto& [name, layer] : CandidateLayers(model))
      if (wanted.count(LastComponent(name))) {
        chosen.emplace_back(name, layer);
        found.insert(LastComponent(name));
      }
    for (const auto& t : wanted)
      if (!found.count(t)) return absl::InvalidArgumentError(absl::StrCat("target_modules: '", t, "' matches no layer"));
  }
  if (chosen.empty()) return absl::InvalidArgumentError("target_modules select no layer");
  MFPO_RETURN_IF_ERROR(CatchAll("attaching LoRA adapters", [&] {
    torch::NoGradGuard no_grad;
    at::Generator gen = at::detail::createCPUGenerator(seed);
    for (auto& [name, layer] : chosen) {
      layer->AddLora(config.rank, config.scaling(), config.dropout);
      // kaiming_uniform_(a=sqrt(5)) on [r, in]: U(-1/sqrt(in), 1/sqrt(in)).
      const double bound = 1.0 / std::sqrt(static_cast<double>(layer->weight.size(1)));
      layer->lora_A.copy_(torch::empty(layer->lora_A.sizes(), torch::kFloat32).uniform_(-bound, bound, gen));
    }
  }));
  return static_cast<int>(chosen.size());
}

NamedTensors LoraParameters(LlavaModel& model) {
  NamedTensors out;
  for (auto& [name, layer] : AdaptedLayers(model)) {
    out.emplace_back(absl::StrCat(name, ".lora_A.weight"), layer->lora_A);
    out.emplace_back(absl::StrCat(name, ".lora_B.weight"), layer->lora_B);
  }
  return out;
}

void SetLoraEnabled(LlavaModel& model, bool enabled) {
  for (auto& [name, layer] : AdaptedLayers(model)) layer->lora_enabled = enabled;
}

absl::Status SaveAdapter(const std::string& dir, LlavaModel& model, const LoraConfig& config) {
  NamedTensors tensors;
  for (const auto& [name, t] : LoraParameters(model))
    tensors.emplace_back(absl::StrCat(kPeftPrefix, name), t.detach().to(torch::kFloat32).contiguous());
  if (tensors.empty()) return absl::FailedPreconditionError("the model has no LoRA adapters to save");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  json c = {{"peft_type", "LORA"},
            {"task_type", nullptr},
            {"base_model_name_or_path", config.base_model},
            {"r", config.rank},
            {"lora_alpha", config.alpha},
            {"lora_dropout", config.dropout},
            {"target_modules", config.target_regex.empty() ? TargetRegex(config.target_modules) : config.target_regex},
            {"bias", "none"},
            {"fan_in_fan_out", false},
            {"inference_mode", true},
            {"init_lora_weights", true},
            {"use_rslora", false},
            {"use_dora", false},
            {"modules_to_save", nullptr},
            {"layers_to_transform", nullptr},
            {"layers_pattern", nullptr},
            {"rank_pattern", json::object()},
            {"alpha_pattern", json::object()},
            {"revision", nullptr}};
  MFPO_RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / kConfigFile).string(), c.dump(2) + "\n"));
  return WriteSafetensors((fs::path(dir) / kWeightsFile).string(), tensors, {{"format", "pt"}});
}

absl::StatusOr<LoraConfig> LoadAdapterConfig(const std::string& dir) {
  const std::string path = (fs::path(dir) / kConfigFile).string();
  json j;
  MFPO_RETURN_IF_ERROR(ReadJsonFile(path, &j));
  auto bad = [&](absl::string_view field, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", field, ": ", why));
  };
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  if (j.value("peft_type", std::string("LORA")) != "LORA") return bad("peft_type", "only LORA adapters are supported");
  LoraConfig c;
  if (!j.contains("r") || !j["r"].is_number_integer() || j["r"].get<int64_t>() < 1) return bad("r", "expected an integer >= 1");
  c.rank = j["r"].get<int64_t>();
  c.alpha = 8;  // PEFT's default lora_alpha
  if (j.contains("lora_alpha")) {
    if (!j["lora_alpha"].is_number() || !(j["lora_alpha"].get<double>() > 0)) return bad("lora_alpha", "expected a number > 0");
    c.alpha = j["lora_alpha"].get<double>();
  }
  c.dropout = 0;
  if (j.contains("lora_dropout") && !j["lora_dropout"].is_null()) {
    if (!j["lora_dropout"].is_number()) return bad("lora_dropout", "expected a number");
    c.dropout = j["lora_dropout"].get<double>();
    if (!(c.dropout >= 0 && c.dropout < 1)) return bad("lora_dropout", "must be in [0, 1)");
  }
  const json& t = j.contains("target_modules") ? j["target_modules"] : json();
  if (t.is_string() && t.get<std::string>() == "all-linear") {
    // PEFT's all-linear also adapts the vision tower's layers, which this implementation does not.
    return bad("target_modules", "\"all-linear\" is not supported (name the layers, e.g. [q_proj, v_proj])");
  } else if (t.is_string()) {
    c.target_regex = t.get<std::string>();
    c.target_modules.clear();
  } else if (t.is_array() && !t.empty()) {
    c.target_modules.clear();
    for (const json& n : t) {
      if (!n.is_string()) return bad("target_modules", "expected names or a regular expression");
      c.target_modules.push_back(n.get<std::string>());
    }
  } else {
    return bad("target_modules", "expected a list of layer names or a regular expression");
  }
  auto is_true = [&](const char* k) { return j.contains(k) && j[k].is_boolean() && j[k].get<bool>(); };
  auto is_set = [&](const char* k) {
    return j.contains(k) && !j[k].is_null() && !(j[k].is_object() && j[k].empty()) && !(j[k].is_array() && j[k].empty());
  };
  for (const char* k : {"use_dora", "use_rslora", "fan_in_fan_out", "lora_bias"})
    if (is_true(k)) return bad(k, "true is not supported");
  for (const char* k : {"modules_to_save", "rank_pattern", "alpha_pattern", "layers_to_transform", "exclude_modules",
                        "trainable_token_indices", "layer_replication"})
    if (is_set(k)) return bad(k, "not supported (must be empty or null)");
  if (j.contains("bias") && j["bias"] != "none") return bad("bias", "only \"none\" is supported");
  if (j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string())
    c.base_model = j["base_model_name_or_path"].get<std::string>();
  return c;
}

absl::Status LoadAdapterWeights(const std::string& dir, LlavaModel& model) {
  const std::string path = (fs::path(dir) / kWeightsFile).string();
  MFPO_ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
  std::map<std::string, std::string> source_of;  // model name -> file name
  for (const TensorEntry& entry : file->entries()) {
    const std::string& stored = entry.name;
    std::string name = stored;
    if (absl::StartsWith(name, kPeftPrefix)) name = name.substr(std::strlen(kPeftPrefix));
    name = absl::StrReplaceAll(name, {{".lora_A.default.", ".lora_A."}, {".lora_B.default.", ".lora_B."}});
    name = CanonicalTensorName(name);
    if (!IsLoraParameterName(name) || !absl::EndsWith(name, ".weight"))
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", stored,
                                                     "' is not a LoRA A or B weight (only lora_A.weight and "
                                                     "lora_B.weight are supported)"));
    source_of[name] = stored;
  }
  std::set<std::string> used;
  for (auto& [name, param] : LoraParameters(model)) {
    auto it = source_of.find(name);
    if (it == source_of.end())
      return absl::NotFoundError(absl::StrCat(path, ": tensor 'base_model.model.", name, "' is missing"));
    MFPO_ASSIGN_OR_RETURN(torch::Tensor t, file->Load(it->second, param.scalar_type()));
    if (t.sizes() != param.sizes())
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", it->second, " has shape ", c10::str(t.sizes()),
                                                     ", the layer needs ", c10::str(param.sizes())));
    if (!torch::isfinite(t).all().item<bool>())
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", it->second, " holds NaN or infinite values"));
    torch::NoGradGuard no_grad;
    param.copy_(t);
    used.insert(name);
  }
  for (const auto& [name, stored] : source_of)
    if (!used.count(name))
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", stored,
                                                     "' has no adapted layer in this model (adapter of another model?)"));
  return absl::OkStatus();
}

absl::StatusOr<LoraConfig> LoadAdapter(const std::string& dir, LlavaModel& model) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::NotFoundError(absl::StrCat(dir, ": not an adapter directory"));
  MFPO_ASSIGN_OR_RETURN(LoraConfig config, LoadAdapterConfig(dir));
  absl::StatusOr<int> attached = AttachLora(model, config, 0);
  if (!attached.ok()) return Annotate(attached.status(), (fs::path(dir) / kConfigFile).string());
  MFPO_RETURN_IF_ERROR(LoadAdapterWeights(dir, model));
  return config;
}

absl::Status MergeLora(LlavaModel& model) {
  auto layers = AdaptedLayers(model);
  if (layers.empty()) return absl::FailedPreconditionError("the model has no LoRA adapters to merge");
  return CatchAll("merging LoRA adapters", [&] {
    torch::NoGradGuard no_grad;
    for (auto& [name, layer] : layers) {
      const torch::Tensor delta =
          torch::matmul(layer->lora_B.to(torch::kFloat32), layer->lora_A.to(torch::kFloat32)) * layer->lora_scaling;
      layer->weight.copy_((layer->weight.to(torch::kFloat32) + delta).to(layer->weight.scalar_type()));
      layer->lora_B.zero_();
      layer->lora_enabled = false;
    }
  });
}

}  // namespace mfpo
