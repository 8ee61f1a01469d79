#include "common/model_dir.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/jsonl.h"
#include "common/lora.h"
#include "common/status_macros.h"
#include "common/torch_seam.h"

namespace mfpo {
namespace fs = std::filesystem;

std::string CanonicalTensorName(const std::string& name) {
  static const std::pair<const char*, const char*> kRenames[] = {
      {"model.vision_tower.", "vision_tower."},
      {"model.multi_modal_projector.", "multi_modal_projector."},
      {"model.language_model.", "language_model.model."},
      {"lm_head.", "language_model.lm_head."},
      {"model.image_newline", "image_newline"},
  };
  for (const auto& [from, to] : kRenames)
    if (absl::StartsWith(name, from)) return absl::StrCat(to, name.substr(std::strlen(from)));
  return name;
}

bool IsIgnoredTensorName(const std::string& name) {
  return absl::EndsWith(name, ".position_ids") || absl::EndsWith(name, "rotary_emb.inv_freq");
}

absl::StatusOr<WeightLoadReport> LoadWeights(const SafetensorsCheckpoint& ckpt,
                                             torch::nn::Module& module,
                                             const WeightLoadOptions& options) {
  std::map<std::string, std::string> source_of;  // canonical name -> checkpoint name
  for (const auto& n : ckpt.names()) {
    if (IsIgnoredTensorName(n)) continue;
    source_of[CanonicalTensorName(n)] = n;
  }
  WeightLoadReport report;
  std::set<std::string> used;
  struct Job {
    const SafetensorsCheckpoint::Located* loc;
    torch::Tensor dst;
  };
  std::vector<Job> jobs;
  for (auto& item : module.named_parameters(/*recurse=*/true)) {
    auto it = source_of.find(item.key());
    if (it == source_of.end()) {
      const auto files = ckpt.files();
      return absl::NotFoundError(absl::StrCat(
          "tensor '", item.key(), "' is missing from the checkpoint (",
          files.size() == 1 ? files[0] : absl::StrCat(files.size(), " shards in ",
                                                      fs::path(files[0]).parent_path().string()),
          ")"));
    }
    const SafetensorsCheckpoint::Located* loc = ckpt.Find(it->second);
    jobs.push_back({loc, item.value()});
    used.insert(item.key());
    report.loaded += 1;
    report.bytes += loc->entry->end - loc->entry->begin;
  }
  // In file order (the disk streams), spread over a few threads: adopting maps pages and
  // copying is bound by page faults, both of which overlap well. The first error wins.
  std::sort(jobs.begin(), jobs.end(), [](const Job& a, const Job& b) {
    return std::make_pair(a.loc->file->path(), a.loc->entry->begin) <
           std::make_pair(b.loc->file->path(), b.loc->entry->begin);
  });
  std::atomic<size_t> next{0};
  absl::Mutex mu;
  absl::Status first_error;
  auto worker = [&] {
    for (size_t i = next++; i < jobs.size(); i = next++) {
      const SafetensorsFile& file = *jobs[i].loc->file;
      const TensorEntry& entry = *jobs[i].loc->entry;
      absl::Status s;
      {
        torch::NoGradGuard no_grad;
        if (!options.zero_copy || !file.Adopt(entry, jobs[i].dst)) s = file.CopyInto(entry, jobs[i].dst);
      }
      if (!s.ok()) {
        absl::MutexLock lock(&mu);
        if (first_error.ok()) first_error = s;
        next = jobs.size();
      }
    }
  };
  const int threads = std::clamp<int>(options.threads > 0 ? options.threads
                                                          : static_cast<int>(std::thread::hardware_concurrency()),
                                      1, 8);
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  MFPO_RETURN_IF_ERROR(first_error);
  for (const auto& [canonical, source] : source_of)
    if (!used.count(canonical)) report.unexpected.push_back(source);
  return report;
}

absl::StatusOr<ChatTemplate> ModelChatTemplate(const std::string& dir, const LlavaConfig& config,
                                               const std::string& override_name) {
  if (!override_name.empty()) return ParseChatTemplate(override_name);
  auto detect = [](const fs::path& p, const std::string& jinja) -> absl::StatusOr<ChatTemplate> {
    absl::StatusOr<ChatTemplate> t = DetectChatTemplate(jinja);
    if (!t.ok()) return Annotate(t.status(), absl::StrCat(p.string(), " (choose one with --chat-template)"));
    return *t;
  };
  // chat_template.jinja (newest transformers), chat_template.json (newer llava-hf), else
  // tokenizer_config.json's "chat_template" (a string, or a list of {name, template}: "default").
  std::error_code ec;
  const fs::path jinja = fs::path(dir) / "chat_template.jinja";
  if (fs::exists(jinja, ec)) {
    MFPO_ASSIGN_OR_RETURN(std::string text, ReadFileToString(jinja.string(), "chat template"));
    return detect(jinja, text);
  }
  for (const char* name : {"chat_template.json", "tokenizer_config.json"}) {
    const fs::path p = fs::path(dir) / name;
    if (!fs::exists(p, ec)) continue;
    nlohmann::json j;
    MFPO_RETURN_IF_ERROR(ReadJsonFile(p.string(), &j));
    if (!j.is_object() || !j.contains("chat_template") || j["chat_template"].is_null()) continue;
    const nlohmann::json& t = j["chat_template"];
    if (t.is_string()) return detect(p, t.get<std::string>());
    if (t.is_array()) {
      for (const auto& entry : t)
        if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
            entry["template"].is_string())
          return detect(p, entry["template"].get<std::string>());
    }
    return absl::InvalidArgumentError(
        absl::StrCat(p.string(), ": chat_template: expected a string or a list with a \"default\" template"));
  }
  if (config.text.model_type == "mistral") return ChatTemplate::kMistral;
  return config.is_next() ? ChatTemplate::kVicuna : ChatTemplate::kLlava15;
}

