// Helpers shared by the GGUF reader and writer (not part of the public API).
#pragma once

#include <bit>
#include <cstdint>
#include <string_view>

#include "common/status.h"
#include "model/gguf/gguf.h"
#include "model/types.h"

namespace expertmesh::gguf::internal {

static_assert(std::endian::native == std::endian::little, "GGUF I/O assumes a little-endian host");

inline constexpr uint8_t kMagic[4] = {'G', 'G', 'U', 'F'};

// True for the 13 ids GGUF defines.
inline bool valid_value_type(uint32_t id) { return id < kValueTypeCount; }

// Fewest bytes one value of type t can occupy on disk: scalar size, 8 for a string (its length),
// 12 for an array (element type + count). Used to bound counts by the bytes left in the file.
inline uint64_t min_encoded_size(ValueType t) {
  if (t == ValueType::STRING) return 8;
  if (t == ValueType::ARRAY) return 12;
  return value_scalar_size(t);
}

// Rounds x up to a multiple of `align` (a power of two). Returns false on overflow.
inline bool align_up(uint64_t x, uint64_t align, uint64_t* out) {
  const uint64_t mask = align - 1;
  if (x > UINT64_MAX - mask) return false;
  *out = (x + mask) & ~mask;
  return true;
}

// The alignment a `general.alignment` value gives: it must be a non-zero power of two of type
// u32 (ggml reads it with gguf_get_val_u32). `v` may be nullptr (key absent: 32). The message
// names the key but not the file.
Result<uint64_t> alignment_from_value(const Value* v);

// Validates a tensor description as both reader and writer require: n_dims in 1..kMaxDims, every
// ne > 0, the element count fits in int64, and tensor_nbytes(type, ne) succeeds. Returns the byte
// size. The message starts with "tensor '<name>': ".
Result<int64_t> validate_tensor_shape(std::string_view name, uint32_t n_dims, const int64_t ne[4], GgmlType type);

}  // namespace expertmesh::gguf::internal
