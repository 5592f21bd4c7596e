// The ggml type registry (src/model/types.h): the table itself, name parsing, and byte sizes of
// rows and tensors for plain, row-meta and row-interleaved types.
#include "model/types.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <limits>
#include <set>
#include <string>

namespace expertmesh {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

int id_of(GgmlType t) { return static_cast<int>(t); }

TEST(TypeTable, WellFormed) {
  const auto& all = all_type_traits();
  std::set<int> ids;
  std::set<std::string> names, uppers;
  for (const TypeTraits& t : all) {
    SCOPED_TRACE(t.upper_name);
    EXPECT_TRUE(ids.insert(id_of(t.type)).second) << "duplicate id";
    EXPECT_TRUE(names.insert(lower(t.name)).second) << "duplicate name (case-insensitive)";
    EXPECT_TRUE(uppers.insert(t.upper_name).second) << "duplicate upper name";
    EXPECT_GE(id_of(t.type), 0);
    EXPECT_LT(id_of(t.type), id_of(GgmlType::kCount));
    EXPECT_GT(t.block_size, 0);
    EXPECT_GT(t.type_size, 0);
    EXPECT_GE(t.row_meta_size, 0);
    EXPECT_TRUE(t.interleave == 1 || t.interleave == 4 || t.interleave == 8 || t.interleave == 16);
    EXPECT_EQ(t.interleave > 1, t.family == TypeFamily::kInterleaved);
    EXPECT_EQ(std::string(t.upper_name), upper(t.upper_name)) << "upper_name must be upper case";
    // A repacked type keeps its base's block size; the base itself is an ordinary type.
    const TypeTraits* base = type_traits(t.base);
    ASSERT_NE(base, nullptr);
    if (t.base != t.type) {
      EXPECT_EQ(base->block_size, t.block_size);
      EXPECT_EQ(base->interleave, 1);
    }
  }
  EXPECT_EQ(ids.size(), all.size());
}

TEST(TypeTable, LookupByIdReturnsTheRow) {
  for (const TypeTraits& t : all_type_traits()) {
    const TypeTraits* got = type_traits(id_of(t.type));
    ASSERT_NE(got, nullptr) << t.upper_name;
    EXPECT_EQ(got, &t);
    EXPECT_EQ(type_traits(t.type), &t);
    EXPECT_STREQ(type_name(t.type), t.name);
    EXPECT_STREQ(type_upper_name(t.type), t.upper_name);
  }
}

TEST(TypeTable, UndefinedIdsAreRejected) {
  // Removed or never assigned in ik_llama.cpp (inventory §1 notes), and out-of-range values.
  for (int id : {-1, 4, 5, 34, 35, 37, 38, 40, 42, 96, 100, 132, 142, 143, 159, 201, 396, 400, 401, 100000,
                 std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()}) {
    EXPECT_EQ(type_traits(id), nullptr) << id;
  }
  EXPECT_STREQ(type_name(static_cast<GgmlType>(4)), "unknown");
  EXPECT_STREQ(type_upper_name(static_cast<GgmlType>(4)), "UNKNOWN");
}

// Every type parses from both spellings, in any case, and from its numeric id.
TEST(ParseTypeName, EveryTypeRoundTrips) {
  for (const TypeTraits& t : all_type_traits()) {
    SCOPED_TRACE(t.upper_name);
    for (const std::string& s : {std::string(t.name), std::string(t.upper_name), lower(t.name), upper(t.name),
                                 lower(t.upper_name), std::to_string(id_of(t.type))}) {
      Result<GgmlType> r = parse_type_name(s);
      ASSERT_TRUE(r.ok()) << "'" << s << "': " << r.status().to_string();
      EXPECT_EQ(*r, t.type) << "'" << s << "'";
    }
  }
}

TEST(ParseTypeName, KnownSpellings) {
  struct Case {
    const char* s;
    GgmlType want;
  };
  const Case cases[] = {
      {"q4_K", GgmlType::Q4_K},         {"Q4_K", GgmlType::Q4_K},         {"q4_k", GgmlType::Q4_K},
      {"iq4_ks", GgmlType::IQ4_KS},     {"IQ4_KS", GgmlType::IQ4_KS},     {"q8_KV", GgmlType::Q8_KV},
      {"q4_0_4x4", GgmlType::Q4_0_4_4}, {"Q4_0_4_4", GgmlType::Q4_0_4_4}, {"bf16", GgmlType::BF16},
      {"BF16_R16", GgmlType::BF16_R16}, {"iq2_kl", GgmlType::IQ2_KL},     {"q8_k_r8", GgmlType::Q8_K_R8},
      {"8", GgmlType::Q8_0},            {"0", GgmlType::F32},             {"399", GgmlType::Q8_K_R8},
  };
  for (const auto& c : cases) {
    Result<GgmlType> r = parse_type_name(c.s);
    ASSERT_TRUE(r.ok()) << c.s;
    EXPECT_EQ(*r, c.want) << c.s;
  }
}

TEST(ParseTypeName, UnknownNamesAreErrorsNamingTheInput) {
  for (const char* s : {"q4_2", "", "q8", "iq4_ks ", " q8_0", "q8_0,", "4", "-1", "400", "8x", "f31"}) {
    Result<GgmlType> r = parse_type_name(s);
    ASSERT_FALSE(r.ok()) << "'" << s << "'";
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << "'" << s << "'";
    EXPECT_NE(r.status().message().find(std::string("'") + s + "'"), std::string::npos) << r.status().message();
  }
}

// Sizes from ../shared/reference/ik_llama_inventory.md §1 (block size, bytes per block, row meta,
// interleave) for a sample covering every family.
TEST(TypeTable, SizesMatchInventory) {
  struct Case {
    GgmlType t;
    int block, bytes, meta, interleave;
  };
  const Case cases[] = {
      {GgmlType::F32, 1, 4, 0, 1},         {GgmlType::F16, 1, 2, 0, 1},        {GgmlType::BF16, 1, 2, 0, 1},
      {GgmlType::F64, 1, 8, 0, 1},         {GgmlType::I32, 1, 4, 0, 1},        {GgmlType::Q4_0, 32, 18, 0, 1},
      {GgmlType::Q4_1, 32, 20, 0, 1},      {GgmlType::Q5_0, 32, 22, 0, 1},     {GgmlType::Q5_1, 32, 24, 0, 1},
      {GgmlType::Q8_0, 32, 34, 0, 1},      {GgmlType::Q8_1, 32, 36, 0, 1},     {GgmlType::Q2_K, 256, 84, 0, 1},
      {GgmlType::Q3_K, 256, 110, 0, 1},    {GgmlType::Q4_K, 256, 144, 0, 1},   {GgmlType::Q5_K, 256, 176, 0, 1},
      {GgmlType::Q6_K, 256, 210, 0, 1},    {GgmlType::Q8_K, 256, 296, 0, 1},   {GgmlType::IQ2_XXS, 256, 66, 0, 1},
      {GgmlType::IQ1_S, 256, 50, 0, 1},    {GgmlType::IQ1_M, 256, 56, 0, 1},   {GgmlType::IQ4_NL, 32, 18, 0, 1},
      {GgmlType::IQ4_XS, 256, 136, 0, 1},  {GgmlType::MXFP4, 32, 17, 0, 1},    {GgmlType::Q1_0_G128, 128, 18, 0, 1},
      {GgmlType::Q6_0, 32, 26, 0, 1},      {GgmlType::IQ1_BN, 64, 13, 2, 1},   {GgmlType::IQ2_BN, 64, 16, 4, 1},
      {GgmlType::IQ2_K, 256, 76, 0, 1},    {GgmlType::IQ6_K, 256, 212, 0, 1},  {GgmlType::IQ4_KS, 256, 136, 4, 1},
      {GgmlType::IQ2_KS, 256, 70, 2, 1},   {GgmlType::IQ4_KSS, 256, 128, 4, 1}, {GgmlType::Q8_KV, 32, 32, 8, 1},
      {GgmlType::IQ5_KS, 256, 168, 4, 1},  {GgmlType::IQ2_KT, 256, 68, 4, 1},  {GgmlType::IQ3_KT, 256, 100, 4, 1},
      {GgmlType::IQ4_KT, 256, 128, 4, 1},  {GgmlType::IQ3_KS, 256, 102, 2, 1}, {GgmlType::IQ2_KL, 256, 86, 2, 1},
      {GgmlType::IQ1_KT, 256, 56, 4, 1},   {GgmlType::Q4_0_R8, 32, 18, 0, 8},  {GgmlType::Q8_0_R8, 32, 34, 0, 8},
      {GgmlType::Q4_K_R4, 256, 144, 0, 4}, {GgmlType::IQ1_S_R4, 32, 6, 2, 4},  {GgmlType::IQ1_M_R4, 32, 7, 2, 4},
      {GgmlType::IQ4_XS_R8, 256, 136, 0, 8}, {GgmlType::BF16_R16, 1, 2, 0, 16}, {GgmlType::IQ4_KS_R4, 256, 136, 4, 4},
      {GgmlType::IQ5_KS_R4, 256, 168, 4, 4}, {GgmlType::Q8_K_R8, 256, 258, 0, 8}, {GgmlType::Q8_K_R16, 256, 258, 0, 16},
      {GgmlType::Q8_KV_R8, 32, 32, 4, 8},  {GgmlType::MXFP4_R8, 32, 17, 0, 8},
  };
  for (const auto& c : cases) {
    const TypeTraits* t = type_traits(c.t);
    ASSERT_NE(t, nullptr) << id_of(c.t);
    SCOPED_TRACE(t->upper_name);
    EXPECT_EQ(t->block_size, c.block);
    EXPECT_EQ(t->type_size, c.bytes);
    EXPECT_EQ(t->row_meta_size, c.meta);
    EXPECT_EQ(t->interleave, c.interleave);
  }
}

TEST(TypeTable, Flags) {
  EXPECT_FALSE(type_traits(GgmlType::F32)->quantized);
  EXPECT_FALSE(type_traits(GgmlType::BF16)->quantized);
  EXPECT_TRUE(type_traits(GgmlType::Q8_0)->quantized);
  EXPECT_TRUE(type_traits(GgmlType::IQ4_KS)->quantized);
  EXPECT_EQ(type_traits(GgmlType::Q8_K)->family, TypeFamily::kActivation);
  EXPECT_EQ(type_traits(GgmlType::IQ2_KT)->family, TypeFamily::kTrellis);
  EXPECT_EQ(type_traits(GgmlType::Q8_0_R8)->base, GgmlType::Q8_0);
  EXPECT_EQ(type_traits(GgmlType::IQ4_KS_R4)->base, GgmlType::IQ4_KS);
  EXPECT_EQ(type_traits(GgmlType::IQ1_S_R4)->base, GgmlType::IQ1_S_R4) << "IQ1_S_R4 is its own format";
}

TEST(RowSize, PlainMetaAndInterleaved) {
  EXPECT_EQ(row_size(GgmlType::F32, 10), 40);
  EXPECT_EQ(row_size(GgmlType::BF16, 4096), 8192);
  EXPECT_EQ(row_size(GgmlType::Q8_0, 4096), 128 * 34);
  EXPECT_EQ(row_size(GgmlType::Q4_K, 4096), 16 * 144);
  EXPECT_EQ(row_size(GgmlType::IQ4_KS, 4096), 4 + 16 * 136);   // f32 row scale first
  EXPECT_EQ(row_size(GgmlType::IQ2_KL, 4096), 2 + 16 * 86);    // fp16 row scale first
  EXPECT_EQ(row_size(GgmlType::Q8_KV, 4096), 8 + 128 * 32);    // f32 scale + i32 sum
  EXPECT_EQ(row_size(GgmlType::IQ1_BN, 4096), 2 + 64 * 13);
  // Interleaved: the per-row share, so a group of N rows is N * row_size.
  EXPECT_EQ(row_size(GgmlType::Q8_0_R8, 4096), 128 * 34);
  EXPECT_EQ(row_size(GgmlType::IQ4_KS_R4, 4096), 4 + 16 * 136);
  EXPECT_EQ(row_size(GgmlType::Q8_KV_R8, 4096), 4 + 128 * 32);
  EXPECT_EQ(row_size(static_cast<GgmlType>(4), 4096), -1) << "unknown type";
}

TEST(RowSize, CheckedRejectsPartialBlocksAndOverflow) {
  auto ok = row_size_checked(GgmlType::IQ4_KS, 512);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 4 + 2 * 136);

