// gguf::Value: constructors, typed accessors, display; and the shape/alignment checks shared by
// the reader and the writer (gguf_internal.h).
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "model/gguf/gguf.h"
#include "model/gguf/gguf_internal.h"

namespace expertmesh::gguf {

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
      return "u8";
    case ValueType::INT8:
      return "i8";
    case ValueType::UINT16:
      return "u16";
    case ValueType::INT16:
      return "i16";
    case ValueType::UINT32:
      return "u32";
    case ValueType::INT32:
      return "i32";
    case ValueType::FLOAT32:
      return "f32";
    case ValueType::BOOL:
      return "bool";
    case ValueType::STRING:
      return "str";
    case ValueType::ARRAY:
      return "arr";
    case ValueType::UINT64:
      return "u64";
    case ValueType::INT64:
      return "i64";
    case ValueType::FLOAT64:
      return "f64";
  }
  return "unknown";
}

size_t value_scalar_size(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::BOOL:
      return 1;
    case ValueType::UINT16:
    case ValueType::INT16:
      return 2;
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::FLOAT32:
      return 4;
    case ValueType::UINT64:
    case ValueType::INT64:
    case ValueType::FLOAT64:
      return 8;
    case ValueType::STRING:
    case ValueType::ARRAY:
      return 0;
  }
  return 0;
}

namespace {

Value scalar(ValueType t, uint64_t bits) {
  Value v;
  v.type = t;
  v.bits = bits;
  return v;
}

// Appends `s` quoted, with the escapes gguf-dump and JSON use for control characters.
void append_quoted(std::string* out, const std::string& s) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20) {
          out->append(fmt::format("\\x{:02x}", c));
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

// `*budget`: elements that may still be rendered across all nested arrays.
void append_display(std::string* out, const Value& v, size_t max_elems, bool quote_strings, size_t* budget) {
  switch (v.type) {
    case ValueType::STRING:
      if (quote_strings) {
        append_quoted(out, v.str);
      } else {
        out->append(v.str);
      }
      return;
    case ValueType::BOOL:
      out->append(v.as_bool() ? "true" : "false");
      return;
    case ValueType::FLOAT32:
      out->append(fmt::format("{}", v.as_f32()));
      return;
    case ValueType::FLOAT64:
      out->append(fmt::format("{}", v.as_double()));
      return;
    case ValueType::UINT8:
    case ValueType::UINT16:
    case ValueType::UINT32:
    case ValueType::UINT64:
      out->append(fmt::format("{}", v.as_uint()));
      return;
    case ValueType::INT8:
    case ValueType::INT16:
    case ValueType::INT32:
    case ValueType::INT64:
      out->append(fmt::format("{}", v.as_int()));
      return;
    case ValueType::ARRAY: {
      out->push_back('[');
      size_t n = 0;
      for (; n < std::min(max_elems, v.array.size()) && *budget > 0; ++n) {
        --*budget;
        if (n > 0) out->append(", ");
        append_display(out, v.array[n], max_elems, /*quote_strings=*/true, budget);
      }
      if (n < v.array.size()) out->append(fmt::format("{}... ({} elements)", n > 0 ? ", " : "", v.array.size()));
      out->push_back(']');
      return;
    }
  }
  out->append(fmt::format("<unknown type {}>", static_cast<uint32_t>(v.type)));
}

}  // namespace

Value Value::u8(uint8_t v) { return scalar(ValueType::UINT8, v); }
Value Value::i8(int8_t v) { return scalar(ValueType::INT8, static_cast<uint8_t>(v)); }
Value Value::u16(uint16_t v) { return scalar(ValueType::UINT16, v); }
Value Value::i16(int16_t v) { return scalar(ValueType::INT16, static_cast<uint16_t>(v)); }
Value Value::u32(uint32_t v) { return scalar(ValueType::UINT32, v); }
Value Value::i32(int32_t v) { return scalar(ValueType::INT32, static_cast<uint32_t>(v)); }
Value Value::u64(uint64_t v) { return scalar(ValueType::UINT64, v); }
Value Value::i64(int64_t v) { return scalar(ValueType::INT64, static_cast<uint64_t>(v)); }
Value Value::f32(float v) { return scalar(ValueType::FLOAT32, std::bit_cast<uint32_t>(v)); }
Value Value::f64(double v) { return scalar(ValueType::FLOAT64, std::bit_cast<uint64_t>(v)); }
Value Value::boolean(bool v) { return scalar(ValueType::BOOL, v ? 1 : 0); }

Value Value::string(std::string v) {
  Value out;
  out.type = ValueType::STRING;
  out.str = std::move(v);
  return out;
}

Value Value::array_of(ValueType elem, std::vector<Value> elems) {
  Value out;
  out.type = ValueType::ARRAY;
  out.elem_type = elem;
  out.array = std::move(elems);
  return out;
}

Value Value::string_array(const std::vector<std::string>& v) {
  std::vector<Value> elems;
  elems.reserve(v.size());
  for (const auto& s : v) elems.push_back(Value::string(s));
  return array_of(ValueType::STRING, std::move(elems));
}

bool Value::is_integer() const {
  switch (type) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::UINT16:
    case ValueType::INT16:
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::UINT64:
    case ValueType::INT64:
      return true;
    default:
      return false;
  }
}

bool Value::is_float() const { return type == ValueType::FLOAT32 || type == ValueType::FLOAT64; }

