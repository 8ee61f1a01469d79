#include "cli/cli_commands.h"

#include <chrono>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/generation.h"
#include "common/image.h"
#include "common/lora.h"
#include "common/model_dir.h"
#include "common/safetensors.h"
#include "common/status_macros.h"
#include "common/tokenizer.h"
#include "common/torch_seam.h"
#include "datagen/preference_formats.h"

namespace mfpo {
namespace fs = std::filesystem;
namespace {

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

absl::Status RequireFlag(const std::string& value, const char* flag) {
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat("--", flag, " is required"));
  return absl::OkStatus();
}

absl::StatusOr<torch::ScalarType> ParseDtype(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("--dtype: '", name, "' is not one of float32, bfloat16, float16"));
}

absl::StatusOr<LoadedModel> LoadForInference(const std::string& dir, const std::string& dtype,
                                             const std::string& adapter_dir, const std::string& chat_template) {
  const auto t0 = std::chrono::steady_clock::now();
  LoadModelOptions options;
  MFPO_ASSIGN_OR_RETURN(options.dtype, ParseDtype(dtype));
  options.adapter_dir = adapter_dir;
  options.chat_template = chat_template;
  MFPO_ASSIGN_OR_RETURN(LoadedModel m, LoadModelDir(dir, options));
  m.model->eval();
  spdlog::info("loaded {} ({} tensors, {:.1f} MiB) in {:.2f} s", dir, m.report.loaded,
               m.report.bytes / 1048576.0, SecondsSince(t0));
  return m;
}

absl::StatusOr<PixelInput> LoadPixels(const std::string& path, LoadedModel& m) {
  MFPO_ASSIGN_OR_RETURN(cv::Mat rgb, ReadImageFile(path));
  absl::StatusOr<PixelInput> pixels = PreprocessForModel(rgb, m.image);
  if (!pixels.ok()) return Annotate(pixels.status(), path);
  return *pixels;
}

}  // namespace

absl::Status RunInitModel(const InitModelCommandOptions& o, std::ostream& out) {
  MFPO_RETURN_IF_ERROR(RequireFlag(o.out_dir, "out"));
  const auto t0 = std::chrono::steady_clock::now();
  MFPO_RETURN_IF_ERROR(InitModelDir(o.out_dir, o.init));
  MFPO_ASSIGN_OR_RETURN(ModelPreset preset, GetPreset(o.init.preset));
  LlavaModel probe(preset.config, torch::TensorOptions());
  out << "wrote " << o.out_dir << ": preset " << preset.name << ", "
      << CountParameters(probe) << " parameters, " << preset.config.image_tokens()
      << (preset.config.is_next() ? " image tokens per tile (any-resolution LLaVA-NeXT)" : " image tokens") << ", seed " << o.init.seed << " (" << SecondsSince(t0) << " s)\n";
  return absl::OkStatus();
}