  auto partial = row_size_checked(GgmlType::Q4_K, 100);
  ASSERT_FALSE(partial.ok());
  EXPECT_EQ(partial.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(partial.status().message().find("100"), std::string::npos) << partial.status().message();
  EXPECT_NE(partial.status().message().find("q4_K"), std::string::npos) << partial.status().message();

  // 172-wide rows (stories260K's ffn_down) do not fit 32-element blocks.
  EXPECT_FALSE(row_size_checked(GgmlType::Q8_0, 172).ok());
  EXPECT_TRUE(row_size_checked(GgmlType::F16, 172).ok());

  EXPECT_FALSE(row_size_checked(GgmlType::F32, 0).ok());
  EXPECT_FALSE(row_size_checked(GgmlType::F32, -4).ok());

  // Q4_K packs 256 elements in 144 bytes, so only wider-than-element types can overflow a row.
  EXPECT_TRUE(row_size_checked(GgmlType::Q4_K, std::numeric_limits<int64_t>::max() / 256 * 256).ok());
  auto over = row_size_checked(GgmlType::F32, std::numeric_limits<int64_t>::max() / 2);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), StatusCode::kOutOfRange);

  auto unknown = row_size_checked(static_cast<GgmlType>(5), 256);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(unknown.status().message().find("5"), std::string::npos);
}

