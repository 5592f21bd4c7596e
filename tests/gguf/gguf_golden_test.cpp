// Golden GGUF tests against files written by ik_llama.cpp / llama.cpp (../shared/golden):
// byte-identical round trip of every .gguf (open -> Writer::from_file -> write), tensor bytes
// matching the peer's *.raw.json hashes, vocab-only files, a gguf-split style round trip, and the
// peer's corrupt Q8_0 file refused with a message naming the tensor.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/sha256.h"
#include "model/gguf/gguf.h"
#include "tests/common/golden.h"
#include "tests/gguf/gguf_test_util.h"

namespace expertmesh::gguf {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPeerCorrupt = "stories260K-Q8_0-peer-corrupt.gguf";

std::vector<fs::path> all_golden_ggufs() {
  std::vector<fs::path> out;
  const fs::path dir = testing::golden_dir();
  if (dir.empty()) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".gguf") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

bool files_equal(const fs::path& a, const File& f) {
  const std::vector<uint8_t> b = testutil::read_bytes(a);
  return b.size() == f.shard_size(0) && std::memcmp(b.data(), f.shard_data(0), b.size()) == 0;
}

TEST(GgufGolden, ByteIdenticalRoundTripOfEveryFile) {
  EM_REQUIRE_GOLDEN();
  const auto files = all_golden_ggufs();
  ASSERT_GT(files.size(), 100u);
  const fs::path out_dir = testing::temp_dir("gguf-golden");
  int checked = 0;
  for (const auto& p : files) {
    if (p.filename() == kPeerCorrupt) continue;
    SCOPED_TRACE(p.string());
    auto f = File::open(p.string());
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    EXPECT_EQ((*f)->n_splits(), 1);
    auto w = Writer::from_file(**f);
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    const fs::path out = out_dir / p.filename();
    auto written = w->write(out.string());
    ASSERT_TRUE(written.ok()) << written.status().to_string();
    EXPECT_TRUE(files_equal(out, **f)) << "round trip differs: " << p;
    // The header alone matches too (what a streaming writer would emit first).
    const std::vector<uint8_t> header = w->header_bytes();
    ASSERT_LE(header.size(), (*f)->shard_size(0));
    EXPECT_EQ(std::memcmp(header.data(), (*f)->shard_data(0), header.size()), 0);
    fs::remove(out);
    ++checked;
  }
  EXPECT_GT(checked, 100);
  fs::remove_all(out_dir);
}

TEST(GgufGolden, TensorBytesMatchPeerHashes) {
  EM_REQUIRE_GOLDEN();
  int files_checked = 0;
  for (const auto& p : all_golden_ggufs()) {
    fs::path json = p;
    json.replace_extension(".raw.json");
    if (!fs::exists(json) || p.filename() == kPeerCorrupt) continue;
    SCOPED_TRACE(p.string());
    auto f = File::open(p.string());
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    std::ifstream in(json);
    const nlohmann::json j = nlohmann::json::parse(in);
    ASSERT_EQ(j.size(), (*f)->tensors().size());
    for (const auto& e : j) {
      const std::string name = e.at("name").get<std::string>();
      const TensorInfo* t = (*f)->find_tensor(name);
      ASSERT_NE(t, nullptr) << name;
      EXPECT_EQ(type_upper_name(t->type), e.at("type").get<std::string>()) << name;
      const auto ne = e.at("ne").get<std::vector<int64_t>>();
      ASSERT_EQ(ne.size(), t->n_dims) << name;
      for (size_t d = 0; d < ne.size(); ++d) EXPECT_EQ(t->ne[d], ne[d]) << name;
      EXPECT_EQ(sha256_hex(t->data, static_cast<size_t>(t->nbytes)), e.at("sha256").get<std::string>()) << name;
    }
    ++files_checked;
  }
  EXPECT_GT(files_checked, 90);
}

TEST(GgufGolden, VocabFilesAreVocabOnly) {
  EM_REQUIRE_GOLDEN();
  const auto files = testing::golden_files("vocab", ".*\\.gguf");
  ASSERT_FALSE(files.empty());
  for (const auto& p : files) {
    auto f = File::open(p.string());
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    EXPECT_TRUE((*f)->vocab_only()) << p;
    EXPECT_TRUE((*f)->tensors().empty()) << p;
    const Value* toks = (*f)->find("tokenizer.ggml.tokens");
    ASSERT_NE(toks, nullptr) << p;
    EXPECT_EQ(toks->elem_type, ValueType::STRING);
    EXPECT_GT(toks->array.size(), 1000u) << p;
  }
}

TEST(GgufGolden, PeerCorruptFileRefusedNamingTheTensor) {
  EM_REQUIRE_GOLDEN();
  const fs::path p = testing::golden_dir() / "models" / "bad" / kPeerCorrupt;
  ASSERT_TRUE(fs::exists(p));
  auto f = File::open(p.string());
  ASSERT_FALSE(f.ok());
  const std::string& msg = f.status().message();
  EXPECT_NE(msg.find(p.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("tensor 'blk."), std::string::npos) << msg;
  EXPECT_NE(msg.find("ffn_down.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("row of 172 elements is not a whole number of 32-element q8_0 blocks"), std::string::npos) << msg;
  std::printf("refused: %s\n", f.status().to_string().c_str());
}

// gguf-split style: split a golden model, open from a middle shard, merge back byte-identically.
TEST(GgufGolden, SplitAndMergeRoundTrip) {
  EM_REQUIRE_GOLDEN();
  const fs::path src = testing::golden_dir() / "models" / "tiny-MIX.gguf";
  auto f = File::open(src.string());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  auto w = Writer::from_file(**f);
  ASSERT_TRUE(w.ok());
  const fs::path dir = testing::temp_dir("gguf-golden-split");
  for (SplitOptions opt : {SplitOptions{10, 0}, SplitOptions{0, 600 * 1000}}) {
    auto shards = w->write((dir / "tiny-MIX").string(), opt);
    ASSERT_TRUE(shards.ok()) << shards.status().to_string();
    ASSERT_GT(shards->size(), 2u);
    auto merged = File::open(shards->at(shards->size() / 2));
    ASSERT_TRUE(merged.ok()) << merged.status().to_string();
    EXPECT_EQ((*merged)->n_splits(), static_cast<int>(shards->size()));
    ASSERT_EQ((*merged)->tensors().size(), (*f)->tensors().size());
    auto w2 = Writer::from_file(**merged);
    ASSERT_TRUE(w2.ok());
    const fs::path out = dir / "merged.gguf";
    ASSERT_TRUE(w2->write(out.string()).ok());
    EXPECT_TRUE(files_equal(out, **f));
    for (const auto& s : *shards) fs::remove(s);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace expertmesh::gguf
