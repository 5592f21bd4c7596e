// Tokenizers built from a GGUF file's tokenizer.ggml.* metadata, producing the same token ids as
// ik_llama.cpp / llama.cpp ("the peer") for the same vocabulary:
//   tokenizer.ggml.model = "llama" -> SPM (SentencePiece: bigram merges by score, byte fallback)
//                          "gpt2"  -> BPE (byte-level BPE with merge ranks, pre-tokenizer regexes
//                                     chosen by tokenizer.ggml.pre)
//                          "bert"  -> WPM (BERT WordPiece)
//                          "no_vocab"/"none" -> no tokenizer (encode returns nothing)
// Special tokens (token types CONTROL and USER_DEFINED) are split out of the text before the
// model-specific tokenizer runs, as the peer's tokenizer_st_partition does.
//
// Thread-safety: a Tokenizer is immutable after from_gguf(); every const method may be called
// from any thread concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace expertmesh {

namespace gguf {
class File;
}

// Token types (llama_token_type / gguf-py TokenType).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

enum class VocabType { kNone, kSpm, kBpe, kWpm };

class TokenizerImpl;

class Tokenizer {
 public:
  // Reads tokenizer.ggml.* KVs (model: llama=SPM, gpt2=BPE, bert=WPM; pre: default, llama3/
  // llama-bpe, qwen2, deepseek-llm, deepseek-coder, deepseek-v3, falcon, starcoder, mpt/gpt-neox,
  // refact, gpt-2, ...). Errors name the file and the key. An unknown pre-tokenizer is an error
  // (Unsupported), as in the peer.
  static Result<std::unique_ptr<Tokenizer>> from_gguf(const gguf::File& f);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text` (any bytes; invalid UTF-8 is handled as the peer does).
  // add_special: prepend BOS / append EOS as add_bos()/add_eos() say (llama.cpp semantics).
  // parse_special: recognise the text of CONTROL tokens (e.g. <|im_start|>) as those tokens;
  // USER_DEFINED tokens are always recognised.
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special = false) const;

  // Bytes of one token: byte-fallback tokens <0xXX> decode to their byte, ▁ to space (SPM),
  // byte-level BPE pieces to their bytes. With special = false, CONTROL tokens give "" .
  // An id outside [0, n_vocab) gives "".
  std::string token_to_piece(int32_t id, bool special = true) const;
  // The peer's llama_detokenize(ids, remove_special = false, unparse_special = special): the
  // concatenated pieces, one leading space removed when the vocabulary adds a space prefix (SPM),
  // and for vocabularies with clean_spaces (gpt-2 style BPE, BERT) the peer's clean-up of
  // " ," " ." " ?" " !" " 's" ... So decode(encode(x, false)) == x for SPM and for BPE
  // vocabularies without clean_spaces, for any valid UTF-8 x (SPM also for invalid UTF-8: its
  // byte fallback keeps every byte; byte-level BPE turns invalid bytes into U+FFFD as the peer does).
  std::string decode(const std::vector<int32_t>& ids, bool special = true) const;

  VocabType type() const;
  int32_t n_vocab() const;
  int32_t bos() const;  // -1 when the vocabulary has none
  int32_t eos() const;  // -1 when the vocabulary has none
  int32_t eot() const;  // -1 when the vocabulary has none
  int32_t unk() const;
  int32_t pad() const;
  bool add_bos() const;
  bool add_eos() const;
  bool is_eog(int32_t id) const;  // end-of-generation (eos, eot, eom, ...)
  TokenType token_type(int32_t id) const;
  const std::string& token_text(int32_t id) const;  // raw vocabulary string
  // -1 when `text` is not a token.
  int32_t find_token(std::string_view text) const;
  // The token "\n" encodes to when that is a single token, else -1 (the peer's linefeed id, which
  // the repetition penalties spare unless penalize_nl).
  int32_t newline() const;

 private:
  explicit Tokenizer(std::unique_ptr<TokenizerImpl> impl);
  std::unique_ptr<TokenizerImpl> impl_;
};

}  // namespace expertmesh
