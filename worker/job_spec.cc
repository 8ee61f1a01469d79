#include "worker/job_spec.h"

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>
#include <yaml-cpp/yaml.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/jsonl.h"
#include "common/lora_targets.h"
#include "common/status_macros.h"

namespace mfpo {
namespace {

constexpr int kMaxYamlDepth = 32;
constexpr int64_t kMaxYamlNodes = 100'000;

// A first pass over the YAML events, before anything is built from them. A job spec needs no
// anchors or aliases, and they are how a small file becomes a cycle (`&a [*a]`, infinite
// recursion) or an exponential tree ("billion laughs"), so they are refused; so are nesting
// deeper than kMaxYamlDepth and more than kMaxYamlNodes nodes.
class YamlGuard : public YAML::EventHandler {
 public:
  struct Refused {
    std::string why;
  };
  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++documents_ > 1)
      throw Refused{absl::StrCat("line ", mark.line + 1, ": a second YAML document ('---'); a spec is one document")};
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override { Node(mark, anchor); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    throw Refused{absl::StrCat("line ", mark.line + 1, ": YAML aliases (*name) are not accepted in a job spec")};
  }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor, const std::string&) override {
    Node(mark, anchor);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    Open(mark, anchor);
  }
  void OnSequenceEnd() override { --depth_; }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor, YAML::EmitterStyle::value) override {
    Open(mark, anchor);
  }
  void OnMapEnd() override { --depth_; }

 private:
  void Node(const YAML::Mark& mark, YAML::anchor_t anchor) {
    if (anchor != YAML::NullAnchor)
      throw Refused{absl::StrCat("line ", mark.line + 1, ": YAML anchors (&name) are not accepted in a job spec")};
    if (++nodes_ > kMaxYamlNodes) throw Refused{absl::StrCat("more than ", kMaxYamlNodes, " YAML nodes")};
  }
  void Open(const YAML::Mark& mark, YAML::anchor_t anchor) {
    Node(mark, anchor);
    if (++depth_ > kMaxYamlDepth)
      throw Refused{absl::StrCat("line ", mark.line + 1, ": nested deeper than ", kMaxYamlDepth, " levels")};
  }
  int depth_ = 0, documents_ = 0;
  int64_t nodes_ = 0;
};

// The byte offset of the first invalid UTF-8 sequence in `s`, or -1. Strict (RFC 3629, as
// nlohmann checks when writing JSON): no overlong forms, no surrogates, nothing above U+10FFFF.
int64_t InvalidUtf8At(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto at = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
    const unsigned char c = at(0);
    int n = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // bounds of the second byte
    if (c < 0x80) n = 1;
    else if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c == 0xE0) n = 3, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) n = 3;
    else if (c == 0xED) n = 3, hi = 0x9F;
    else if (c == 0xF0) n = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) n = 4;
    else if (c == 0xF4) n = 4, hi = 0x8F;
    if (n == 0 || i + n > s.size()) return static_cast<int64_t>(i);
    if (n > 1 && (at(1) < lo || at(1) > hi)) return static_cast<int64_t>(i);
    for (int k = 2; k < n; ++k)
      if (at(k) < 0x80 || at(k) > 0xBF) return static_cast<int64_t>(i);
    i += n;
  }
  return -1;
}

// A JSON spec's duplicate keys (nlohmann keeps the last, protobuf reports them obscurely).
absl::Status CheckJsonDuplicateKeys(const std::string& text) {
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  nlohmann::json::parser_callback_t callback = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::object_start) keys.emplace_back();
    if (event == nlohmann::json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
    if (event == nlohmann::json::parse_event_t::key && !keys.empty() && parsed.is_string() &&
        !keys.back().insert(parsed.get<std::string>()).second && duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  (void)nlohmann::json::parse(text, callback, /*allow_exceptions=*/false);
  if (duplicate.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("duplicate key '", duplicate, "'"));
}

absl::Status CheckYaml(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  YamlGuard guard;
  try {
    while (parser.HandleNextDocument(guard)) {
    }
  } catch (const YamlGuard::Refused& r) {
    return absl::InvalidArgumentError(r.why);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("not valid YAML: ", e.what()));
  }
  return absl::OkStatus();
}

