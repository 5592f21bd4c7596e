#include "model/synth.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <future>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "kernels/quant/fp16.h"

namespace expertmesh::synth {
namespace {

using gguf::KeyValue;
using gguf::Value;

constexpr int64_t kByteVocab = 259;        // <unk>, <s>, </s>, <0x00>..<0xFF>
constexpr int64_t kDefaultVocabSize = 512;
constexpr double kOutputGain = 4.0;        // peaky logits, so quantization errors are visible
constexpr double kNormNoise = 0.1;

// ---------------------------------------------------------------- tensor helpers

TensorSpec norm(std::string name, int64_t n) {
  TensorSpec t;
  t.name = std::move(name);
  t.n_dims = 1;
  t.ne[0] = n;
  t.type = GgmlType::F32;
  t.init = Init::kNorm;
  return t;
}

// A matrix/tensor with shape ne (ggml order); fan_in defaults to ne0, the input dimension.
TensorSpec mat(std::string name, std::initializer_list<int64_t> ne, GgmlType type, double gain = 1.0,
               int64_t fan_in = 0) {
  TensorSpec t;
  t.name = std::move(name);
  t.n_dims = static_cast<uint32_t>(ne.size());
  int i = 0;
  for (int64_t n : ne) t.ne[i++] = n;
  t.type = type;
  t.init = Init::kMatrix;
  t.fan_in = fan_in > 0 ? fan_in : t.ne[0];
  t.gain = gain;
  return t;
}

std::string blk(int64_t il, const char* what) { return fmt::format("blk.{}.{}.weight", il, what); }

void add_u32(std::vector<KeyValue>& kvs, const std::string& key, int64_t v) {
  kvs.push_back({key, Value::u32(static_cast<uint32_t>(v))});
}
void add_f32(std::vector<KeyValue>& kvs, const std::string& key, double v) {
  kvs.push_back({key, Value::f32(static_cast<float>(v))});
}

// ---------------------------------------------------------------- architecture builders
// Each builder reads a validated Options with derived fields filled in (see resolve()).

// KVs every llama-family arch shares, in the order converters write them.
void add_common_kvs(const Options& o, std::vector<KeyValue>& kvs) {
  const std::string a = o.arch;
  add_u32(kvs, a + ".block_count", o.n_layer);
  add_u32(kvs, a + ".context_length", o.n_ctx);
  add_u32(kvs, a + ".embedding_length", o.n_embd);
  add_u32(kvs, a + ".feed_forward_length", o.n_ff);
  add_u32(kvs, a + ".attention.head_count", o.n_head);
  add_u32(kvs, a + ".attention.head_count_kv", o.n_head_kv);
  add_f32(kvs, a + ".rope.freq_base", o.rope_base);
  add_f32(kvs, a + ".attention.layer_norm_rms_epsilon", o.rms_eps);
}

void llama_kvs(const Options& o, std::vector<KeyValue>& kvs) {
  add_common_kvs(o, kvs);
  add_u32(kvs, "llama.rope.dimension_count", o.head_dim);
  // llama derives head_dim = n_embd / n_head unless key_length says otherwise.
  if (o.head_dim != o.n_embd / o.n_head) {
    add_u32(kvs, "llama.attention.key_length", o.head_dim);
    add_u32(kvs, "llama.attention.value_length", o.head_dim);
  }
}

void qwen3_kvs(const Options& o, std::vector<KeyValue>& kvs) {
  add_common_kvs(o, kvs);
  add_u32(kvs, o.arch + ".attention.key_length", o.head_dim);
  add_u32(kvs, o.arch + ".attention.value_length", o.head_dim);
}

void qwen3moe_kvs(const Options& o, std::vector<KeyValue>& kvs) {
  qwen3_kvs(o, kvs);
  add_u32(kvs, "qwen3moe.expert_count", o.n_expert);
  add_u32(kvs, "qwen3moe.expert_used_count", o.n_expert_used);
  add_u32(kvs, "qwen3moe.expert_feed_forward_length", o.n_ff_exp);
}

// Attention block of layer il. Shapes (ne0 first):
//   attn_norm   [n_embd]                     F32
//   attn_q      [n_embd, n_head*head_dim]
//   attn_k      [n_embd, n_head_kv*head_dim]
//   attn_v      [n_embd, n_head_kv*head_dim]
//   attn_output [n_head*head_dim, n_embd]
void add_attention(const Options& o, int64_t il, std::vector<TensorSpec>& t) {
  const int64_t q = o.n_head * o.head_dim, kv = o.n_head_kv * o.head_dim;
  t.push_back(norm(blk(il, "attn_norm"), o.n_embd));
  t.push_back(mat(blk(il, "attn_q"), {o.n_embd, q}, o.dtype));
  t.push_back(mat(blk(il, "attn_k"), {o.n_embd, kv}, o.dtype));
  t.push_back(mat(blk(il, "attn_v"), {o.n_embd, kv}, o.dtype));
  t.push_back(mat(blk(il, "attn_output"), {q, o.n_embd}, o.dtype));
}

// Per-head RMS norms of Q and K (qwen3*): attn_q_norm, attn_k_norm [head_dim] F32.
void add_qk_norm(const Options& o, int64_t il, std::vector<TensorSpec>& t) {
  t.push_back(norm(blk(il, "attn_q_norm"), o.head_dim));
  t.push_back(norm(blk(il, "attn_k_norm"), o.head_dim));
}

// Pre-FFN RMS norm: ffn_norm [n_embd] F32.
void add_ffn_norm(const Options& o, int64_t il, std::vector<TensorSpec>& t) {
  t.push_back(norm(blk(il, "ffn_norm"), o.n_embd));
}

// Dense SwiGLU FFN: ffn_gate, ffn_up [n_embd, n_ff]; ffn_down [n_ff, n_embd].
void add_dense_ffn(const Options& o, int64_t il, std::vector<TensorSpec>& t) {
  t.push_back(mat(blk(il, "ffn_gate"), {o.n_embd, o.n_ff}, o.dtype));
  t.push_back(mat(blk(il, "ffn_up"), {o.n_embd, o.n_ff}, o.dtype));
  t.push_back(mat(blk(il, "ffn_down"), {o.n_ff, o.n_embd}, o.dtype));
}

// Routed-expert FFN (no shared expert):
//   ffn_gate_inp  [n_embd, n_expert] F32 (router logits)
//   ffn_gate_exps [n_embd, n_ff_exp, n_expert]
//   ffn_up_exps   [n_embd, n_ff_exp, n_expert]
//   ffn_down_exps [n_ff_exp, n_embd, n_expert]
void add_moe_ffn(const Options& o, int64_t il, std::vector<TensorSpec>& t) {
  t.push_back(mat(blk(il, "ffn_gate_inp"), {o.n_embd, o.n_expert}, GgmlType::F32));
  t.push_back(mat(blk(il, "ffn_gate_exps"), {o.n_embd, o.n_ff_exp, o.n_expert}, o.dtype));
  t.push_back(mat(blk(il, "ffn_up_exps"), {o.n_embd, o.n_ff_exp, o.n_expert}, o.dtype));
  t.push_back(mat(blk(il, "ffn_down_exps"), {o.n_ff_exp, o.n_embd, o.n_expert}, o.dtype));
}

// Layer tensor order follows tools/synth_gguf.py (the golden tiny model), so the same hparams
// give the same header layout.
void llama_layer(const Options& o, int64_t il, std::vector<TensorSpec>& t) {
  add_attention(o, il, t);
  add_ffn_norm(o, il, t);
  add_dense_ffn(o, il, t);
}

void qwen3_layer(const Options& o, int64_t il, std::vector<TensorSpec>& t) {
  add_attention(o, il, t);
  add_ffn_norm(o, il, t);
  add_qk_norm(o, il, t);
  add_dense_ffn(o, il, t);
}

void qwen3moe_layer(const Options& o, int64_t il, std::vector<TensorSpec>& t) {
  add_attention(o, il, t);
  add_ffn_norm(o, il, t);
  add_qk_norm(o, il, t);
  add_moe_ffn(o, il, t);
}

constexpr ArchSpec kArchs[] = {
    {"llama", false, 10000.0, 1e-5, llama_kvs, llama_layer},
    {"qwen3", false, 1000000.0, 1e-6, qwen3_kvs, qwen3_layer},
    {"qwen3moe", true, 1000000.0, 1e-6, qwen3moe_kvs, qwen3moe_layer},
};

std::string arch_list() {
  std::string s;
  for (const auto& a : kArchs) s += (s.empty() ? "" : ", ") + std::string(a.name);
  return s;
}

// ---------------------------------------------------------------- built-in vocabulary

// The i-th piece (0-based) of the built-in vocabulary's extra pieces, enumerated so that any
// size is reachable: "▁", the printable ASCII characters, then for L = 2, 3, ...: "▁" followed by
// every lowercase string of length L-1, then every lowercase string of length L.
std::string extra_piece(int64_t i) {
  static const std::string kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's word boundary
  if (i == 0) return kSpace;
  i -= 1;
  if (i < 94) return std::string(1, static_cast<char>(0x21 + i));
  i -= 94;
  auto lower = [](int64_t k, int len) {
    std::string s(static_cast<size_t>(len), 'a');
    for (int p = len - 1; p >= 0; --p) {
      s[static_cast<size_t>(p)] = static_cast<char>('a' + k % 26);
      k /= 26;
    }
    return s;
  };
  for (int len = 2;; ++len) {
    int64_t with_space = 1, plain = 1;
    for (int k = 0; k < len - 1; ++k) with_space *= 26;
    plain = with_space * 26;
    if (i < with_space) return kSpace + lower(i, len - 1);
    i -= with_space;
    if (i < plain) return lower(i, len);
    i -= plain;
  }
}

// SentencePiece-style ("llama") vocabulary: <unk>, <s>, </s>, the 256 byte tokens, then extra
// pieces (normal tokens, score -rank) up to n_vocab. Any text encodes via byte fallback.
void add_builtin_vocab(int64_t n_vocab, std::vector<KeyValue>& kvs) {
  enum : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kByte = 6 };  // llama_token_type
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<Value> scores, types = {Value::i32(kUnknown), Value::i32(kControl), Value::i32(kControl)};
  tokens.reserve(static_cast<size_t>(n_vocab));
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(fmt::format("<0x{:02X}>", b));
    types.push_back(Value::i32(kByte));
  }
  for (int64_t i = 0; static_cast<int64_t>(tokens.size()) < n_vocab; ++i) {
    tokens.push_back(extra_piece(i));
    types.push_back(Value::i32(kNormal));
  }
  for (int64_t i = 0; i < n_vocab; ++i)
    scores.push_back(Value::f32(i < kByteVocab ? 0.0f : -static_cast<float>(i - kByteVocab)));
  kvs.push_back({"tokenizer.ggml.model", Value::string("llama")});
  kvs.push_back({"tokenizer.ggml.pre", Value::string("default")});
  kvs.push_back({"tokenizer.ggml.tokens", Value::string_array(tokens)});
  kvs.push_back({"tokenizer.ggml.scores", Value::array_of(gguf::ValueType::FLOAT32, std::move(scores))});
  kvs.push_back({"tokenizer.ggml.token_type", Value::array_of(gguf::ValueType::INT32, std::move(types))});
  kvs.push_back({"tokenizer.ggml.unknown_token_id", Value::u32(0)});
  kvs.push_back({"tokenizer.ggml.bos_token_id", Value::u32(1)});
  kvs.push_back({"tokenizer.ggml.eos_token_id", Value::u32(2)});
  kvs.push_back({"tokenizer.ggml.add_bos_token", Value::boolean(true)});
  kvs.push_back({"tokenizer.ggml.add_eos_token", Value::boolean(false)});
}

