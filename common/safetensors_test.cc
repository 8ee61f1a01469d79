// safetensors: round trips (all float dtypes, scalars, sharding) and every malformed case,
// each error naming the file and, where there is one, the tensor.
#include "common/safetensors.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/match.h"
#include "common/model_dir.h"

namespace mfpo {
namespace {
namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("st_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes a file with header `json` and `data_bytes` zero bytes of data.
  std::string Raw(const std::string& name, const std::string& json, size_t data_bytes,
                  int64_t claimed_len = -1) {
    const std::string path = (dir_ / name).string();
    std::ofstream out(path, std::ios::binary);
    const uint64_t len = claimed_len >= 0 ? static_cast<uint64_t>(claimed_len) : json.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(len >> (8 * i)));
    out << json << std::string(data_bytes, '\0');
    return path;
  }
  void ExpectError(const std::string& path, const std::string& needle) {
    auto f = SafetensorsFile::Open(path);
    ASSERT_FALSE(f.ok()) << "expected an error containing '" << needle << "'";
    EXPECT_TRUE(absl::StrContains(f.status().message(), path)) << f.status();
    EXPECT_TRUE(absl::StrContains(f.status().message(), needle)) << f.status();
  }
  fs::path dir_;
};

TEST_F(SafetensorsTest, RoundTripKeepsEveryDtypeBitExact) {
  torch::manual_seed(0);
  NamedTensors in = {{"f32", torch::randn({3, 5})},
                     {"f16", torch::randn({7}).to(torch::kFloat16)},
                     {"bf16", torch::randn({2, 2, 3}).to(torch::kBFloat16)},
                     {"i64", torch::arange(10, torch::kInt64)},
                     {"scalar", torch::tensor(3.5f)},
                     {"empty", torch::zeros({0, 4})}};
  const std::string path = (dir_ / "a.safetensors").string();
  ASSERT_TRUE(WriteSafetensors(path, in, {{"k", "v"}}).ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata().at("k"), "v");
  for (const auto& [name, t] : in) {
    const TensorEntry* e = (*f)->Find(name);
    ASSERT_NE(e, nullptr) << name;
    torch::Tensor back = (*f)->View(*e);
    EXPECT_EQ(back.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(back.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(back, t)) << name;
  }
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST_F(SafetensorsTest, ShardedCheckpointRoundTripsThroughTheIndex) {
  NamedTensors in;
  for (int i = 0; i < 6; ++i)
    in.emplace_back("layer." + std::to_string(i), torch::full({256}, float(i)).to(torch::kBFloat16));
  CheckpointWriteOptions options;
  options.max_shard_bytes = 1100;  // two 512-byte tensors per shard
  ASSERT_TRUE(WriteCheckpoint(dir_.string(), in, options).ok());
  EXPECT_TRUE(fs::exists(dir_ / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir_ / "model-00003-of-00003.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "model.safetensors"));
  auto ckpt = SafetensorsCheckpoint::Open(dir_.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->files().size(), 3u);
  for (const auto& [name, t] : in) {
    const auto* loc = ckpt->Find(name);
    ASSERT_NE(loc, nullptr) << name;
    torch::Tensor dst = torch::empty({256}, torch::kFloat32);
    ASSERT_TRUE(loc->file->CopyInto(*loc->entry, dst).ok());
    EXPECT_TRUE(torch::equal(dst, t.to(torch::kFloat32))) << name;
  }
}

TEST_F(SafetensorsTest, IndexNamingAMissingTensorIsAnError) {
  ASSERT_TRUE(WriteSafetensors((dir_ / "s1.safetensors").string(), {{"a", torch::ones({2})}}).ok());
  std::ofstream(dir_ / "model.safetensors.index.json")
      << R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}})";
  auto ckpt = SafetensorsCheckpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_TRUE(absl::StrContains(ckpt.status().message(), "'b'")) << ckpt.status();
}

TEST_F(SafetensorsTest, MissingShardFileIsAnErrorNamingIt) {
  std::ofstream(dir_ / "model.safetensors.index.json")
      << R"({"weight_map": {"a": "gone.safetensors"}})";
  auto ckpt = SafetensorsCheckpoint::Open(dir_.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_TRUE(absl::StrContains(ckpt.status().message(), "gone.safetensors")) << ckpt.status();
}

TEST_F(SafetensorsTest, EmptyOrUselessIndexIsAnErrorNotACrash) {
  std::ofstream(dir_ / "model.safetensors.index.json") << R"({"weight_map": {}})";
  auto empty = SafetensorsCheckpoint::Open(dir_.string());
  ASSERT_FALSE(empty.ok());
  EXPECT_TRUE(absl::StrContains(empty.status().message(), "'weight_map' is empty")) << empty.status();
  // Shard names that resolve to the directory itself.
  for (const char* shard : {"", "."}) {
    std::ofstream(dir_ / "model.safetensors.index.json")
        << nlohmann::json{{"weight_map", {{"a", shard}}}}.dump();
    auto ckpt = SafetensorsCheckpoint::Open(dir_.string());
    ASSERT_FALSE(ckpt.ok()) << "shard '" << shard << "'";
  }
  // An index that is itself a directory.
  fs::remove(dir_ / "model.safetensors.index.json");
  fs::create_directories(dir_ / "model.safetensors.index.json");
  EXPECT_FALSE(SafetensorsCheckpoint::Open(dir_.string()).ok());
}

TEST_F(SafetensorsTest, TruncatedBeforeHeaderLength) {
  const std::string path = (dir_ / "t.safetensors").string();
  std::ofstream(path) << "abc";
  ExpectError(path, "truncated");
}

TEST_F(SafetensorsTest, HeaderLongerThanFile) {
  ExpectError(Raw("h.safetensors", "{}", 0, 4096), "truncated");
}

TEST_F(SafetensorsTest, OversizedHeaderLength) {
  ExpectError(Raw("o.safetensors", "{}", 0, int64_t{1} << 40), "exceeds the limit");
}

TEST_F(SafetensorsTest, MalformedJsonHeader) {
  ExpectError(Raw("j.safetensors", "{\"a\": [", 0), "not a JSON object");
  ExpectError(Raw("k.safetensors", "[1, 2]", 0), "not a JSON object");
}

TEST_F(SafetensorsTest, UnknownDtype) {
  ExpectError(Raw("d.safetensors", R"({"w": {"dtype": "F8_E9", "shape": [1], "data_offsets": [0, 1]}})", 1),
              "'w': unknown dtype 'F8_E9'");
}

TEST_F(SafetensorsTest, OffsetsOutOfRange) {
  ExpectError(Raw("r.safetensors", R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8),
              "'w': data_offsets [0, 16] out of range");
}

TEST_F(SafetensorsTest, ByteCountDisagreesWithShape) {
  ExpectError(Raw("s.safetensors", R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}})", 16),
              "'w': 16 bytes for shape [3] of F32 (expected 12)");
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  ExpectError(Raw("v.safetensors",
                  R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12),
              "overlaps");
}

TEST_F(SafetensorsTest, NegativeDimension) {
  ExpectError(Raw("n.safetensors", R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4),
              "'w': shape has a non-integer or negative dimension");
}

// LoadWeights: a model-level view of the same checkpoint errors.
class TinyModule : public torch::nn::Module {
 public:
  TinyModule() {
    auto sub = register_module("language_model", std::make_shared<torch::nn::Module>());
    sub->register_parameter("w", torch::zeros({2, 3}));
    register_parameter("b", torch::zeros({4}));
  }
};

TEST_F(SafetensorsTest, LoadWeightsNamesMissingTensor) {
  ASSERT_TRUE(WriteCheckpoint(dir_.string(), {{"b", torch::ones({4})}}).ok());
  auto ckpt = SafetensorsCheckpoint::Open(dir_.string());
  ASSERT_TRUE(ckpt.ok());
  TinyModule m;
  auto r = LoadWeights(*ckpt, m);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsNotFound(r.status()));
  EXPECT_TRUE(absl::StrContains(r.status().message(), "'language_model.w' is missing")) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "model.safetensors")) << r.status();
}