// YAML -> JSON with YAML 1.2 core-schema scalars: plain scalars become null, booleans, integers
// or floats when they read as such; quoted scalars stay strings.
absl::StatusOr<nlohmann::json> YamlToJson(const YAML::Node& node, const std::string& path) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nlohmann::json();
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      for (size_t i = 0; i < node.size(); ++i) {
        MFPO_ASSIGN_OR_RETURN(nlohmann::json v, YamlToJson(node[i], absl::StrCat(path, "[", i, "]")));
        out.push_back(std::move(v));
      }
      return out;
    }
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& kv : node) {
        if (!kv.first.IsScalar())
          return absl::InvalidArgumentError(absl::StrCat(path.empty() ? "the spec" : path, ": keys must be plain names"));
        const std::string key = kv.first.Scalar();
        const std::string field = path.empty() ? key : absl::StrCat(path, ".", key);
        if (out.contains(key)) return absl::InvalidArgumentError(absl::StrCat(field, ": duplicate key"));
        MFPO_ASSIGN_OR_RETURN(out[key], YamlToJson(kv.second, field));
      }
      return out;
    }
    case YAML::NodeType::Scalar: {
      const std::string s = node.Scalar();
      if (node.Tag() == "!") return nlohmann::json(s);  // quoted
      if (s == "null" || s == "~") return nlohmann::json();
      if (s == "true" || s == "True") return nlohmann::json(true);
      if (s == "false" || s == "False") return nlohmann::json(false);
      nlohmann::json number = nlohmann::json::parse(s, nullptr, /*allow_exceptions=*/false);
      if (!number.is_discarded() && number.is_number()) return number;
      return nlohmann::json(s);
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(path, ": unsupported YAML node"));
}

absl::Status Bad(const std::string& field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

}  // namespace

v1::JobSpec DefaultJobSpec() {
  v1::JobSpec s;
  s.set_name("mfpo-job");
  s.set_seed(0);
  s.mutable_model()->set_dtype("float32");
  s.mutable_data()->set_max_samples(0);
  auto* o = s.mutable_objective();
  o->set_variant("mfpo");
  o->set_beta(0.1);
  o->set_delta(0.0);
  o->set_w_text(1.0);
  o->set_w_image(1.0);
  o->set_w_margin(1.0);
  o->set_noise_step(500);
  o->set_online_reference(false);
  o->set_image_term_on_fallback(true);
  auto* opt = s.mutable_optimizer();
  opt->set_lr(1e-5);
  opt->set_weight_decay(0.0);
  opt->set_beta1(0.9);
  opt->set_beta2(0.999);
  opt->set_eps(1e-8);
  opt->set_warmup_ratio(0.03);
  opt->set_max_grad_norm(1.0);
  opt->set_micro_batch(4);
  opt->set_grad_accum(1);
  opt->set_epochs(1);
  opt->add_trainable("multi_modal_projector");
  opt->add_trainable("language_model");
  opt->set_activation_checkpointing(false);
  opt->set_shard_state(false);
  s.mutable_curriculum()->set_mode("easy_to_hard");
  s.mutable_curriculum()->set_tiers(3);
  s.mutable_datagen()->set_grounder("regions");
  s.mutable_datagen()->set_top_k(3);
  for (const char* suite : {"chair", "pope", "amber", "reliance"}) s.mutable_evaluation()->add_suites(suite);
  s.mutable_evaluation()->set_limit(0);
  s.mutable_evaluation()->set_split("test");
  s.mutable_evaluation()->set_max_new_tokens(48);
  s.mutable_evaluation()->set_seed(0);
  s.mutable_evaluation()->set_batch_size(16);
  s.mutable_checkpoint()->set_every_steps(0);
  s.mutable_checkpoint()->set_keep_last(2);
  s.mutable_resources()->set_threads(0);
  s.mutable_resources()->set_device("cpu");
  s.mutable_resources()->set_workers(1);
  s.mutable_resources()->set_precision("auto");
  s.mutable_resources()->set_collective_timeout_s(300);
  s.mutable_resources()->set_min_workers(1);
  s.mutable_resources()->set_max_restarts(3);
  return s;
}

