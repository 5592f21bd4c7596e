// Lexer of the chat-template Jinja subset: splits a template into text runs and the tokens of
// `{{ ... }}` / `{% ... %}` tags, applying jinja2's whitespace rules (`-`/`+` markers,
// trim_blocks, lstrip_blocks, keep_trailing_newline, newline normalisation) so that the parser
// sees exactly the text jinja2 would output. `{# ... #}` comments and `{% raw %}` blocks are
// resolved here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace expertmesh::chat {

struct LexOptions {
  // HF transformers' apply_chat_template compiles with trim_blocks=True, lstrip_blocks=True and
  // jinja2's default keep_trailing_newline=False; these defaults reproduce that.
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
};

struct Token {
  enum class Kind : uint8_t {
    kText,        // literal template text (already whitespace-processed)
    kVarBegin,    // {{
    kVarEnd,      // }}
    kBlockBegin,  // {%
    kBlockEnd,    // %}
    kName,        // identifier or keyword
    kString,      // string literal, escapes resolved
    kInt,
    kFloat,
    kOp,  // operator or punctuation: + - * / // % ** ~ == != < <= > >= = . , : | ( ) [ ] { }
    kEof,
  };
  Kind kind;
  std::string text;  // text / name / unescaped string / operator / number spelling
  int line = 1;      // 1-based position of the token's first byte in the template
  int col = 1;
};

// Tokenizes `source`. Errors (unterminated tag, comment or string, unexpected character) name
// "line L:C". Never reads out of bounds; linear in the source size.
Result<std::vector<Token>> lex_template(std::string_view source, const LexOptions& opt);

}  // namespace expertmesh::chat