Result<int64_t> nbytes(GgmlType t, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1, int64_t ne3 = 1) {
  const int64_t ne[4] = {ne0, ne1, ne2, ne3};
  return tensor_nbytes(t, ne);
}

TEST(TensorNbytes, PlainAndMetaTypes) {
  EXPECT_EQ(*nbytes(GgmlType::F32, 256, 512), 256 * 512 * 4);
  EXPECT_EQ(*nbytes(GgmlType::Q8_0, 4096, 11), 11 * 128 * 34);
  // A 3-D expert tensor: ffn_up_exps [n_embd, n_ff_exp, n_expert]; the row meta counts per row.
  EXPECT_EQ(*nbytes(GgmlType::IQ4_KS, 4096, 1536, 128), int64_t{1536} * 128 * (4 + 16 * 136));
  EXPECT_EQ(*nbytes(GgmlType::IQ2_KL, 256, 3, 2, 2), 12 * (2 + 86));
  EXPECT_EQ(*nbytes(GgmlType::F16, 1), 2) << "a 1-element tensor";
}

TEST(TensorNbytes, InterleavedNeedsWholeRowGroups) {
  EXPECT_EQ(*nbytes(GgmlType::Q8_0_R8, 4096, 16), 16 * 128 * 34);
  EXPECT_EQ(*nbytes(GgmlType::IQ4_KS_R4, 4096, 8, 2), 16 * (4 + 16 * 136));
  EXPECT_EQ(*nbytes(GgmlType::BF16_R16, 64, 32), 32 * 64 * 2);

  auto bad = nbytes(GgmlType::Q8_0_R8, 4096, 12);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("12"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("8-row"), std::string::npos) << bad.status().message();
  EXPECT_FALSE(nbytes(GgmlType::IQ4_KS_R4, 4096, 6).ok());
}

