// `expertmesh inspect` on synthetic models: text layout, JSON fields, --hash, --no-tensors,
// --max-array, split models, and errors for missing / corrupt files (label: unit).
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/sha256.h"
#include "model/gguf/gguf.h"
#include "model/synth.h"
#include "tests/cli/cli_test_util.h"

namespace expertmesh {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::inspect_json;
using testing::run_expertmesh;

// A small qwen3moe model: 2 layers, 4 experts, BF16 matrices, built-in vocabulary of 300.
std::string make_model(const fs::path& dir, GgmlType dtype = GgmlType::BF16) {
  synth::Options o;
  o.arch = "qwen3moe";
  o.n_layer = 2;
  o.n_embd = 64;
  o.n_head = 4;
  o.n_head_kv = 2;
  o.n_ff = 128;
  o.n_expert = 4;
  o.n_expert_used = 2;
  o.n_ff_exp = 64;
  o.vocab_size = 300;
  o.dtype = dtype;
  const std::string path = (dir / "model.gguf").string();
  auto s = synth::write_model(o, path, 2);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return path;
}

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

TEST(Inspect, TextOutput) {
  const fs::path dir = testing::temp_dir("inspect-text");
  const std::string model = make_model(dir);
  std::string text;
  ASSERT_EQ(run_expertmesh({"inspect", model}, &text), 0) << text;
  EXPECT_TRUE(contains(text, "GGUF v3")) << text;
  EXPECT_TRUE(contains(text, "GGUF.version = 3")) << text;
  EXPECT_TRUE(contains(text, "GGUF.tensor_count = 27")) << text;  // 1 + 2 * 12 + 2
  EXPECT_TRUE(contains(text, "STRING     |        1 | general.architecture = 'qwen3moe'")) << text;
  EXPECT_TRUE(contains(text, "UINT32     |        1 | qwen3moe.expert_count = 4")) << text;
  // Long arrays are abbreviated, with the element count in the count column.
  EXPECT_TRUE(contains(text, "[STRING]   |      300 | tokenizer.ggml.tokens = ['<unk>', '<s>', '</s>', '<0x00>'"))
      << text;
  EXPECT_TRUE(contains(text, ", ...]")) << text;
  EXPECT_TRUE(contains(text, "* Dumping 27 tensor(s)")) << text;
  EXPECT_TRUE(contains(text, "blk.1.ffn_down_exps.weight")) << text;
  EXPECT_TRUE(contains(text, "   64,    64,     4,     1 | BF16")) << text;  // down_exps [64, 64, 4]
  EXPECT_TRUE(contains(text, "* Summary")) << text;
  EXPECT_TRUE(contains(text, "architecture:    qwen3moe")) << text;
  EXPECT_TRUE(contains(text, "parameters:")) << text;
  EXPECT_TRUE(contains(text, "bytes:")) << text;
  EXPECT_TRUE(contains(text, "bits per weight:")) << text;
  EXPECT_TRUE(contains(text, "routed experts:  6 tensors")) << text;
  EXPECT_TRUE(contains(text, "    F32 ")) << text;
  EXPECT_TRUE(contains(text, "    BF16 ")) << text;

  std::string no_t;
  ASSERT_EQ(run_expertmesh({"inspect", "--no-tensors", model}, &no_t), 0) << no_t;
  EXPECT_FALSE(contains(no_t, "tensor(s)")) << no_t;
  EXPECT_TRUE(contains(no_t, "* Summary")) << no_t;
}

TEST(Inspect, JsonFields) {
  const fs::path dir = testing::temp_dir("inspect-json");
  const std::string model = make_model(dir);
  json j = inspect_json(model, {}, dir);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.size(), 3u);  // metadata, tensors, summary
  EXPECT_EQ(j["metadata"]["general.architecture"], "qwen3moe");
  EXPECT_EQ(j["metadata"]["qwen3moe.block_count"], 2);
  EXPECT_TRUE(j["metadata"]["qwen3moe.rope.freq_base"].is_number_float());
  EXPECT_EQ(j["metadata"]["tokenizer.ggml.add_bos_token"], true);
  ASSERT_TRUE(j["metadata"]["tokenizer.ggml.tokens"].is_array());  // full arrays by default
  EXPECT_EQ(j["metadata"]["tokenizer.ggml.tokens"].size(), 300u);
  EXPECT_EQ(j["metadata"]["tokenizer.ggml.tokens"][3], "<0x00>");
  ASSERT_EQ(j["tensors"].size(), 27u);
  const json& t0 = j["tensors"][0];
  EXPECT_EQ(t0["name"], "token_embd.weight");
  EXPECT_EQ(t0["type"], "BF16");
  EXPECT_EQ(t0["ne"], json::array({64, 300}));
  EXPECT_EQ(t0["offset"], 0);
  EXPECT_EQ(t0["bytes"], 64 * 300 * 2);
  EXPECT_FALSE(t0.contains("sha256"));
  const json& norm = j["tensors"][1];
  EXPECT_EQ(norm["name"], "blk.0.attn_norm.weight");
  EXPECT_EQ(norm["type"], "F32");
  EXPECT_EQ(norm["ne"], json::array({64}));  // only n_dims entries
  testing::check_summary_consistent(j, model);
  const json& s = j["summary"];
  EXPECT_EQ(s["architecture"], "qwen3moe");
  EXPECT_EQ(s["version"], 3);
  EXPECT_EQ(s["n_splits"], 1);
  EXPECT_EQ(s["types"]["BF16"]["bits_per_weight"], 16.0);
  EXPECT_EQ(s["types"]["F32"]["bits_per_weight"], 32.0);
  const json& e = s["routed_experts"];
  ASSERT_TRUE(e.is_object());
  EXPECT_EQ(e["tensors"], 6);
  EXPECT_EQ(e["params"], 2 * 3 * 64 * 64 * 4);
  EXPECT_NEAR(e["param_share"].get<double>(), e["params"].get<double>() / s["params"].get<double>(), 1e-12);
  EXPECT_GT(e["byte_share"].get<double>(), 0.0);
  EXPECT_LT(e["byte_share"].get<double>(), 1.0);
}

