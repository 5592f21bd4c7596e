// Corrupt-input corpus for the GGUF reader. Every case is derived deterministically from a valid
// small model (or built by hand) and must be refused with a non-ok Status whose message names the
// file; none may crash, read outside the buffer (run under ASan: EXPERTMESH_SANITIZE_ADDRESS=ON) or
// allocate absurd amounts. Cases are checked through File::parse (in memory) and File::open (mmap).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <random>

#include "model/gguf/gguf.h"
#include "tests/common/golden.h"
#include "tests/gguf/gguf_test_util.h"

namespace expertmesh::gguf {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

// Field positions of a valid file, found by walking it (the walker trusts its input).
struct Layout {
  struct Kv {
    std::string key;
    size_t key_len_off = 0, type_off = 0, value_off = 0, end = 0;
    uint32_t type = 0;
  };
  struct Ti {
    std::string name;
    size_t name_len_off = 0, n_dims_off = 0, ne_off = 0, type_off = 0, offset_off = 0;
    uint32_t n_dims = 0;
    uint64_t offset = 0;
  };
  std::vector<Kv> kvs;
  std::vector<Ti> tis;
  std::vector<size_t> boundaries;  // start of every field
  size_t header_end = 0;

  const Kv& kv(const std::string& k) const {
    for (const auto& e : kvs)
      if (e.key == k) return e;
    ADD_FAILURE() << "no key " << k;
    return kvs.front();
  }
  const Ti& ti(const std::string& n) const {
    for (const auto& e : tis)
      if (e.name == n) return e;
    ADD_FAILURE() << "no tensor " << n;
    return tis.front();
  }
};

template <typename T>
T get(const Bytes& b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}

template <typename T>
void set(Bytes* b, size_t off, T v) {
  std::memcpy(b->data() + off, &v, sizeof(T));
}

void walk_value(const Bytes& b, size_t* pos, uint32_t type, std::vector<size_t>* bounds) {
  bounds->push_back(*pos);
  static const size_t kSize[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
  if (type == 8) {
    *pos += 8 + get<uint64_t>(b, *pos);
  } else if (type == 9) {
    const uint32_t et = get<uint32_t>(b, *pos);
    const uint64_t n = get<uint64_t>(b, *pos + 4);
    bounds->push_back(*pos + 4);
    *pos += 12;
    for (uint64_t i = 0; i < n; ++i) walk_value(b, pos, et, bounds);
  } else {
    *pos += kSize[type];
  }
}

Layout walk(const Bytes& b) {
  Layout l;
  l.boundaries = {0, 4, 8, 16};
  const uint64_t n_tensors = get<uint64_t>(b, 8);
  const uint64_t n_kv = get<uint64_t>(b, 16);
  size_t pos = 24;
  for (uint64_t i = 0; i < n_kv; ++i) {
    Layout::Kv kv;
    kv.key_len_off = pos;
    const uint64_t len = get<uint64_t>(b, pos);
    kv.key.assign(reinterpret_cast<const char*>(b.data() + pos + 8), len);
    l.boundaries.push_back(pos);
    l.boundaries.push_back(pos + 8);
    pos += 8 + len;
    kv.type_off = pos;
    kv.type = get<uint32_t>(b, pos);
    l.boundaries.push_back(pos);
    pos += 4;
    kv.value_off = pos;
    walk_value(b, &pos, kv.type, &l.boundaries);
    kv.end = pos;
    l.kvs.push_back(kv);
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    Layout::Ti t;
    t.name_len_off = pos;
    const uint64_t len = get<uint64_t>(b, pos);
    t.name.assign(reinterpret_cast<const char*>(b.data() + pos + 8), len);
    l.boundaries.push_back(pos);
    l.boundaries.push_back(pos + 8);
    pos += 8 + len;
    t.n_dims_off = pos;
    t.n_dims = get<uint32_t>(b, pos);
    l.boundaries.push_back(pos);
    pos += 4;
    t.ne_off = pos;
    for (uint32_t d = 0; d < t.n_dims; ++d) l.boundaries.push_back(pos + 8 * d);
    pos += 8 * t.n_dims;
    t.type_off = pos;
    l.boundaries.push_back(pos);
    pos += 4;
    t.offset_off = pos;
    t.offset = get<uint64_t>(b, pos);
    l.boundaries.push_back(pos);
    pos += 8;
    l.tis.push_back(t);
  }
  l.header_end = pos;
  l.boundaries.push_back(pos);
  return l;
}

// The valid base: every KV type, nested arrays, an explicit general.alignment, 7 tensors; its last
// tensor ends exactly at the end of the file.
Bytes make_base(testutil::TensorStore* store) {
  Writer w = testutil::make_small_model(store);
  w.set("general.alignment", Value::u32(32));
  return w.to_bytes().value();
}

class CorruptCorpus : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = make_base(&store_);
    layout_ = walk(base_);
    ASSERT_EQ(layout_.tis.size(), 7u);
    auto f = File::parse(base_.data(), base_.size(), "base.gguf");
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    data_offset_ = (*f)->data_offset(0);
    dir_ = testing::temp_dir("gguf-corrupt");
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Expects `bytes` to be refused (in memory and from disk) with a message naming the file and,
  // if given, containing `needle`.
  void expect_refused(const std::string& name, const Bytes& bytes, const std::string& needle = "") {
    SCOPED_TRACE(name);
    const std::string mem_name = name + ".gguf";
    auto r = File::parse(bytes.data(), bytes.size(), mem_name);
    ASSERT_FALSE(r.ok()) << "accepted: " << name;
    EXPECT_NE(r.status().message().find(mem_name), std::string::npos) << r.status().message();
    if (!needle.empty()) {
      EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
    }
    const fs::path p = dir_ / mem_name;
    testutil::write_bytes(p, bytes);
    auto o = File::open(p.string());
    ASSERT_FALSE(o.ok()) << "accepted from disk: " << name;
    EXPECT_NE(o.status().message().find(p.string()), std::string::npos) << o.status().message();
    fs::remove(p);
    ++refused_;
  }

  Bytes with(const std::function<void(Bytes*)>& edit) const {
    Bytes b = base_;
    edit(&b);
    return b;
  }

  testutil::TensorStore store_;
  Bytes base_;
  Layout layout_;
  uint64_t data_offset_ = 0;
  fs::path dir_;
  int refused_ = 0;
};

TEST_F(CorruptCorpus, TruncatedAtEveryFieldBoundary) {
  std::vector<size_t> points;
  for (size_t b : layout_.boundaries) {
    points.push_back(b);
    points.push_back(b + 1);
    if (b > 0) points.push_back(b - 1);
  }
  points.push_back(data_offset_ - 1);
  points.push_back(data_offset_);
  points.push_back(base_.size() - 1);
  for (size_t p : points) {
    if (p >= base_.size()) continue;
    Bytes b(base_.begin(), base_.begin() + static_cast<std::ptrdiff_t>(p));
    if (p == layout_.header_end) {
      // Ends right after the tensor infos: the vocab-only layout, accepted without data.
      auto r = File::parse(b.data(), b.size(), "cut.gguf");
      ASSERT_TRUE(r.ok()) << r.status().to_string();
      EXPECT_TRUE((*r)->vocab_only());
      continue;
    }
    expect_refused("truncated-at-" + std::to_string(p), b);
  }
  EXPECT_GT(refused_, 100);
}

TEST_F(CorruptCorpus, TruncatedAtRandomPoints) {
  std::mt19937_64 rng(12345);
  for (int i = 0; i < 300; ++i) {
    const size_t p = rng() % base_.size();
    if (p == layout_.header_end) continue;
    Bytes b(base_.begin(), base_.begin() + static_cast<std::ptrdiff_t>(p));
    expect_refused("random-cut-" + std::to_string(p), b);
  }
}

TEST_F(CorruptCorpus, BadMagicAndVersion) {
  expect_refused("empty", Bytes{}, "too short");
  expect_refused("three-bytes", Bytes{'G', 'G', 'U'}, "too short");
  expect_refused("bad-magic", with([](Bytes* b) { (*b)[0] = 'X'; }), "magic");
  expect_refused("ggml-magic", with([](Bytes* b) { std::memcpy(b->data(), "lmgg", 4); }), "magic");
  expect_refused("v1", with([](Bytes* b) { set<uint32_t>(b, 4, 1); }), "v1");
  expect_refused("v0", with([](Bytes* b) { set<uint32_t>(b, 4, 0); }), "version");
  expect_refused("v4", with([](Bytes* b) { set<uint32_t>(b, 4, 4); }), "version");
  expect_refused("big-endian", with([](Bytes* b) { set<uint32_t>(b, 4, 0x03000000u); }), "big-endian");
  auto v1 = File::parse(nullptr, 0, "x.gguf");
  EXPECT_FALSE(v1.ok());
}

TEST_F(CorruptCorpus, HugeCounts) {
  const uint64_t huge[] = {~0ull, 1ull << 63, 1ull << 40, base_.size(), base_.size() / 13 + 1};
  for (uint64_t v : huge) {
    expect_refused("n_tensors-" + std::to_string(v), with([&](Bytes* b) { set<uint64_t>(b, 8, v); }));
    expect_refused("n_kv-" + std::to_string(v), with([&](Bytes* b) { set<uint64_t>(b, 16, v); }));
  }
  // Array counts: a scalar array, a string array, an array of arrays.
  // (size / 8 elements of at least 8 bytes cannot fit; size / 8 bytes could, for the u8 array.)
  for (const char* key : {"test.arr.u8", "test.arr.str", "test.arr.nested", "test.arr.nested3"}) {
    const size_t n_off = layout_.kv(key).value_off + 4;
    std::vector<uint64_t> counts = {~uint64_t{0}, uint64_t{1} << 62, base_.size()};
    if (std::string(key) != "test.arr.u8") counts.push_back(base_.size() / 8);
    for (uint64_t v : counts)
      expect_refused(std::string("count-") + key + "-" + std::to_string(v),
                     with([&](Bytes* b) { set<uint64_t>(b, n_off, v); }));
  }
}

TEST_F(CorruptCorpus, StringLongerThanFile) {
  const size_t key_len = layout_.kvs[0].key_len_off;
  const size_t str_len = layout_.kv("test.string").value_off;
  const size_t name_len = layout_.tis[3].name_len_off;
  for (size_t off : {key_len, str_len, name_len}) {
    for (uint64_t v : std::vector<uint64_t>{~uint64_t{0}, ~uint64_t{0} - 1, base_.size(), base_.size() - off - 8 + 1})
      expect_refused("strlen-" + std::to_string(off) + "-" + std::to_string(v),
                     with([&](Bytes* b) { set<uint64_t>(b, off, v); }), "length");
  }
  // A string inside a string array.
  const size_t elem0 = layout_.kv("test.arr.str").value_off + 12;
  expect_refused("array-string-too-long", with([&](Bytes* b) { set<uint64_t>(b, elem0, 1ull << 40); }), "length");
}

TEST_F(CorruptCorpus, BadTypeIds) {
  for (uint32_t v : {13u, 14u, 0xffffffffu, 0x80000000u})
    expect_refused("kv-type-" + std::to_string(v),
                   with([&](Bytes* b) { set<uint32_t>(b, layout_.kv("test.u8").type_off, v); }), "type");
  for (uint32_t v : {13u, 0xffffffffu})
    expect_refused("array-elem-type-" + std::to_string(v),
                   with([&](Bytes* b) { set<uint32_t>(b, layout_.kv("test.arr.u8").value_off, v); }), "type");
  for (uint32_t v : {4u, 5u, 34u, 96u, 400u, 1000u, 0xffffffffu, 0x80000000u})
    expect_refused("tensor-type-" + std::to_string(v),
                   with([&](Bytes* b) { set<uint32_t>(b, layout_.ti("t.01").type_off, v); }), "unknown ggml type");
}

TEST_F(CorruptCorpus, BadTensorOffsets) {
  const auto& t1 = layout_.ti("t.01");
  const auto& t0 = layout_.ti("t.00");
  const auto& t6 = layout_.ti("t.06");
  const uint64_t data_size = base_.size() - data_offset_;
  expect_refused("misaligned", with([&](Bytes* b) { set<uint64_t>(b, t1.offset_off, t1.offset + 1); }),
                 "not a multiple of the alignment");
  expect_refused("overlap-next", with([&](Bytes* b) { set<uint64_t>(b, t1.offset_off, t1.offset + 32); }), "overlap");
  expect_refused("overlap-same", with([&](Bytes* b) { set<uint64_t>(b, t0.offset_off, t1.offset); }), "overlap");
  expect_refused("oob-huge", with([&](Bytes* b) { set<uint64_t>(b, t1.offset_off, ~uint64_t{31}); }), "outside");
  expect_refused("oob-size", with([&](Bytes* b) { set<uint64_t>(b, t1.offset_off, data_size); }), "outside");
  expect_refused("oob-last", with([&](Bytes* b) { set<uint64_t>(b, t6.offset_off, t6.offset + 32); }), "outside");
}

TEST_F(CorruptCorpus, BadDims) {
  const auto& t0 = layout_.ti("t.00");  // f32 [5, 3]
  const auto& t1 = layout_.ti("t.01");  // q8_0 [64, 2]
  for (uint32_t v : {0u, 5u, 0xffffffffu})
    expect_refused("n_dims-" + std::to_string(v), with([&](Bytes* b) { set<uint32_t>(b, t0.n_dims_off, v); }),
                   "n_dims");
  expect_refused("ne-zero", with([&](Bytes* b) { set<uint64_t>(b, t0.ne_off + 8, 0); }), "ne[1]");
  expect_refused("ne-negative", with([&](Bytes* b) { set<uint64_t>(b, t0.ne_off, ~0ull); }), "ne[0]");
  expect_refused("ne-overflow-elements", with([&](Bytes* b) { set<uint64_t>(b, t0.ne_off, 1ull << 62); }), "overflow");
  expect_refused("ne-overflow-both", with([&](Bytes* b) {
                   set<uint64_t>(b, t0.ne_off, 1ull << 40);
                   set<uint64_t>(b, t0.ne_off + 8, 1ull << 40);
                 }));
  expect_refused("ne-too-big-for-file", with([&](Bytes* b) { set<uint64_t>(b, t0.ne_off, 1ull << 30); }), "outside");
  expect_refused("ne0-not-whole-blocks", with([&](Bytes* b) { set<uint64_t>(b, t1.ne_off, 48); }),
                 "tensor 't.01': row of 48 elements is not a whole number of 32-element q8_0 blocks");
  const auto& t4 = layout_.ti("t.04");  // q4_0_r8 [32, 8]
  expect_refused("interleave-rows", with([&](Bytes* b) { set<uint64_t>(b, t4.ne_off + 8, 4); }), "t.04");
}

TEST_F(CorruptCorpus, DuplicateNamesAndKeys) {
  const auto& t1 = layout_.ti("t.01");
  expect_refused("dup-tensor", with([&](Bytes* b) { std::memcpy(b->data() + t1.name_len_off + 8, "t.00", 4); }),
                 "duplicate tensor name 't.00'");
  const auto& k = layout_.kv("test.u8");
  expect_refused("dup-key", with([&](Bytes* b) { std::memcpy(b->data() + k.key_len_off + 8, "test.i8", 7); }),
                 "duplicate key 'test.i8'");
}

TEST_F(CorruptCorpus, BadAlignment) {
  const auto& a = layout_.kv("general.alignment");
  for (uint32_t v : {0u, 3u, 48u, 0xffffffffu})
    expect_refused("align-" + std::to_string(v), with([&](Bytes* b) { set<uint32_t>(b, a.value_off, v); }),
                   "general.alignment");
  expect_refused("align-huge", with([&](Bytes* b) { set<uint32_t>(b, a.value_off, 1u << 31); }));
  expect_refused("align-i32", with([&](Bytes* b) { set<uint32_t>(b, a.type_off, 5); }), "general.alignment");
  expect_refused("align-f32", with([&](Bytes* b) { set<uint32_t>(b, a.type_off, 6); }), "general.alignment");
}

// Hand-built files with one key whose value is `body` (type id first).
Bytes one_kv_file(const std::string& key, const Bytes& body) {
  Bytes b = {'G', 'G', 'U', 'F'};
  auto put32 = [&](uint32_t v) {
    b.insert(b.end(), reinterpret_cast<uint8_t*>(&v), reinterpret_cast<uint8_t*>(&v) + 4);
  };
  auto put64 = [&](uint64_t v) {
    b.insert(b.end(), reinterpret_cast<uint8_t*>(&v), reinterpret_cast<uint8_t*>(&v) + 8);
  };
  put32(3);
  put64(0);
  put64(1);
  put64(key.size());
  b.insert(b.end(), key.begin(), key.end());
  b.insert(b.end(), body.begin(), body.end());
  return b;
}

Bytes nested_arrays(int levels, uint64_t count_each) {
  Bytes body;
  auto put32 = [&](uint32_t v) {
    body.insert(body.end(), reinterpret_cast<uint8_t*>(&v), reinterpret_cast<uint8_t*>(&v) + 4);
  };
  auto put64 = [&](uint64_t v) {
    body.insert(body.end(), reinterpret_cast<uint8_t*>(&v), reinterpret_cast<uint8_t*>(&v) + 8);
  };
  put32(9);  // the KV's type: ARRAY
  for (int i = 1; i < levels; ++i) {
    put32(9);  // element type ARRAY
    put64(count_each);
  }
  put32(5);  // innermost: INT32, empty
  put64(0);
  return body;
}

TEST_F(CorruptCorpus, NestedArrayBombs) {
  // Within the limit: accepted.
  Bytes ok = one_kv_file("nest", nested_arrays(kMaxArrayDepth, 1));
  auto r = File::parse(ok.data(), ok.size(), "nest.gguf");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  expect_refused("nest-too-deep", one_kv_file("nest", nested_arrays(kMaxArrayDepth + 1, 1)), "nested");
  expect_refused("nest-10000", one_kv_file("nest", nested_arrays(10000, 1)), "nested");
  expect_refused("nest-wide", one_kv_file("nest", nested_arrays(3, 1ull << 40)), "array");
  expect_refused("nest-wide-max", one_kv_file("nest", nested_arrays(2, ~0ull)), "array");
  // Many empty arrays that really are in the file are fine; one more than fits is not.
  Bytes wide_body = {9, 0, 0, 0, 9, 0, 0, 0};
  const uint64_t n = 1000;
  for (int i = 0; i < 8; ++i) wide_body.push_back(static_cast<uint8_t>(n >> (8 * i)));
  for (uint64_t i = 0; i < n; ++i) {
    const uint8_t empty_i32[12] = {5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    wide_body.insert(wide_body.end(), empty_i32, empty_i32 + 12);
  }
  // More array elements than the per-file metadata limit, all present in the file.
  Bytes big_body = {9, 0, 0, 0, 0, 0, 0, 0};  // ARRAY of UINT8
  const uint64_t big = kMaxMetadataElements + 1;
  for (int i = 0; i < 8; ++i) big_body.push_back(static_cast<uint8_t>(big >> (8 * i)));
  big_body.resize(big_body.size() + big, 0);
  expect_refused("too-many-elements", one_kv_file("big", big_body), "limit");
  Bytes wide = one_kv_file("wide", wide_body);
  ASSERT_TRUE(File::parse(wide.data(), wide.size(), "wide.gguf").ok());
  wide_body[8] = static_cast<uint8_t>(n + 1);
  expect_refused("wide-plus-one", one_kv_file("wide", wide_body));
}

// Split models on disk: missing shard, inconsistent split keys, unfindable shards.
class CorruptSplit : public ::testing::Test {
 protected:
  void SetUp() override {
    w_ = testutil::make_small_model(&store_, false);
    dir_ = testing::temp_dir("gguf-corrupt-split");
    auto p = w_.write((dir_ / "m.gguf").string(), SplitOptions{3, 0});
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    paths_ = p.value();
    ASSERT_EQ(paths_.size(), 3u);
    for (const auto& s : paths_) shards_.push_back(testutil::read_bytes(s));
  }
  void TearDown() override { fs::remove_all(dir_); }

  void restore() {
    for (size_t i = 0; i < paths_.size(); ++i) testutil::write_bytes(paths_[i], shards_[i]);
  }
  void expect_open_fails(const std::string& needle) {
    for (const auto& p : paths_) {
      if (!fs::exists(p)) continue;
      auto f = File::open(p);
      ASSERT_FALSE(f.ok()) << "opened " << p;
      EXPECT_NE(f.status().message().find(dir_.string()), std::string::npos) << f.status().message();
      EXPECT_NE(f.status().message().find(needle), std::string::npos) << f.status().message();
    }
  }
  size_t value_off(const Bytes& b, const std::string& key) { return walk(b).kv(key).value_off; }

  testutil::TensorStore store_;
  Writer w_;
  fs::path dir_;
  std::vector<std::string> paths_;
  std::vector<Bytes> shards_;
};

TEST_F(CorruptSplit, MissingShard) {
  for (size_t missing = 0; missing < 3; ++missing) {
    restore();
    fs::remove(paths_[missing]);
    expect_open_fails("missing split shard '" + paths_[missing] + "'");
    for (const auto& p : paths_) {
      if (!fs::exists(p)) continue;
      EXPECT_EQ(File::open(p).status().code(), StatusCode::kNotFound);
    }
  }
}

TEST_F(CorruptSplit, WrongSplitNo) {
  Bytes b = shards_[1];
  set<uint16_t>(&b, value_off(b, "split.no"), 2);
  testutil::write_bytes(paths_[1], b);
  auto f = File::open(paths_[0]);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find(paths_[1]), std::string::npos) << f.status().message();
}

TEST_F(CorruptSplit, WrongSplitCount) {
  Bytes b = shards_[2];
  set<uint16_t>(&b, value_off(b, "split.count"), 4);
  testutil::write_bytes(paths_[2], b);
  auto f = File::open(paths_[0]);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find(paths_[2]), std::string::npos) << f.status().message();
  // Opened directly, shard 3's name disagrees with its split.count.
  EXPECT_FALSE(File::open(paths_[2]).ok());
}

