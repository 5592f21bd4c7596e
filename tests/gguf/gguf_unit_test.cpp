// Unit tests for the GGUF reader and writer: every KV type (nested arrays too), tensors of
// several types, alignment variants, split writes re-opened from any shard, vocab-only files,
// streaming writes, writer validation, and that open() never reads tensor data.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>

#include "model/gguf/gguf.h"
#include "tests/common/golden.h"
#include "tests/gguf/gguf_test_util.h"

namespace expertmesh::gguf {
namespace {

namespace fs = std::filesystem;
using testutil::make_small_model;
using testutil::read_bytes;
using testutil::TensorStore;
using testutil::write_bytes;

std::unique_ptr<File> parse_ok(const std::vector<uint8_t>& bytes, const std::string& name = "mem.gguf") {
  auto r = File::parse(bytes.data(), bytes.size(), name);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? std::move(r).value() : nullptr;
}

// Writer::from_file(parse(b)).to_bytes() == b.
void expect_round_trip(const std::vector<uint8_t>& bytes) {
  auto f = parse_ok(bytes);
  ASSERT_NE(f, nullptr);
  auto w = Writer::from_file(*f);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  auto again = w->to_bytes();
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ(again.value(), bytes);
}

TEST(GgufValue, ScalarAccessors) {
  EXPECT_EQ(Value::u8(200).as_int(), 200);
  EXPECT_EQ(Value::i8(-100).as_int(), -100);
  EXPECT_EQ(Value::i8(-1).bits, 0xffu);  // raw bits, zero-extended
  EXPECT_EQ(Value::u16(60000).as_uint(), 60000u);
  EXPECT_EQ(Value::i16(-30000).as_int(), -30000);
  EXPECT_EQ(Value::u32(4000000000u).as_int(), 4000000000ll);
  EXPECT_EQ(Value::i32(-5).as_int(), -5);
  EXPECT_EQ(Value::i32(-5).as_uint(), static_cast<uint64_t>(-5ll));
  EXPECT_EQ(Value::u64(~0ull).as_uint(), ~0ull);
  EXPECT_EQ(Value::i64(-9).as_double(), -9.0);
  EXPECT_EQ(Value::f32(3.25f).as_double(), 3.25);
  EXPECT_EQ(Value::f32(3.25f).as_f32(), 3.25f);
  EXPECT_EQ(Value::f64(-1e300).as_double(), -1e300);
  EXPECT_TRUE(Value::boolean(true).as_bool());
  EXPECT_EQ(Value::boolean(true).as_int(), 1);
  EXPECT_FALSE(Value::string("x").as_bool());
  EXPECT_TRUE(Value::u8(1).is_integer());
  EXPECT_FALSE(Value::boolean(true).is_integer());
  EXPECT_TRUE(Value::f64(1).is_float());
  EXPECT_FALSE(Value::i64(1).is_float());
  EXPECT_STREQ(value_type_name(ValueType::STRING), "str");
  EXPECT_STREQ(value_type_name(static_cast<ValueType>(77)), "unknown");
  EXPECT_EQ(value_scalar_size(ValueType::FLOAT64), 8u);
  EXPECT_EQ(value_scalar_size(ValueType::ARRAY), 0u);
}

TEST(GgufValue, Display) {
  EXPECT_EQ(Value::string("llama").to_display(), "llama");
  EXPECT_EQ(Value::i32(-3).to_display(), "-3");
  EXPECT_EQ(Value::boolean(false).to_display(), "false");
  EXPECT_EQ(Value::f32(0.5f).to_display(), "0.5");
  EXPECT_EQ(Value::string_array({"a", "b\"c", "\n"}).to_display(), R"(["a", "b\"c", "\n"])");
  std::vector<Value> many;
  for (int i = 0; i < 100; ++i) many.push_back(Value::i32(i));
  EXPECT_EQ(Value::array_of(ValueType::INT32, many).to_display(3), "[0, 1, 2, ... (100 elements)]");
  EXPECT_EQ(Value::array_of(ValueType::INT32, {}).to_display(), "[]");
  auto nested = Value::array_of(ValueType::ARRAY, {Value::array_of(ValueType::UINT8, {Value::u8(1)})});
  EXPECT_EQ(nested.to_display(), "[[1]]");
  // Nested arrays share one budget of 4 * max_elems elements.
  Value wide = Value::array_of(ValueType::INT32, many);
  Value grid = Value::array_of(ValueType::ARRAY, {wide, wide, wide, wide, wide, wide});
  const std::string g = grid.to_display(3);
  EXPECT_LT(g.size(), 200u) << g;
  EXPECT_NE(g.find("... (6 elements)"), std::string::npos) << g;
}

TEST(GgufKv, AllTypesRoundTrip) {
  Writer w;
  testutil::add_all_kv_types(&w);
  auto bytes = w.to_bytes();
  ASSERT_TRUE(bytes.ok()) << bytes.status().to_string();
  auto f = parse_ok(bytes.value());
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(f->kvs().size(), w.kvs().size());
  for (size_t i = 0; i < w.kvs().size(); ++i) {
    EXPECT_EQ(f->kvs()[i].key, w.kvs()[i].key);
    EXPECT_TRUE(f->kvs()[i].value == w.kvs()[i].value) << w.kvs()[i].key;
  }
  EXPECT_EQ(f->get_int("test.i8").value(), -100);
  EXPECT_EQ(f->get_int("test.u64").value(), static_cast<int64_t>(18000000000000000000ull));
  EXPECT_EQ(f->get_int("test.bool").value(), 1);
  EXPECT_EQ(f->get_float("test.f32").value(), 3.25);
  EXPECT_EQ(f->get_float("test.i32").value(), -2000000000.0);
  EXPECT_EQ(f->get_string("test.string").value(), "h\xc3\xa9llo \"w\"\n");
  EXPECT_EQ(f->find("test.arr.nested3")->array[0].array[0].array[1].str, "y");
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_FALSE(f->vocab_only());  // padded header, zero tensors
  EXPECT_EQ(bytes->size() % 32, 0u);
  expect_round_trip(bytes.value());
}

TEST(GgufKv, GetterErrorsNameKeyAndFile) {
  Writer w;
  w.set("a.str", Value::string("x"));
  w.set("a.int", Value::i32(1));
  auto bytes = w.to_bytes().value();
  auto f = parse_ok(bytes, "getters.gguf");
  ASSERT_NE(f, nullptr);
  auto missing = f->get_int("nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("getters.gguf"), std::string::npos);
  EXPECT_NE(missing.status().message().find("'nope'"), std::string::npos);
  auto wrong = f->get_string("a.int");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(f->get_int("a.str").ok());
  EXPECT_FALSE(f->get_float("a.str").ok());
}

TEST(GgufKv, SetReplacesInPlaceAndRemove) {
  Writer w;
  w.set("a", Value::u32(1));
  w.set("b", Value::u32(2));
  w.set("a", Value::string("x"));
  ASSERT_EQ(w.kvs().size(), 2u);
  EXPECT_EQ(w.kvs()[0].key, "a");
  EXPECT_EQ(w.kvs()[0].value.str, "x");
  w.remove("a");
  ASSERT_EQ(w.kvs().size(), 1u);
  EXPECT_EQ(w.kvs()[0].key, "b");
  w.remove("missing");
  EXPECT_EQ(w.kvs().size(), 1u);
}

TEST(GgufKv, Version2) {
  Writer w(2);
  w.set("x", Value::u8(1));
  auto bytes = w.to_bytes().value();
  auto f = parse_ok(bytes);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->version(), 2u);
  expect_round_trip(bytes);
}

TEST(GgufTensors, SeveralTypesThroughFiles) {
  TensorStore store;
  Writer w = make_small_model(&store);
  fs::path dir = testing::temp_dir("gguf-tensors");
  auto written = w.write((dir / "m.gguf").string());
  ASSERT_TRUE(written.ok()) << written.status().to_string();
  ASSERT_EQ(written->size(), 1u);
  EXPECT_FALSE(fs::exists(dir / "m.gguf.tmp"));
  auto f = File::open((dir / "m.gguf").string());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  ASSERT_EQ((*f)->tensors().size(), w.tensors().size());
  EXPECT_EQ((*f)->n_splits(), 1);
  EXPECT_EQ((*f)->data_offset(0) % 32, 0u);
  for (size_t i = 0; i < w.tensors().size(); ++i) {
    const TensorInfo& t = (*f)->tensors()[i];
    const WriteTensor& e = w.tensors()[i];
    EXPECT_EQ(t.name, e.name);
    EXPECT_EQ(t.n_dims, e.n_dims);
    EXPECT_EQ(t.type, e.type);
    EXPECT_EQ(t.nbytes, e.nbytes);
    EXPECT_EQ(t.offset % 32, 0u);
    ASSERT_NE(t.data, nullptr);
    EXPECT_EQ(std::memcmp(t.data, e.data, static_cast<size_t>(e.nbytes)), 0) << t.name;
    EXPECT_EQ((*f)->find_tensor(e.name), &t);
  }
  EXPECT_EQ((*f)->find_tensor("nope"), nullptr);
  EXPECT_EQ((*f)->find_tensor("t.03")->nbytes, 2 * (4 + 136));  // IQ4_KS: 4-byte row scale + 1 block
  EXPECT_EQ((*f)->find_tensor("t.04")->nbytes, 8 * 18);         // Q4_0_R8: 8 rows of one block
  EXPECT_EQ((*f)->find_tensor("t.06")->n_elements(), 32);
  expect_round_trip(read_bytes(dir / "m.gguf"));
  fs::remove_all(dir);
}

TEST(GgufTensors, AlignmentVariants) {
  for (uint32_t align : {1u, 2u, 8u, 32u, 64u, 4096u}) {
    TensorStore store;
    Writer w = make_small_model(&store, /*all_kvs=*/false);
    w.set("general.alignment", Value::u32(align));
    EXPECT_EQ(w.alignment(), align);
    auto bytes = w.to_bytes();
    ASSERT_TRUE(bytes.ok()) << bytes.status().to_string();
    auto f = parse_ok(bytes.value());
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->alignment(), align);
    EXPECT_EQ(f->data_offset(0) % align, 0u);
    for (const auto& t : f->tensors()) EXPECT_EQ(t.offset % align, 0u) << align;
    expect_round_trip(bytes.value());
  }
}

