// UTF-8 and Unicode helpers for the tokenizers, with the peer's (llama.cpp's) exact conventions:
// an invalid UTF-8 sequence decodes to U+FFFD and consumes one byte; the lead byte alone decides
// a sequence's length (no overlong/surrogate checks). Category queries use PCRE2's Unicode
// properties; NFD base characters and lowercase come from unicode_tables.cpp.
//
// Everything here is stateless or uses function-local static const tables: thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace expertmesh::tok {

// Length of the UTF-8 sequence a lead byte announces (1 for continuation/invalid bytes).
size_t utf8_len(uint8_t lead);
// Decodes `s` to code points (invalid -> 0xFFFD, one byte consumed).
std::vector<uint32_t> utf8_to_cpts(std::string_view s);
// Appends the UTF-8 encoding of cpt (cpt must be <= 0x10FFFF).
void append_utf8(std::string* out, uint32_t cpt);
std::string cpt_to_utf8(uint32_t cpt);

// GPT-2 byte-level mapping: byte -> the UTF-8 text of its printable stand-in code point.
const std::string& byte_to_unicode(uint8_t b);
// Inverse for one code point; -1 when the code point is no byte's stand-in.
int unicode_to_byte(uint32_t cpt);

// Whitespace as the peer defines it (\t\n\v\f\r, space, U+0085, U+00A0, U+1680, U+2000..200A,
// U+2028, U+2029, U+202F, U+205F, U+3000).
bool is_whitespace(uint32_t cpt);

// General-category class of a code point, the peer's flag grouping.
enum class CptClass : uint8_t { kOther, kLetter, kNumber, kMark, kPunct, kSymbol, kSeparator, kControl };
CptClass classify(uint32_t cpt);

// First code point of cpt's canonical decomposition (cpt itself when it has none).
uint32_t nfd_base(uint32_t cpt);
// Simple lowercase mapping (cpt itself when none).
uint32_t to_lower(uint32_t cpt);

}  // namespace expertmesh::tok