// Copies every tokenizer.* KV of `path`; returns the vocabulary size (tokens array length).
Result<int64_t> copy_vocab(const std::string& path, std::vector<KeyValue>& kvs) {
  auto f = gguf::File::open(path);
  if (!f.ok()) return f.status().with_context("--vocab");
  int64_t n_vocab = -1;
  for (const auto& kv : (*f)->kvs()) {
    if (kv.key.rfind("tokenizer.", 0) != 0) continue;
    if (kv.key == "tokenizer.ggml.tokens" && kv.value.type == gguf::ValueType::ARRAY)
      n_vocab = static_cast<int64_t>(kv.value.array.size());
    kvs.push_back(kv);
  }
  if (n_vocab <= 0)
    return Status::InvalidArgument(
        fmt::format("--vocab: '{}' has no tokenizer.ggml.tokens array (not a model or vocab GGUF?)", path));
  return n_vocab;
}

// ---------------------------------------------------------------- options

Status positive(int64_t v, const char* flag) {
  if (v <= 0) return Status::InvalidArgument(fmt::format("{}: must be > 0, got {}", flag, v));
  return Status::Ok();
}

// Validated options with every derived field filled in.
Result<Options> resolve(const Options& in) {
  EM_RETURN_IF_ERROR(validate(in));
  Options o = in;
  const ArchSpec* a = find_arch(o.arch);
  if (o.n_head_kv == 0) o.n_head_kv = o.n_head;
  if (o.head_dim == 0) o.head_dim = o.n_embd / o.n_head;
  if (o.rope_base == 0) o.rope_base = a->default_rope_base;
  if (o.rms_eps == 0) o.rms_eps = a->default_rms_eps;
  if (o.vocab_size == 0) o.vocab_size = kDefaultVocabSize;
  return o;
}