TEST(GgufTensors, WriterRefusesBadInput) {
  TensorStore store;
  Writer w;
  std::vector<uint8_t> data(1024);
  WriteTensor t;
  t.name = "x";
  t.n_dims = 2;
  t.ne[0] = 64;
  t.ne[1] = 2;
  t.type = GgmlType::Q8_0;
  t.data = data.data();
  t.nbytes = 100;  // wrong: 2 rows x 2 blocks x 34 = 136
  Status s = w.add_tensor(t);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("'x'"), std::string::npos);
  t.nbytes = 136;
  EXPECT_TRUE(w.add_tensor(t).ok());
  EXPECT_FALSE(w.add_tensor(t).ok());  // duplicate
  t.name = "y";
  t.ne[0] = 60;  // not a whole number of q8_0 blocks
  t.nbytes = 0;
  s = w.add_tensor(t);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("not a whole number"), std::string::npos) << s.message();
  t.ne[0] = 64;
  t.n_dims = 5;
  EXPECT_FALSE(w.add_tensor(t).ok());
  t.n_dims = 1;  // ne[1] = 2 beyond n_dims
  EXPECT_FALSE(w.add_tensor(t).ok());
  t.n_dims = 2;
  t.ne[1] = 0;
  EXPECT_FALSE(w.add_tensor(t).ok());

  Writer bad_align;
  bad_align.set("general.alignment", Value::u32(48));
  EXPECT_FALSE(bad_align.to_bytes().ok());
  bad_align.set("general.alignment", Value::u64(32));
  EXPECT_FALSE(bad_align.validate().ok());
  Writer bad_array;
  bad_array.set("a", Value::array_of(ValueType::INT32, {Value::i32(1), Value::u8(2)}));
  Status v = bad_array.validate();
  EXPECT_FALSE(v.ok());
  EXPECT_NE(v.message().find("'a'"), std::string::npos);
  Writer deep;
  Value d = Value::array_of(ValueType::INT32, {});
  for (int i = 0; i < kMaxArrayDepth; ++i) d = Value::array_of(ValueType::ARRAY, {d});
  deep.set("deep", d);
  EXPECT_FALSE(deep.validate().ok());
  Writer bad_version(1);
  EXPECT_FALSE(bad_version.validate().ok());
  Writer no_data;
  t.ne[1] = 2;
  t.data = nullptr;
  t.nbytes = 136;
  ASSERT_TRUE(no_data.add_tensor(t).ok());
  EXPECT_FALSE(no_data.to_bytes().ok());
}