absl::StatusOr<LoadedModel> LoadModelDir(const std::string& dir, const LoadModelOptions& options) {
  LoadedModel out;
  out.dir = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return absl::NotFoundError(absl::StrCat(dir, ": not a model directory"));
  if (!fs::exists(fs::path(dir) / "config.json", ec) && fs::exists(fs::path(dir) / "adapter_config.json", ec))
    return absl::InvalidArgumentError(absl::StrCat(
        dir, " is a LoRA adapter directory, not a model: run it on its base model (--model BASE --adapter ", dir,
        "), or merge it into a model directory with `mfpo merge-lora --model BASE --adapter ", dir, " --out DIR`"));
  MFPO_ASSIGN_OR_RETURN(out.config, LoadLlavaConfig((fs::path(dir) / "config.json").string()));
  MFPO_ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::Open(dir));
  MFPO_RETURN_IF_ERROR(CatchAll(absl::StrCat(dir, ": building the model"), [&] {
    out.model = LlavaModel(out.config, torch::TensorOptions().dtype(options.dtype).device(options.device));
  }));
  WeightLoadOptions weight_options;
  weight_options.threads = options.threads;
  MFPO_ASSIGN_OR_RETURN(out.report, LoadWeights(ckpt, *out.model, weight_options));
  if (!options.adapter_dir.empty()) {
    MFPO_ASSIGN_OR_RETURN(LoraConfig lora, LoadAdapter(options.adapter_dir, out.model));
    // PEFT records the base it was trained on; another base of the same shapes loads but is
    // probably a mistake.
    if (!lora.base_model.empty() && fs::exists(lora.base_model, ec) && !fs::equivalent(lora.base_model, dir, ec))
      spdlog::warn("{}: the adapter was trained on {}, not on {}", options.adapter_dir, lora.base_model, dir);
    spdlog::info("{}: LoRA adapter r={} alpha={} on {}", options.adapter_dir, lora.rank, lora.alpha,
                 lora.target_regex.empty() ? absl::StrJoin(lora.target_modules, ", ") : lora.target_regex);
  }
  if (!out.report.unexpected.empty()) {
    spdlog::warn("{}: {} checkpoint tensors are not used by the model: {}", dir,
                 out.report.unexpected.size(), absl::StrJoin(out.report.unexpected, ", "));
  }
  out.image.size = out.image.crop_size = out.config.vision.image_size;
  const fs::path pre = fs::path(dir) / "preprocessor_config.json";
  if (fs::exists(pre, ec)) {
    MFPO_ASSIGN_OR_RETURN(out.image, LoadImageProcessorConfig(pre.string(), out.image));
  }
  if (out.config.is_next()) {
    if (out.image.image_grid_pinpoints.empty()) out.image.image_grid_pinpoints = out.config.image_grid_pinpoints;
    if (out.image.image_grid_pinpoints != out.config.image_grid_pinpoints)
      return absl::InvalidArgumentError(absl::StrCat(pre.string(), ": image_grid_pinpoints differ from config.json's"));
    out.image.pad_to_square = false;  // LlavaNextImageProcessor tiles instead
  } else if (!out.image.image_grid_pinpoints.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(pre.string(), ": image_grid_pinpoints given, but config.json is ",
                                                   out.config.model_type, " (only llava_next tiles images)"));
  }
  if (out.image.crop_size != out.config.vision.image_size)
    return absl::InvalidArgumentError(absl::StrCat(
        pre.string(), ": crop_size ", out.image.crop_size, " differs from vision image_size ",
        out.config.vision.image_size));
  if (options.load_tokenizer) {
    MFPO_ASSIGN_OR_RETURN(out.tokenizer,
                          Tokenizer::FromFile((fs::path(dir) / "tokenizer.model").string(),
                                              out.config.image_token_index, out.config.pad_token_id));
    MFPO_ASSIGN_OR_RETURN(ChatTemplate chat, ModelChatTemplate(dir, out.config, options.chat_template));
    out.tokenizer.set_chat_template(chat);
    const fs::path added = fs::path(dir) / "added_tokens.json";
    if (fs::exists(added, ec)) {
      nlohmann::json j;
      MFPO_RETURN_IF_ERROR(ReadJsonFile(added.string(), &j));
      if (j.is_object() && j.contains("<image>") && j["<image>"].is_number_integer() &&
          j["<image>"].get<int64_t>() != out.config.image_token_index)
        return absl::InvalidArgumentError(absl::StrCat(
            added.string(), ": <image> is ", j["<image>"].get<int64_t>(),
            " but config.json's image_token_index is ", out.config.image_token_index));
    }
  }
  return out;
}

