// Registry of every ggml type id ik_llama.cpp defines (ggml/include/ggml.h). The numeric values
// are on disk in every GGUF, so they must never change. One trait row per type; block structs
// live in kernels/quant/blocks.h with static_asserts against these sizes.
//
// Vocabulary (ggml's): a row of ne0 elements is `row_meta_size` bytes of per-row metadata (row
// scales of ik's _KS/_KT/BN types) followed by ne0/block_size blocks of type_size bytes.
// Interleaved types (_R4/_R8/_R16) store groups of `interleave` rows together; their type_size is
// the per-row share, so the same row_size formula gives the bytes of a row group / interleave.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace expertmesh {

enum class GgmlType : int32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  Q4_0_4_4 = 31, Q4_0_4_8 = 32, Q4_0_8_8 = 33, I2_S = 36, MXFP4 = 39, Q1_0_G128 = 41,
  Q8_0_X4 = 97, Q8_1_X4 = 98, Q8_2_X4 = 99,
  Q6_0 = 133, IQ1_BN = 134, IQ2_BN = 135, Q8_K64 = 136,
  IQ2_K = 137, IQ3_K = 138, IQ4_K = 139, IQ5_K = 140, IQ6_K = 141,
  IQ4_KS = 144, IQ2_KS = 145, IQ4_KSS = 146, Q8_K16 = 147, Q8_K32 = 148, Q8_KR8 = 149, Q8_K128 = 150,
  Q8_KV = 151, IQ5_KS = 152, IQ2_KT = 153, IQ3_KT = 154, IQ4_KT = 155, IQ3_KS = 156, IQ2_KL = 157,
  IQ1_KT = 158,
  Q4_0_R8 = 202, Q5_0_R4 = 206, Q8_0_R8 = 208,
  Q2_K_R4 = 210, Q3_K_R4 = 211, Q4_K_R4 = 212, Q5_K_R4 = 213, Q6_K_R4 = 214,
  IQ2_XXS_R4 = 216, IQ2_XS_R4 = 217, IQ3_XXS_R4 = 218, IQ1_S_R4 = 219, IQ4_NL_R4 = 220, IQ3_S_R4 = 221,
  IQ2_S_R4 = 222, IQ4_XS_R8 = 223, IQ1_M_R4 = 229, BF16_R16 = 230, Q6_0_R4 = 233,
  IQ2_BN_R4 = 335, IQ2_K_R4 = 337, IQ3_K_R4 = 338, IQ4_K_R4 = 339, IQ5_K_R4 = 340,
  IQ4_KS_R4 = 344, IQ5_KS_R4 = 352, MXFP4_R8 = 353,
  Q8_K_R16 = 397, Q8_KV_R8 = 398, Q8_K_R8 = 399,
  kCount = 400,  // GGML_TYPE_COUNT: one past the largest id; ids below it may be unassigned.
};

// On-disk ids that matter most, pinned so an accidental edit fails to compile.
static_assert(static_cast<int>(GgmlType::Q8_0) == 8 && static_cast<int>(GgmlType::BF16) == 30);
static_assert(static_cast<int>(GgmlType::IQ4_KS) == 144 && static_cast<int>(GgmlType::IQ2_KL) == 157);
static_assert(static_cast<int>(GgmlType::Q8_K_R8) == 399 && static_cast<int>(GgmlType::kCount) == 400);

enum class TypeFamily : uint8_t {
  kFloat,       // F32, F16, BF16, F64
  kInteger,     // I8..I64
  kLegacy,      // Q4_0..Q8_1, Q6_0, IQ4_NL, MXFP4, Q1_0_G128
  kKQuant,      // Q2_K..Q6_K
  kIQuant,      // mainline IQ1..IQ4_XS
  kIqk,         // ik's IQ*_K, _KS, _KSS, _KL
  kTrellis,     // IQ*_KT
  kBitnet,      // IQ1_BN, IQ2_BN, I2_S
  kActivation,  // vec_dot types that never appear in model files
  kArmRepack,   // mainline's Q4_0_4_4 / 4_8 / 8_8
  kInterleaved, // _R4 / _R8 / _R16
};

struct TypeTraits {
  GgmlType type;
  const char* name;        // ggml's type_name, e.g. "q4_K", "iq4_ks", "q8_KV" (what --custom-q takes)
  const char* upper_name;  // the enum's spelling, e.g. "Q4_K", "IQ4_KS" (inspect --json, presets)
  int32_t block_size;      // weights per block (ne0 must be a multiple of it)
  int32_t type_size;       // bytes per block (per row for interleaved types)
  int32_t row_meta_size;   // bytes of per-row metadata before the first block
  int32_t interleave;      // rows stored together (1 for ordinary types)
  TypeFamily family;
  bool quantized;          // ggml's is_quantized
  GgmlType base;           // for interleaved types: the type they repack; else the type itself
};

// Returns nullptr for ids that ik_llama.cpp does not define (4, 5, 34, 35, 37, 38, 40, 42..96, ...).
const TypeTraits* type_traits(int32_t id);
inline const TypeTraits* type_traits(GgmlType t) { return type_traits(static_cast<int32_t>(t)); }

// Number of ids ik_llama.cpp defines (rows of the trait table).
inline constexpr size_t kNumDefinedTypes = 92;

// All defined types in id order.
const std::array<TypeTraits, kNumDefinedTypes>& all_type_traits();

// Parses a type name as users type it: ggml's names ("q4_K", "iq4_ks") and upper-case names
// ("Q4_K", "IQ4_KS"), case-insensitively; also accepts a numeric id. Error names the input.
Result<GgmlType> parse_type_name(std::string_view s);

const char* type_name(GgmlType t);        // ggml name; "unknown" for undefined ids
const char* type_upper_name(GgmlType t);  // enum spelling

// Bytes of one row of ne0 elements (meta + blocks), or of `interleave` rows for interleaved types
// divided by interleave. Requires ne0 % block_size == 0 (checked by callers via row_size_checked).
int64_t row_size(GgmlType t, int64_t ne0);

// Validates ne0 against the block size and returns the row size; the error names nothing but the
// type and ne0 (callers add the tensor name).
Result<int64_t> row_size_checked(GgmlType t, int64_t ne0);

// Bytes of a tensor with shape ne[0..3]: nrows * row_size, with nrows = ne1*ne2*ne3.
// Fails if ne0 is not a whole number of blocks, if rows are not a whole number of interleave
// groups, or if the size overflows int64.
Result<int64_t> tensor_nbytes(GgmlType t, const int64_t ne[4]);

}  // namespace expertmesh
