// `expertmesh quantize` with the peer's per-tensor preset rules (issue 6): each golden tiny
// quantization (models/tiny-*.raw.json, made by llama-quantize with the golden imatrix, MIX with
// the --custom-q recipe of the golden README) is reproduced tensor for tensor — same names, types,
// shapes and sha256 of the bytes — and where the peer kept the GGUF, byte for byte as a whole
// file. stories260K with the peer's corrupting recipe falls back on its 172-wide rows and writes
// the tensors of the peer's fixed (ffn_down=f16) files. Also: --dry-run, --split-max-tensors,
// --override-kv, --repack against the peer's interleaved files, and the CLI's error messages.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <map>

#include "common/sha256.h"
#include "model/gguf/gguf.h"
#include "model/types.h"
#include "tests/common/golden.h"
#include "tests/quant/golden_quant.h"

namespace expertmesh {
namespace {
namespace fs = std::filesystem;
using testing::golden_dir;
using testing::run_command;

const char* kMixRules =
    R"(blk\..*\.attn_q.*=iq6_k,blk\..*\.attn_k.*=q8_0,blk\..*\.attn_v.*=q8_0,blk\..*\.attn_output.*=iq6_k,)"
    R"(blk\..*\.ffn_down_exps\.weight=iq3_k,blk\..*\.ffn_(gate|up)_exps\.weight=iq2_kl,token_embd\.weight=iq4_k,)"
    R"(output\.weight=iq6_k)";

std::string bin() { return testing::expertmesh_binary().string(); }

// Runs `expertmesh ARGS` in the golden folder (relative paths, as the peer's files were made).
int run_in_golden(const std::string& args, std::string* log) {
  return run_command(fmt::format("cd '{}' && '{}' --log-level warn {} 2>&1", golden_dir().string(), bin(), args), log);
}

// Every tensor of `golden` (a raw.json) has our name, type, shape and bytes.
void expect_same_tensors(const fs::path& ours, const fs::path& golden, const std::string& what) {
  auto f = gguf::File::open(ours.string());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  auto peer = testing::load_golden_json(golden);
  ASSERT_FALSE(peer.empty()) << golden;
  ASSERT_EQ(peer.size(), (*f)->tensors().size()) << what;
  for (size_t i = 0; i < peer.size(); ++i) {
    const gguf::TensorInfo& t = (*f)->tensors()[i];
    EXPECT_EQ(t.name, peer[i].name) << what << ": tensor order";
    EXPECT_EQ(type_upper_name(t.type), peer[i].type) << what << " " << t.name;
    ASSERT_EQ(t.n_dims, peer[i].ne.size()) << what << " " << t.name;
    for (size_t d = 0; d < peer[i].ne.size(); ++d) EXPECT_EQ(t.ne[d], peer[i].ne[d]) << what << " " << t.name;
    EXPECT_EQ(sha256_hex(t.data, static_cast<size_t>(t.nbytes)), peer[i].sha256) << what << " " << t.name;
  }
}

std::vector<std::string> tiny_recipes() {
  std::vector<std::string> out;
  for (const auto& p : testing::golden_files("models", R"(tiny-.*\.raw\.json)")) {
    const std::string n = p.filename().string();  // tiny-T.raw.json
    out.push_back(n.substr(5, n.size() - 5 - 9));
  }
  return out;
}

class TinyRecipe : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyRecipe, SameTensorsAsThePeerAndSameFileWhereKept) {
  EM_REQUIRE_GOLDEN();
  const std::string t = GetParam();
  const fs::path dir = testing::temp_dir("recipe-" + t);
  const fs::path out = dir / "out.gguf";
  const std::string preset = t == "MIX" ? "IQ2_KL" : t;
  const std::string custom = t == "MIX" ? fmt::format("--custom-q '{}'", kMixRules) : "";
  std::string log;
  ASSERT_EQ(run_in_golden(fmt::format("quantize --imatrix imatrix/tiny.imatrix.dat {} models/tiny-qwen3moe-bf16.gguf "
                                      "'{}' {} 2",
                                      custom, out.string(), preset),
                          &log),
            0)
      << log;
  expect_same_tensors(out, golden_dir() / "models" / fmt::format("tiny-{}.raw.json", t), t);
  const fs::path kept = golden_dir() / "models" / fmt::format("tiny-{}.gguf", t);
  if (fs::exists(kept)) {
    std::string cmp;
    EXPECT_EQ(run_command(fmt::format("cmp '{}' '{}'", out.string(), kept.string()), &cmp), 0) << t << ": " << cmp;
  }
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Golden, TinyRecipe, ::testing::ValuesIn(tiny_recipes()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TinyRecipe);

TEST(QuantizeRecipe, AllFourteenTinyRecipesAreCovered) {
  EM_REQUIRE_GOLDEN();
  EXPECT_EQ(tiny_recipes().size(), 14u);
}

// The peer's plain `llama-quantize stories260K-f32.gguf OUT T` corrupts (Q8_0, Q4_0) or aborts
// (IQ4_NL, Q6_0) on the 172-wide ffn_down rows. Ours falls back to F16 there — every tensor then
// equals the peer's fixed `--custom-q ffn_down=f16` file — and the file loads.
TEST(QuantizeRecipe, StoriesPeerRecipeFallsBackToThePeersFixedFiles) {
  EM_REQUIRE_GOLDEN();
  const fs::path dir = testing::temp_dir("stories-recipe");
  for (const char* t : {"Q8_0", "Q4_0", "IQ4_NL", "Q6_0"}) {
    const fs::path out = dir / fmt::format("{}.gguf", t);
    std::string log;
    ASSERT_EQ(run_command(fmt::format("cd '{}' && '{}' quantize models/stories260K-f32.gguf '{}' {} 2 2>&1",
                                      golden_dir().string(), bin(), out.string(), t),
                          &log),
              0)
        << log;
    EXPECT_NE(log.find("required fallback quantization"), std::string::npos) << log;
    expect_same_tensors(out, golden_dir() / "models" / fmt::format("stories260K-{}-f16down.raw.json", t), t);
    std::string inspect;
    EXPECT_EQ(run_command(fmt::format("'{}' inspect '{}' 2>&1", bin(), out.string()), &inspect), 0) << inspect;
  }
  fs::remove_all(dir);
}

TEST(QuantizeRecipe, DryRunPrintsEveryTensorAndTotalsAndWritesNothing) {
  EM_REQUIRE_GOLDEN();
  const fs::path dir = testing::temp_dir("dry-run");
  std::string log;
  ASSERT_EQ(run_in_golden(fmt::format("quantize --dry-run --imatrix imatrix/tiny.imatrix.dat "
                                      "models/tiny-qwen3moe-bf16.gguf '{}' IQ4_KS 2",
                                      (dir / "o.gguf").string()),
                          &log),
            0)
      << log;
  EXPECT_FALSE(fs::exists(dir / "o.gguf"));
  EXPECT_TRUE(fs::is_empty(dir));
  // One line per tensor with its chosen type, e.g. attn_v -> q8_0 (the MoE rule).
  EXPECT_NE(log.find("[  39/  39]"), std::string::npos) << log;
  EXPECT_NE(log.find("blk.0.attn_v.weight - [256, 128], type =   bf16, to      q8_0"), std::string::npos) << log;
  EXPECT_NE(log.find("blk.0.attn_output.weight - [256, 256], type =   bf16, to      q5_K"), std::string::npos) << log;
  // The peer's log for this file: "model size = 10.66 MB", "quant size = 3.09 MB" (MiB).
  EXPECT_NE(log.find("quant size  = 0.003 GiB (3.09 MiB"), std::string::npos) << log;
  EXPECT_NE(log.find("model size  = 0.010 GiB (10.66 MiB"), std::string::npos) << log;
  EXPECT_NE(log.find("bpw"), std::string::npos) << log;
  fs::remove_all(dir);
}

TEST(QuantizeRecipe, SplitOutputHoldsTheSameTensorsAndOverridesAreWritten) {
  EM_REQUIRE_GOLDEN();
  const fs::path dir = testing::temp_dir("split");
  std::string log;
  ASSERT_EQ(run_in_golden(fmt::format("quantize --split-max-tensors 10 --override-kv general.name=str:renamed "
                                      "--override-kv test.int=int:-7 models/tiny-qwen3moe-bf16.gguf '{}' Q8_0 2",
                                      (dir / "s.gguf").string()),
                          &log),
            0)
      << log;
  ASSERT_TRUE(fs::exists(dir / "s-00001-of-00004.gguf")) << log;
  ASSERT_TRUE(fs::exists(dir / "s-00004-of-00004.gguf")) << log;
  auto f = gguf::File::open((dir / "s-00002-of-00004.gguf").string());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ((*f)->n_splits(), 4);
  EXPECT_EQ(*(*f)->get_string("general.name"), "renamed");
  EXPECT_EQ(*(*f)->get_int("test.int"), -7);
  EXPECT_EQ((*f)->find("test.int")->type, gguf::ValueType::INT32);
  // Same tensors as the peer's single Q8_0 file.
  auto peer = testing::load_golden_json(golden_dir() / "models" / "tiny-Q8_0.raw.json");
  ASSERT_EQ(peer.size(), (*f)->tensors().size());
  for (const auto& g : peer) {
    const gguf::TensorInfo* t = (*f)->find_tensor(g.name);
    ASSERT_NE(t, nullptr) << g.name;
    EXPECT_EQ(sha256_hex(t->data, static_cast<size_t>(t->nbytes)), g.sha256) << g.name;
  }
  // --keep-split on that split model: one output per input shard, shard membership preserved,
  // split.* keys in every shard, only the first holding the model's metadata.
  ASSERT_EQ(run_in_golden(fmt::format("quantize --keep-split '{}' '{}' Q8_0 2",
                                      (dir / "s-00001-of-00004.gguf").string(), (dir / "k.gguf").string()),
                          &log),
            0)
      << log;
  for (int s = 1; s <= 4; ++s) {
    auto in = gguf::File::open_single((dir / fmt::format("s-{:05d}-of-00004.gguf", s)).string());
    auto out = gguf::File::open_single((dir / fmt::format("k-{:05d}-of-00004.gguf", s)).string());
    ASSERT_TRUE(in.ok() && out.ok()) << s << "\n" << log;
    ASSERT_EQ((*in)->tensors().size(), (*out)->tensors().size()) << s;
    for (size_t i = 0; i < (*in)->tensors().size(); ++i)
      EXPECT_EQ((*in)->tensors()[i].name, (*out)->tensors()[i].name) << s;
    EXPECT_EQ(*(*out)->get_int("split.no"), s - 1);
    EXPECT_EQ(*(*out)->get_int("split.count"), 4);
    EXPECT_EQ((*out)->find("general.architecture") != nullptr, s == 1) << s;
  }
  fs::remove_all(dir);
}

// --repack re-lays quantized tensors as their interleaved types without requantizing: repacking
// the peer's plain Q8_0 / IQ4_KS / Q4_K zoo files gives the tensors of its _R8 / _R4 files.
TEST(QuantizeRecipe, RepackGivesThePeersInterleavedTensors) {
  EM_REQUIRE_GOLDEN();
  const fs::path dir = testing::temp_dir("repack");
  for (const auto& [base, il] :
       std::map<std::string, std::string>{{"Q8_0", "Q8_0_R8"}, {"IQ4_KS", "IQ4_KS_R4"}, {"Q4_K", "Q4_K_R4"}}) {
    const fs::path out = dir / (il + ".gguf");
    std::string log;
    ASSERT_EQ(
        run_in_golden(fmt::format("quantize --repack types/zoo-{}-plain.gguf '{}' {} 2", base, out.string(), il), &log),
        0)
        << log;
    auto f = gguf::File::open(out.string());
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    int repacked = 0;
    for (const auto& g : testing::load_golden_json(golden_dir() / "types" / fmt::format("zoo-{}-plain.raw.json", il))) {
      const gguf::TensorInfo* t = (*f)->find_tensor(g.name);
      ASSERT_NE(t, nullptr) << g.name;
      if (type_upper_name(t->type) != il) continue;  // token_embd and 1-D tensors are not repacked
      ++repacked;
      EXPECT_EQ(g.type, il) << g.name;
      EXPECT_EQ(sha256_hex(t->data, static_cast<size_t>(t->nbytes)), g.sha256) << il << " " << g.name;
    }
    EXPECT_GT(repacked, 0) << il;
  }
  fs::remove_all(dir);
}

struct BadFlag {
  std::string args;
  std::string must_name;
};

TEST(QuantizeRecipe, BadFlagsFailWithOneMessageNamingTheFlag) {
  EM_REQUIRE_GOLDEN();
  const std::vector<BadFlag> cases = {
      {"--custom-q 'blk.*=q9_9'", "--custom-q"},
      {"--custom-q 'blk.(=q8_0'", "--custom-q"},
      {"--custom-q 'no-equals-sign'", "--custom-q"},
      {"--attn-v-type q9_9", "--attn-v-type"},
      {"--token-embedding-type nope", "--token-embedding-type"},
      {"--override-kv general.name=string:x", "--override-kv"},
      {"--override-kv test.i=int:12x", "--override-kv"},
      {"--split-max-size 12K", "--split-max-size"},
      {"--include-weights a --exclude-weights b", "--include-weights"},
      {"--keep-split --split-max-tensors 3", "--keep-split"},
      {"--no-such-flag", "--no-such-flag"},
  };
  for (const auto& c : cases) {
    std::string log;
    const int rc = run_in_golden(
        fmt::format("quantize {} models/tiny-qwen3moe-bf16.gguf /tmp/never-written.gguf Q8_0", c.args), &log);
    EXPECT_NE(rc, 0) << c.args << "\n" << log;
    EXPECT_NE(log.find(c.must_name), std::string::npos) << c.args << "\n" << log;
    EXPECT_FALSE(fs::exists("/tmp/never-written.gguf")) << c.args;
  }
  // Very-low-bpw presets without an imatrix are refused, naming the preset.
  std::string log;
  EXPECT_NE(run_in_golden("quantize models/tiny-qwen3moe-bf16.gguf /tmp/never-written.gguf IQ1_M", &log), 0);
  EXPECT_NE(log.find("IQ1_M"), std::string::npos) << log;
  EXPECT_NE(log.find("--imatrix"), std::string::npos) << log;
}

}  // namespace
}  // namespace expertmesh
