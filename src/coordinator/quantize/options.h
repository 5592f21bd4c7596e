// What a quantize run was asked to do: llama-quantize's options (ik_llama.cpp
// examples/quantize/quantize.cpp, inventory §4.1) in parsed, validated form, plus the parsers for
// the flags whose values have structure (--custom-q, --override-kv, --split-max-size). Parsers
// return InvalidArgument naming the flag and the offending item; they never throw.
#pragma once

#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "coordinator/quantize/presets.h"
#include "model/gguf/gguf.h"
#include "model/types.h"

namespace expertmesh {

// One `regex=type` item of --custom-q. The regex is ECMAScript (std::regex's default, as the peer
// builds it) and is tried with regex_search on the tensor name; the first matching rule wins.
struct CustomQuantRule {
  std::string pattern;
  std::regex regex;
  GgmlType type = GgmlType::F32;
};

// Parses "regex1=type1,regex2=type2,..." (split on ',' like the peer's string_split, so a regex
// cannot contain a comma) and appends to `rules`. Types are ggml type names (q8_0, iq4_ks, q6_K,
// f16, ...). Errors name --custom-q and the bad item.
Status parse_custom_quants(std::string_view arg, std::vector<CustomQuantRule>* rules);

// --override-kv KEY=TYPE:VALUE with TYPE one of int, float, bool, str, as common.cpp's
// string_parse_kv_override reads it: int is written as i32, float as f32, bool as bool, str as a
// string of at most 127 bytes; the key is shorter than 128 bytes.
struct KvOverride {
  std::string key;
  gguf::Value value;
};
Result<KvOverride> parse_kv_override(std::string_view arg);

// gguf-split's size syntax for --split-max-size: a positive integer followed by M or G (decimal
// megabytes / gigabytes, 1000-based as gguf-split computes them).
Result<int64_t> parse_split_size(std::string_view arg);

// The per-tensor-class types of the "custom quant scheme" flags (--attn-q-type ...). They feed the
// preset heuristics, so they act exactly where the peer's rules look at them (see rules.h).
struct TensorClassTypes {
  std::optional<GgmlType> attn_q, attn_k, attn_v, attn_qkv, attn_output;
  std::optional<GgmlType> ffn_gate, ffn_down, ffn_up;
};

struct QuantizeOptions {
  QuantPreset preset{};                          // from the TYPE argument
  bool pure = false;                             // --pure: one type everywhere (fallbacks still apply)
  bool allow_requantize = false;                 // --allow-requantize: input may be quantized
  bool leave_output_tensor = false;              // --leave-output-tensor
  bool ignore_imatrix_rules = false;             // --ignore-imatrix-rules
  bool repack = false;                           // --repack: only convert to _R4/_R8 layouts, no requantization
  std::vector<std::string> repack_patterns;      // --repack-pattern: regexes limiting --repack
  std::optional<GgmlType> token_embedding_type;  // --token-embedding-type
  std::optional<GgmlType> per_layer_token_embedding_type;  // --per-layer-token-embedding-type
  std::optional<GgmlType> output_tensor_type;              // --output-tensor-type
  std::optional<GgmlType> ffn_gate_inp_type;               // --ffn-gate-inp-type (routers are otherwise kept)
  TensorClassTypes class_types;                            // --attn-q-type ... --ffn-up-type
  std::vector<CustomQuantRule> custom_quants;              // --custom-q, in order (ignored with --pure)
};

}  // namespace expertmesh
