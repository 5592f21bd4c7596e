// Helpers shared by the GGUF tests: a small deterministic model with every KV type and several
// tensor types, and file read/write helpers.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "model/gguf/gguf.h"

namespace expertmesh::gguf::testutil {

inline std::vector<uint8_t> read_bytes(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

inline void write_bytes(const std::filesystem::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// Owns tensor bytes for a Writer (WriteTensor::data points here; keep it alive until written).
struct TensorStore {
  std::vector<std::unique_ptr<std::vector<uint8_t>>> blobs;

  // Adds a tensor filled with deterministic pseudo-random bytes.
  Status add(Writer* w, const std::string& name, GgmlType type, std::vector<int64_t> shape, uint32_t seed) {
    WriteTensor t;
    t.name = name;
    t.n_dims = static_cast<uint32_t>(shape.size());
    for (size_t i = 0; i < shape.size() && i < 4; ++i) t.ne[i] = shape[i];
    t.type = type;
    Result<int64_t> nb = tensor_nbytes(type, t.ne);
    if (!nb.ok()) return nb.status();
    auto blob = std::make_unique<std::vector<uint8_t>>(static_cast<size_t>(nb.value()));
    std::mt19937 rng(seed);
    for (auto& b : *blob) b = static_cast<uint8_t>(rng());
    t.data = blob->data();
    t.nbytes = nb.value();
    blobs.push_back(std::move(blob));
    return w->add_tensor(t);
  }
};

// A KV of every scalar type, strings, arrays of every type, nested arrays, empty arrays.
inline void add_all_kv_types(Writer* w) {
  w->set("general.architecture", Value::string("llama"));
  w->set("test.u8", Value::u8(200));
  w->set("test.i8", Value::i8(-100));
  w->set("test.u16", Value::u16(60000));
  w->set("test.i16", Value::i16(-30000));
  w->set("test.u32", Value::u32(4000000000u));
  w->set("test.i32", Value::i32(-2000000000));
  w->set("test.f32", Value::f32(3.25f));
  w->set("test.bool", Value::boolean(true));
  w->set("test.string", Value::string("h\xc3\xa9llo \"w\"\n"));
  w->set("test.empty_string", Value::string(""));
  w->set("test.u64", Value::u64(18000000000000000000ull));
  w->set("test.i64", Value::i64(-9000000000000000000ll));
  w->set("test.f64", Value::f64(-1.0e300));
  w->set("test.arr.u8", Value::array_of(ValueType::UINT8, {Value::u8(1), Value::u8(2), Value::u8(255)}));
  w->set("test.arr.i8", Value::array_of(ValueType::INT8, {Value::i8(-1), Value::i8(127)}));
  w->set("test.arr.u16", Value::array_of(ValueType::UINT16, {Value::u16(65535)}));
  w->set("test.arr.i16", Value::array_of(ValueType::INT16, {Value::i16(-32768), Value::i16(5)}));
  w->set("test.arr.u32", Value::array_of(ValueType::UINT32, {Value::u32(7), Value::u32(8)}));
  w->set("test.arr.i32", Value::array_of(ValueType::INT32, {Value::i32(-7), Value::i32(1), Value::i32(3)}));
  w->set("test.arr.f32", Value::array_of(ValueType::FLOAT32, {Value::f32(-0.5f), Value::f32(1e-30f)}));
  w->set("test.arr.bool", Value::array_of(ValueType::BOOL, {Value::boolean(false), Value::boolean(true)}));
  w->set("test.arr.u64", Value::array_of(ValueType::UINT64, {Value::u64(~0ull)}));
  w->set("test.arr.i64", Value::array_of(ValueType::INT64, {Value::i64(-1), Value::i64(1ll << 62)}));
  w->set("test.arr.f64", Value::array_of(ValueType::FLOAT64, {Value::f64(2.5), Value::f64(-0.0)}));
  w->set("test.arr.str", Value::string_array({"a", "", "tok\xe2\x96\x81", "<s>"}));
  w->set("test.arr.empty", Value::array_of(ValueType::INT32, {}));
  w->set("test.arr.nested",
         Value::array_of(ValueType::ARRAY,
                         {Value::array_of(ValueType::INT32, {Value::i32(1), Value::i32(2)}),
                          Value::array_of(ValueType::INT32, {}), Value::array_of(ValueType::INT32, {Value::i32(3)})}));
  w->set("test.arr.nested3",
         Value::array_of(ValueType::ARRAY,
                         {Value::array_of(ValueType::ARRAY, {Value::string_array({"x", "y"}), Value::string_array({})}),
                          Value::array_of(ValueType::ARRAY, {})}));
}

// A small valid model: all KV types plus tensors of several types (plain, block, row-meta,
// interleaved), with the last tensor's size a multiple of 32 (no trailing padding).
inline Writer make_small_model(TensorStore* store, bool all_kvs = true) {
  Writer w;
  if (all_kvs) {
    add_all_kv_types(&w);
  } else {
    w.set("general.architecture", Value::string("llama"));
    w.set("k.a", Value::u32(1));
    w.set("k.b", Value::u32(2));
    w.set("tokenizer.ggml.tokens", Value::string_array({"<unk>", "<s>", "</s>", "hello"}));
  }
  EXPECT_TRUE(store->add(&w, "t.00", GgmlType::F32, {5, 3}, 1).ok());             // 60 bytes (padding after)
  EXPECT_TRUE(store->add(&w, "t.01", GgmlType::Q8_0, {64, 2}, 2).ok());           // 136 bytes
  EXPECT_TRUE(store->add(&w, "t.02", GgmlType::F16, {7}, 3).ok());                // 14 bytes
  EXPECT_TRUE(store->add(&w, "t.03", GgmlType::IQ4_KS, {256, 2, 1, 1}, 4).ok());  // row meta
  EXPECT_TRUE(store->add(&w, "t.04", GgmlType::Q4_0_R8, {32, 8}, 5).ok());        // interleaved
  EXPECT_TRUE(store->add(&w, "t.05", GgmlType::BF16, {4, 2, 2}, 6).ok());         // 32 bytes
  EXPECT_TRUE(store->add(&w, "t.06", GgmlType::F32, {8, 2, 1, 2}, 7).ok());       // 128 bytes, 4-D, last
  return w;
}

}  // namespace expertmesh::gguf::testutil