TEST(GgufTensors, MaxNestingAccepted) {
  Value d = Value::array_of(ValueType::INT32, {Value::i32(9)});
  for (int i = 1; i < kMaxArrayDepth; ++i) d = Value::array_of(ValueType::ARRAY, {d});
  Writer w;
  w.set("deep", d);
  auto bytes = w.to_bytes();
  ASSERT_TRUE(bytes.ok()) << bytes.status().to_string();
  auto f = parse_ok(bytes.value());
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(*f->find("deep") == d);
}

TEST(GgufSplit, ByTensorsReopenFromAnyShard) {
  TensorStore store;
  Writer w = make_small_model(&store);
  fs::path dir = testing::temp_dir("gguf-split-t");
  auto paths = w.write((dir / "model.gguf").string(), SplitOptions{3, 0});
  ASSERT_TRUE(paths.ok()) << paths.status().to_string();
  ASSERT_EQ(paths->size(), 3u);  // 7 tensors: 3 + 3 + 1
  EXPECT_EQ(paths->at(0), (dir / "model-00001-of-00003.gguf").string());
  EXPECT_EQ(paths->at(2), (dir / "model-00003-of-00003.gguf").string());
  auto single = w.to_bytes().value();
  for (const auto& p : *paths) {
    auto f = File::open(p);
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    EXPECT_EQ((*f)->path(), p);
    EXPECT_EQ((*f)->n_splits(), 3);
    EXPECT_EQ((*f)->shard_paths(), *paths);
    ASSERT_EQ((*f)->tensors().size(), 7u);
    for (size_t i = 0; i < 7; ++i) {
      const TensorInfo& t = (*f)->tensors()[i];
      EXPECT_EQ(t.name, w.tensors()[i].name);
      EXPECT_EQ(t.split_index, static_cast<int>(i / 3));
      EXPECT_EQ(std::memcmp(t.data, w.tensors()[i].data, static_cast<size_t>(t.nbytes)), 0);
    }
    // Metadata from shard 1, split keys with gguf-split's types.
    EXPECT_EQ((*f)->find(kKeySplitNo)->type, ValueType::UINT16);
    EXPECT_EQ((*f)->find(kKeySplitNo)->as_int(), 0);
    EXPECT_EQ((*f)->find(kKeySplitCount)->type, ValueType::UINT16);
    EXPECT_EQ((*f)->find(kKeySplitCount)->as_int(), 3);
    EXPECT_EQ((*f)->find(kKeySplitTensorsCount)->type, ValueType::INT32);
    EXPECT_EQ((*f)->find(kKeySplitTensorsCount)->as_int(), 7);
    EXPECT_EQ((*f)->get_string("general.architecture").value(), "llama");

    // Merged -> single file equals the unsplit write; merged -> same split equals the shards.
    auto w2 = Writer::from_file(**f);
    ASSERT_TRUE(w2.ok());
    EXPECT_EQ(w2->to_bytes().value(), single);
    fs::path dir2 = testing::temp_dir("gguf-split-t2");
    auto again = w2->write((dir2 / "model-00001-of-00003.gguf").string(), SplitOptions{3, 0});
    ASSERT_TRUE(again.ok()) << again.status().to_string();
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(read_bytes(again->at(i)), read_bytes(paths->at(i))) << i;
    fs::remove_all(dir2);
  }
  // Later shards carry only the split keys.
  auto s2 = File::open_single(paths->at(1));
  ASSERT_TRUE(s2.ok());
  EXPECT_EQ((*s2)->kvs().size(), 3u);
  EXPECT_EQ((*s2)->n_splits(), 1);
  EXPECT_EQ((*s2)->tensors().size(), 3u);
  fs::remove_all(dir);
}

