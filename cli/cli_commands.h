// The offline subcommands of the `mfpo` tool. main() parses flags into these Options structs;
// everything here returns Status and writes user-facing output to the given stream.
#ifndef MFPO_CLI_CLI_COMMANDS_H_
#define MFPO_CLI_CLI_COMMANDS_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "common/presets.h"
#include "datagen/scene_world.h"

namespace mfpo {

struct InitModelCommandOptions {
  std::string out_dir;
  InitModelOptions init;
};
absl::Status RunInitModel(const InitModelCommandOptions& options, std::ostream& out);

struct ConvertModelCommandOptions {
  std::string model_dir, out_dir;
  std::string dtype = "bfloat16";  // float32, bfloat16 or float16: floating-point weights cast to it
  std::string adapter_dir;         // merge-lora: the LoRA adapter merged into the weights first
  bool overwrite = false;
};
// Writes a copy of a model directory with its weights in another dtype (e.g. the shipped bf16
// SFT baseline); config, tokenizer, processor and chat-template files are copied. With
// adapter_dir (`mfpo merge-lora`): W + (alpha / r) B A for every adapted layer, a full checkpoint.
absl::Status RunConvertModel(const ConvertModelCommandOptions& options, std::ostream& out);

struct LogitsCommandOptions {
  std::string model_dir;
  std::string image_path;
  std::string prompt;    // the user's question; placed in the model's chat template
  std::string response;  // empty: prompt only, no response_logp
  std::string out_path;  // .safetensors with `logits` [tokens, vocab] and `response_logp` []
  std::string dtype = "float32";  // compute dtype; outputs are float32 either way
  std::string adapter_dir;        // a LoRA adapter run with the model, unmerged
  std::string chat_template;      // empty: the model directory's
};
absl::Status RunLogits(const LogitsCommandOptions& options, std::ostream& out);

struct GenerateCommandOptions {
  std::string model_dir;
  std::string image_path;
  std::string prompt;
  int64_t max_new_tokens = 64;
  bool json = false;  // {"answer": ..., "new_ids": [...]} on one line
  std::string dtype = "float32";
  std::string adapter_dir;
  std::string chat_template;
};
absl::Status RunGenerate(const GenerateCommandOptions& options, std::ostream& out);

struct WorldCommandOptions {
  std::string out_dir;
  WorldOptions world;
  bool overwrite = false;  // write into an out_dir that is not empty (refused otherwise)
};
absl::Status RunWorld(const WorldCommandOptions& options, std::ostream& out);

struct ImportCommandOptions {
  std::string format;  // native, rlhf-v, rlaif-v, vlfeedback, hf
  std::string in_path, out_path;
  bool overwrite = false;  // replace an existing OUT (refused otherwise)
};
// Prints each bad line (file:line: reason) to `err` and a summary to `out`.
absl::Status RunImport(const ImportCommandOptions& options, std::ostream& out, std::ostream& err);

}  // namespace mfpo

#endif  // MFPO_CLI_CLI_COMMANDS_H_