// ---------------------------------------------------------------- generation

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

// xoshiro256** (Blackman & Vigna): the bulk generator, ~6x faster than std::mt19937_64, which
// only seeds it. Deterministic across platforms (pure 64-bit integer arithmetic).
class Xoshiro256 {
 public:
  explicit Xoshiro256(std::mt19937_64& seeder) {
    for (auto& w : s_) w = seeder();
    if ((s_[0] | s_[1] | s_[2] | s_[3]) == 0) s_[0] = 1;  // the all-zero state is a fixed point
  }
  uint64_t operator()() {
    const uint64_t r = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return r;
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// Approximately standard normal from 64 random bits: the Irwin–Hall sum of four 16-bit uniforms,
// centred and scaled to unit variance. Bounded at ±sqrt(12) ≈ 3.46. Exact in float: the centred
// sum is an integer below 2^18.
inline float irwin_hall4(uint64_t r) {
  const int32_t s = static_cast<int32_t>((r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48));
  constexpr int32_t kMean = 2 * 65535;                      // 4 * 65535 / 2
  constexpr float kInvSd = 1.7320508075688772f / 65536.0f;  // sd = sqrt(4 * (65536^2 - 1) / 12) ≈ 65536 / sqrt(3)
  return static_cast<float>(s - kMean) * kInvSd;
}

// Generates elements [chunk*kChunkElems, ...) of `spec` into `out` (the tensor's buffer).
void generate_chunk(const TensorSpec& spec, uint64_t seed, int64_t chunk, uint8_t* out) {
  const int64_t n = spec.n_elements();
  const int64_t begin = chunk * kChunkElems, end = std::min(n, begin + kChunkElems);
  std::mt19937_64 seeder(splitmix64(splitmix64(seed) ^ fnv1a64(spec.name)) ^ splitmix64(static_cast<uint64_t>(chunk)));
  Xoshiro256 rng(seeder);
  float scale = 0, bias = 0;
  if (spec.init == Init::kNorm) {
    scale = static_cast<float>(kNormNoise);
    bias = 1.0f;
  } else {
    scale = static_cast<float>(spec.gain / std::sqrt(static_cast<double>(spec.fan_in)));
  }
  switch (spec.type) {
    case GgmlType::F32: {
      float* p = reinterpret_cast<float*>(out);
      for (int64_t i = begin; i < end; ++i) p[i] = bias + scale * irwin_hall4(rng());
      break;
    }
    case GgmlType::F16: {
      uint16_t* p = reinterpret_cast<uint16_t*>(out);
      for (int64_t i = begin; i < end; ++i) p[i] = quant::f32_to_fp16(bias + scale * irwin_hall4(rng()));
      break;
    }
    case GgmlType::BF16: {
      uint16_t* p = reinterpret_cast<uint16_t*>(out);
      for (int64_t i = begin; i < end; ++i) p[i] = quant::f32_to_bf16(bias + scale * irwin_hall4(rng()));
      break;
    }
    default:
      break;  // make_plan only emits F32/F16/BF16
  }
}

struct Task {
  const TensorSpec* spec;
  uint8_t* out;
  int64_t chunk;
};

// Runs every task on n_threads threads (work stealing via an atomic index).
void run_tasks(const std::vector<Task>& tasks, uint64_t seed, int n_threads) {
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < tasks.size(); i = next++) generate_chunk(*tasks[i].spec, seed, tasks[i].chunk, tasks[i].out);
  };
  const int n = std::max(1, std::min<int>(n_threads, static_cast<int>(tasks.size())));
  std::vector<std::thread> threads;
  for (int t = 1; t < n; ++t) threads.emplace_back(worker);
  worker();
  for (auto& th : threads) th.join();
}