TEST(GgufSplit, BySizeAndOversizedTensor) {
  TensorStore store;
  Writer w = make_small_model(&store, false);
  // Padded sizes: 64, 160, 32, 288, 160, 32, 128. Limit 300: [64,160,32] [288] [160,32] [128]
  fs::path dir = testing::temp_dir("gguf-split-b");
  auto paths = w.write((dir / "m").string(), SplitOptions{0, 300});
  ASSERT_TRUE(paths.ok()) << paths.status().to_string();
  ASSERT_EQ(paths->size(), 4u);
  EXPECT_EQ(paths->at(0), (dir / "m-00001-of-00004.gguf").string());
  auto f = File::open(paths->at(3));
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  std::vector<int> idx;
  for (const auto& t : (*f)->tensors()) idx.push_back(t.split_index);
  EXPECT_EQ(idx, (std::vector<int>{0, 0, 0, 1, 2, 2, 3}));
  // A limit smaller than every tensor: one tensor per shard, never an empty shard.
  fs::path dir2 = testing::temp_dir("gguf-split-b2");
  auto each = w.write((dir2 / "m.gguf").string(), SplitOptions{0, 1});
  ASSERT_TRUE(each.ok());
  EXPECT_EQ(each->size(), 7u);
  // Both limits: whichever comes first.
  fs::path dir3 = testing::temp_dir("gguf-split-b3");
  auto both = w.write((dir3 / "m.gguf").string(), SplitOptions{2, 300});
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both->size(), 5u);  // [64,160] [32] [288] [160,32] [128]
  // A split option with one resulting shard still uses the -of- naming.
  fs::path dir4 = testing::temp_dir("gguf-split-b4");
  auto one = w.write((dir4 / "m.gguf").string(), SplitOptions{100, 0});
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ(one->at(0), (dir4 / "m-00001-of-00001.gguf").string());
  auto f1 = File::open(one->at(0));
  ASSERT_TRUE(f1.ok());
  EXPECT_EQ((*f1)->n_splits(), 1);
  for (auto& d : {dir, dir2, dir3, dir4}) fs::remove_all(d);
}