absl::Status ValidateJobSpec(const v1::JobSpec& s) {
  // The name is shown in listings and terminals: bounded, one line, no control characters.
  if (s.name().size() > 200) return Bad("name", absl::StrCat("is ", s.name().size(), " bytes long (at most 200)"));
  for (unsigned char ch : s.name())
    if (ch < 0x20 || ch == 0x7f) return Bad("name", "contains a control character (line break, escape, ...)");
  if (s.output_dir().empty()) return Bad("output_dir", "required");
  if (s.model().path().empty()) return Bad("model.path", "required");
  if (s.model().dtype() != "float32" && s.model().dtype() != "bfloat16")
    return Bad("model.dtype", absl::StrCat("'", s.model().dtype(), "' is not float32 or bfloat16"));
  const std::string& chat = s.model().chat_template();
  if (!chat.empty() && chat != "llava-1.5" && chat != "vicuna" && chat != "mistral")
    return Bad("model.chat_template", absl::StrCat("'", chat, "' is not llava-1.5, vicuna or mistral"));
  if (s.data().train().empty()) return Bad("data.train", "required");
  if (s.data().max_samples() < 0) return Bad("data.max_samples", "must be >= 0");
  const auto& o = s.objective();
  if (o.variant() != "sft" && o.variant() != "dpo" && o.variant() != "mdpo" && o.variant() != "mfpo")
    return Bad("objective.variant", absl::StrCat("'", o.variant(), "' is not one of sft, dpo, mdpo, mfpo"));
  if (!(o.beta() > 0)) return Bad("objective.beta", "must be > 0");
  for (auto [name, w] : {std::pair<const char*, double>{"objective.w_text", o.w_text()},
                         {"objective.w_image", o.w_image()}, {"objective.w_margin", o.w_margin()}})
    if (w < 0) return Bad(name, "must be >= 0");
  if ((o.variant() == "mdpo" || o.variant() == "mfpo") && o.w_text() + o.w_image() + o.w_margin() == 0)
    return Bad("objective", "all term weights are 0");
  if (o.noise_step() < 1 || o.noise_step() > 1000)
    return Bad("objective.noise_step", "must be in [1, 1000] (0 would leave the image unchanged)");
  const auto& p = s.optimizer();
  if (p.lr() < 0) return Bad("optimizer.lr", "must be >= 0");
  if (p.weight_decay() < 0) return Bad("optimizer.weight_decay", "must be >= 0");
  if (p.beta1() < 0 || p.beta1() >= 1) return Bad("optimizer.beta1", "must be in [0, 1)");
  if (p.beta2() < 0 || p.beta2() >= 1) return Bad("optimizer.beta2", "must be in [0, 1)");
  if (!(p.eps() > 0)) return Bad("optimizer.eps", "must be > 0");
  if (p.warmup_ratio() < 0 || p.warmup_ratio() > 1) return Bad("optimizer.warmup_ratio", "must be in [0, 1]");
  if (p.max_grad_norm() < 0) return Bad("optimizer.max_grad_norm", "must be >= 0");
  if (p.micro_batch() < 1) return Bad("optimizer.micro_batch", "must be >= 1");
  if (p.grad_accum() < 1) return Bad("optimizer.grad_accum", "must be >= 1");
  if (p.epochs() < 1) return Bad("optimizer.epochs", "must be >= 1");
  for (int i = 0; i < p.trainable_size(); ++i) {
    const std::string& m = p.trainable(i);
    if (!absl::StartsWith(m, "vision_tower") && !absl::StartsWith(m, "multi_modal_projector") &&
        !absl::StartsWith(m, "language_model"))
      return Bad(absl::StrCat("optimizer.trainable[", i, "]"),
                 absl::StrCat("'", m, "' is not under vision_tower, multi_modal_projector or language_model"));
  }
  if (p.has_lora()) {
    const auto& l = p.lora();
    if (l.rank() < 1 || l.rank() > 4096) return Bad("optimizer.lora.rank", "must be in [1, 4096]");
    if (!(l.alpha() > 0) || !std::isfinite(l.alpha())) return Bad("optimizer.lora.alpha", "must be > 0");
    if (!(l.dropout() >= 0 && l.dropout() < 1)) return Bad("optimizer.lora.dropout", "must be in [0, 1)");
    if (l.target_modules_size() == 0) return Bad("optimizer.lora.target_modules", "must name at least one layer");
    for (int i = 0; i < l.target_modules_size(); ++i)
      for (int k = 0; k < i; ++k)
        if (l.target_modules(k) == l.target_modules(i))
          return Bad(absl::StrCat("optimizer.lora.target_modules[", i, "]"),
                     absl::StrCat("'", l.target_modules(i), "' is named twice"));
    for (int i = 0; i < l.target_modules_size(); ++i)
      if (!IsLoraTarget(l.target_modules(i)))
        return Bad(absl::StrCat("optimizer.lora.target_modules[", i, "]"),
                   absl::StrCat("'", l.target_modules(i), "' is not one of ", absl::StrJoin(LoraTargetNames(), ", ")));
  }
  if (s.curriculum().mode() != "easy_to_hard" && s.curriculum().mode() != "end_to_end")
    return Bad("curriculum.mode", absl::StrCat("'", s.curriculum().mode(), "' is not easy_to_hard or end_to_end"));
  if (s.curriculum().tiers() < 1 || s.curriculum().tiers() > 10) return Bad("curriculum.tiers", "must be in [1, 10]");
  const std::string& g = s.datagen().grounder();
  if (g != "regions" && g != "model" && g != "torchscript")
    return Bad("datagen.grounder", absl::StrCat("'", g, "' is not regions, model or torchscript"));
  if (s.datagen().top_k() < 1) return Bad("datagen.top_k", "must be >= 1");
  if (s.datagen().has_fill() && s.datagen().fill() != "noise" && s.datagen().fill() != "inpaint")
    return Bad("datagen.fill", absl::StrCat("'", s.datagen().fill(), "' is not noise or inpaint"));
  if (g == "torchscript" && s.datagen().grounder_model().empty())
    return Bad("datagen.grounder_model", "is required by the torchscript grounder (a TorchScript segmenter file)");
  if (g != "torchscript" && !s.datagen().grounder_model().empty())
    return Bad("datagen.grounder_model", absl::StrCat("is only used by the torchscript grounder, not '", g, "'"));
  for (int i = 0; i < s.evaluation().suites_size(); ++i) {
    const std::string& su = s.evaluation().suites(i);
    if (su != "chair" && su != "pope" && su != "amber" && su != "reliance")
      return Bad(absl::StrCat("evaluation.suites[", i, "]"), absl::StrCat("unknown suite '", su, "'"));
  }
  if (s.evaluation().limit() < 0) return Bad("evaluation.limit", "must be >= 0");
  if (s.evaluation().split() != "train" && s.evaluation().split() != "val" && s.evaluation().split() != "test")
    return Bad("evaluation.split", absl::StrCat("'", s.evaluation().split(), "' is not train, val or test"));
  if (s.evaluation().max_new_tokens() < 1) return Bad("evaluation.max_new_tokens", "must be >= 1");
  if (s.evaluation().batch_size() < 1 || s.evaluation().batch_size() > 4096)
    return Bad("evaluation.batch_size", "must be in [1, 4096]");
  if (s.checkpoint().every_steps() < 0) return Bad("checkpoint.every_steps", "must be >= 0");
  if (s.checkpoint().keep_last() < 0) return Bad("checkpoint.keep_last", "must be >= 0");
  if (s.resources().threads() < 0) return Bad("resources.threads", "must be >= 0");
  if (s.resources().device() != "cpu" && s.resources().device() != "cuda")
    return Bad("resources.device", absl::StrCat("'", s.resources().device(), "' is not cpu or cuda"));
  if (s.resources().workers() < 1 || s.resources().workers() > 4096) return Bad("resources.workers", "must be in [1, 4096]");
  if (s.resources().collective_timeout_s() < 1 || s.resources().collective_timeout_s() > 86400)
    return Bad("resources.collective_timeout_s", "must be in [1, 86400]");
  if (s.resources().min_workers() < 1 || s.resources().min_workers() > s.resources().workers())
    return Bad("resources.min_workers", "must be in [1, resources.workers]");
  if (s.resources().max_restarts() < 0 || s.resources().max_restarts() > 1000)
    return Bad("resources.max_restarts", "must be in [0, 1000]");
  if (s.resources().precision() != "auto" && s.resources().precision() != "fp32" && s.resources().precision() != "bf16")
    return Bad("resources.precision", absl::StrCat("'", s.resources().precision(), "' is not auto, fp32 or bf16"));
  return absl::OkStatus();
}

