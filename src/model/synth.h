// Synthetic models: seeded random weights with the exact GGUF keys and tensor names/shapes that
// llama.cpp / ik_llama.cpp load for an architecture. Used by the quick start, tests and benches.
//
// Architectures are rows of a table (archs()): each row names the arch, its default hparams and
// the functions that add its KVs and tensors. Adding one (deepseek2) is a new row plus its
// builder functions; nothing else switches on the arch name.
//
// Determinism: every tensor's bytes depend only on (seed, tensor name, shape, dtype). Each tensor
// is generated in fixed chunks of kChunkElems elements, each chunk from its own stream: a
// std::mt19937_64 seeded by (seed, hash(name), chunk index) seeds a xoshiro256** that draws the
// values (6x faster than drawing from the mt19937_64 itself). So the output does not depend on
// the thread count, and adding or removing a tensor does not change any other tensor.
//
// Weights are approximately normal (Irwin–Hall sum of four 16-bit uniforms, bounded at ±3.46σ)
// with std gain/sqrt(fan_in), so a forward pass keeps activations O(1); norm weights are
// 1 + 0.1·z (F32); token embeddings have std 1; the router has std 1/sqrt(n_embd).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/gguf/gguf.h"
#include "model/types.h"

namespace expertmesh::synth {

// The hyperparameters of a synthetic model. Field comments name the `expertmesh synth` flag; a
// validation error names that flag. 0 means "derive" where a field says so.
struct Options {
  std::string arch = "qwen3moe";  // --arch: a name in archs()
  int64_t n_layer = 2;            // --layers
  int64_t n_embd = 256;           // --embd
  int64_t n_head = 4;             // --heads
  int64_t n_head_kv = 0;          // --kv-heads (0 = n_head); must divide n_head
  int64_t head_dim = 0;           // --head-dim (0 = n_embd / n_head)
  int64_t n_ff = 512;             // --ff: dense FFN width (also written for MoE archs, as converters do)
  int64_t n_expert = 8;           // --experts (MoE archs)
  int64_t n_expert_used = 2;      // --top-k (MoE archs), <= n_expert
  int64_t n_ff_exp = 256;         // --ff-exp: routed expert FFN width (MoE archs)
  std::string vocab_path;         // --vocab: copy every tokenizer.* KV from this GGUF; empty = built-in
  int64_t vocab_size = 0;         // --vocab-size: built-in vocabulary size, >= 259 (0 = 512)
  int64_t n_ctx = 4096;           // --ctx: context_length
  double rope_base = 0;           // --rope-base (0 = the arch's default)
  double rms_eps = 0;             // --rms-eps (0 = the arch's default)
  GgmlType dtype = GgmlType::BF16;  // --dtype: F32, F16 or BF16 for the matrices; norms are always F32
  uint64_t seed = 1;              // --seed
};

// Parses "f32", "f16", "bf16" (case-insensitive). Error names --dtype.
Result<GgmlType> parse_dtype(const std::string& s);

// How a tensor's values are drawn.
enum class Init : uint8_t {
  kNorm,    // 1 + 0.1·z, F32
  kMatrix,  // gain · z / sqrt(fan_in)
};

// One tensor of the model before its data exists.
struct TensorSpec {
  std::string name;
  uint32_t n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ggml order: ne[0] is the contiguous (input) dimension
  GgmlType type = GgmlType::F32;
  Init init = Init::kMatrix;
  int64_t fan_in = 1;            // kMatrix: std = gain / sqrt(fan_in)
  double gain = 1.0;
  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
};

// Everything that will be written: metadata in order, tensors in order.
struct Plan {
  std::vector<gguf::KeyValue> kvs;
  std::vector<TensorSpec> tensors;
  int64_t n_vocab = 0;
  int64_t n_params = 0;
  int64_t n_bytes = 0;  // tensor data bytes, without alignment padding
};

// A row of the architecture table.
struct ArchSpec {
  const char* name;           // general.architecture and the KV prefix
  bool moe;                   // reads --experts/--top-k/--ff-exp
  double default_rope_base;
  double default_rms_eps;
  // Appends the arch's hparam KVs (everything but general.* and tokenizer.*).
  void (*add_kvs)(const Options& o, std::vector<gguf::KeyValue>& kvs);
  // Appends the tensors of layer `il` (blk.<il>.*).
  void (*add_layer)(const Options& o, int64_t il, std::vector<TensorSpec>& t);
};

std::span<const ArchSpec> archs();
const ArchSpec* find_arch(const std::string& name);  // nullptr if unknown

// Checks the options against each other (heads % kv_heads, top_k <= experts, sizes > 0, ...)
// without touching the file system. The error names the offending flag.
Status validate(const Options& o);

// Validates, fills derived fields (head_dim, n_head_kv, rope_base, rms_eps) and builds the plan.
// Reads the --vocab file if one is given (error names the flag and the file).
Result<Plan> make_plan(const Options& o);

struct Summary {
  std::vector<std::string> paths;  // the file, or every shard of a split write
  int64_t n_tensors = 0;
  int64_t n_params = 0;
  int64_t n_bytes = 0;   // tensor data bytes
  int64_t n_vocab = 0;
  uint64_t file_size = 0;  // all files together
};

// Generates every tensor with `n_threads` threads (>= 1) and writes `path` with gguf::Writer
// (atomically: path.tmp then rename), split into shards when `split` says so. Checks that the
// output directory exists and is writable before generating (error names -o). Memory: one
// tensor at a time (tensors are generated as the writer streams them out).
Result<Summary> write_model(const Options& o, const std::string& path, int n_threads,
                            const gguf::SplitOptions& split = {});

// Fills `out` (spec.n_elements() values, converted to spec.type) with the tensor's values,
// deterministically; exposed so tests can check single tensors. `out` must hold
// tensor_nbytes(spec) bytes. Thread-safe; uses n_threads threads.
void generate_tensor(const TensorSpec& spec, uint64_t seed, uint8_t* out, int n_threads);

// Elements generated from one RNG stream (the unit of parallelism and of determinism).
inline constexpr int64_t kChunkElems = int64_t{1} << 18;

}  // namespace expertmesh::synth