TEST(GgufSplit, NonDefaultAlignmentInEveryShard) {
  TensorStore store;
  Writer w = make_small_model(&store, false);
  w.set("general.alignment", Value::u32(64));
  fs::path dir = testing::temp_dir("gguf-split-a");
  auto paths = w.write((dir / "m.gguf").string(), SplitOptions{2, 0});
  ASSERT_TRUE(paths.ok());
  auto f = File::open(paths->at(2));
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  for (int i = 0; i < (*f)->n_splits(); ++i) EXPECT_EQ((*f)->data_offset(i) % 64, 0u);
  auto s3 = File::open_single(paths->at(2));
  ASSERT_TRUE(s3.ok());
  EXPECT_EQ((*s3)->alignment(), 64u);
  fs::remove_all(dir);
}

TEST(GgufSplit, MissingShardNamed) {
  TensorStore store;
  Writer w = make_small_model(&store, false);
  fs::path dir = testing::temp_dir("gguf-split-m");
  auto paths = w.write((dir / "m.gguf").string(), SplitOptions{3, 0});
  ASSERT_TRUE(paths.ok());
  fs::remove(paths->at(1));
  for (size_t open_idx : {size_t{0}, size_t{2}}) {
    auto f = File::open(paths->at(open_idx));
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
    EXPECT_NE(f.status().message().find(paths->at(1)), std::string::npos) << f.status().message();
  }
  fs::remove_all(dir);
}