absl::StatusOr<v1::JobSpec> ParseJobSpec(const std::string& text, bool yaml, const std::string& source) {
  if (const int64_t at = InvalidUtf8At(text); at >= 0)
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid UTF-8 text (byte ", at, ")"));
  std::string json_text = text;
  if (!yaml) {
    // The same nesting bound as every other JSON input (protobuf's parser recurses too).
    absl::StatusOr<nlohmann::json> j = ParseJson(text);
    if (!j.ok()) return Annotate(j.status(), source);
    if (!j->is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": the spec must be a JSON object"));
    if (absl::Status s = CheckJsonDuplicateKeys(text); !s.ok()) return Annotate(s, source);
  }
  if (yaml) {
    if (absl::Status s = CheckYaml(text); !s.ok()) return Annotate(s, source);
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": not valid YAML: ", e.what()));
    }
    if (!root.IsMap()) return absl::InvalidArgumentError(absl::StrCat(source, ": the spec must be a mapping"));
    absl::StatusOr<nlohmann::json> j = YamlToJson(root, "");
    if (!j.ok()) return Annotate(j.status(), source);
    json_text = j->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  v1::JobSpec user;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(json_text, &user, options);
  if (!status.ok()) {
    // Protobuf says "bogus: Cannot find field.": name the key and where the keys are listed.
    std::string message(status.message());
    if (const size_t at = message.find(": Cannot find field."); at != std::string::npos)
      message = absl::StrCat("unknown key '", message.substr(0, at),
                             "' (the keys of a job spec: docs/job-spec.md, proto/mfpo_job.proto)");
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", message));
  }
  absl::StatusOr<v1::JobSpec> spec = CompleteJobSpec(user);
  if (!spec.ok()) return Annotate(spec.status(), source);
  return spec;
}