TEST_F(SafetensorsTest, LoadWeightsNamesShapeMismatch) {
  ASSERT_TRUE(WriteCheckpoint(dir_.string(), {{"b", torch::ones({4})},
                                              {"language_model.w", torch::ones({3, 2})}}).ok());
  auto ckpt = SafetensorsCheckpoint::Open(dir_.string());
  ASSERT_TRUE(ckpt.ok());
  TinyModule m;
  auto r = LoadWeights(*ckpt, m);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(),
                                "tensor 'language_model.w' has shape [3, 2], the model expects [2, 3]"))
      << r.status();
}

TEST_F(SafetensorsTest, LoadWeightsListsUnexpectedAndAcceptsNewerNames) {
  // `model.language_model.w` is the newer transformers spelling of `language_model.model.w`;
  // this module's parameter is `language_model.w`, so here it is simply unexpected.
  ASSERT_TRUE(WriteCheckpoint(dir_.string(), {{"b", torch::full({4}, 2.0)},
                                              {"language_model.w", torch::ones({2, 3}).to(torch::kFloat16)},
                                              {"extra.thing", torch::ones({1})},
                                              {"x.position_ids", torch::arange(3)}}).ok());
  auto ckpt = SafetensorsCheckpoint::Open(dir_.string());
  ASSERT_TRUE(ckpt.ok());
  TinyModule m;
  auto r = LoadWeights(*ckpt, m);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->unexpected, std::vector<std::string>{"extra.thing"});
  EXPECT_EQ(m.named_parameters()["b"][0].item<float>(), 2.0f);
  EXPECT_EQ(m.named_parameters()["language_model.w"].sum().item<float>(), 6.0f);
}

