// Unicode-aware Python string helpers (case mapping, character classes) and markupsafe's HTML
// escape. Case mapping covers the scripts that chat messages use in practice (Latin with its
// extensions, Greek, Cyrillic, Armenian, fullwidth forms) with Python's special cases (ß → SS,
// final sigma); other code points are left unchanged, as Python leaves uncased scripts.
#include <algorithm>

#include "model/chat_template/builtins.h"

namespace expertmesh::chat {

namespace {

// A range [lo, hi] where upper-case letters sit at even (or odd, `odd_upper`) code points and
// the lower-case letter follows its upper-case one.
struct PairRange {
  char32_t lo, hi;
  bool odd_upper;
};
constexpr PairRange kPairs[] = {
    {0x100, 0x12F, false}, {0x132, 0x137, false},   {0x139, 0x148, true},    {0x14A, 0x177, false},
    {0x179, 0x17E, true},  {0x460, 0x481, false},   {0x48A, 0x4BF, false},   {0x4C1, 0x4CE, true},
    {0x4D0, 0x52F, false}, {0x1E00, 0x1E95, false}, {0x1EA0, 0x1EFF, false},
};

// A range of upper-case letters whose lower-case forms are `delta` code points further.
struct ShiftRange {
  char32_t lo, hi;
  int32_t delta;
};
constexpr ShiftRange kShifts[] = {
    {U'A', U'Z', 32},   {0xC0, 0xD6, 32},   {0xD8, 0xDE, 32},   {0x388, 0x38A, 37}, {0x391, 0x3A1, 32},
    {0x3A3, 0x3AB, 32}, {0x400, 0x40F, 80}, {0x410, 0x42F, 32}, {0x531, 0x556, 48}, {0xFF21, 0xFF3A, 32},
};

// Single mappings that fit no range: {upper, lower}.
constexpr std::pair<char32_t, char32_t> kSingles[] = {
    {0x178, 0xFF}, {0x386, 0x3AC}, {0x38C, 0x3CC}, {0x38E, 0x3CD}, {0x38F, 0x3CE},
};

char32_t lower_cp(char32_t c) {
  for (const auto& r : kShifts)
    if (c >= r.lo && c <= r.hi) return c + static_cast<char32_t>(r.delta);
  for (const auto& r : kPairs)
    if (c >= r.lo && c <= r.hi && ((c & 1) != 0) == r.odd_upper) return c + 1;
  for (const auto& [u, l] : kSingles)
    if (c == u) return l;
  if (c == 0x130) return U'i';
  return c;
}

char32_t upper_cp(char32_t c) {
  for (const auto& r : kShifts) {
    char32_t lo = r.lo + static_cast<char32_t>(r.delta), hi = r.hi + static_cast<char32_t>(r.delta);
    if (c >= lo && c <= hi) return c - static_cast<char32_t>(r.delta);
  }
  for (const auto& r : kPairs)
    if (c > r.lo && c <= r.hi && ((c & 1) != 0) != r.odd_upper) return c - 1;
  for (const auto& [u, l] : kSingles)
    if (c == l) return u;
  if (c == 0x3C2) return 0x3A3;  // final sigma
  if (c == 0xB5) return 0x39C;   // micro sign
  if (c == 0x131) return U'I';   // dotless i
  if (c == 0x17F) return U'S';   // long s
  return c;
}

bool is_upper_cp(char32_t c) { return lower_cp(c) != c; }
bool is_lower_cp(char32_t c) { return upper_cp(c) != c || c == 0xDF; }
bool is_cased_cp(char32_t c) { return is_upper_cp(c) || is_lower_cp(c); }

// Python's full upper-case mapping: ß has no single upper-case letter.
void append_upper(std::u32string& out, char32_t c) {
  if (c == 0xDF) {
    out += U"SS";
  } else {
    out += upper_cp(c);
  }
}

// Python lower-cases Σ to ς at the end of a word (preceded by a cased letter, not followed by one).
char32_t lower_at(const std::u32string& u, size_t i) {
  if (u[i] != 0x3A3) return lower_cp(u[i]);
  bool before = i > 0 && is_cased_cp(u[i - 1]);
  bool after = i + 1 < u.size() && is_cased_cp(u[i + 1]);
  return before && !after ? 0x3C2 : 0x3C3;
}

}  // namespace

std::string py_upper(const std::string& s) {
  if (is_ascii(s)) {
    std::string out = s;
    for (char& c : out)
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    return out;
  }
  std::u32string out;
  for (char32_t c : utf8_decode(s)) append_upper(out, c);
  return utf8_encode(out);
}

std::string py_lower(const std::string& s) {
  if (is_ascii(s)) {
    std::string out = s;
    for (char& c : out)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    return out;
  }
  std::u32string u = utf8_decode(s), out;
  for (size_t i = 0; i < u.size(); ++i) out += lower_at(u, i);
  return utf8_encode(out);
}

std::string py_casefold(const std::string& s) {
  std::u32string out;
  for (char32_t c : utf8_decode(py_lower(s))) {
    if (c == 0xDF) {
      out += U"ss";
    } else if (c == 0x3C2) {
      out += 0x3C3;
    } else {
      out += c;
    }
  }
  return utf8_encode(out);
}

std::string py_swapcase(const std::string& s) {
  std::u32string u = utf8_decode(s), out;
  for (size_t i = 0; i < u.size(); ++i) {
    if (is_upper_cp(u[i])) {
      out += lower_at(u, i);
    } else if (is_lower_cp(u[i])) {
      append_upper(out, u[i]);
    } else {
      out += u[i];
    }
  }
  return utf8_encode(out);
}

// str.title(): a cased letter after an uncased character starts a word (so "they're" becomes
// "They'Re", as in Python).
std::string py_title(const std::string& s) {
  std::u32string u = utf8_decode(s), out;
  bool prev_cased = false;
  for (size_t i = 0; i < u.size(); ++i) {
    if (prev_cased) {
      out += lower_at(u, i);
    } else if (u[i] == 0xDF) {
      out += U"Ss";
    } else {
      out += upper_cp(u[i]);
    }
    prev_cased = is_cased_cp(u[i]);
  }
  return utf8_encode(out);
}

// str.capitalize() (Python >= 3.8): the first character title-cased, the rest lower-cased.
std::string py_capitalize(const std::string& s) {
  std::u32string u = utf8_decode(s), out;
  for (size_t i = 0; i < u.size(); ++i) {
    if (i > 0) {
      out += lower_at(u, i);
    } else if (u[i] == 0xDF) {
      out += U"Ss";
    } else {
      out += upper_cp(u[i]);
    }
  }
  return utf8_encode(out);
}

// islower()/isupper(): at least one cased character and none of the other case.
bool py_is_lower(const std::string& s) {
  bool cased = false;
  for (char32_t c : utf8_decode(s)) {
    if (is_upper_cp(c)) return false;
    cased = cased || is_lower_cp(c);
  }
  return cased;
}

bool py_is_upper(const std::string& s) {
  bool cased = false;
  for (char32_t c : utf8_decode(s)) {
    if (is_lower_cp(c)) return false;
    cased = cased || is_upper_cp(c);
  }
  return cased;
}

bool py_is_title(const std::string& s) {
  bool cased = false, prev_cased = false;
  for (char32_t c : utf8_decode(s)) {
    if (is_upper_cp(c)) {
      if (prev_cased) return false;
      prev_cased = cased = true;
    } else if (is_lower_cp(c)) {
      if (!prev_cased) return false;
      prev_cased = cased = true;
    } else {
      prev_cased = false;
    }
  }
  return cased;
}

// Letters: the cased scripts above plus the common uncased ones (CJK, kana, Hangul, Arabic,
// Hebrew, Devanagari, Thai).
bool py_is_alpha_cp(char32_t c) {
  if (is_cased_cp(c) || c == 0xAA || c == 0xBA) return true;
  return (c >= 0x5D0 && c <= 0x5EA) || (c >= 0x620 && c <= 0x64A) || (c >= 0x904 && c <= 0x939) ||
         (c >= 0xE01 && c <= 0xE30) || (c >= 0x3041 && c <= 0x3096) || (c >= 0x30A1 && c <= 0x30FA) ||
         (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xAC00 && c <= 0xD7A3);
}

// Decimal digits (category Nd) of the common scripts.
bool py_is_decimal_cp(char32_t c) {
  for (char32_t zero : {U'0', char32_t{0x660}, char32_t{0x6F0}, char32_t{0x966}, char32_t{0xE50}, char32_t{0xFF10}})
    if (c >= zero && c <= zero + 9) return true;
  return false;
}

// isdigit(): decimals plus superscript, subscript and circled digits.
bool py_is_digit_cp(char32_t c) {
  return py_is_decimal_cp(c) || c == 0xB2 || c == 0xB3 || c == 0xB9 || c == 0x2070 || (c >= 0x2074 && c <= 0x2079) ||
         (c >= 0x2080 && c <= 0x2089) || (c >= 0x2460 && c <= 0x2468);
}

// isnumeric(): digits plus vulgar fractions and the CJK numerals.
bool py_is_numeric_cp(char32_t c) {
  static constexpr char32_t kCjk[] = {0x3007, 0x4E00, 0x4E8C, 0x4E09, 0x56DB, 0x4E94, 0x516D,
                                      0x4E03, 0x516B, 0x4E5D, 0x5341, 0x767E, 0x5343, 0x4E07};
  if (py_is_digit_cp(c) || (c >= 0xBC && c <= 0xBE) || (c >= 0x2150 && c <= 0x2189)) return true;
  return std::find(std::begin(kCjk), std::end(kCjk), c) != std::end(kCjk);
}

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

Value markup_escape(const Value& v) {
  if (v.is_markup()) return v;
  return Value::markup(html_escape(v.str()));
}

}  // namespace expertmesh::chat
