// Model hyper-parameters read from GGUF metadata with the peer's defaults
// (ik_llama.cpp src/llama-hparams.cpp, llama.cpp llama_rope_type):
//   <arch>.attention.head_count_kv       default head_count
//   <arch>.attention.key_length          default n_embd / n_head (head_dim)
//   <arch>.attention.value_length        default n_embd / n_head
//   <arch>.rope.dimension_count          default key_length
//   <arch>.rope.freq_base                default 10000
//   <arch>.rope.scaling.factor           freq_scale = 1/factor (default 1)
//   <arch>.attention.layer_norm_rms_epsilon  required
//   <arch>.expert_feed_forward_length    default feed_forward_length / expert_used_count
//   rope type: NORMAL for llama, NEOX for qwen3 / qwen3moe.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "kernels/cpu/cpu_kernels.h"

namespace expertmesh {
namespace gguf {
class File;
}

enum class Arch { kLlama, kQwen3, kQwen3Moe };
const char* arch_name(Arch a);

struct HParams {
  Arch arch = Arch::kLlama;
  std::string arch_str;
  int64_t n_vocab = 0;
  int64_t n_ctx_train = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;    // key_length
  int64_t head_dim_v = 0;  // value_length
  int64_t n_rot = 0;
  int64_t n_ff = 0;        // dense FFN width (layer 0's when the key is an array)
  int64_t n_expert = 0;
  int64_t n_expert_used = 0;
  int64_t n_ff_exp = 0;
  bool expert_weights_norm = false;  // qwen3moe: hard-wired true in the peer
  float rms_eps = 0.0f;
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;
  cpu::RopeMode rope_mode = cpu::RopeMode::kNormal;

  int64_t n_gqa() const { return n_head / n_head_kv; }
  bool is_moe() const { return n_expert > 0; }
};

// Reads and validates hparams. Errors name the file and key ("<file>: llama.embedding_length: ...").
Result<HParams> load_hparams(const gguf::File& f);

}  // namespace expertmesh