absl::Status RunLogits(const LogitsCommandOptions& o, std::ostream& out) {
  MFPO_RETURN_IF_ERROR(RequireFlag(o.model_dir, "model"));
  MFPO_RETURN_IF_ERROR(RequireFlag(o.image_path, "image"));
  MFPO_RETURN_IF_ERROR(RequireFlag(o.out_path, "out"));
  MFPO_ASSIGN_OR_RETURN(LoadedModel m, LoadForInference(o.model_dir, o.dtype, o.adapter_dir, o.chat_template));
  MFPO_ASSIGN_OR_RETURN(PixelInput pixels, LoadPixels(o.image_path, m));
  TokenizedExample ex;
  const bool has_response = !o.response.empty();
  if (has_response) {
    MFPO_ASSIGN_OR_RETURN(ex, m.tokenizer.Example(o.prompt, o.response));
  } else {
    MFPO_ASSIGN_OR_RETURN(ex.ids, m.tokenizer.PromptIds(o.prompt));
    ex.labels.assign(ex.ids.size(), kIgnoreLabel);
  }
  ExpandImageTokens(m.config.image_token_index, m.model->ImageTokens(pixels), &ex.ids, &ex.labels);
  if (static_cast<int64_t>(ex.ids.size()) > m.config.text.max_position_embeddings)
    return absl::InvalidArgumentError(absl::StrCat("the prompt", has_response ? " and response" : "", " take" , has_response ? "" : "s", " ", ex.ids.size(),
                                                   " tokens with the image's, more than the model's context of ",
                                                   m.config.text.max_position_embeddings, " (max_position_embeddings)"));
  NamedTensors tensors;
  float logp = 0;
  MFPO_RETURN_IF_ERROR(CatchAll("mfpo logits", [&]() -> absl::Status {
    torch::NoGradGuard no_grad;
    LlavaBatch batch;
    batch.input_ids = torch::tensor(ex.ids, torch::kInt64).unsqueeze(0);
    MFPO_RETURN_IF_ERROR(m.model->SetImages(&batch, {pixels}));
    MFPO_RETURN_IF_ERROR(m.model->ValidateBatch(batch));
    torch::Tensor logits = m.model->Logits(batch).to(torch::kFloat32);
    tensors.emplace_back("logits", logits.squeeze(0).contiguous());
    if (has_response) {
      torch::Tensor labels = torch::tensor(ex.labels, torch::kInt64).unsqueeze(0);
      torch::Tensor lp = ScoreResponsesFromLogits(logits, labels).logp.squeeze(0);
      logp = lp.item<float>();
      tensors.emplace_back("response_logp", lp.contiguous());
    }
    return absl::OkStatus();
  }));
  MFPO_RETURN_IF_ERROR(WriteSafetensors(o.out_path, tensors));
  out << "wrote " << o.out_path << ": logits [" << tensors[0].second.size(0) << ", "
      << tensors[0].second.size(1) << "]";
  if (has_response) out << ", response_logp " << logp;
  out << "\n";
  return absl::OkStatus();
}

absl::Status RunConvertModel(const ConvertModelCommandOptions& o, std::ostream& out) {
  MFPO_RETURN_IF_ERROR(RequireFlag(o.model_dir, "model"));
  MFPO_RETURN_IF_ERROR(RequireFlag(o.out_dir, "out"));
  CheckpointWriteOptions write;
  if (o.dtype == "bfloat16") write.dtype = torch::kBFloat16;
  else if (o.dtype == "float16") write.dtype = torch::kFloat16;
  else if (o.dtype == "float32") write.dtype = torch::kFloat32;
  else return absl::InvalidArgumentError(absl::StrCat("--dtype: '", o.dtype, "' is not float32, bfloat16 or float16"));
  std::error_code ec;
  if (fs::exists(o.out_dir, ec) && fs::equivalent(o.out_dir, o.model_dir, ec))
    return absl::InvalidArgumentError(absl::StrCat("--out ", o.out_dir, " is the model directory itself"));
  if (!o.adapter_dir.empty() && fs::exists(o.out_dir, ec) && fs::exists(o.adapter_dir, ec) &&
      fs::equivalent(o.out_dir, o.adapter_dir, ec))
    return absl::InvalidArgumentError(absl::StrCat("--out ", o.out_dir, " is the adapter directory itself"));
  MFPO_RETURN_IF_ERROR(CheckNewOutputDir(o.out_dir, o.overwrite));
  LoadModelOptions load;
  load.adapter_dir = o.adapter_dir;
  load.load_tokenizer = false;  // copied as a file
  MFPO_ASSIGN_OR_RETURN(LoadedModel m, LoadModelDir(o.model_dir, load));
  if (!o.adapter_dir.empty()) MFPO_RETURN_IF_ERROR(MergeLora(m.model));
  MFPO_RETURN_IF_ERROR(WriteDirectoryWhole(o.out_dir, [&](const std::string& target) {
    MFPO_RETURN_IF_ERROR(SaveModelWeights(target, m.model, write));
    return CopyModelSideFiles(o.model_dir, target);
  }));
  if (o.adapter_dir.empty()) {
    out << "wrote " << o.out_dir << " (" << o.dtype << " weights of " << o.model_dir << ")\n";
  } else {
    out << "wrote " << o.out_dir << " (" << o.dtype << " weights of " << o.model_dir << " with the adapter " << o.adapter_dir
        << " merged)\n";
  }
  return absl::OkStatus();
}