TEST(Inspect, JsonF32ModelIs32Bpw) {
  const fs::path dir = testing::temp_dir("inspect-f32");
  json j = inspect_json(make_model(dir, GgmlType::F32), {}, dir);
  EXPECT_EQ(j["summary"]["bits_per_weight"], 32.0);
}

TEST(Inspect, HashMatchesTensorBytes) {
  const fs::path dir = testing::temp_dir("inspect-hash");
  const std::string model = make_model(dir);
  json j = inspect_json(model, {"--hash"}, dir);
  auto f = gguf::File::open(model);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  ASSERT_EQ(j["tensors"].size(), (*f)->tensors().size());
  for (size_t i = 0; i < (*f)->tensors().size(); ++i) {
    const auto& t = (*f)->tensors()[i];
    EXPECT_EQ(j["tensors"][i]["sha256"], sha256_hex(t.data, static_cast<size_t>(t.nbytes))) << t.name;
  }
  std::string text;
  ASSERT_EQ(run_expertmesh({"inspect", "--hash", model}, &text), 0) << text;
  EXPECT_TRUE(contains(text, j["tensors"][0]["sha256"].get<std::string>())) << text;
}

TEST(Inspect, NoTensorsAndMaxArray) {
  const fs::path dir = testing::temp_dir("inspect-opts");
  const std::string model = make_model(dir);
  json j = inspect_json(model, {"--no-tensors", "--max-array", "4"}, dir);
  EXPECT_FALSE(j.contains("tensors"));
  EXPECT_EQ(j["summary"]["n_tensors"], 27);  // still counted
  const json& tok = j["metadata"]["tokenizer.ggml.tokens"];
  ASSERT_TRUE(tok.is_object()) << tok.dump();
  EXPECT_EQ(tok["array_length"], 300);
  EXPECT_EQ(tok["head"], json::array({"<unk>", "<s>", "</s>", "<0x00>"}));
  EXPECT_EQ(j["metadata"]["general.architecture"], "qwen3moe");  // scalars untouched
}

