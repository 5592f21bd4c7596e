// SHA-256 (FIPS 180-4), used by tests and `inspect --hash` to compare tensors with the golden
// hashes. Incremental: update() any number of times, then hex_digest().
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace expertmesh {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t len);
  std::array<uint8_t, 32> digest();  // finalises; the object must not be updated afterwards
  std::string hex_digest();

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(const void* data, size_t len);

}  // namespace expertmesh
