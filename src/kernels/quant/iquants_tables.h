// Constant grids of the mainline i-quants (IQ1_S..IQ3_S), as in ggml-common.h. Defined in
// iquants_tables.cpp / iquants_tables_iq1.cpp. A grid entry packs one group of 8 (or 4) values,
// one byte each, element 0 in the lowest byte.
#pragma once

#include <cstdint>

namespace expertmesh::quant {

// Bit j of kMaskIq2xs[j] selects element j's sign in a sign byte.
inline constexpr uint8_t kMaskIq2xs[8] = {1, 2, 4, 8, 16, 32, 64, 128};
// 7 stored sign bits -> 8 sign bits: bit 7 makes the number of negative signs even.
extern const uint8_t kSignsIq2xs[128];

extern const uint64_t kIq2xxsGrid[256];  // IQ2_XXS: 8 magnitudes in {8, 25, 43}
extern const uint64_t kIq2xsGrid[512];   // IQ2_XS
extern const uint64_t kIq2sGrid[1024];   // IQ2_S
extern const uint32_t kIq3xxsGrid[256];  // IQ3_XXS: 4 magnitudes in {4, 12, ..., 52, 62}
extern const uint32_t kIq3sGrid[512];    // IQ3_S: 4 magnitudes in {1, 3, ..., 15}
extern const uint64_t kIq1sGrid[2048];   // IQ1_S / IQ1_M: 8 int8 values in {-1, 0, +1}

// IQ1_S / IQ1_M add +-kIq1sDelta (sign stored per group) to every grid value.
inline constexpr float kIq1sDelta = 0.125f;

}  // namespace expertmesh::quant