TEST_F(CorruptSplit, WrongTensorsCount) {
  Bytes b = shards_[0];
  set<int32_t>(&b, value_off(b, "split.tensors.count"), 8);
  testutil::write_bytes(paths_[0], b);
  expect_open_fails("split.tensors.count = 8");
}

TEST_F(CorruptSplit, SplitCountZero) {
  Bytes b = shards_[0];
  set<uint16_t>(&b, value_off(b, "split.count"), 0);
  testutil::write_bytes(paths_[0], b);
  auto f = File::open(paths_[0]);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find(paths_[0]), std::string::npos);
}

TEST_F(CorruptSplit, MissingSplitKeyInLaterShard) {
  Bytes b = shards_[1];
  const size_t key_off = walk(b).kv("split.no").key_len_off + 8;
  std::memcpy(b.data() + key_off, "split.xx", 8);
  testutil::write_bytes(paths_[1], b);
  auto f = File::open(paths_[0]);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("split.no"), std::string::npos) << f.status().message();
}

TEST_F(CorruptSplit, DuplicateTensorAcrossShards) {
  Bytes b = shards_[1];
  const Layout l = walk(b);
  std::memcpy(b.data() + l.tis[0].name_len_off + 8, "t.00", 4);  // shard 2's first tensor renamed
  testutil::write_bytes(paths_[1], b);
  expect_open_fails("'t.00' is also in shard");
}

