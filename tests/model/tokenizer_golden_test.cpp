// Every golden/vocab/ggml-vocab-*.gguf with .inp/.out vectors: our ids equal the peer's for every
// input (test-tokenizer-0 semantics: inputs separated by "\n__ggml_vocab_test__\n", tokenized
// with add_special = false, parse_special = false; expected ids space-separated, one line each).
#include <chrono>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "tests/common/golden.h"
#include "model/gguf/gguf.h"
#include "model/tokenizer/hf_vocab.h"
#include "model/tokenizer/tokenizer.h"

namespace expertmesh {
namespace {

namespace fs = std::filesystem;
using testing::golden_dir;

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Case {
  std::string input;
  std::vector<int32_t> expected;
};

// Parses .inp/.out as the peer's read_tests does.
std::vector<Case> read_cases(const fs::path& inp, const fs::path& outp) {
  const std::string raw = read_all(inp);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> ins;
  for (size_t pos = 0; pos < raw.size();) {
    size_t next = raw.find(sep, pos);
    if (next == std::string::npos) {
      ins.push_back(raw.substr(pos));
      break;
    }
    ins.push_back(raw.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::vector<Case> cases;
  std::ifstream fo(outp);
  std::string line;
  size_t i = 0;
  while (std::getline(fo, line)) {
    Case c;
    c.input = i < ins.size() ? ins[i] : std::string();
    std::istringstream ls(line);
    int32_t id;
    while (ls >> id) c.expected.push_back(id);
    cases.push_back(std::move(c));
    ++i;
  }
  EXPECT_EQ(ins.size(), cases.size()) << inp;
  return cases;
}

// Returns the number of matching inputs; reports every mismatch.
int check_vectors(const Tokenizer& tok, const fs::path& inp, const fs::path& outp, int* total) {
  const auto cases = read_cases(inp, outp);
  int ok = 0;
  for (const Case& c : cases) {
    const auto got = tok.encode(c.input, /*add_special=*/false, /*parse_special=*/false);
    if (got == c.expected) {
      ++ok;
    } else {
      std::string g, e;
      for (int32_t t : got) g += std::to_string(t) + " ";
      for (int32_t t : c.expected) e += std::to_string(t) + " ";
      ADD_FAILURE() << inp.filename() << ": input '" << c.input << "'\n  got:      " << g << "\n  expected: " << e;
    }
  }
  *total = static_cast<int>(cases.size());
  return ok;
}

TEST(TokenizerGolden, AllVocabFiles) {
  EM_REQUIRE_GOLDEN();
  const auto files = testing::golden_files("vocab", R"(ggml-vocab-.*\.gguf)");
  ASSERT_FALSE(files.empty());
  int n_checked = 0;
  for (const fs::path& p : files) {
    const fs::path inp = p.string() + ".inp", outp = p.string() + ".out";
    if (!fs::exists(inp) || !fs::exists(outp)) continue;
    auto f = gguf::File::open(p.string());
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    auto tok = Tokenizer::from_gguf(**f);
    ASSERT_TRUE(tok.ok()) << tok.status().to_string();
    int total = 0;
    const auto t0 = std::chrono::steady_clock::now();
    int ok = check_vectors(**tok, inp, outp, &total);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%-36s %3d / %3d inputs match (%.0f ms)\n", p.filename().c_str(), ok, total, ms);
    EXPECT_EQ(ok, total) << p;
    ++n_checked;
  }
  EXPECT_GE(n_checked, 10);
}

// Qwen2's HF files -> our vocab-only GGUF -> the peer's qwen2 vectors.
TEST(TokenizerGolden, Qwen2ConvertedByUs) {
  EM_REQUIRE_GOLDEN();
  const fs::path dir = golden_dir() / "vocab" / "qwen2";
  const fs::path out = testing::temp_dir("tok_qwen2") / "ggml-vocab-qwen2.gguf";
  auto s = hf::write_vocab_gguf(dir.string(), "qwen2", out.string());
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s->n_tokens, 151646u);
  auto f = gguf::File::open(out.string());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_TRUE((*f)->vocab_only());
  auto tok = Tokenizer::from_gguf(**f);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  int total = 0;
  int ok = check_vectors(**tok, dir / "ggml-vocab-qwen2.gguf.inp", dir / "ggml-vocab-qwen2.gguf.out", &total);
  std::printf("qwen2 (converted by us)              %3d / %3d inputs match\n", ok, total);
  EXPECT_EQ(ok, total);
  EXPECT_GT(total, 0);
  // The guess from tokenizer_class gives the same pre-tokenizer.
  auto s2 = hf::write_vocab_gguf(dir.string(), "", (out.parent_path() / "guessed.gguf").string());
  ASSERT_TRUE(s2.ok()) << s2.status().to_string();
  EXPECT_EQ(s2->pre, "qwen2");
  EXPECT_TRUE((**tok).is_eog((**tok).find_token("<|im_end|>")));
  EXPECT_EQ((**tok).encode("<|im_start|>user", false, true)[0], (**tok).find_token("<|im_start|>"));
}

// stories260K's SentencePiece vocabulary (also tiny-qwen3moe's): BOS, known pieces, round trip.
TEST(TokenizerGolden, Stories260K) {
  EM_REQUIRE_GOLDEN();
  const fs::path p = golden_dir() / "models" / "stories260K-f32.gguf";
  if (!fs::exists(p)) GTEST_SKIP() << p << " missing";
  auto f = gguf::File::open(p.string());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  auto tok = Tokenizer::from_gguf(**f);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  const Tokenizer& t = **tok;
  EXPECT_EQ(t.type(), VocabType::kSpm);
  EXPECT_EQ(t.n_vocab(), 512);
  const auto ids = t.encode("Once upon a time", true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], t.bos());
  for (const std::string s : {"Once upon a time, there was a little girl named Lily.", "caf\xC3\xA9 \xF0\x9F\xA6\x99 \xFF",
                              "  two\n\nlines ", ""}) {
    EXPECT_EQ(t.decode(t.encode(s, false)), s);
  }
  EXPECT_TRUE(t.is_eog(t.eos()));
}

}  // namespace
}  // namespace expertmesh