NamedTensors ModelTensors(LlavaModel& model) {
  NamedTensors out;
  for (auto& item : model->named_parameters(/*recurse=*/true))
    if (!IsLoraParameterName(item.key())) out.emplace_back(item.key(), item.value().detach());  // adapters: SaveAdapter
  return out;
}

absl::Status SaveModelWeights(const std::string& dir, LlavaModel& model,
                              const CheckpointWriteOptions& options) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  MFPO_RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / "config.json").string(), LlavaConfigToJson(model->config())));
  return WriteCheckpoint(dir, ModelTensors(model), options);
}

absl::Status CopyModelSideFiles(const std::string& from, const std::string& to) {
  for (const char* f : {"tokenizer.model", "preprocessor_config.json", "added_tokens.json", "chat_template.json",
                        "chat_template.jinja", "tokenizer_config.json", "special_tokens_map.json"}) {
    const fs::path src = fs::path(from) / f;
    std::error_code ec;
    if (!fs::exists(src, ec)) continue;
    // Read and write whole (not copy_file): errors then say what the OS said, e.g. disk full.
    MFPO_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(src.string()));
    MFPO_RETURN_IF_ERROR(WriteFileAtomically((fs::path(to) / f).string(), bytes));
  }
  return absl::OkStatus();
}

}  // namespace mfpo