absl::Status RunGenerate(const GenerateCommandOptions& o, std::ostream& out) {
  MFPO_RETURN_IF_ERROR(RequireFlag(o.model_dir, "model"));
  MFPO_RETURN_IF_ERROR(RequireFlag(o.image_path, "image"));
  MFPO_ASSIGN_OR_RETURN(LoadedModel m, LoadForInference(o.model_dir, o.dtype, o.adapter_dir, o.chat_template));
  MFPO_ASSIGN_OR_RETURN(PixelInput pixels, LoadPixels(o.image_path, m));
  MFPO_ASSIGN_OR_RETURN(std::vector<int64_t> ids, m.tokenizer.PromptIds(o.prompt));
  ExpandImageTokens(m.config.image_token_index, m.model->ImageTokens(pixels), &ids);
  GenerationOptions g;
  g.max_new_tokens = o.max_new_tokens;
  g.eos_id = m.tokenizer.eos_id();
  const auto t0 = std::chrono::steady_clock::now();
  MFPO_ASSIGN_OR_RETURN(auto new_ids, GreedyGenerate(m.model, {ids}, {pixels}, g));
  const std::string answer = m.tokenizer.Decode(new_ids[0]);
  spdlog::info("generated {} tokens in {:.2f} s", new_ids[0].size(), SecondsSince(t0));
  if (o.json) {
    nlohmann::json j = {{"answer", answer}, {"new_ids", new_ids[0]}};
    out << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    out << answer << "\n";
  }
  return absl::OkStatus();
}

absl::Status RunWorld(const WorldCommandOptions& o, std::ostream& out) {
  MFPO_RETURN_IF_ERROR(RequireFlag(o.out_dir, "out"));
  MFPO_RETURN_IF_ERROR(CheckNewOutputDir(o.out_dir, o.overwrite));
  if (static_cast<int64_t>(o.world.train) + o.world.val + o.world.test <= 0)
    return absl::InvalidArgumentError("--train, --val and --test are all 0: nothing to write");
  const auto t0 = std::chrono::steady_clock::now();
  MFPO_RETURN_IF_ERROR(
      WriteDirectoryWhole(o.out_dir, [&](const std::string& target) { return WriteWorld(target, o.world); }));
  out << "wrote " << o.out_dir << ": " << o.world.train << " train, " << o.world.val << " val, "
      << o.world.test << " test images of " << o.world.size << " px (seed " << o.world.seed << ", "
      << SecondsSince(t0) << " s)\n";
  return absl::OkStatus();
}

absl::Status RunImport(const ImportCommandOptions& o, std::ostream& out, std::ostream& err) {
  MFPO_ASSIGN_OR_RETURN(ImportFormat format, ParseImportFormat(o.format));
  if (o.in_path.empty() || o.out_path.empty())
    return absl::InvalidArgumentError("usage: mfpo import --format F IN.jsonl OUT.jsonl");
  if (std::error_code ec; std::filesystem::exists(o.out_path, ec) && !o.overwrite)
    return absl::FailedPreconditionError(absl::StrCat(o.out_path, ": exists; choose another OUT or pass --overwrite"));
  MFPO_ASSIGN_OR_RETURN(ImportReport report, ImportPreferences(format, o.in_path, o.out_path));
  for (const auto& e : report.errors) err << o.in_path << ":" << e.line << ": " << e.reason << "\n";
  out << "imported " << report.imported << " records to " << o.out_path << "; " << report.errors.size()
      << " lines rejected";
  if (report.dropped_ties > 0) out << "; " << report.dropped_ties << " samples dropped (tied ratings)";
  out << "\n";
  if (report.imported == 0)
    return absl::InvalidArgumentError(absl::StrCat(o.in_path, ": no record could be imported"));
  return absl::OkStatus();
}

}  // namespace mfpo
