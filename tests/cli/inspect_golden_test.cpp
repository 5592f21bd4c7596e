// `expertmesh inspect` on every GGUF under ../shared/golden (models, types, vocab): the JSON
// parses, its summary is consistent, and where `X.raw.json` lies beside `X.gguf` every tensor's
// name, type, ne and sha256 match the peer's dump. models/bad must fail naming a tensor. Also:
// `synth` reproduces the golden tiny model's keys, tensor names, shapes and types (label: golden).
#include <filesystem>

#include <gtest/gtest.h>

#include "model/gguf/gguf.h"
#include "model/synth.h"
#include "tests/cli/cli_test_util.h"

namespace expertmesh {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::golden_dir;
using testing::golden_files;

// Checks one golden file; returns the number of tensors compared against a .raw.json.
size_t check_file(const fs::path& gguf, const fs::path& tmp) {
  SCOPED_TRACE(gguf.string());
  json j = testing::inspect_json(gguf.string(), {"--hash"}, tmp);
  if (!j.is_object()) return 0;
  EXPECT_TRUE(j["metadata"].is_object());
  testing::check_summary_consistent(j, gguf.string());
  for (const auto& t : j["tensors"]) {
    EXPECT_TRUE(t["sha256"].is_string() || t["sha256"].is_null());
    EXPECT_GE(t["ne"].size(), 1u);
    EXPECT_LE(t["ne"].size(), 4u);
  }
  fs::path raw = gguf;
  raw.replace_extension(".raw.json");
  if (!fs::exists(raw)) return 0;
  json want = json::parse(testing::read_text(raw), nullptr, false);
  EXPECT_FALSE(want.is_discarded()) << raw;
  if (want.is_discarded()) return 0;
  EXPECT_EQ(j["tensors"].size(), want.size());
  if (j["tensors"].size() != want.size()) return 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const json& got = j["tensors"][i];
    const json& w = want[i];
    SCOPED_TRACE(w["name"].get<std::string>());
    EXPECT_EQ(got["name"], w["name"]);
    EXPECT_EQ(got["type"], w["type"]);
    EXPECT_EQ(got["ne"], w["ne"]);
    EXPECT_EQ(got["sha256"], w["sha256"]);
  }
  return want.size();
}

TEST(InspectGolden, EveryModelFile) {
  EM_REQUIRE_GOLDEN();
  const fs::path tmp = testing::temp_dir("inspect-golden-models");
  auto files = golden_files("models", R"(.*\.gguf)");
  ASSERT_GE(files.size(), 5u);
  size_t compared = 0;
  for (const auto& f : files) compared += check_file(f, tmp);
  EXPECT_GE(compared, 200u);  // the tiny-* and stories260K-* dumps
}

TEST(InspectGolden, EveryTypeFile) {
  EM_REQUIRE_GOLDEN();
  const fs::path tmp = testing::temp_dir("inspect-golden-types");
  auto files = golden_files("types", R"(.*\.gguf)");
  ASSERT_GE(files.size(), 50u);
  size_t with_raw = 0;
  for (const auto& f : files) with_raw += check_file(f, tmp) > 0;
  EXPECT_EQ(with_raw, files.size()) << "every types/*.gguf has a .raw.json";
}

TEST(InspectGolden, EveryVocabFile) {
  EM_REQUIRE_GOLDEN();
  const fs::path tmp = testing::temp_dir("inspect-golden-vocab");
  auto files = golden_files("vocab", R"(.*\.gguf)");
  ASSERT_GE(files.size(), 5u);
  for (const auto& f : files) {
    check_file(f, tmp);
    json j = testing::inspect_json(f.string(), {"--max-array", "3"}, tmp);
    const json& tok = j["metadata"]["tokenizer.ggml.tokens"];
    ASSERT_TRUE(tok.is_object()) << f;
    EXPECT_GT(tok["array_length"].get<int64_t>(), 3) << f;
    EXPECT_EQ(tok["head"].size(), 3u) << f;
  }
}

TEST(InspectGolden, TextOutputOnModels) {
  EM_REQUIRE_GOLDEN();
  for (const auto& f : golden_files("models", R"(.*\.gguf)")) {
    std::string text;
    ASSERT_EQ(testing::run_expertmesh({"inspect", f.string()}, &text), 0) << f << ": " << text;
    EXPECT_NE(text.find("GGUF.version = 3"), std::string::npos) << f;
    EXPECT_NE(text.find("* Summary"), std::string::npos) << f;
    EXPECT_NE(text.find("bits per weight:"), std::string::npos) << f;
  }
  std::string text;
  const fs::path tiny = golden_dir() / "models" / "tiny-qwen3moe-bf16.gguf";
  ASSERT_EQ(testing::run_expertmesh({"inspect", tiny.string()}, &text), 0) << text;
  EXPECT_NE(text.find("routed experts:  9 tensors"), std::string::npos) << text;
  EXPECT_NE(text.find("general.architecture = 'qwen3moe'"), std::string::npos) << text;
}

