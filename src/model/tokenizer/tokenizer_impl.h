// Internals of Tokenizer shared by tokenizer.cpp (loading, special tokens, SPM, pieces),
// bpe.cpp (pre-tokenizer regexes and byte-level BPE) and wpm.cpp (WordPiece). Not a public API.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "model/tokenizer/tokenizer.h"

namespace expertmesh {

// Token attributes (the peer's llama_token_attr bits that matter to tokenization).
enum TokenAttr : uint32_t {
  kAttrUndefined = 0,
  kAttrUnknown = 1u << 0,
  kAttrUnused = 1u << 1,
  kAttrNormal = 1u << 2,
  kAttrControl = 1u << 3,
  kAttrUserDefined = 1u << 4,
  kAttrByte = 1u << 5,
  kAttrLstrip = 1u << 7,
  kAttrRstrip = 1u << 8,
};

struct TokenData {
  std::string text;
  float score = 0.0f;
  uint32_t attr = kAttrNormal;
};

// Compiled pre-tokenizer split regexes (PCRE2), applied in order, each splitting every chunk
// the previous ones produced (matches and the text between them both become chunks), as the
// peer's unicode_regex_split does. Immutable after construction; split() is thread-safe.
class PreTokenizer {
 public:
  struct Regex {
    void* code = nullptr;    // pcre2_code*
    bool collapsed = false;  // the peer runs it on its "collapsed" text (see bpe.cpp)
  };
  PreTokenizer() = default;
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;
  // Words of `text` (any bytes) as UTF-8; invalid UTF-8 bytes become U+FFFD.
  std::vector<std::string> split(std::string_view text) const;
  std::vector<Regex> regexes;
};

class TokenizerImpl {
 public:
  ~TokenizerImpl();

  VocabType type = VocabType::kSpm;
  std::string model;  // tokenizer.ggml.model
  std::string pre;    // tokenizer.ggml.pre
  std::vector<TokenData> tokens;
  std::unordered_map<std::string, int32_t> token_to_id;
  std::unordered_map<std::string, int32_t> bpe_ranks;  // "left right" -> rank
  size_t max_token_len = 0;

  int32_t bos = 1, eos = 2, eot = -1, eom = -1, unk = 0, sep = -1, pad = -1, mask = -1;
  std::vector<int32_t> eog_ids;  // sorted
  bool add_space_prefix = false;
  bool add_bos = false;
  bool add_eos = false;
  bool add_sep = false;
  bool ignore_merges = false;
  bool clean_spaces = false;

  std::vector<int32_t> special_tokens;  // CONTROL/USER_DEFINED/UNKNOWN ids, longest text first
  std::unique_ptr<PreTokenizer> pre_tokenizer;  // BPE only

  int32_t find(std::string_view text) const {
    auto it = token_to_id.find(std::string(text));
    return it == token_to_id.end() ? -1 : it->second;
  }
  // SPM byte fallback: <0xXX>, else the byte itself as a token, else unk.
  int32_t spm_byte_token(uint8_t b) const;

  void encode_spm(const std::string& text, std::vector<int32_t>* out) const;
  void encode_bpe(std::string_view text, std::vector<int32_t>* out) const;
  void encode_wpm(std::string_view text, std::vector<int32_t>* out) const;
  std::string piece(int32_t id, bool special) const;
};

// Builds the pre-tokenizer for tokenizer.ggml.pre `pre` (BPE). Sets *ignore_merges /
// *clean_spaces / *add_bos as the peer does for that name. Unsupported for unknown names.
Result<std::unique_ptr<PreTokenizer>> make_pre_tokenizer(const std::string& pre, bool* ignore_merges,
                                                         bool* clean_spaces, bool* add_bos);

}  // namespace expertmesh