TEST(TensorNbytes, I2SIsPackedPlusTrailer) {
  EXPECT_EQ(*nbytes(GgmlType::I2_S, 128, 2), 128 * 2 / 4 + 32);
}

TEST(TensorNbytes, EmptyTensorsHaveNoBytes) {
  EXPECT_EQ(*nbytes(GgmlType::Q4_K, 0, 5), 0);
  EXPECT_EQ(*nbytes(GgmlType::Q4_K, 256, 0), 0);
}

TEST(TensorNbytes, Errors) {
  auto partial = nbytes(GgmlType::Q4_K, 100, 4);
  EXPECT_EQ(partial.status().code(), StatusCode::kInvalidArgument);

  auto negative = nbytes(GgmlType::F32, 4, -1);
  EXPECT_EQ(negative.status().code(), StatusCode::kOutOfRange);

  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  // Row count overflows.
  EXPECT_EQ(nbytes(GgmlType::F32, 4, kMax / 2, 4).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(nbytes(GgmlType::F32, 4, int64_t{1} << 32, int64_t{1} << 32).status().code(), StatusCode::kOutOfRange);
  // Rows fit, bytes do not.
  EXPECT_EQ(nbytes(GgmlType::Q8_0, 32 * 1024, int64_t{1} << 50).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(nbytes(GgmlType::I2_S, kMax / 2, 4).status().code(), StatusCode::kOutOfRange);
  // The largest representable sizes still work.
  EXPECT_TRUE(nbytes(GgmlType::I8, 1, kMax).ok());

  auto unknown = nbytes(static_cast<GgmlType>(142), 256, 1);
  EXPECT_EQ(unknown.status().code(), StatusCode::kUnsupported);
}

}  // namespace
}  // namespace expertmesh