int64_t Value::as_int() const {
  switch (type) {
    case ValueType::UINT8:
      return static_cast<uint8_t>(bits);
    case ValueType::INT8:
      return static_cast<int8_t>(static_cast<uint8_t>(bits));
    case ValueType::UINT16:
      return static_cast<uint16_t>(bits);
    case ValueType::INT16:
      return static_cast<int16_t>(static_cast<uint16_t>(bits));
    case ValueType::UINT32:
      return static_cast<uint32_t>(bits);
    case ValueType::INT32:
      return static_cast<int32_t>(static_cast<uint32_t>(bits));
    case ValueType::UINT64:
    case ValueType::INT64:
      return static_cast<int64_t>(bits);
    case ValueType::BOOL:
      return (bits & 0xff) != 0 ? 1 : 0;
    default:
      return 0;
  }
}

uint64_t Value::as_uint() const {
  switch (type) {
    case ValueType::UINT8:
    case ValueType::UINT16:
    case ValueType::UINT32:
    case ValueType::UINT64:
      return bits;
    case ValueType::INT8:
    case ValueType::INT16:
    case ValueType::INT32:
    case ValueType::INT64:
    case ValueType::BOOL:
      return static_cast<uint64_t>(as_int());
    default:
      return 0;
  }
}

double Value::as_double() const {
  switch (type) {
    case ValueType::FLOAT32:
      return static_cast<double>(std::bit_cast<float>(static_cast<uint32_t>(bits)));
    case ValueType::FLOAT64:
      return std::bit_cast<double>(bits);
    case ValueType::UINT8:
    case ValueType::UINT16:
    case ValueType::UINT32:
    case ValueType::UINT64:
      return static_cast<double>(bits);
    case ValueType::INT8:
    case ValueType::INT16:
    case ValueType::INT32:
    case ValueType::INT64:
      return static_cast<double>(as_int());
    default:
      return 0.0;
  }
}

float Value::as_f32() const {
  if (type == ValueType::FLOAT32) return std::bit_cast<float>(static_cast<uint32_t>(bits));
  return static_cast<float>(as_double());
}

bool Value::as_bool() const {
  if (type == ValueType::BOOL) return (bits & 0xff) != 0;
  if (is_integer()) return bits != 0;
  return false;
}

std::string Value::to_display(size_t max_elems) const {
  std::string out;
  size_t budget = max_elems * 4;
  append_display(&out, *this, max_elems, /*quote_strings=*/false, &budget);
  return out;
}

bool Value::operator==(const Value& o) const {
  if (type != o.type) return false;
  switch (type) {
    case ValueType::STRING:
      return str == o.str;
    case ValueType::ARRAY:
      return elem_type == o.elem_type && array == o.array;
    default:
      return bits == o.bits;
  }
}

namespace internal {

Result<uint64_t> alignment_from_value(const Value* v) {
  if (v == nullptr) return kDefaultAlignment;
  if (v->type != ValueType::UINT32)
    return Status::Corruption(fmt::format("{} has type {}, expected u32", kKeyAlignment, value_type_name(v->type)));
  const uint64_t a = v->as_uint();
  if (a == 0 || (a & (a - 1)) != 0)
    return Status::Corruption(fmt::format("{} = {} is not a power of two", kKeyAlignment, a));
  return a;
}

Result<int64_t> validate_tensor_shape(std::string_view name, uint32_t n_dims, const int64_t ne[4], GgmlType type) {
  auto fail = [&](StatusCode code, const std::string& what) -> Status {
    std::string msg = fmt::format("tensor '{}': {}", name, what);
    switch (code) {
      case StatusCode::kUnsupported:
        return Status::Unsupported(std::move(msg));
      case StatusCode::kOutOfRange:
        return Status::OutOfRange(std::move(msg));
      default:
        return Status::Corruption(std::move(msg));
    }
  };
  if (n_dims == 0 || n_dims > static_cast<uint32_t>(kMaxDims))
    return fail(StatusCode::kCorruption, fmt::format("n_dims = {} (must be 1..{})", n_dims, kMaxDims));
  const TypeTraits* tt = type_traits(type);
  if (tt == nullptr)
    return fail(StatusCode::kUnsupported, fmt::format("unknown ggml type id {}", static_cast<int32_t>(type)));
  int64_t elems = 1;
  for (int i = 0; i < kMaxDims; ++i) {
    if (ne[i] <= 0)
      return fail(StatusCode::kCorruption, fmt::format("ne[{}] = {} (dimensions must be positive)", i, ne[i]));
    if (i >= static_cast<int>(n_dims) && ne[i] != 1)
      return fail(StatusCode::kCorruption, fmt::format("ne[{}] = {} beyond n_dims = {} (must be 1)", i, ne[i], n_dims));
    if (elems > std::numeric_limits<int64_t>::max() / ne[i])
      return fail(StatusCode::kOutOfRange,
                  fmt::format("shape [{}, {}, {}, {}] overflows the element count", ne[0], ne[1], ne[2], ne[3]));
    elems *= ne[i];
  }
  Result<int64_t> nbytes = tensor_nbytes(type, ne);
  if (!nbytes.ok()) return fail(nbytes.status().code(), nbytes.status().message());
  return nbytes.value();
}

}  // namespace internal
}  // namespace expertmesh::gguf