absl::StatusOr<v1::JobSpec> CompleteJobSpec(const v1::JobSpec& user) {
  v1::JobSpec spec = DefaultJobSpec();
  // A list given in the file replaces the default list instead of extending it.
  if (user.optimizer().trainable_size() > 0) spec.mutable_optimizer()->clear_trainable();
  if (user.evaluation().suites_size() > 0) spec.mutable_evaluation()->clear_suites();
  if (user.optimizer().has_lora()) {
    if (user.optimizer().trainable_size() > 0)
      return absl::InvalidArgumentError(
          "optimizer.trainable: not with optimizer.lora (the base model stays frozen; only the adapters train)");
    spec.mutable_optimizer()->clear_trainable();
    auto* lora = spec.mutable_optimizer()->mutable_lora();
    lora->set_rank(16);
    lora->set_alpha(32);
    lora->set_dropout(0.05);
    if (user.optimizer().lora().target_modules_size() == 0)
      for (const char* m : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
        lora->add_target_modules(m);
  }
  spec.MergeFrom(user);
  MFPO_RETURN_IF_ERROR(ValidateJobSpec(spec));
  return spec;
}

absl::StatusOr<v1::JobSpec> LoadJobSpec(const std::string& path) {
  MFPO_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, "job spec"));
  const bool yaml = absl::EndsWith(path, ".yaml") || absl::EndsWith(path, ".yml");
  return ParseJobSpec(text, yaml, path);
}

std::string JobSpecToJson(const v1::JobSpec& spec) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(spec, &out, options);
  return out;
}

}  // namespace mfpo
