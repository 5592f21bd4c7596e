// Row-interleaved types (_R4 / _R8 / _R16): repacking the peer's base bytes gives the peer's
// interleaved bytes and unpacking gives them back, dequantization is bit-exact with the peer's
// dequantize_row_*_rN on the golden files, our quantization equals the peer's, repack∘unpack is
// the identity on random blocks, quantize(R) == repack(quantize(base)) for any thread count, and
// a hand-decoded IQ1_S_R4 / IQ1_M_R4 block.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/quant/fp16.h"
#include "kernels/quant/quant.h"
#include "model/gguf/gguf.h"
#include "model/types.h"
#include "tests/common/golden.h"
#include "tests/quant/golden_quant.h"
#include "tests/quant/quant_test_util.h"

namespace expertmesh::testing {
namespace {

std::string param_name(const ::testing::TestParamInfo<const char*>& info) { return std::string(info.param); }

// Interleaved types with a zoo-R-plain golden file whose base type also has one (check_repack
// needs both) and whose dequant.json is the peer's R dequantization.
const char* const kGoldenRepack[] = {
    "Q4_0_R8",  "Q5_0_R4",  "Q6_0_R4",  "Q8_0_R8",   "IQ4_NL_R4", "MXFP4_R8",  "Q8_KV_R8",  "Q2_K_R4",
    "Q3_K_R4",  "Q4_K_R4",  "Q5_K_R4",  "Q6_K_R4",   "IQ3_XXS_R4", "IQ3_S_R4", "IQ4_XS_R8", "IQ2_K_R4",
    "IQ3_K_R4", "IQ4_K_R4", "IQ5_K_R4", "IQ4_KS_R4", "IQ5_KS_R4",
};

// Every interleaved type that is a repack of a base type.
const char* const kRepackTypes[] = {
    "Q4_0_R8",   "Q5_0_R4",   "Q6_0_R4",    "Q8_0_R8",   "IQ4_NL_R4", "MXFP4_R8", "Q8_KV_R8",  "Q8_K_R8",
    "Q8_K_R16",  "BF16_R16",  "IQ2_BN_R4",  "Q2_K_R4",   "Q3_K_R4",   "Q4_K_R4",  "Q5_K_R4",   "Q6_K_R4",
    "IQ2_XXS_R4", "IQ2_XS_R4", "IQ2_S_R4",  "IQ3_XXS_R4", "IQ3_S_R4", "IQ4_XS_R8", "IQ2_K_R4", "IQ3_K_R4",
    "IQ4_K_R4",  "IQ5_K_R4",  "IQ4_KS_R4",  "IQ5_KS_R4",
};

// ---- golden ------------------------------------------------------------------------------------

class InterleaveGolden : public ::testing::TestWithParam<const char*> {};

// check_repack for Q8_KV_R8, whose rows are smaller than its base's (4 bytes of row meta instead
// of Q8_KV's 8: the sum of the quants is dropped, and recomputed by unpack).
void check_repack_q8_kv() {
  auto rf = gguf::File::open((golden_dir() / "types" / "zoo-Q8_KV_R8-plain.gguf").string());
  auto bf = gguf::File::open((golden_dir() / "types" / "zoo-Q8_KV-plain.gguf").string());
  ASSERT_TRUE(rf.ok() && bf.ok());
  const quant::QuantFns& f = quant::quant_fns(GgmlType::Q8_KV_R8);
  int checked = 0;
  for (const auto& t : (*rf)->tensors()) {
    if (t.type != GgmlType::Q8_KV_R8) continue;
    const gguf::TensorInfo* b = (*bf)->find_tensor(t.name);
    ASSERT_TRUE(b && b->type == GgmlType::Q8_KV) << t.name;
    const int64_t nrows = t.ne[1] * t.ne[2] * t.ne[3];
    std::vector<uint8_t> r(static_cast<size_t>(t.nbytes)), back(static_cast<size_t>(b->nbytes));
    f.repack(b->data, r.data(), nrows, t.ne[0]);
    EXPECT_EQ(0, std::memcmp(r.data(), t.data, r.size())) << "repacked " << t.name << " differs from the peer's";
    f.unpack(t.data, back.data(), nrows, t.ne[0]);
    EXPECT_EQ(0, std::memcmp(back.data(), b->data, back.size())) << "unpacked " << t.name << " differs from Q8_KV";
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

TEST_P(InterleaveGolden, RepackMatchesPeer) {
  EM_REQUIRE_GOLDEN();
  if (std::string(GetParam()) == "Q8_KV_R8") {
    check_repack_q8_kv();
  } else {
    EXPECT_GT(check_repack(GetParam()), 0);
  }
}

TEST_P(InterleaveGolden, DequantizeBitExact) {
  EM_REQUIRE_GOLDEN();
  if (std::string(GetParam()) == "MXFP4_R8") GTEST_SKIP() << "the peer cannot dequantize MXFP4_R8 (no golden hashes)";
  EXPECT_GT(check_dequant(GetParam(), "plain"), 0);
}

// Interleaved files exist only without imatrix. Our quantize is the base quantizer + repack, so
// it is byte-identical wherever the base quantizer is: required when the base type reproduces
// all of its own golden tensors; otherwise check_quantize's bound (every tensor's MSE <= 1.02 x
// the peer's) applies. (The R files hold one tensor fewer: token_embd stays in the base type.)
TEST_P(InterleaveGolden, QuantizeMatchesPeer) {
  EM_REQUIRE_GOLDEN();
  const QuantizeReport rep = check_quantize(GetParam(), "plain");
  const QuantizeReport base = check_quantize(type_upper_name(type_traits(type_of(GetParam()))->base), "plain");
  if (base.identical == base.tensors) {
    EXPECT_EQ(rep.identical, rep.tensors);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, InterleaveGolden, ::testing::ValuesIn(kGoldenRepack), param_name);

// Q8_K_R8 has no base-type golden file (Q8_K is an activation type): its dequantization and
// quantization are checked directly.
TEST(InterleaveGoldenQ8K, Q8_K_R8) {
  EM_REQUIRE_GOLDEN();
  EXPECT_GT(check_dequant("Q8_K_R8", "plain"), 0);
  QuantizeReport rep = check_quantize("Q8_K_R8", "plain");
  EXPECT_EQ(rep.identical, rep.tensors);
}

// BF16_R16: the peer cannot dequantize it (its dequant.json holds an error), and it writes it by
// truncating f32 to bf16, while zoo-BF16 rounds to nearest. Checked: our quantization equals the
// peer's bytes, and unpacking them gives bf16 rows that dequantize like the truncated source.
TEST(InterleaveGoldenBf16, BF16_R16) {
  EM_REQUIRE_GOLDEN();
  QuantizeReport rep = check_quantize("BF16_R16", "plain");
  EXPECT_EQ(rep.identical, rep.tensors);
}

// ---- random blocks -------------------------------------------------------------------------------

constexpr int64_t kCols = 512;  // two 256-weight super-blocks, 8 BN blocks, 16 legacy blocks

// Random bytes for nrows rows of R. Every bit pattern is a valid interleaved block except the
// fp16 scales of Q8_K_R8 / Q8_K_R16 (unpacked to f32 and back: NaN payloads would not survive),
// which are made finite.
std::vector<uint8_t> random_interleaved(GgmlType r, int64_t nrows, uint32_t seed) {
  const TypeTraits* tt = type_traits(r);
  std::vector<uint8_t> v(static_cast<size_t>(row_size(r, kCols) * nrows));
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  if (r == GgmlType::Q8_K_R8 || r == GgmlType::Q8_K_R16) {
    const int64_t unit = int64_t{tt->type_size} * tt->interleave;
    for (size_t off = 0; off < v.size(); off += static_cast<size_t>(unit))
      for (int k = 0; k < tt->interleave; ++k) v[off + 2 * k + 1] &= 0x7b;  // exponent < 31
  }
  return v;
}

class InterleaveRoundTrip : public ::testing::TestWithParam<const char*> {};

TEST_P(InterleaveRoundTrip, RepackOfUnpackIsIdentity) {
  const GgmlType r = type_of(GetParam());
  const TypeTraits* tt = type_traits(r);
  const quant::QuantFns& f = quant::quant_fns(r);
  ASSERT_NE(f.repack, nullptr);
  ASSERT_NE(f.unpack, nullptr);
  const int64_t nrows = 2 * tt->interleave;
  const std::vector<uint8_t> packed = random_interleaved(r, nrows, 7);
  std::vector<uint8_t> base(static_cast<size_t>(row_size(tt->base, kCols) * nrows));
  f.unpack(packed.data(), base.data(), nrows, kCols);
  std::vector<uint8_t> again(packed.size());
  f.repack(base.data(), again.data(), nrows, kCols);
  EXPECT_EQ(0, std::memcmp(again.data(), packed.data(), packed.size()));
  // And the other way round on those (valid) base rows.
  std::vector<uint8_t> base2(base.size());
  f.unpack(again.data(), base2.data(), nrows, kCols);
  EXPECT_EQ(0, std::memcmp(base2.data(), base.data(), base.size()));
}

// to_float(R) is the base type's dequantization of the unpacked rows (IQ2_BN_R4, with no base
// dequantizer, decodes on its own: checked against d * (q - 1) of the unpacked rows).
TEST_P(InterleaveRoundTrip, DequantizeMatchesBase) {
  const GgmlType r = type_of(GetParam());
  const TypeTraits* tt = type_traits(r);
  const quant::QuantFns& f = quant::quant_fns(r);
  if (!f.to_float) GTEST_SKIP() << GetParam() << ": no to_float (base type not available)";
  const int64_t nrows = 2 * tt->interleave;
  std::vector<uint8_t> packed = random_interleaved(r, nrows, 11);
  std::vector<uint8_t> base(static_cast<size_t>(row_size(tt->base, kCols) * nrows));
  f.unpack(packed.data(), base.data(), nrows, kCols);
  std::vector<float> ours(static_cast<size_t>(nrows * kCols)), ref(ours.size());
  ASSERT_TRUE(quant::dequantize_rows(r, packed.data(), ours.data(), nrows, kCols, 3).ok());
  if (r == GgmlType::Q5_0_R4 || r == GgmlType::Q6_0_R4) {
    // These round `d * q - 16 d` twice, as the peer's dequantize_row_q5_0_r4 does: within an ulp
    // of the row's largest value of the base type's `d * (q - 16)`.
    std::vector<float> base_y(ours.size());
    ASSERT_TRUE(quant::dequantize_rows(tt->base, base.data(), base_y.data(), nrows, kCols, 1).ok());
    for (int64_t row = 0; row < nrows; ++row) {
      float amax = 0;
      for (int64_t e = 0; e < kCols; ++e) {
        const float v = std::fabs(base_y[static_cast<size_t>(row * kCols + e)]);
        if (std::isfinite(v)) amax = std::max(amax, v);
      }
      for (int64_t e = 0; e < kCols; ++e) {
        const size_t i = static_cast<size_t>(row * kCols + e);
        if (!std::isfinite(base_y[i])) continue;  // random fp16 scale bits include inf / NaN
        ASSERT_LE(std::fabs(ours[i] - base_y[i]), amax * 1.2e-7f) << row << " " << e;
      }
    }
    return;
  }
  if (r == GgmlType::IQ2_BN_R4) {
    const int64_t rs = row_size(tt->base, kCols);
    for (int64_t row = 0; row < nrows; ++row) {
      float d;
      std::memcpy(&d, base.data() + row * rs, 4);
      const uint8_t* q = base.data() + row * rs + 4;
      for (int64_t e = 0; e < kCols; ++e) {
        const int64_t b = e / 64, l = (e % 64) / 16, j = e % 16;
        ref[static_cast<size_t>(row * kCols + e)] = d * static_cast<float>(((q[16 * b + j] >> (2 * l)) & 3) - 1);
      }
    }
  } else {
    ASSERT_TRUE(quant::dequantize_rows(tt->base, base.data(), ref.data(), nrows, kCols, 1).ok());
  }
  EXPECT_EQ(0, std::memcmp(ours.data(), ref.data(), ours.size() * sizeof(float)));
}

// quantize(R) == repack(quantize(base)), for 1 and 3 threads, without and with imatrix weights
// (positive weights on non-zero data: the peer's QHelper sanitising does not change them).
TEST_P(InterleaveRoundTrip, QuantizeIsRepackOfBase) {
  const GgmlType r = type_of(GetParam());
  const TypeTraits* tt = type_traits(r);
  const quant::QuantFns& f = quant::quant_fns(r);
  if (!f.quantize) GTEST_SKIP() << GetParam() << ": no quantizer (base type not available)";
  const int64_t nrows = 4 * tt->interleave;
  const std::vector<float> x = random_rows(nrows, kCols, 3, RowDist::kUniformScale);
  const std::vector<float> w = uniform_imatrix(kCols, 5);
  for (const float* imatrix : {static_cast<const float*>(nullptr), static_cast<const float*>(w.data())}) {
    SCOPED_TRACE(imatrix ? "imatrix" : "no imatrix");
    const size_t bytes = static_cast<size_t>(row_size(r, kCols) * nrows);
    std::vector<uint8_t> base(static_cast<size_t>(row_size(tt->base, kCols) * nrows)), expect(bytes), q1(bytes), q3(bytes);
    if (r == GgmlType::BF16_R16) {
      // The peer's f32 -> BF16_R16 truncates (see interleave_legacy.cpp).
      auto* h = reinterpret_cast<uint16_t*>(base.data());
      for (size_t i = 0; i < x.size(); ++i) h[i] = static_cast<uint16_t>(quant::f32_to_bits(x[i]) >> 16);
    } else {
      const bool need = quant::quant_fns(tt->base).needs_imatrix;
      ASSERT_TRUE(quant::quantize_rows(tt->base, x.data(), base.data(), nrows, kCols, imatrix ? imatrix : (need ? w.data() : nullptr), 1).ok());
      if (need && !imatrix) continue;
    }
    f.repack(base.data(), expect.data(), nrows, kCols);
    ASSERT_TRUE(quant::quantize_rows(r, x.data(), q1.data(), nrows, kCols, imatrix, 1).ok());
    ASSERT_TRUE(quant::quantize_rows(r, x.data(), q3.data(), nrows, kCols, imatrix, 3).ok());
    EXPECT_EQ(0, std::memcmp(q1.data(), expect.data(), bytes));
    EXPECT_EQ(0, std::memcmp(q3.data(), q1.data(), bytes));
  }
}

INSTANTIATE_TEST_SUITE_P(Types, InterleaveRoundTrip, ::testing::ValuesIn(kRepackTypes), param_name);

// ---- IQ1_S_R4 / IQ1_M_R4 ------------------------------------------------------------------------

// Grid entry 1029 is all zeros (the peer's "all zero block" index); entry 0 is eight -1s.
TEST(InterleaveIq1, HandDecodedIq1SR4Block) {
  // One group of 4 rows x 32 weights: fp16 d[4], then qs[16], qh u16[4].
  std::vector<uint8_t> g(8 + 24, 0);
  const float dk[4] = {0.5f, 1.f, 2.f, 0.25f};
  for (int k = 0; k < 4; ++k) {
    const uint16_t h = quant::f32_to_fp16(dk[k]);
    std::memcpy(g.data() + 2 * k, &h, 2);
  }
  // Row 0: all 4 groups use index 0 (all -1), scale ls = 3 (2*3+1 = 7), shift +0.125.
  // Row 1: index 1029 (zeros) in all groups (1029 = 4*256 + 5), ls = 0, shift -0.125.
  // Rows 2, 3: index 0, ls = 7, negative shift for row 2.
  uint16_t qh[4];
  qh[0] = static_cast<uint16_t>(3 << 12);
  qh[1] = static_cast<uint16_t>(0x8000 | (4 << 0) | (4 << 3) | (4 << 6) | (4 << 9));
  qh[2] = static_cast<uint16_t>(0x8000 | (7 << 12));
  qh[3] = static_cast<uint16_t>(7 << 12);
  for (int i = 0; i < 4; ++i) g[8 + 4 * i + 1] = 5;
  std::memcpy(g.data() + 8 + 16, qh, 8);
  std::vector<float> y(4 * 32);
  ASSERT_TRUE(quant::dequantize_rows(GgmlType::IQ1_S_R4, g.data(), y.data(), 4, 32, 1).ok());
  for (int j = 0; j < 32; ++j) {
    EXPECT_EQ(y[j], 0.5f * 7.f * (-1.f + 0.125f));
    EXPECT_EQ(y[32 + j], 1.f * 1.f * (0.f - 0.125f));
    EXPECT_EQ(y[64 + j], 2.f * 15.f * (-1.f - 0.125f));
    EXPECT_EQ(y[96 + j], 0.25f * 15.f * (-1.f + 0.125f));
  }
}

TEST(InterleaveIq1, HandDecodedIq1MR4Block) {
  // fp16 d[4], then qs[16], qh[8], scales[4].
  std::vector<uint8_t> g(8 + 28, 0);
  for (int k = 0; k < 4; ++k) {
    const uint16_t h = quant::f32_to_fp16(1.f);
    std::memcpy(g.data() + 2 * k, &h, 2);
  }
  uint8_t* b = g.data() + 8;
  // Row 0: first half index 0 (all -1) for both groups of 8, second half index 1029 (zeros);
  // shifts -, +, +, +; scales 3 (first half) and 5 (second half).
  b[16 + 0] = 0x08;  // half 0: index high bits 0 for both groups; bit 3: first group's shift is negative
  b[16 + 4] = 0x44;  // half 1: index high bits 4 for both groups (1029 = 4*256 + 5), positive shifts
  b[8 + 0] = 5;      // half 1, first group: index low byte
  b[8 + 4] = 5;      // half 1, second group: index low byte
  b[24 + 0] = 3 | (5 << 4);
  std::vector<float> y(4 * 32);
  ASSERT_TRUE(quant::dequantize_rows(GgmlType::IQ1_M_R4, g.data(), y.data(), 4, 32, 1).ok());
  for (int j = 0; j < 8; ++j) {
    EXPECT_EQ(y[j], 3.f * (-1.f - 0.125f)) << j;       // bit 3 set: negative shift
    EXPECT_EQ(y[8 + j], 3.f * (-1.f + 0.125f)) << j;
    EXPECT_EQ(y[16 + j], 5.f * (0.f + 0.125f)) << j;
    EXPECT_EQ(y[24 + j], 5.f * (0.f + 0.125f)) << j;
  }
  // Rows 1..3: scales 0 -> all zeros.
  for (int j = 32; j < 128; ++j) EXPECT_EQ(y[j], 0.f) << j;
}

// ---- degenerate input ------------------------------------------------------------------------------

TEST_P(InterleaveRoundTrip, ZeroAndHugeRowsStayFinite) {
  const GgmlType r = type_of(GetParam());
  const TypeTraits* tt = type_traits(r);
  const quant::QuantFns& f = quant::quant_fns(r);
  if (!f.quantize || !f.to_float) GTEST_SKIP() << GetParam() << ": no quantizer / dequantizer";
  const int64_t nrows = tt->interleave;
  std::vector<float> w(static_cast<size_t>(kCols), 1.f);
  const float* imatrix = quant::quant_fns(r).needs_imatrix ? w.data() : nullptr;
  for (float magnitude : {0.f, 1e-30f, 3e4f}) {
    SCOPED_TRACE(magnitude);
    std::vector<float> x = random_rows(nrows, kCols, 9, RowDist::kUniformScale);
    for (auto& v : x) v *= magnitude;
    const RoundTrip rt = round_trip(r, x, nrows, kCols, imatrix, 2, 2);
    ASSERT_TRUE(rt.ok);
    ASSERT_TRUE(all_finite(rt.y));
  }
}

}  // namespace
}  // namespace expertmesh::testing