TEST(InspectGolden, BadModelsFailNamingATensor) {
  EM_REQUIRE_GOLDEN();
  auto files = golden_files("models/bad", R"(.*\.gguf)");
  ASSERT_GE(files.size(), 1u);
  for (const auto& f : files) {
    std::string text;
    EXPECT_NE(testing::run_expertmesh({"inspect", f.string()}, &text), 0) << f << ": " << text;
    EXPECT_NE(text.find(f.filename().string()), std::string::npos) << text;
    EXPECT_NE(text.find("blk."), std::string::npos) << "message should name the tensor: " << text;
  }
}

TEST(InspectGolden, SynthMatchesTinyQwen3MoeLayout) {
  // The golden tiny model was written by tools/synth_gguf.py with these hparams; synth must give
  // llama.cpp the same keys, tensor names, order, shapes and types (values differ: other RNG).
  EM_REQUIRE_GOLDEN();
  const fs::path tiny = golden_dir() / "models" / "tiny-qwen3moe-bf16.gguf";
  const fs::path vocab = golden_dir() / "models" / "stories260K-f32.gguf";
  synth::Options o;
  o.arch = "qwen3moe";
  o.n_layer = 3;
  o.n_embd = 256;
  o.n_head = 4;
  o.n_head_kv = 2;
  o.head_dim = 64;
  o.n_ff = 512;
  o.n_expert = 8;
  o.n_expert_used = 2;
  o.n_ff_exp = 256;
  o.vocab_path = vocab.string();
  o.dtype = GgmlType::BF16;
  const fs::path out = testing::temp_dir("synth-golden") / "tiny.gguf";
  auto s = synth::write_model(o, out.string(), 2);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  auto want = gguf::File::open(tiny.string());
  auto got = gguf::File::open(out.string());
  ASSERT_TRUE(want.ok()) << want.status().to_string();
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  for (const auto& kv : (*want)->kvs()) {
    if (kv.key == "general.name") continue;
    const gguf::Value* v = (*got)->find(kv.key);
    ASSERT_NE(v, nullptr) << "synth lacks " << kv.key;
    EXPECT_EQ(v->type, kv.value.type) << kv.key;
    EXPECT_TRUE(*v == kv.value) << kv.key;
  }
  ASSERT_EQ((*got)->tensors().size(), (*want)->tensors().size());
  for (size_t i = 0; i < (*want)->tensors().size(); ++i) {
    const auto& w = (*want)->tensors()[i];
    const auto* g = &(*got)->tensors()[i];
    ASSERT_EQ(g->name, w.name);
    EXPECT_EQ(g->offset, w.offset) << w.name;
    EXPECT_EQ(g->type, w.type) << w.name;
    EXPECT_EQ(g->n_dims, w.n_dims) << w.name;
    for (int d = 0; d < 4; ++d) EXPECT_EQ(g->ne[d], w.ne[d]) << w.name;
    EXPECT_EQ(g->nbytes, w.nbytes) << w.name;
  }
}

TEST(InspectGolden, SynthCopiesVocabFromGoldenVocabFile) {
  EM_REQUIRE_GOLDEN();
  const fs::path vocab = golden_dir() / "vocab" / "ggml-vocab-llama-spm.gguf";
  const fs::path out = testing::temp_dir("synth-golden-vocab") / "m.gguf";
  std::string text;
  ASSERT_EQ(testing::run_expertmesh({"synth", "--arch", "llama", "--layers", "1", "--embd", "64", "--heads", "2",
                                     "--ff", "64", "--vocab", vocab.string(), "-o", out.string()},
                                    &text),
            0)
      << text;
  auto want = gguf::File::open(vocab.string());
  auto got = gguf::File::open(out.string());
  ASSERT_TRUE(want.ok() && got.ok());
  size_t n = 0;
  for (const auto& kv : (*want)->kvs()) {
    if (kv.key.rfind("tokenizer.", 0) != 0) continue;
    const gguf::Value* v = (*got)->find(kv.key);
    ASSERT_NE(v, nullptr) << kv.key;
    EXPECT_TRUE(*v == kv.value) << kv.key;
    ++n;
  }
  EXPECT_GE(n, 5u);
  EXPECT_EQ((*got)->find_tensor("token_embd.weight")->ne[1], 32000);
  EXPECT_EQ(*(*got)->get_string("general.architecture"), "llama");
}

}  // namespace
}  // namespace expertmesh
