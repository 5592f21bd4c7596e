#include "model/types.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <limits>

#include <fmt/format.h>

namespace expertmesh {
namespace {

using F = TypeFamily;
using T = GgmlType;

// Sizes from ik_llama.cpp's type_traits[] (ggml.c) and ggml-common.h block structs; see
// ../shared/reference/ik_llama_inventory.md §1. Columns: type, name, upper, blck, bytes, meta,
// interleave, family, quantized, base.
constexpr std::array<TypeTraits, kNumDefinedTypes> kTypes = {{
    {T::F32, "f32", "F32", 1, 4, 0, 1, F::kFloat, false, T::F32},
    {T::F16, "f16", "F16", 1, 2, 0, 1, F::kFloat, false, T::F16},
    {T::Q4_0, "q4_0", "Q4_0", 32, 18, 0, 1, F::kLegacy, true, T::Q4_0},
    {T::Q4_1, "q4_1", "Q4_1", 32, 20, 0, 1, F::kLegacy, true, T::Q4_1},
    {T::Q5_0, "q5_0", "Q5_0", 32, 22, 0, 1, F::kLegacy, true, T::Q5_0},
    {T::Q5_1, "q5_1", "Q5_1", 32, 24, 0, 1, F::kLegacy, true, T::Q5_1},
    {T::Q8_0, "q8_0", "Q8_0", 32, 34, 0, 1, F::kLegacy, true, T::Q8_0},
    {T::Q8_1, "q8_1", "Q8_1", 32, 36, 0, 1, F::kActivation, true, T::Q8_1},
    {T::Q2_K, "q2_K", "Q2_K", 256, 84, 0, 1, F::kKQuant, true, T::Q2_K},
    {T::Q3_K, "q3_K", "Q3_K", 256, 110, 0, 1, F::kKQuant, true, T::Q3_K},
    {T::Q4_K, "q4_K", "Q4_K", 256, 144, 0, 1, F::kKQuant, true, T::Q4_K},
    {T::Q5_K, "q5_K", "Q5_K", 256, 176, 0, 1, F::kKQuant, true, T::Q5_K},
    {T::Q6_K, "q6_K", "Q6_K", 256, 210, 0, 1, F::kKQuant, true, T::Q6_K},
    {T::Q8_K, "q8_K", "Q8_K", 256, 296, 0, 1, F::kActivation, true, T::Q8_K},
    {T::IQ2_XXS, "iq2_xxs", "IQ2_XXS", 256, 66, 0, 1, F::kIQuant, true, T::IQ2_XXS},
    {T::IQ2_XS, "iq2_xs", "IQ2_XS", 256, 74, 0, 1, F::kIQuant, true, T::IQ2_XS},
    {T::IQ3_XXS, "iq3_xxs", "IQ3_XXS", 256, 98, 0, 1, F::kIQuant, true, T::IQ3_XXS},
    {T::IQ1_S, "iq1_s", "IQ1_S", 256, 50, 0, 1, F::kIQuant, true, T::IQ1_S},
    {T::IQ4_NL, "iq4_nl", "IQ4_NL", 32, 18, 0, 1, F::kLegacy, true, T::IQ4_NL},
    {T::IQ3_S, "iq3_s", "IQ3_S", 256, 110, 0, 1, F::kIQuant, true, T::IQ3_S},
    {T::IQ2_S, "iq2_s", "IQ2_S", 256, 82, 0, 1, F::kIQuant, true, T::IQ2_S},
    {T::IQ4_XS, "iq4_xs", "IQ4_XS", 256, 136, 0, 1, F::kIQuant, true, T::IQ4_XS},
    {T::I8, "i8", "I8", 1, 1, 0, 1, F::kInteger, false, T::I8},
    {T::I16, "i16", "I16", 1, 2, 0, 1, F::kInteger, false, T::I16},
    {T::I32, "i32", "I32", 1, 4, 0, 1, F::kInteger, false, T::I32},
    {T::I64, "i64", "I64", 1, 8, 0, 1, F::kInteger, false, T::I64},
    {T::F64, "f64", "F64", 1, 8, 0, 1, F::kFloat, false, T::F64},
    {T::IQ1_M, "iq1_m", "IQ1_M", 256, 56, 0, 1, F::kIQuant, true, T::IQ1_M},
    {T::BF16, "bf16", "BF16", 1, 2, 0, 1, F::kFloat, false, T::BF16},
    {T::Q4_0_4_4, "q4_0_4x4", "Q4_0_4_4", 32, 18, 0, 1, F::kArmRepack, true, T::Q4_0_4_4},
    {T::Q4_0_4_8, "q4_0_4x8", "Q4_0_4_8", 32, 18, 0, 1, F::kArmRepack, true, T::Q4_0_4_8},
    {T::Q4_0_8_8, "q4_0_8x8", "Q4_0_8_8", 32, 18, 0, 1, F::kArmRepack, true, T::Q4_0_8_8},
    // I2_S: declared 1 element / 1 byte, but a tensor is elements/4 + 32 bytes (tensor_nbytes).
    {T::I2_S, "i2_s", "I2_S", 1, 1, 0, 1, F::kBitnet, true, T::I2_S},
    {T::MXFP4, "mxfp4", "MXFP4", 32, 17, 0, 1, F::kLegacy, true, T::MXFP4},
    {T::Q1_0_G128, "q1_0_g128", "Q1_0_G128", 128, 18, 0, 1, F::kLegacy, true, T::Q1_0_G128},
    {T::Q8_0_X4, "q8_0_x4", "Q8_0_X4", 32, 34, 0, 1, F::kActivation, true, T::Q8_0_X4},
    {T::Q8_1_X4, "q8_1_x4", "Q8_1_X4", 32, 36, 0, 1, F::kActivation, true, T::Q8_1_X4},
    {T::Q8_2_X4, "q8_2_x4", "Q8_2_X4", 32, 36, 0, 1, F::kActivation, true, T::Q8_2_X4},
    {T::Q6_0, "q6_0", "Q6_0", 32, 26, 0, 1, F::kLegacy, true, T::Q6_0},
    {T::IQ1_BN, "iq1_bn", "IQ1_BN", 64, 13, 2, 1, F::kBitnet, true, T::IQ1_BN},
    {T::IQ2_BN, "iq2_bn", "IQ2_BN", 64, 16, 4, 1, F::kBitnet, true, T::IQ2_BN},
    {T::Q8_K64, "q8_K64", "Q8_K64", 64, 68, 0, 1, F::kActivation, true, T::Q8_K64},
    {T::IQ2_K, "iq2_k", "IQ2_K", 256, 76, 0, 1, F::kIqk, true, T::IQ2_K},
    {T::IQ3_K, "iq3_k", "IQ3_K", 256, 110, 0, 1, F::kIqk, true, T::IQ3_K},
    {T::IQ4_K, "iq4_k", "IQ4_K", 256, 144, 0, 1, F::kIqk, true, T::IQ4_K},
    {T::IQ5_K, "iq5_k", "IQ5_K", 256, 176, 0, 1, F::kIqk, true, T::IQ5_K},
    {T::IQ6_K, "iq6_k", "IQ6_K", 256, 212, 0, 1, F::kIqk, true, T::IQ6_K},
    {T::IQ4_KS, "iq4_ks", "IQ4_KS", 256, 136, 4, 1, F::kIqk, true, T::IQ4_KS},
    {T::IQ2_KS, "iq2_ks", "IQ2_KS", 256, 70, 2, 1, F::kIqk, true, T::IQ2_KS},
    {T::IQ4_KSS, "iq4_kss", "IQ4_KSS", 256, 128, 4, 1, F::kIqk, true, T::IQ4_KSS},
    {T::Q8_K16, "q8_K16", "Q8_K16", 64, 64, 20, 1, F::kActivation, true, T::Q8_K16},
    {T::Q8_K32, "q8_K32", "Q8_K32", 256, 296, 0, 1, F::kActivation, true, T::Q8_K32},
    {T::Q8_KR8, "q8_KR8", "Q8_KR8", 256, 296, 0, 1, F::kActivation, true, T::Q8_KR8},
    {T::Q8_K128, "q8_K128", "Q8_K128", 128, 140, 0, 1, F::kActivation, true, T::Q8_K128},
    {T::Q8_KV, "q8_KV", "Q8_KV", 32, 32, 8, 1, F::kLegacy, true, T::Q8_KV},
    {T::IQ5_KS, "iq5_ks", "IQ5_KS", 256, 168, 4, 1, F::kIqk, true, T::IQ5_KS},
    {T::IQ2_KT, "iq2_kt", "IQ2_KT", 256, 68, 4, 1, F::kTrellis, true, T::IQ2_KT},
    {T::IQ3_KT, "iq3_kt", "IQ3_KT", 256, 100, 4, 1, F::kTrellis, true, T::IQ3_KT},
    {T::IQ4_KT, "iq4_kt", "IQ4_KT", 256, 128, 4, 1, F::kTrellis, true, T::IQ4_KT},
    {T::IQ3_KS, "iq3_ks", "IQ3_KS", 256, 102, 2, 1, F::kIqk, true, T::IQ3_KS},
    {T::IQ2_KL, "iq2_kl", "IQ2_KL", 256, 86, 2, 1, F::kIqk, true, T::IQ2_KL},
    {T::IQ1_KT, "iq1_kt", "IQ1_KT", 256, 56, 4, 1, F::kTrellis, true, T::IQ1_KT},
    {T::Q4_0_R8, "q4_0_r8", "Q4_0_R8", 32, 18, 0, 8, F::kInterleaved, true, T::Q4_0},
    {T::Q5_0_R4, "q5_0_r4", "Q5_0_R4", 32, 22, 0, 4, F::kInterleaved, true, T::Q5_0},
    {T::Q8_0_R8, "q8_0_r8", "Q8_0_R8", 32, 34, 0, 8, F::kInterleaved, true, T::Q8_0},
    {T::Q2_K_R4, "q2_k_r4", "Q2_K_R4", 256, 84, 0, 4, F::kInterleaved, true, T::Q2_K},
    {T::Q3_K_R4, "q3_k_r4", "Q3_K_R4", 256, 110, 0, 4, F::kInterleaved, true, T::Q3_K},
    {T::Q4_K_R4, "q4_k_r4", "Q4_K_R4", 256, 144, 0, 4, F::kInterleaved, true, T::Q4_K},
    {T::Q5_K_R4, "q5_k_r4", "Q5_K_R4", 256, 176, 0, 4, F::kInterleaved, true, T::Q5_K},
    {T::Q6_K_R4, "q6_k_r4", "Q6_K_R4", 256, 210, 0, 4, F::kInterleaved, true, T::Q6_K},
    {T::IQ2_XXS_R4, "iq2_xxs_r4", "IQ2_XXS_R4", 256, 66, 0, 4, F::kInterleaved, true, T::IQ2_XXS},
    {T::IQ2_XS_R4, "iq2_xs_r4", "IQ2_XS_R4", 256, 74, 0, 4, F::kInterleaved, true, T::IQ2_XS},
    {T::IQ3_XXS_R4, "iq3_xxs_r4", "IQ3_XXS_R4", 256, 98, 0, 4, F::kInterleaved, true, T::IQ3_XXS},
    // IQ1_S_R4 / IQ1_M_R4 are their own 32-weight formats, not repacks of IQ1_S / IQ1_M.
    {T::IQ1_S_R4, "iq1_s_r4", "IQ1_S_R4", 32, 6, 2, 4, F::kInterleaved, true, T::IQ1_S_R4},
    {T::IQ4_NL_R4, "iq4_nl_r4", "IQ4_NL_R4", 32, 18, 0, 4, F::kInterleaved, true, T::IQ4_NL},
    {T::IQ3_S_R4, "iq3_s_r4", "IQ3_S_R4", 256, 110, 0, 4, F::kInterleaved, true, T::IQ3_S},
    {T::IQ2_S_R4, "iq2_s_r4", "IQ2_S_R4", 256, 82, 0, 4, F::kInterleaved, true, T::IQ2_S},
    {T::IQ4_XS_R8, "iq4_xs_r8", "IQ4_XS_R8", 256, 136, 0, 8, F::kInterleaved, true, T::IQ4_XS},
    {T::IQ1_M_R4, "iq1_m_r4", "IQ1_M_R4", 32, 7, 2, 4, F::kInterleaved, true, T::IQ1_M_R4},
    {T::BF16_R16, "bf16_r16", "BF16_R16", 1, 2, 0, 16, F::kInterleaved, false, T::BF16},
    {T::Q6_0_R4, "q6_0_r4", "Q6_0_R4", 32, 26, 0, 4, F::kInterleaved, true, T::Q6_0},
    {T::IQ2_BN_R4, "iq2_bn_r4", "IQ2_BN_R4", 64, 16, 4, 4, F::kInterleaved, true, T::IQ2_BN},
    {T::IQ2_K_R4, "iq2_k_r4", "IQ2_K_R4", 256, 76, 0, 4, F::kInterleaved, true, T::IQ2_K},
    {T::IQ3_K_R4, "iq3_k_r4", "IQ3_K_R4", 256, 110, 0, 4, F::kInterleaved, true, T::IQ3_K},
    {T::IQ4_K_R4, "iq4_k_r4", "IQ4_K_R4", 256, 144, 0, 4, F::kInterleaved, true, T::IQ4_K},
    {T::IQ5_K_R4, "iq5_k_r4", "IQ5_K_R4", 256, 176, 0, 4, F::kInterleaved, true, T::IQ5_K},
    {T::IQ4_KS_R4, "iq4_ks_r4", "IQ4_KS_R4", 256, 136, 4, 4, F::kInterleaved, true, T::IQ4_KS},
    {T::IQ5_KS_R4, "iq5_ks_r4", "IQ5_KS_R4", 256, 168, 4, 4, F::kInterleaved, true, T::IQ5_KS},
    {T::MXFP4_R8, "mxfp4_r8", "MXFP4_R8", 32, 17, 0, 8, F::kInterleaved, true, T::MXFP4},
    {T::Q8_K_R16, "q8_k_r16", "Q8_K_R16", 256, 258, 0, 16, F::kInterleaved, true, T::Q8_K},
    {T::Q8_KV_R8, "q8_KV_r8", "Q8_KV_R8", 32, 32, 4, 8, F::kInterleaved, true, T::Q8_KV},
    {T::Q8_K_R8, "q8_k_r8", "Q8_K_R8", 256, 258, 0, 8, F::kInterleaved, true, T::Q8_K},
}};

constexpr bool table_sorted_and_in_range() {
  for (size_t i = 0; i < kTypes.size(); ++i) {
    if (static_cast<int>(kTypes[i].type) >= static_cast<int>(GgmlType::kCount)) return false;
    if (i > 0 && static_cast<int>(kTypes[i - 1].type) >= static_cast<int>(kTypes[i].type)) return false;
  }
  return true;
}
static_assert(table_sorted_and_in_range(), "kTypes must be sorted by id, ids unique and < kCount");

// Dense id -> index map, built at compile time.
constexpr std::array<int16_t, static_cast<size_t>(GgmlType::kCount)> make_index() {
  std::array<int16_t, static_cast<size_t>(GgmlType::kCount)> idx{};
  for (auto& v : idx) v = -1;
  for (size_t i = 0; i < kTypes.size(); ++i) idx[static_cast<size_t>(kTypes[i].type)] = static_cast<int16_t>(i);
  return idx;
}
constexpr auto kIndex = make_index();

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

}  // namespace

const TypeTraits* type_traits(int32_t id) {
  if (id < 0 || id >= static_cast<int32_t>(GgmlType::kCount)) return nullptr;
  int16_t i = kIndex[static_cast<size_t>(id)];
  return i < 0 ? nullptr : &kTypes[static_cast<size_t>(i)];
}

const std::array<TypeTraits, kNumDefinedTypes>& all_type_traits() { return kTypes; }

Result<GgmlType> parse_type_name(std::string_view s) {
  for (const auto& t : kTypes)
    if (iequals(s, t.name) || iequals(s, t.upper_name)) return t.type;
  int32_t id = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), id);
  if (ec == std::errc() && p == s.data() + s.size() && type_traits(id) != nullptr) return static_cast<GgmlType>(id);
  return Status::InvalidArgument(fmt::format("unknown type '{}' (expected a ggml type name such as q8_0, iq4_ks, q6_K)", s));
}

