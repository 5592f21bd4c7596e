#include "model/tokenizer/unicode.h"

#include <array>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace expertmesh::tok {

size_t utf8_len(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

std::vector<uint32_t> utf8_to_cpts(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  auto cont = [&](size_t k) { return i + k < n && (p[i + k] & 0xC0) == 0x80; };
  while (i < n) {
    const uint8_t c = p[i];
    if (c < 0x80) {
      out.push_back(c);
      i += 1;
    } else if ((c & 0xE0) == 0xC0 && (c & 0x40) && cont(1)) {
      out.push_back(((c & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu));
      i += 2;
    } else if ((c & 0xF0) == 0xE0 && cont(1) && cont(2)) {
      out.push_back(((c & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu));
      i += 3;
    } else if ((c & 0xF8) == 0xF0 && cont(1) && cont(2) && cont(3)) {
      uint32_t v = ((c & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) | ((p[i + 2] & 0x3Fu) << 6) | (p[i + 3] & 0x3Fu);
      out.push_back(v <= 0x10FFFF ? v : 0xFFFD);  // the peer would fail to re-encode; we substitute
      i += 4;
    } else {
      out.push_back(0xFFFD);
      i += 1;
    }
  }
  return out;
}

void append_utf8(std::string* out, uint32_t cpt) {
  if (cpt <= 0x7F) {
    out->push_back(static_cast<char>(cpt));
  } else if (cpt <= 0x7FF) {
    out->push_back(static_cast<char>(0xC0 | (cpt >> 6)));
    out->push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else if (cpt <= 0xFFFF) {
    out->push_back(static_cast<char>(0xE0 | (cpt >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cpt >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cpt >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  }
}

std::string cpt_to_utf8(uint32_t cpt) {
  std::string s;
  append_utf8(&s, cpt);
  return s;
}

namespace {
// GPT-2's bytes_to_unicode(): printable Latin-1 bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand
// for themselves; the remaining bytes, in increasing order, take U+0100, U+0101, ...
std::array<uint32_t, 256> byte_cpts() {
  std::array<uint32_t, 256> m{};
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    m[b] = printable ? static_cast<uint32_t>(b) : next++;
  }
  return m;
}
}  // namespace

const std::string& byte_to_unicode(uint8_t b) {
  static const std::array<std::string, 256> kText = [] {
    std::array<std::string, 256> t;
    const auto m = byte_cpts();
    for (int i = 0; i < 256; ++i) t[i] = cpt_to_utf8(m[i]);
    return t;
  }();
  return kText[b];
}

int unicode_to_byte(uint32_t cpt) {
  static const std::array<int16_t, 512> kInv = [] {
    std::array<int16_t, 512> inv;
    inv.fill(-1);
    const auto m = byte_cpts();
    for (int i = 0; i < 256; ++i) inv[m[i]] = static_cast<int16_t>(i);
    return inv;
  }();
  return cpt < 512 ? kInv[cpt] : -1;
}

bool is_whitespace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

namespace {
// One anchored PCRE2 pattern whose matching group names the class.
class Classifier {
 public:
  Classifier() {
    int err = 0;
    PCRE2_SIZE off = 0;
    static const char kPattern[] =
        "(?:(\\p{L})|(\\p{N})|(\\p{M})|(\\p{P})|(\\p{S})|(\\p{Z})|(\\p{Cc}|\\p{Cf}|\\p{Co}|\\p{Cs}))";
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, &err, &off, nullptr);
  }
  ~Classifier() { pcre2_code_free(code_); }
  CptClass run(uint32_t cpt) const {
    if (!code_ || (cpt >= 0xD800 && cpt <= 0xDFFF)) return cpt >= 0xD800 && cpt <= 0xDFFF ? CptClass::kControl : CptClass::kOther;
    if (cpt > 0x10FFFF) return CptClass::kOther;
    std::string s = cpt_to_utf8(cpt);
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    CptClass r = CptClass::kOther;
    if (pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, 0, md, nullptr) > 0) {
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      static constexpr CptClass kByGroup[] = {CptClass::kLetter, CptClass::kNumber, CptClass::kMark,
                                              CptClass::kPunct,  CptClass::kSymbol, CptClass::kSeparator,
                                              CptClass::kControl};
      const uint32_t n = pcre2_get_ovector_count(md);
      for (uint32_t g = 1; g < n && g <= 7; ++g)
        if (ov[2 * g] != PCRE2_UNSET) {
          r = kByGroup[g - 1];
          break;
        }
    }
    pcre2_match_data_free(md);
    return r;
  }

 private:
  pcre2_code* code_ = nullptr;
};
}  // namespace

CptClass classify(uint32_t cpt) {
  static const Classifier kClassifier;
  static const std::vector<CptClass> kBmp = [] {
    std::vector<CptClass> t(0x10000);
    for (uint32_t c = 0; c < 0x10000; ++c) t[c] = kClassifier.run(c);
    return t;
  }();
  return cpt < 0x10000 ? kBmp[cpt] : kClassifier.run(cpt);
}

}  // namespace expertmesh::tok