TEST_F(SafetensorsTest, AdoptedTensorsAreZeroCopyWritableAndNeverWriteTheFile) {
  torch::Tensor original = torch::arange(4096, torch::kFloat32);
  ASSERT_TRUE(WriteCheckpoint(dir_.string(), {{"b", original.clone()}}).ok());
  const fs::path file = dir_ / "model.safetensors";
  std::ifstream in(file, std::ios::binary);
  const std::string bytes_before((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  torch::Tensor adopted;
  {
    auto ckpt = SafetensorsCheckpoint::Open(dir_.string());
    ASSERT_TRUE(ckpt.ok());
    const auto* loc = ckpt->Find("b");
    adopted = torch::empty({4096}, torch::kFloat32);
    ASSERT_TRUE(loc->file->Adopt(*loc->entry, adopted));
    // Shares the mapping: the data pointer lies inside the file's view.
    EXPECT_EQ(adopted.data_ptr(), loc->file->View(*loc->entry).data_ptr());
    // A conversion cannot be zero-copy.
    torch::Tensor half = torch::empty({4096}, torch::kFloat16);
    EXPECT_FALSE(loc->file->Adopt(*loc->entry, half));
  }  // the checkpoint object is gone; the tensor keeps the mapping alive
  EXPECT_TRUE(torch::equal(adopted, original));
  adopted.add_(1.0);  // copy-on-write: private to this process
  EXPECT_EQ(adopted[10].item<float>(), 11.0f);
  std::ifstream again(file, std::ios::binary);
  const std::string bytes_after((std::istreambuf_iterator<char>(again)), std::istreambuf_iterator<char>());
  EXPECT_EQ(bytes_before, bytes_after);
  auto reread = SafetensorsFile::Open(file.string());
  ASSERT_TRUE(reread.ok());
  EXPECT_TRUE(torch::equal((*reread)->View(*(*reread)->Find("b")), original));
}

TEST(TensorNames, NewerTransformersLayoutMapsToLegacy) {
  EXPECT_EQ(CanonicalTensorName("model.language_model.layers.0.mlp.up_proj.weight"),
            "language_model.model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(CanonicalTensorName("lm_head.weight"), "language_model.lm_head.weight");
  EXPECT_EQ(CanonicalTensorName("model.vision_tower.vision_model.pre_layrnorm.bias"),
            "vision_tower.vision_model.pre_layrnorm.bias");
  EXPECT_EQ(CanonicalTensorName("model.multi_modal_projector.linear_1.weight"),
            "multi_modal_projector.linear_1.weight");
  EXPECT_EQ(CanonicalTensorName("language_model.lm_head.weight"), "language_model.lm_head.weight");
  EXPECT_TRUE(IsIgnoredTensorName("vision_tower.vision_model.embeddings.position_ids"));
  EXPECT_TRUE(IsIgnoredTensorName("language_model.model.layers.0.self_attn.rotary_emb.inv_freq"));
}

}  // namespace
}  // namespace mfpo
