// `expertmesh synth` / model/synth.h: tensor names and shapes per arch, KVs, determinism,
// the built-in and copied vocabularies, and flag validation (label: unit).
#include "model/synth.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>

#include <gtest/gtest.h>

#include "common/sha256.h"
#include "kernels/quant/fp16.h"
#include "model/gguf/gguf.h"
#include "tests/cli/cli_test_util.h"

namespace expertmesh {
namespace {

namespace fs = std::filesystem;
using testing::run_expertmesh;

struct Expected {
  std::string name;
  std::vector<int64_t> ne;
  GgmlType type;
};

// The tensors llama.cpp loads for `arch`, written out independently of synth.cpp.
std::vector<Expected> expected_tensors(const synth::Options& o, int64_t n_vocab) {
  const int64_t E = o.n_embd, H = o.n_head, KV = o.n_head_kv ? o.n_head_kv : o.n_head;
  const int64_t D = o.head_dim ? o.head_dim : E / H;
  const GgmlType w = o.dtype, f32 = GgmlType::F32;
  std::vector<Expected> t = {{"token_embd.weight", {E, n_vocab}, w}};
  for (int64_t i = 0; i < o.n_layer; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    t.push_back({p + "attn_norm.weight", {E}, f32});
    t.push_back({p + "attn_q.weight", {E, H * D}, w});
    t.push_back({p + "attn_k.weight", {E, KV * D}, w});
    t.push_back({p + "attn_v.weight", {E, KV * D}, w});
    t.push_back({p + "attn_output.weight", {H * D, E}, w});
    t.push_back({p + "ffn_norm.weight", {E}, f32});
    if (o.arch != "llama") {
      t.push_back({p + "attn_q_norm.weight", {D}, f32});
      t.push_back({p + "attn_k_norm.weight", {D}, f32});
    }
    if (o.arch == "qwen3moe") {
      t.push_back({p + "ffn_gate_inp.weight", {E, o.n_expert}, f32});
      t.push_back({p + "ffn_gate_exps.weight", {E, o.n_ff_exp, o.n_expert}, w});
      t.push_back({p + "ffn_up_exps.weight", {E, o.n_ff_exp, o.n_expert}, w});
      t.push_back({p + "ffn_down_exps.weight", {o.n_ff_exp, E, o.n_expert}, w});
    } else {
      t.push_back({p + "ffn_gate.weight", {E, o.n_ff}, w});
      t.push_back({p + "ffn_up.weight", {E, o.n_ff}, w});
      t.push_back({p + "ffn_down.weight", {o.n_ff, E}, w});
    }
  }
  t.push_back({"output_norm.weight", {E}, f32});
  t.push_back({"output.weight", {E, n_vocab}, w});
  return t;
}

synth::Options small(const std::string& arch) {
  synth::Options o;
  o.arch = arch;
  o.n_layer = 2;
  o.n_embd = 64;
  o.n_head = 4;
  o.n_head_kv = 2;
  o.head_dim = 32;  // != n_embd / n_head, so q/k/v widths differ from n_embd
  o.n_ff = 96;
  o.n_expert = 4;
  o.n_expert_used = 2;
  o.n_ff_exp = 48;
  o.vocab_size = 300;
  o.dtype = GgmlType::F16;
  return o;
}

std::unique_ptr<gguf::File> open_or_die(const std::string& path) {
  auto f = gguf::File::open(path);
  EXPECT_TRUE(f.ok()) << f.status().to_string();
  return f.ok() ? std::move(f).value() : nullptr;
}

std::string write_or_die(const synth::Options& o, const fs::path& path, int threads = 2) {
  auto s = synth::write_model(o, path.string(), threads);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return path.string();
}

std::string tensor_hash(const gguf::File& f, const std::string& name) {
  const gguf::TensorInfo* t = f.find_tensor(name);
  if (!t || !t->data) return "";
  return sha256_hex(t->data, static_cast<size_t>(t->nbytes));
}

std::vector<float> tensor_values(const gguf::TensorInfo& t) {
  std::vector<float> v(static_cast<size_t>(t.n_elements()));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t.type == GgmlType::F32) {
      std::memcpy(&v[i], t.data + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, t.data + 2 * i, 2);
      v[i] = t.type == GgmlType::F16 ? quant::fp16_to_f32(h) : quant::bf16_to_f32(h);
    }
  }
  return v;
}

class SynthArchTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SynthArchTest, WritesExpectedKeysAndTensors) {
  const fs::path dir = testing::temp_dir("synth-arch-" + GetParam());
  synth::Options o = small(GetParam());
  auto f = open_or_die(write_or_die(o, dir / "m.gguf"));
  ASSERT_TRUE(f);
  const std::string a = o.arch;
  EXPECT_EQ(*f->get_string("general.architecture"), a);
  EXPECT_EQ(*f->get_int(a + ".block_count"), o.n_layer);
  EXPECT_EQ(*f->get_int(a + ".embedding_length"), o.n_embd);
  EXPECT_EQ(*f->get_int(a + ".feed_forward_length"), o.n_ff);
  EXPECT_EQ(*f->get_int(a + ".context_length"), o.n_ctx);
  EXPECT_EQ(*f->get_int(a + ".attention.head_count"), o.n_head);
  EXPECT_EQ(*f->get_int(a + ".attention.head_count_kv"), o.n_head_kv);
  EXPECT_EQ(*f->get_int(a + ".attention.key_length"), o.head_dim);
  EXPECT_EQ(*f->get_int(a + ".attention.value_length"), o.head_dim);
  EXPECT_GT(*f->get_float(a + ".rope.freq_base"), 0.0);
  EXPECT_GT(*f->get_float(a + ".attention.layer_norm_rms_epsilon"), 0.0);
  EXPECT_EQ(*f->get_int("general.file_type"), 1);  // LLAMA_FTYPE_MOSTLY_F16
  if (a == "qwen3moe") {
    EXPECT_EQ(*f->get_int(a + ".expert_count"), o.n_expert);
    EXPECT_EQ(*f->get_int(a + ".expert_used_count"), o.n_expert_used);
    EXPECT_EQ(*f->get_int(a + ".expert_feed_forward_length"), o.n_ff_exp);
  } else {
    EXPECT_EQ(f->find(a + ".expert_count"), nullptr);
  }
  if (a == "llama") {
    EXPECT_EQ(*f->get_int("llama.rope.dimension_count"), o.head_dim);
  }