TEST(GgufSplit, PathHelpers) {
  EXPECT_EQ(split_path("/a/b", 2, 10), "/a/b-00002-of-00010.gguf");
  std::string prefix;
  int i = 0, n = 0;
  ASSERT_TRUE(parse_split_path("/a/b-00002-of-00010.gguf", &prefix, &i, &n));
  EXPECT_EQ(prefix, "/a/b");
  EXPECT_EQ(i, 2);
  EXPECT_EQ(n, 10);
  EXPECT_FALSE(parse_split_path("b.gguf", &prefix, &i, &n));
  EXPECT_FALSE(parse_split_path("b-0002-of-00010.gguf", &prefix, &i, &n));
  EXPECT_FALSE(parse_split_path("b-00011-of-00010.gguf", &prefix, &i, &n));
  EXPECT_FALSE(parse_split_path("/a/-00001-of-00001.gguf", &prefix, &i, &n));
  EXPECT_FALSE(parse_split_path("b-00001-of-00001.ggml", &prefix, &i, &n));
}

TEST(GgufVocabOnly, EndsAfterHeader) {
  Writer w;
  w.set("general.architecture", Value::string("llama"));
  w.set("tokenizer.ggml.tokens", Value::string_array({"<unk>", "a", "bc"}));
  w.set_vocab_only(true);
  auto bytes = w.to_bytes().value();
  EXPECT_EQ(bytes, w.header_bytes());
  auto f = parse_ok(bytes);
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(f->vocab_only());
  EXPECT_EQ(f->shard_size(0), bytes.size());
  expect_round_trip(bytes);

  // Tensor infos present, data section absent.
  TensorStore store;
  Writer wt = make_small_model(&store, false);
  wt.set_vocab_only(true);
  auto tb = wt.to_bytes().value();
  auto ft = parse_ok(tb);
  ASSERT_NE(ft, nullptr);
  EXPECT_TRUE(ft->vocab_only());
  ASSERT_EQ(ft->tensors().size(), 7u);
  for (const auto& t : ft->tensors()) EXPECT_EQ(t.data, nullptr);
  expect_round_trip(tb);
  // The same through a file written to disk.
  fs::path dir = testing::temp_dir("gguf-vocab");
  ASSERT_TRUE(wt.write((dir / "v.gguf").string()).ok());
  EXPECT_EQ(read_bytes(dir / "v.gguf"), tb);
  auto fo = File::open((dir / "v.gguf").string());
  ASSERT_TRUE(fo.ok());
  EXPECT_TRUE((*fo)->vocab_only());
  fs::remove_all(dir);
}

