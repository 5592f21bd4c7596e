// SHA-256 against the FIPS 180-4 / NIST example vectors, padding boundaries and incremental use.
#include "common/sha256.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>

namespace expertmesh {
namespace {

std::string hex(const std::string& s) { return sha256_hex(s.data(), s.size()); }

TEST(Sha256, NistVectors) {
  EXPECT_EQ(hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // 448 bits: the two-block message.
  EXPECT_EQ(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // 896 bits.
  EXPECT_EQ(hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmn"
                "opqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

TEST(Sha256, OneMillionA) {
  std::string a(1000000, 'a');
  EXPECT_EQ(hex(a), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// Lengths around the 56-byte padding boundary and the 64-byte block (values from sha256sum).
TEST(Sha256, PaddingBoundaries) {
  struct Case {
    size_t n;
    const char* want;
  };
  const Case cases[] = {
      {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
      {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
      {57, "f13b2d724659eb3bf47f2dd6af1accc87b81f09f59f2b75e5c0bed6589dfe8c6"},
      {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
      {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
      {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
      {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
      {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
  };
  for (const auto& c : cases) EXPECT_EQ(hex(std::string(c.n, 'a')), c.want) << c.n << " bytes";
}

TEST(Sha256, AllByteValues) {
  std::string s;
  for (int rep = 0; rep < 4; ++rep)
    for (int b = 0; b < 256; ++b) s.push_back(static_cast<char>(b));
  EXPECT_EQ(hex(s), "785b0751fc2c53dc14a4ce3d800e69ef9ce1009eb327ccf458afe09c242c26c9");
}

TEST(Sha256, IncrementalEqualsOneShotForAnyChunking) {
  std::string a(1000000, 'a');
  const std::string want = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
  for (size_t chunk : {size_t{1}, size_t{3}, size_t{55}, size_t{63}, size_t{64}, size_t{65}, size_t{1000},
                       size_t{4096}, size_t{999999}}) {
    Sha256 h;
    for (size_t off = 0; off < a.size(); off += chunk) h.update(a.data() + off, std::min(chunk, a.size() - off));
    EXPECT_EQ(h.hex_digest(), want) << "chunk " << chunk;
  }
}

TEST(Sha256, ZeroLengthUpdatesAreNoOps) {
  Sha256 h;
  h.update("", 0);
  h.update("ab", 2);
  h.update("", 0);
  h.update("c", 1);
  EXPECT_EQ(h.hex_digest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, DigestBytesMatchHex) {
  Sha256 h;
  h.update("abc", 3);
  std::array<uint8_t, 32> d = h.digest();
  EXPECT_EQ(d[0], 0xba);
  EXPECT_EQ(d[1], 0x78);
  EXPECT_EQ(d[30], 0x15);
  EXPECT_EQ(d[31], 0xad);
}

}  // namespace
}  // namespace expertmesh
