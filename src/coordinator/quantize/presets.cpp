#include "coordinator/quantize/presets.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include <fmt/format.h>

namespace expertmesh {
namespace {

using T = GgmlType;

constexpr QuantPreset kPresets[] = {
    {"Q4_0", 2, T::Q4_0},          {"Q4_1", 3, T::Q4_1},          {"Q5_0", 8, T::Q5_0},
    {"Q5_1", 9, T::Q5_1},          {"Q6_0", 135, T::Q6_0},        {"MXFP4", 38, T::MXFP4},
    {"MXFP4_R8", 351, T::MXFP4_R8}, {"IQ2_XXS", 19, T::IQ2_XXS},  {"IQ2_XXS_R4", 219, T::IQ2_XXS_R4},
    {"IQ2_XS", 20, T::IQ2_XS},     {"IQ2_XS_R4", 220, T::IQ2_XS_R4}, {"IQ2_S", 28, T::IQ2_XS},
    {"IQ2_M", 29, T::IQ2_S},       {"IQ2_M_R4", 229, T::IQ2_S_R4}, {"IQ1_S", 24, T::IQ1_S},
    {"IQ1_S_R4", 224, T::IQ1_S_R4}, {"IQ1_M_R4", 231, T::IQ1_M_R4}, {"IQ1_M", 31, T::IQ1_M},
    {"IQ1_BN", 136, T::IQ1_BN},    {"IQ2_BN", 137, T::IQ2_BN},    {"IQ2_BN_R4", 337, T::IQ2_BN_R4},
    {"Q2_K", 10, T::Q2_K},         {"Q2_K_R4", 210, T::Q2_K_R4},  {"Q2_K_S", 21, T::Q2_K},
    {"IQ3_XXS", 23, T::IQ3_XXS},   {"IQ3_KT", 152, T::IQ3_KT},    {"IQ4_KT", 153, T::IQ4_KT},
    {"IQ3_XXS_R4", 223, T::IQ3_XXS_R4}, {"IQ3_S", 26, T::IQ3_S},  {"IQ3_S_R4", 226, T::IQ3_S_R4},
    {"IQ3_M", 27, T::IQ3_S},       {"Q3_K", 12, T::Q3_K},         {"Q3_K_R4", 211, T::Q3_K_R4},
    {"IQ3_XS", 22, T::IQ3_S},      {"Q3_K_S", 11, T::Q3_K},       {"Q3_K_M", 12, T::Q3_K},
    {"Q3_K_L", 13, T::Q3_K},       {"IQ4_NL", 25, T::IQ4_NL},     {"IQ4_NL_R4", 225, T::IQ4_NL_R4},
    {"IQ4_XS_R8", 230, T::IQ4_XS_R8}, {"Q4_0_R8", 202, T::Q4_0_R8}, {"Q5_0_R4", 208, T::Q5_0_R4},
    {"Q6_0_R4", 335, T::Q6_0_R4},  {"Q8_0_R8", 207, T::Q8_0_R8},  {"Q8_KV", 149, T::Q8_KV},
    {"IQ4_XS", 30, T::IQ4_XS},     {"IQ4_KS", 145, T::IQ4_KS},    {"IQ4_KS_R4", 345, T::IQ4_KS_R4},
    {"IQ5_KS_R4", 350, T::IQ5_KS_R4}, {"IQ4_KSS", 148, T::IQ4_KSS}, {"IQ5_KS", 150, T::IQ5_KS},
    {"IQ2_K", 138, T::IQ2_K},      {"IQ2_K_R4", 338, T::IQ2_K_R4}, {"IQ2_KS", 147, T::IQ2_KS},
    {"IQ1_KT", 156, T::IQ1_KT},    {"IQ2_KT", 151, T::IQ2_KT},    {"IQ2_KL", 155, T::IQ2_KL},
    {"IQ3_KS", 154, T::IQ3_KS},    {"IQ3_K", 139, T::IQ3_K},      {"IQ3_K_R4", 339, T::IQ3_K_R4},
    {"IQ3_KL", 146, T::IQ3_K},     {"IQ4_K", 140, T::IQ4_K},      {"IQ4_K_R4", 340, T::IQ4_K_R4},
    {"IQ5_K", 141, T::IQ5_K},      {"IQ5_K_R4", 341, T::IQ5_K_R4}, {"IQ6_K", 142, T::IQ6_K},
    {"Q4_K", 15, T::Q4_K},         {"Q4_K_R4", 214, T::Q4_K_R4},  {"Q4_K_S", 14, T::Q4_K},
    {"Q4_K_M", 15, T::Q4_K},       {"Q5_K", 17, T::Q5_K},         {"Q5_K_R4", 216, T::Q5_K_R4},
    {"Q5_K_S", 16, T::Q5_K},       {"Q5_K_M", 17, T::Q5_K},       {"Q6_K", 18, T::Q6_K},
    {"Q6_K_R4", 218, T::Q6_K_R4},  {"Q8_K_R8", 399, T::Q8_K_R8},  {"Q8_KV_R8", 398, T::Q8_KV_R8},
    {"Q8_0", 7, T::Q8_0},          {"Q4_0_4_4", 33, T::Q4_0_4_4}, {"Q4_0_4_8", 34, T::Q4_0_4_8},
    {"Q4_0_8_8", 35, T::Q4_0_8_8}, {"F16", 1, T::F16},            {"BF16", 32, T::BF16},
    {"BF16_R16", 232, T::BF16_R16}, {"F32", 0, T::F32},           {"COPY", 0, T::F32, true},
};

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::toupper(static_cast<unsigned char>(x)) == std::toupper(static_cast<unsigned char>(y));
         });
}

}  // namespace

std::span<const QuantPreset> quant_presets() { return kPresets; }

Result<QuantPreset> parse_quant_preset(std::string_view s) {
  for (const auto& p : kPresets)
    if (iequals(s, p.name)) return p;
  int32_t ftype = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), ftype);
  if (ec == std::errc() && ptr == s.data() + s.size()) {
    // First match wins, so ftype 0 means F32, not COPY (as in the peer's table order).
    for (const auto& p : kPresets)
      if (p.ftype == ftype) return p;
  }
  return Status::InvalidArgument(
      fmt::format("unknown quantization type '{}' (see `expertmesh quantize --help` for the list)", s));
}

}  // namespace expertmesh