TEST(GgufWriter, StreamingMatchesWrite) {
  TensorStore store;
  Writer w = make_small_model(&store);
  fs::path dir = testing::temp_dir("gguf-stream");
  ASSERT_TRUE(w.write((dir / "a.gguf").string()).ok());
  Writer ws = w;  // same tensors; data comes from the source
  auto r = ws.write_streaming((dir / "b.gguf").string(), {}, [&](size_t i, std::vector<uint8_t>* out) {
    const WriteTensor& t = w.tensors()[i];
    out->assign(t.data, t.data + t.nbytes);
    return Status::Ok();
  });
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(read_bytes(dir / "a.gguf"), read_bytes(dir / "b.gguf"));
  // A source error aborts the write and leaves no file or temporary behind.
  auto bad = ws.write_streaming((dir / "c.gguf").string(), {}, [&](size_t i, std::vector<uint8_t>* out) {
    if (i == 3) return Status::Internal("boom");
    out->assign(w.tensors()[i].data, w.tensors()[i].data + w.tensors()[i].nbytes);
    return Status::Ok();
  });
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("boom"), std::string::npos);
  EXPECT_NE(bad.status().message().find("t.03"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir / "c.gguf"));
  EXPECT_FALSE(fs::exists(dir / "c.gguf.tmp"));
  // Wrong size from the source.
  auto short_src = ws.write_streaming((dir / "d.gguf").string(), {}, [&](size_t, std::vector<uint8_t>* out) {
    out->assign(3, 0);
    return Status::Ok();
  });
  EXPECT_FALSE(short_src.ok());
  EXPECT_FALSE(fs::exists(dir / "d.gguf"));
  fs::remove_all(dir);
}

TEST(GgufWriter, UnwritableDirectoryIsAnError) {
  Writer w;
  w.set("a", Value::u8(1));
  auto r = w.write("/nonexistent-dir-expertmesh/x.gguf");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIoError);
  EXPECT_NE(r.status().message().find("/nonexistent-dir-expertmesh/x.gguf"), std::string::npos);
}

TEST(GgufPerf, LargeVocabularyParsesFast) {
  std::vector<std::string> toks;
  toks.reserve(150000);
  for (int i = 0; i < 150000; ++i) toks.push_back("tok_" + std::to_string(i * 7919));
  std::vector<Value> types;
  types.reserve(150000);
  for (int i = 0; i < 150000; ++i) types.push_back(Value::i32(i % 6));
  Writer w;
  w.set("tokenizer.ggml.tokens", Value::string_array(toks));
  w.set("tokenizer.ggml.token_type", Value::array_of(ValueType::INT32, std::move(types)));
  w.set_vocab_only(true);
  auto bytes = w.to_bytes().value();
  const auto t0 = std::chrono::steady_clock::now();
  auto f = parse_ok(bytes);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->find("tokenizer.ggml.tokens")->array.size(), 150000u);
  EXPECT_EQ(f->find("tokenizer.ggml.tokens")->array[149999].str, toks.back());
  std::printf("parsed 150k-token vocabulary (%zu bytes) in %.1f ms\n", bytes.size(), ms);
  EXPECT_LT(ms, 3000.0);  // typically ~10 ms; generous for sanitizer builds
}

// open() maps the file and reads only the header: a 4 GiB sparse tensor opens instantly.
TEST(GgufPerf, OpenDoesNotReadTensorData) {
  Writer w;
  w.set("general.architecture", Value::string("llama"));
  WriteTensor t;
  t.name = "huge";
  t.n_dims = 2;
  t.ne[0] = 1 << 16;
  t.ne[1] = 1 << 14;  // 2^30 f32 = 4 GiB
  t.type = GgmlType::F32;
  t.nbytes = int64_t{4} << 30;
  ASSERT_TRUE(w.add_tensor(t).ok());
  std::vector<uint8_t> header = w.header_bytes();
  fs::path dir = testing::temp_dir("gguf-sparse");
  fs::path p = dir / "sparse.gguf";
  write_bytes(p, header);
  std::error_code ec;
  fs::resize_file(p, header.size() + (uint64_t{4} << 30), ec);
  if (ec) GTEST_SKIP() << "cannot create a sparse file: " << ec.message();
  const auto t0 = std::chrono::steady_clock::now();
  auto f = File::open(p.string());
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ((*f)->tensors()[0].nbytes, int64_t{4} << 30);
  EXPECT_LT(ms, 500.0);
  f.value().reset();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace expertmesh::gguf