  const auto want = expected_tensors(o, 300);
  ASSERT_EQ(f->tensors().size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const auto& t = f->tensors()[i];
    SCOPED_TRACE(want[i].name);
    EXPECT_EQ(t.name, want[i].name);
    EXPECT_EQ(t.type, want[i].type);
    ASSERT_EQ(t.n_dims, want[i].ne.size());
    for (size_t d = 0; d < want[i].ne.size(); ++d) EXPECT_EQ(t.ne[d], want[i].ne[d]);
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, SynthArchTest, ::testing::Values("llama", "qwen3", "qwen3moe"));

TEST(Synth, ArchTableHasTheThreeArchs) {
  std::set<std::string> names;
  for (const auto& a : synth::archs()) names.insert(a.name);
  EXPECT_EQ(names, (std::set<std::string>{"llama", "qwen3", "qwen3moe"}));
  EXPECT_TRUE(synth::find_arch("qwen3moe")->moe);
  EXPECT_EQ(synth::find_arch("gpt9"), nullptr);
}

TEST(Synth, SameSeedSameBytesDifferentSeedDifferentBytes) {
  const fs::path dir = testing::temp_dir("synth-seed");
  synth::Options o = small("qwen3moe");
  o.dtype = GgmlType::BF16;
  o.seed = 7;
  const std::string a = write_or_die(o, dir / "a.gguf", 1);
  const std::string b = write_or_die(o, dir / "b.gguf", 3);  // thread count must not matter
  EXPECT_EQ(testing::read_text(a), testing::read_text(b));
  o.seed = 8;
  const std::string c = write_or_die(o, dir / "c.gguf", 2);
  auto fa = open_or_die(a), fc = open_or_die(c);
  ASSERT_TRUE(fa && fc);
  ASSERT_EQ(fa->tensors().size(), fc->tensors().size());
  for (const auto& t : fa->tensors()) EXPECT_NE(tensor_hash(*fa, t.name), tensor_hash(*fc, t.name)) << t.name;
}

TEST(Synth, TensorBytesIndependentOfOtherTensors) {
  // Adding layers (more tensors) leaves the tensors both models share unchanged.
  const fs::path dir = testing::temp_dir("synth-indep");
  synth::Options o = small("qwen3");
  o.n_layer = 1;
  auto f1 = open_or_die(write_or_die(o, dir / "one.gguf"));
  o.n_layer = 3;
  auto f3 = open_or_die(write_or_die(o, dir / "three.gguf"));
  ASSERT_TRUE(f1 && f3);
  for (const auto& t : f1->tensors()) EXPECT_EQ(tensor_hash(*f1, t.name), tensor_hash(*f3, t.name)) << t.name;
}

TEST(Synth, LargeTensorChunksMatchGenerateTensor) {
  // A tensor spanning several chunks: generate_tensor with 1 and 4 threads agree with the file.
  const fs::path dir = testing::temp_dir("synth-chunks");
  synth::Options o = small("qwen3moe");
  o.dtype = GgmlType::F32;
  o.n_embd = 256;
  o.n_head = 4;
  o.head_dim = 0;
  o.n_expert = 16;
  o.n_ff_exp = 512;  // gate_exps: 256 * 512 * 16 = 2 Mi elements = 8 chunks
  o.n_layer = 1;
  auto f = open_or_die(write_or_die(o, dir / "m.gguf", 2));
  ASSERT_TRUE(f);
  auto plan = synth::make_plan(o);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  for (const auto& spec : plan->tensors) {
    if (spec.name != "blk.0.ffn_gate_exps.weight") continue;
    ASSERT_GT(spec.n_elements(), 4 * synth::kChunkElems);
    std::vector<uint8_t> a(static_cast<size_t>(spec.n_elements() * 4)), b(a.size());
    synth::generate_tensor(spec, o.seed, a.data(), 1);
    synth::generate_tensor(spec, o.seed, b.data(), 4);
    EXPECT_EQ(a, b);
    const auto* t = f->find_tensor(spec.name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(0, std::memcmp(t->data, a.data(), a.size()));
  }
}

TEST(Synth, ValueStatistics) {
  // Norms ~ 1 + 0.1 z; matrices ~ gain * z / sqrt(fan_in); all finite. Tolerances are 4 standard
  // errors of the estimates (relative SE of a standard deviation ~ 1/sqrt(2n)).
  const fs::path dir = testing::temp_dir("synth-stats");
  synth::Options o = small("qwen3moe");
  o.dtype = GgmlType::BF16;
  o.n_embd = 256;
  o.head_dim = 0;
  auto f = open_or_die(write_or_die(o, dir / "m.gguf"));
  ASSERT_TRUE(f);
  for (const auto& t : f->tensors()) {
    SCOPED_TRACE(t.name);
    auto v = tensor_values(t);
    double sum = 0, sumsq = 0;
    for (float x : v) {
      ASSERT_TRUE(std::isfinite(x));
      sum += x;
      sumsq += static_cast<double>(x) * x;
    }
    const double n = static_cast<double>(v.size()), mean = sum / n, sd = std::sqrt(sumsq / n - mean * mean);
    const bool is_norm = t.n_dims == 1;
    const double se = 4.0 / std::sqrt(n);
    if (is_norm) {
      EXPECT_NEAR(mean, 1.0, 0.1 * se);
      EXPECT_NEAR(sd / 0.1, 1.0, se / std::sqrt(2.0) + 0.01);
      continue;
    }
    double want = 1.0 / std::sqrt(static_cast<double>(t.ne[0]));
    if (t.name == "token_embd.weight") want = 1.0;
    if (t.name == "output.weight") want *= 4.0;
    EXPECT_NEAR(mean / want, 0.0, se);
    EXPECT_NEAR(sd / want, 1.0, se / std::sqrt(2.0) + 0.01);
  }
}

TEST(Synth, BuiltinVocabulary) {
  const fs::path dir = testing::temp_dir("synth-vocab");
  synth::Options o = small("llama");
  o.vocab_size = 1000;
  auto f = open_or_die(write_or_die(o, dir / "m.gguf"));
  ASSERT_TRUE(f);
  EXPECT_EQ(*f->get_string("tokenizer.ggml.model"), "llama");
  const gguf::Value* tokens = f->find("tokenizer.ggml.tokens");
  const gguf::Value* types = f->find("tokenizer.ggml.token_type");
  const gguf::Value* scores = f->find("tokenizer.ggml.scores");
  ASSERT_TRUE(tokens && types && scores);
  ASSERT_EQ(tokens->array.size(), 1000u);
  ASSERT_EQ(types->array.size(), 1000u);
  ASSERT_EQ(scores->array.size(), 1000u);
  EXPECT_EQ(tokens->array[0].str, "<unk>");
  EXPECT_EQ(tokens->array[1].str, "<s>");
  EXPECT_EQ(tokens->array[2].str, "</s>");
  EXPECT_EQ(tokens->array[3].str, "<0x00>");
  EXPECT_EQ(tokens->array[3 + 0x41].str, "<0x41>");
  EXPECT_EQ(tokens->array[258].str, "<0xFF>");
  EXPECT_EQ(tokens->array[259].str, "\xE2\x96\x81");  // "▁"
  EXPECT_EQ(types->array[0].as_int(), 2);
  EXPECT_EQ(types->array[1].as_int(), 3);
  EXPECT_EQ(types->array[100].as_int(), 6);
  EXPECT_EQ(types->array[500].as_int(), 1);
  std::set<std::string> unique;
  for (const auto& t : tokens->array) unique.insert(t.str);
  EXPECT_EQ(unique.size(), 1000u);
  EXPECT_EQ(*f->get_int("tokenizer.ggml.bos_token_id"), 1);
  EXPECT_EQ(*f->get_int("tokenizer.ggml.eos_token_id"), 2);
  EXPECT_EQ(*f->get_int("tokenizer.ggml.unknown_token_id"), 0);
  EXPECT_EQ(f->find_tensor("token_embd.weight")->ne[1], 1000);
  EXPECT_EQ(f->find_tensor("output.weight")->ne[1], 1000);
}

TEST(Synth, VocabFileIsCopied) {
  // A model written with the built-in vocabulary serves as the --vocab source of another.
  const fs::path dir = testing::temp_dir("synth-vocab-copy");
  synth::Options src = small("llama");
  src.vocab_size = 320;
  auto fs_src = open_or_die(write_or_die(src, dir / "src.gguf"));
  synth::Options o = small("qwen3moe");
  o.vocab_size = 0;
  o.vocab_path = (dir / "src.gguf").string();
  auto f = open_or_die(write_or_die(o, dir / "m.gguf"));
  ASSERT_TRUE(fs_src && f);
  size_t copied = 0;
  for (const auto& kv : fs_src->kvs()) {
    if (kv.key.rfind("tokenizer.", 0) != 0) continue;
    const gguf::Value* v = f->find(kv.key);
    ASSERT_NE(v, nullptr) << kv.key;
    EXPECT_TRUE(*v == kv.value) << kv.key;
    ++copied;
  }
  EXPECT_GE(copied, 5u);
  EXPECT_EQ(f->find_tensor("token_embd.weight")->ne[1], 320);
  EXPECT_EQ(*f->get_string("general.architecture"), "qwen3moe");
}

TEST(Synth, ValidateNamesTheFlag) {
  struct Case {
    std::function<void(synth::Options&)> edit;
    const char* flag;
  };
  const std::vector<Case> cases = {
      {[](synth::Options& o) { o.arch = "gpt9"; }, "--arch"},
      {[](synth::Options& o) { o.n_layer = 0; }, "--layers"},
      {[](synth::Options& o) { o.n_embd = -1; }, "--embd"},
      {[](synth::Options& o) { o.n_head = 0; }, "--heads"},
      {[](synth::Options& o) { o.n_head_kv = 3; }, "--kv-heads"},
      {[](synth::Options& o) { o.head_dim = 0, o.n_embd = 66; }, "--head-dim"},
      {[](synth::Options& o) { o.n_ff = 0; }, "--ff"},
      {[](synth::Options& o) { o.n_expert_used = 5; }, "--top-k"},
      {[](synth::Options& o) { o.n_expert = 0; }, "--experts"},
      {[](synth::Options& o) { o.n_ff_exp = 0; }, "--ff-exp"},
      {[](synth::Options& o) { o.vocab_size = 100; }, "--vocab-size"},
      {[](synth::Options& o) { o.n_ctx = 0; }, "--ctx"},
      {[](synth::Options& o) { o.rope_base = -1; }, "--rope-base"},
      {[](synth::Options& o) { o.dtype = GgmlType::Q8_0; }, "--dtype"},
  };
  for (const auto& c : cases) {
    synth::Options o = small("qwen3moe");
    c.edit(o);
    Status s = synth::validate(o);
    EXPECT_FALSE(s.ok()) << c.flag;
    EXPECT_NE(s.message().find(c.flag), std::string::npos) << s.message();
  }
  EXPECT_TRUE(synth::validate(small("qwen3moe")).ok());
  synth::Options dense = small("llama");
  dense.n_expert = 0;  // ignored by dense archs
  EXPECT_TRUE(synth::validate(dense).ok());
  EXPECT_FALSE(synth::parse_dtype("q4_0").ok());
  EXPECT_EQ(*synth::parse_dtype("BF16"), GgmlType::BF16);
}

// ---------------------------------------------------------------- the CLI

TEST(SynthCli, WritesEachArchAndPrintsSummary) {
  const fs::path dir = testing::temp_dir("synth-cli");
  for (const char* arch : {"llama", "qwen3", "qwen3moe"}) {
    const std::string out = (dir / (std::string(arch) + ".gguf")).string();
    std::string text;
    int rc = run_expertmesh({"synth", "--arch", arch, "--layers", "2", "--embd", "64", "--heads", "4", "--kv-heads",
                             "2", "--ff", "128", "--experts", "4", "--top-k", "2", "--ff-exp", "64", "--dtype", "f32",
                             "--seed", "3", "-o", out},
                            &text);
    ASSERT_EQ(rc, 0) << text;
    EXPECT_NE(text.find("wrote " + out), std::string::npos) << text;
    EXPECT_NE(text.find("params"), std::string::npos) << text;
    auto f = open_or_die(out);
    ASSERT_TRUE(f);
    EXPECT_EQ(*f->get_string("general.architecture"), arch);
    for (const auto& t : f->tensors())
      EXPECT_EQ(t.type, GgmlType::F32) << t.name;  // --dtype f32: everything F32
  }
}

TEST(SynthCli, SplitWritesShards) {
  const fs::path dir = testing::temp_dir("synth-cli-split");
  std::string text;
  int rc = run_expertmesh({"synth", "--arch", "qwen3", "--layers", "2", "--embd", "64", "--heads", "4",
                           "--split-max-tensors", "10", "-o", (dir / "m.gguf").string()},
                          &text);
  ASSERT_EQ(rc, 0) << text;
  auto f = open_or_die((dir / "m-00003-of-00003.gguf").string());
  ASSERT_TRUE(f);
  EXPECT_EQ(f->n_splits(), 3);
  EXPECT_EQ(f->tensors().size(), 25u);  // 1 + 2 * 11 + 2
}

TEST(SynthCli, BadFlagsExitNonZeroNamingTheFlag) {
  const fs::path dir = testing::temp_dir("synth-cli-bad");
  const std::string out = (dir / "m.gguf").string();
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--arch", "gpt9", "-o", out}, "--arch"},
      {{"--heads", "4", "--kv-heads", "3", "-o", out}, "--kv-heads"},
      {{"--experts", "2", "--top-k", "3", "-o", out}, "--top-k"},
      {{"--layers", "0", "-o", out}, "--layers"},
      {{"--embd", "-64", "-o", out}, "--embd"},
      {{"--embd", "abc", "-o", out}, "--embd"},
      {{"--dtype", "q4_0", "-o", out}, "--dtype"},
      {{"--vocab-size", "100", "-o", out}, "--vocab-size"},
      {{"--vocab", (dir / "missing.gguf").string(), "-o", out}, "--vocab"},
      {{"--seed", "-1", "-o", out}, "--seed"},
      {{"--bogus", "1", "-o", out}, "--bogus"},
      {{"--layers", "1"}, "-o"},
      {{"-o", (dir / "no" / "such" / "dir" / "m.gguf").string()}, "-o"},
  };
  for (const auto& [args, flag] : cases) {
    std::vector<std::string> full = {"synth"};
    full.insert(full.end(), args.begin(), args.end());
    std::string text;
    int rc = run_expertmesh(full, &text);
    EXPECT_NE(rc, 0) << flag << ": " << text;
    EXPECT_NE(text.find(flag), std::string::npos) << "expected the message to name " << flag << ": " << text;
  }
  EXPECT_FALSE(fs::exists(out));
}

TEST(SynthCli, Help) {
  std::string text;
  EXPECT_EQ(run_expertmesh({"synth", "--help"}, &text), 0);
  for (const char* flag : {"--arch", "--experts", "--top-k", "--vocab", "--dtype", "--seed", "-o"})
    EXPECT_NE(text.find(flag), std::string::npos) << flag;
}

}  // namespace
}  // namespace expertmesh
