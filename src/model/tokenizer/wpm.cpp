// BERT WordPiece (tokenizer.ggml.model = "bert"), as the peer's llm_tokenizer_wpm:
//   1. each code point -> the first code point of its NFD decomposition (this strips accents),
//   2. whitespace ends a word; NUL, U+FFFD and control characters (Cc Cf Co Cs) are dropped;
//      punctuation, ASCII symbols and CJK ideographs become single-character words;
//      everything is lowercased,
//   3. each word, prefixed with '▁', is split greedily into the longest vocabulary tokens; a word
//      with an unmatchable position becomes [UNK] as a whole.
#include "model/tokenizer/tokenizer_impl.h"
#include "model/tokenizer/unicode.h"

namespace expertmesh {

namespace {

bool is_chinese_char(uint32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) ||
         (c >= 0x2B920 && c <= 0x2CEAF) ||  // sic: the HF code (and the peer) start at 0x2B920
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

std::vector<std::string> wpm_words(std::string_view text) {
  std::vector<std::string> words(1);
  for (uint32_t c0 : tok::utf8_to_cpts(text)) {
    const uint32_t c = tok::nfd_base(c0);
    if (tok::is_whitespace(c)) {
      if (!words.back().empty()) words.emplace_back();
      continue;
    }
    const tok::CptClass cls = tok::classify(c);
    if (c == 0 || c == 0xFFFD || cls == tok::CptClass::kControl) continue;
    const std::string s = tok::cpt_to_utf8(tok::to_lower(c));
    if (cls == tok::CptClass::kPunct || (c < 0x7F && cls == tok::CptClass::kSymbol) || is_chinese_char(c)) {
      if (!words.back().empty()) words.emplace_back();
      words.back() = s;
      words.emplace_back();
    } else {
      words.back() += s;
    }
  }
  if (words.back().empty()) words.pop_back();
  return words;
}

}  // namespace

void TokenizerImpl::encode_wpm(std::string_view text, std::vector<int32_t>* out) const {
  for (const std::string& word : wpm_words(text)) {
    if (word.empty()) continue;
    const std::string w = "\xE2\x96\x81" + word;
    const int n = static_cast<int>(w.size());
    const size_t before = out->size();
    for (int i = 0; i < n; ++i) {
      bool match = false;
      for (int j = std::min(n, i + static_cast<int>(max_token_len) + 1); j > i; --j) {
        int32_t id = find(std::string_view(w).substr(i, j - i));
        if (id >= 0) {
          out->push_back(id);
          match = true;
          i = j - 1;
          break;
        }
      }
      if (!match) {
        out->resize(before);
        break;
      }
    }
    if (out->size() == before) out->push_back(unk);
  }
}

}  // namespace expertmesh