TEST(Inspect, SplitModel) {
  const fs::path dir = testing::temp_dir("inspect-split");
  const std::string model = make_model(dir);
  auto f = gguf::File::open(model);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  auto w = gguf::Writer::from_file(**f);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  gguf::SplitOptions split;
  split.max_tensors = 10;
  auto paths = w->write((dir / "split.gguf").string(), split);
  ASSERT_TRUE(paths.ok()) << paths.status().to_string();
  ASSERT_EQ(paths->size(), 3u);
  json whole = inspect_json(model, {"--hash"}, dir);
  for (const auto& shard : *paths) {
    SCOPED_TRACE(shard);
    json j = inspect_json(shard, {"--hash"}, dir);
    EXPECT_EQ(j["summary"]["n_splits"], 3);
    ASSERT_EQ(j["summary"]["shards"].size(), 3u);
    EXPECT_EQ(j["summary"]["shards"][0]["tensors"], 10);
    EXPECT_EQ(j["summary"]["shards"][2]["tensors"], 7);
    ASSERT_EQ(j["tensors"].size(), 27u);
    for (size_t i = 0; i < 27; ++i) {
      EXPECT_EQ(j["tensors"][i]["name"], whole["tensors"][i]["name"]);
      EXPECT_EQ(j["tensors"][i]["sha256"], whole["tensors"][i]["sha256"]);
      EXPECT_EQ(j["tensors"][i]["shard"], static_cast<int>(i / 10) + 1);
    }
    EXPECT_EQ(j["summary"]["params"], whole["summary"]["params"]);
    EXPECT_EQ(j["summary"]["bytes"], whole["summary"]["bytes"]);
  }
  std::string text;
  ASSERT_EQ(run_expertmesh({"inspect", (*paths)[1]}, &text), 0) << text;
  EXPECT_TRUE(contains(text, "Split model: 3 shards")) << text;
  EXPECT_TRUE(contains(text, (*paths)[2])) << text;
}

TEST(Inspect, MissingFileNamesThePath) {
  const fs::path dir = testing::temp_dir("inspect-missing");
  const std::string path = (dir / "does-not-exist.gguf").string();
  std::string text;
  EXPECT_NE(run_expertmesh({"inspect", path}, &text), 0);
  EXPECT_TRUE(contains(text, "does-not-exist.gguf")) << text;
  EXPECT_NE(run_expertmesh({"inspect", "--json", path}, &text), 0);
  EXPECT_TRUE(contains(text, "does-not-exist.gguf")) << text;
}

TEST(Inspect, CorruptFilesNameThePath) {
  const fs::path dir = testing::temp_dir("inspect-corrupt");
  const std::string model = make_model(dir);
  const std::string bytes = testing::read_text(model);
  struct Case {
    std::string name;
    std::string content;
  };
  const std::vector<Case> cases = {
      {"truncated-header.gguf", bytes.substr(0, 100)},
      {"truncated-data.gguf", bytes.substr(0, bytes.size() / 2)},
      {"not-gguf.gguf", std::string("this is not a gguf file at all, just text\n")},
      {"empty.gguf", std::string()},
  };
  for (const auto& c : cases) {
    const std::string path = (dir / c.name).string();
    std::ofstream(path, std::ios::binary) << c.content;
    std::string text;
    EXPECT_NE(run_expertmesh({"inspect", path}, &text), 0) << c.name << ": " << text;
    EXPECT_TRUE(contains(text, c.name)) << c.name << ": " << text;
  }
}

TEST(Inspect, BadFlags) {
  std::string text;
  EXPECT_NE(run_expertmesh({"inspect"}, &text), 0);
  EXPECT_TRUE(contains(text, "FILE")) << text;
  EXPECT_NE(run_expertmesh({"inspect", "--max-array", "-5", "x.gguf"}, &text), 0);
  EXPECT_TRUE(contains(text, "--max-array")) << text;
  EXPECT_NE(run_expertmesh({"inspect", "--frobnicate", "x.gguf"}, &text), 0);
  EXPECT_TRUE(contains(text, "--frobnicate")) << text;
  EXPECT_EQ(run_expertmesh({"inspect", "--help"}, &text), 0);
  EXPECT_TRUE(contains(text, "--json")) << text;
}

}  // namespace
}  // namespace expertmesh