void add_chunks(const TensorSpec& spec, uint8_t* out, std::vector<Task>& tasks) {
  const int64_t n_chunks = (spec.n_elements() + kChunkElems - 1) / kChunkElems;
  for (int64_t c = 0; c < n_chunks; ++c) tasks.push_back({&spec, out, c});
}

// The output directory must exist and be writable (checked before any work is done).
Status check_output(const std::string& path) {
  if (path.empty()) return Status::InvalidArgument("-o: an output path is required (-o OUT.gguf)");
  namespace fs = std::filesystem;
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return Status::InvalidArgument(fmt::format("-o: directory '{}' of '{}' does not exist", dir.string(), path));
  if (::access(dir.c_str(), W_OK) != 0)
    return Status::InvalidArgument(fmt::format("-o: directory '{}' of '{}' is not writable", dir.string(), path));
  if (fs::is_directory(path, ec)) return Status::InvalidArgument(fmt::format("-o: '{}' is a directory", path));
  return Status::Ok();
}

}  // namespace

// ---------------------------------------------------------------- public API

std::span<const ArchSpec> archs() { return kArchs; }

const ArchSpec* find_arch(const std::string& name) {
  for (const auto& a : kArchs)
    if (name == a.name) return &a;
  return nullptr;
}

Result<GgmlType> parse_dtype(const std::string& s) {
  std::string l = s;
  for (char& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (l == "f32") return GgmlType::F32;
  if (l == "f16") return GgmlType::F16;
  if (l == "bf16") return GgmlType::BF16;
  return Status::InvalidArgument(fmt::format("--dtype: expected f32, f16 or bf16, got '{}'", s));
}

Status validate(const Options& o) {
  const ArchSpec* a = find_arch(o.arch);
  if (!a) return Status::InvalidArgument(fmt::format("--arch: unknown architecture '{}' (one of: {})", o.arch, arch_list()));
  // Caps keep every product below int64 and every value within the u32 GGUF keys.
  constexpr int64_t kMaxDim = int64_t{1} << 24;
  struct Bound {
    int64_t v;
    const char* flag;
  };
  for (const Bound& b : {Bound{o.n_layer, "--layers"}, Bound{o.n_embd, "--embd"}, Bound{o.n_head, "--heads"},
                         Bound{o.n_ff, "--ff"}, Bound{o.n_ctx, "--ctx"}}) {
    EM_RETURN_IF_ERROR(positive(b.v, b.flag));
    if (b.v > kMaxDim) return Status::InvalidArgument(fmt::format("{}: {} is too large (max {})", b.flag, b.v, kMaxDim));
  }
  for (const Bound& b : {Bound{o.n_head_kv, "--kv-heads"}, Bound{o.head_dim, "--head-dim"}}) {
    if (b.v < 0) return Status::InvalidArgument(fmt::format("{}: must be > 0, got {}", b.flag, b.v));
    if (b.v > kMaxDim) return Status::InvalidArgument(fmt::format("{}: {} is too large (max {})", b.flag, b.v, kMaxDim));
  }
  const int64_t n_head_kv = o.n_head_kv == 0 ? o.n_head : o.n_head_kv;
  if (o.n_head % n_head_kv != 0)
    return Status::InvalidArgument(
        fmt::format("--kv-heads: {} does not divide --heads {} (grouped-query attention)", n_head_kv, o.n_head));
  if (o.head_dim == 0 && o.n_embd % o.n_head != 0)
    return Status::InvalidArgument(
        fmt::format("--head-dim: --embd {} is not a multiple of --heads {}; give --head-dim", o.n_embd, o.n_head));
  if (o.head_dim > 0 && o.head_dim % 2 != 0)
    return Status::InvalidArgument(fmt::format("--head-dim: must be even for RoPE, got {}", o.head_dim));
  if (o.head_dim == 0 && (o.n_embd / o.n_head) % 2 != 0)
    return Status::InvalidArgument(
        fmt::format("--head-dim: --embd / --heads = {} must be even for RoPE", o.n_embd / o.n_head));
  if (a->moe) {
    for (const Bound& b : {Bound{o.n_expert, "--experts"}, Bound{o.n_expert_used, "--top-k"},
                           Bound{o.n_ff_exp, "--ff-exp"}}) {
      EM_RETURN_IF_ERROR(positive(b.v, b.flag));
      if (b.v > kMaxDim) return Status::InvalidArgument(fmt::format("{}: {} is too large (max {})", b.flag, b.v, kMaxDim));
    }
    if (o.n_expert_used > o.n_expert)
      return Status::InvalidArgument(
          fmt::format("--top-k: {} is larger than --experts {}", o.n_expert_used, o.n_expert));
  }
  if (!std::isfinite(o.rope_base) || o.rope_base < 0)
    return Status::InvalidArgument(fmt::format("--rope-base: must be > 0, got {}", o.rope_base));
  if (!std::isfinite(o.rms_eps) || o.rms_eps < 0)
    return Status::InvalidArgument(fmt::format("--rms-eps: must be > 0, got {}", o.rms_eps));
  if (o.dtype != GgmlType::F32 && o.dtype != GgmlType::F16 && o.dtype != GgmlType::BF16)
    return Status::InvalidArgument(fmt::format("--dtype: expected f32, f16 or bf16, got {}", type_name(o.dtype)));
  if (!o.vocab_path.empty() && o.vocab_size != 0)
    return Status::InvalidArgument("--vocab-size: cannot be combined with --vocab (the file fixes the size)");
  if (o.vocab_size != 0 && (o.vocab_size < kByteVocab || o.vocab_size > kMaxDim))
    return Status::InvalidArgument(fmt::format(
        "--vocab-size: must be between {} (3 special + 256 byte tokens) and {}, got {}", kByteVocab, kMaxDim, o.vocab_size));
  return Status::Ok();
}

Result<Plan> make_plan(const Options& in) {
  EM_ASSIGN_OR_RETURN(Options o, resolve(in));
  const ArchSpec* a = find_arch(o.arch);
  Plan p;
  const int file_type = o.dtype == GgmlType::F32 ? 0 : o.dtype == GgmlType::F16 ? 1 : 32;  // llama_ftype
  p.kvs.push_back({"general.architecture", Value::string(o.arch)});
  p.kvs.push_back({"general.name", Value::string(fmt::format("synthetic-{}-{}", o.arch, o.seed))});
  p.kvs.push_back({"general.file_type", Value::u32(file_type)});
  a->add_kvs(o, p.kvs);
  if (!o.vocab_path.empty()) {
    EM_ASSIGN_OR_RETURN(p.n_vocab, copy_vocab(o.vocab_path, p.kvs));
  } else {
    p.n_vocab = o.vocab_size;
    add_builtin_vocab(p.n_vocab, p.kvs);
  }
  // token_embd [n_embd, n_vocab] (std 1: the first norm rescales anyway), the layers, then
  // output_norm [n_embd] F32 and output [n_embd, n_vocab].
  p.tensors.push_back(mat("token_embd.weight", {o.n_embd, p.n_vocab}, o.dtype, 1.0, 1));
  for (int64_t il = 0; il < o.n_layer; ++il) a->add_layer(o, il, p.tensors);
  p.tensors.push_back(norm("output_norm.weight", o.n_embd));
  p.tensors.push_back(mat("output.weight", {o.n_embd, p.n_vocab}, o.dtype, kOutputGain));
  for (const auto& t : p.tensors) {
    auto nb = tensor_nbytes(t.type, t.ne);
    if (!nb.ok()) return nb.status().with_context("synth: tensor " + t.name);
    p.n_params += t.n_elements();
    p.n_bytes += *nb;
  }
  return p;
}

void generate_tensor(const TensorSpec& spec, uint64_t seed, uint8_t* out, int n_threads) {
  std::vector<Task> tasks;
  add_chunks(spec, out, tasks);
  run_tasks(tasks, seed, n_threads);
}

Result<Summary> write_model(const Options& o, const std::string& path, int n_threads,
                            const gguf::SplitOptions& split) {
  EM_RETURN_IF_ERROR(check_output(path));
  EM_ASSIGN_OR_RETURN(Plan plan, make_plan(o));

  gguf::Writer w;
  for (const auto& kv : plan.kvs) w.set(kv.key, kv.value);
  for (const auto& t : plan.tensors) {
    gguf::WriteTensor wt;
    wt.name = t.name;
    wt.n_dims = t.n_dims;
    std::copy(std::begin(t.ne), std::end(t.ne), std::begin(wt.ne));
    wt.type = t.type;
    EM_ASSIGN_OR_RETURN(wt.nbytes, tensor_nbytes(t.type, t.ne));
    EM_RETURN_IF_ERROR(w.add_tensor(wt));
  }
  // Tensors are generated as the writer asks for them (chunks in parallel), one tensor ahead of
  // the writer: tensor i+1 is generated while tensor i is written. Two buffers take turns (the
  // writer's and ours are swapped), so memory is two tensors and pages are reused.
  auto generate = [&](size_t index, std::vector<uint8_t> buf) {
    buf.resize(static_cast<size_t>(w.tensors()[index].nbytes));
    generate_tensor(plan.tensors[index], o.seed, buf.data(), n_threads);
    return buf;
  };
  std::vector<uint8_t> spare;
  std::future<std::vector<uint8_t>> ahead;
  size_t ahead_index = 0;
  auto source = [&](size_t index, std::vector<uint8_t>* out) -> Status {
    if (index >= plan.tensors.size()) return Status::Internal(fmt::format("synth: tensor index {} out of range", index));
    std::vector<uint8_t> buf;
    if (ahead.valid() && ahead_index == index) {
      buf = ahead.get();
    } else {
      if (ahead.valid()) ahead.get();  // out of order (never, with gguf::Writer): drop the prefetch
      buf = generate(index, std::move(spare));
    }
    out->swap(buf);
    spare = std::move(buf);  // the writer's previous buffer
    if (index + 1 < plan.tensors.size()) {
      ahead_index = index + 1;
      ahead = std::async(std::launch::async, generate, index + 1, std::move(spare));
    }
    return Status::Ok();
  };
  EM_ASSIGN_OR_RETURN(auto paths, w.write_streaming(path, split, source));
  Summary s;
  s.paths = paths;
  s.n_tensors = static_cast<int64_t>(plan.tensors.size());
  s.n_params = plan.n_params;
  s.n_bytes = plan.n_bytes;
  s.n_vocab = plan.n_vocab;
  for (const auto& p : paths) {
    std::error_code ec;
    const auto sz = std::filesystem::file_size(p, ec);
    if (!ec) s.file_size += sz;
  }
  return s;
}

}  // namespace expertmesh::synth