const char* type_name(GgmlType t) {
  const TypeTraits* tt = type_traits(t);
  return tt ? tt->name : "unknown";
}

const char* type_upper_name(GgmlType t) {
  const TypeTraits* tt = type_traits(t);
  return tt ? tt->upper_name : "UNKNOWN";
}

int64_t row_size(GgmlType t, int64_t ne0) {
  const TypeTraits* tt = type_traits(t);
  if (!tt) return -1;
  return tt->row_meta_size + ne0 / tt->block_size * tt->type_size;
}

Result<int64_t> row_size_checked(GgmlType t, int64_t ne0) {
  const TypeTraits* tt = type_traits(t);
  if (!tt) return Status::Unsupported(fmt::format("unknown type id {}", static_cast<int>(t)));
  if (ne0 <= 0 || ne0 % tt->block_size != 0)
    return Status::InvalidArgument(
        fmt::format("row of {} elements is not a whole number of {}-element {} blocks", ne0, tt->block_size, tt->name));
  if (ne0 / tt->block_size > (std::numeric_limits<int64_t>::max() - tt->row_meta_size) / tt->type_size)
    return Status::OutOfRange(fmt::format("row of {} elements of {} overflows", ne0, tt->name));
  return row_size(t, ne0);
}

Result<int64_t> tensor_nbytes(GgmlType t, const int64_t ne[4]) {
  const TypeTraits* tt = type_traits(t);
  if (!tt) return Status::Unsupported(fmt::format("unknown type id {}", static_cast<int>(t)));
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t nrows = 1;
  for (int i = 1; i < 4; ++i) {
    if (ne[i] < 0) return Status::OutOfRange(fmt::format("negative dimension ne[{}] = {}", i, ne[i]));
    if (ne[i] != 0 && nrows > kMax / ne[i]) return Status::OutOfRange("tensor dimensions overflow");
    nrows *= ne[i];
  }
  if (t == GgmlType::I2_S) {  // 2-bit packed elements plus a 32-byte trailer (ggml_nbytes special case)
    if (ne[0] < 0 || (ne[0] != 0 && nrows > kMax / ne[0])) return Status::OutOfRange("tensor dimensions overflow");
    return ne[0] * nrows / 4 + 32;
  }
  if (ne[0] == 0 || nrows == 0) return int64_t{0};
  EM_ASSIGN_OR_RETURN(int64_t rs, row_size_checked(t, ne[0]));
  if (tt->interleave > 1 && ne[1] % tt->interleave != 0)
    return Status::InvalidArgument(
        fmt::format("ne1 = {} is not a whole number of {}-row groups of {}", ne[1], tt->interleave, tt->name));
  if (nrows > kMax / rs) return Status::OutOfRange("tensor byte size overflows");
  return nrows * rs;
}

}  // namespace expertmesh