TEST_F(CorruptSplit, ShardNameDoesNotFollowPattern) {
  const fs::path plain = dir_ / "plain.gguf";
  testutil::write_bytes(plain, shards_[0]);
  auto f = File::open(plain.string());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find(plain.string()), std::string::npos);
  EXPECT_NE(f.status().message().find("%05d"), std::string::npos) << f.status().message();
  // ... but open_single reads it as one file.
  EXPECT_TRUE(File::open_single(plain.string()).ok());
  // A shard renamed to the wrong index.
  const fs::path wrong = dir_ / "x-00002-of-00003.gguf";
  testutil::write_bytes(wrong, shards_[0]);
  EXPECT_FALSE(File::open(wrong.string()).ok());
}

TEST_F(CorruptSplit, ShardWithoutData) {
  Bytes b = shards_[1];
  b.resize(walk(b).header_end);
  testutil::write_bytes(paths_[1], b);
  expect_open_fails("tensor data is missing");
}

// Random byte-level mutations of the header: no crash; refusals name the file; whatever is
// accepted must survive a write + re-parse.
TEST_F(CorruptCorpus, RandomHeaderMutations) {
  std::mt19937_64 rng(777);
  int refused = 0, accepted = 0;
  for (int i = 0; i < 4000; ++i) {
    Bytes b = base_;
    const int n_edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < n_edits; ++e) {
      const size_t off = rng() % data_offset_;
      switch (rng() % 4) {
        case 0:
          b[off] ^= static_cast<uint8_t>(1u << (rng() % 8));
          break;
        case 1:
          b[off] = static_cast<uint8_t>(rng());
          break;
        case 2:
          if (off + 8 <= b.size()) set<uint64_t>(&b, off, rng() % 2 ? ~0ull >> (rng() % 64) : rng() % 64);
          break;
        case 3:
          if (off + 4 <= b.size()) set<uint32_t>(&b, off, static_cast<uint32_t>(rng() % 16));
          break;
      }
    }
    auto r = File::parse(b.data(), b.size(), "mutant.gguf");
    if (!r.ok()) {
      ++refused;
      ASSERT_NE(r.status().message().find("mutant.gguf"), std::string::npos) << r.status().message();
      continue;
    }
    ++accepted;
    auto w = Writer::from_file(**r);
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    auto again = w->to_bytes();
    ASSERT_TRUE(again.ok()) << again.status().to_string();
    ASSERT_TRUE(File::parse(again->data(), again->size(), "again.gguf").ok());
  }
  std::printf("random header mutations: %d refused, %d accepted\n", refused, accepted);
  EXPECT_GT(refused, 1000);
}

}  // namespace
}  // namespace expertmesh::gguf
