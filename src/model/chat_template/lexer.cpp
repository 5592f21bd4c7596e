#include "model/chat_template/lexer.h"

#include <algorithm>
#include <cstring>

#include "model/chat_template/value.h"

namespace expertmesh::chat {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class Lexer {
 public:
  Lexer(std::string src, const LexOptions& opt) : src_(std::move(src)), opt_(opt) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  Result<std::vector<Token>> run() {
    size_t n = src_.size();
    while (pos_ < n) {
      size_t t = next_tag(pos_);
      if (t == std::string::npos) {
        push_text(src_.substr(pos_));
        break;
      }
      char kind = src_[t + 1];
      char mod = (t + 2 < n && (src_[t + 2] == '-' || src_[t + 2] == '+')) ? src_[t + 2] : 0;
      size_t body = t + 2 + (mod ? 1 : 0);
      size_t raw_end = kind == '%' ? match_raw_begin(body) : std::string::npos;
      push_text(strip_text(src_.substr(pos_, t - pos_), mod, kind != '{'));
      if (kind == '#') {
        EM_RETURN_IF_ERROR(lex_comment(t, body));
      } else if (raw_end != std::string::npos) {
        EM_RETURN_IF_ERROR(lex_raw(t, raw_end));
      } else {
        EM_RETURN_IF_ERROR(lex_tag(t, body, kind == '%'));
      }
    }
    tokens_.push_back(Token{Token::Kind::kEof, "", 0, 0});
    set_pos(tokens_.back(), n);
    return std::move(tokens_);
  }

 private:
  size_t next_tag(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i)
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    return std::string::npos;
  }

  void set_pos(Token& tok, size_t at) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), at);
    size_t line = static_cast<size_t>(it - line_starts_.begin());
    tok.line = static_cast<int>(line);
    tok.col = static_cast<int>(at - line_starts_[line - 1] + 1);
  }

  Status error_at(size_t at, const std::string& what) const {
    Token t{Token::Kind::kEof, "", 0, 0};
    set_pos(t, at);
    return Status::InvalidArgument("chat template: line " + std::to_string(t.line) + ":" + std::to_string(t.col) +
                                   ": " + what);
  }

  // jinja2's OptionalLStrip: `-` strips all trailing whitespace of the preceding text; otherwise
  // lstrip_blocks removes spaces/tabs between the last line start and a block/comment tag.
  std::string strip_text(std::string text, char mod, bool block_or_comment) const {
    if (mod == '-') {
      size_t e = text.size();
      while (e > 0 && is_space(text[e - 1])) --e;
      text.resize(e);
    } else if (mod != '+' && opt_.lstrip_blocks && block_or_comment) {
      size_t nl = text.rfind('\n');
      size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if (l_pos > 0 || line_starting_) {
        bool ws = l_pos < text.size();
        for (size_t i = l_pos; i < text.size() && ws; ++i) ws = is_space(text[i]);
        if (ws) text.resize(l_pos);
      }
    }
    return text;
  }

  void push_text(std::string text) {
    if (text.empty()) return;
    Token tok{Token::Kind::kText, std::move(text), 0, 0};
    set_pos(tok, pos_);
    tokens_.push_back(std::move(tok));
  }

  // After a tag end at `p` (just past the closing delimiter), applies the trailing `-` (all
  // whitespace) or trim_blocks (one newline) rule and records whether a line starts there.
  void finish_tag(size_t p, char end_mod, bool trim_allowed) {
    if (end_mod == '-') {
      while (p < src_.size() && is_space(src_[p])) ++p;
    } else if (end_mod != '+' && trim_allowed && opt_.trim_blocks && p < src_.size() && src_[p] == '\n') {
      ++p;
    }
    line_starting_ = p > 0 && src_[p - 1] == '\n';
    pos_ = p;
  }

  Status lex_comment(size_t t, size_t body) {
    size_t e = src_.find("#}", body);
    if (e == std::string::npos) return error_at(t, "missing end of comment tag '#}'");
    char end_mod = (e > body && (src_[e - 1] == '-' || src_[e - 1] == '+')) ? src_[e - 1] : 0;
    finish_tag(e + 2, end_mod, true);
    return Status::Ok();
  }

  // `{% raw %}` (with optional markers): returns the offset just past its `%}`, else npos.
  size_t match_raw_begin(size_t p) const {
    while (p < src_.size() && is_space(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0 || (p + 3 < src_.size() && is_name_char(src_[p + 3]))) return std::string::npos;
    p += 3;
    while (p < src_.size() && is_space(src_[p])) ++p;
    if (src_.compare(p, 3, "-%}") == 0) {
      p += 3;
      while (p < src_.size() && is_space(src_[p])) ++p;
      return p;
    }
    if (src_.compare(p, 2, "%}") == 0) return p + 2;
    return std::string::npos;
  }

  Status lex_raw(size_t t, size_t p) {
    for (size_t s = src_.find("{%", p); s != std::string::npos; s = src_.find("{%", s + 2)) {
      size_t q = s + 2;
      char mod = (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) ? src_[q] : 0;
      if (mod) ++q;
      while (q < src_.size() && is_space(src_[q])) ++q;
      if (src_.compare(q, 6, "endraw") != 0) continue;
      q += 6;
      while (q < src_.size() && is_space(src_[q])) ++q;
      char end_mod = 0;
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) end_mod = src_[q++];
      if (src_.compare(q, 2, "%}") != 0) continue;
      pos_ = p;
      push_text(strip_text(src_.substr(p, s - p), mod, true));
      finish_tag(q + 2, end_mod, true);
      return Status::Ok();
    }
    return error_at(t, "missing '{% endraw %}' for '{% raw %}'");
  }

  Status lex_tag(size_t t, size_t p, bool block) {
    Token begin{block ? Token::Kind::kBlockBegin : Token::Kind::kVarBegin, block ? "{%" : "{{", 0, 0};
    set_pos(begin, t);
    tokens_.push_back(begin);
    std::vector<char> brackets;
    const char* close = block ? "%}" : "}}";
    for (;;) {
      while (p < src_.size() && is_space(src_[p])) ++p;
      if (p >= src_.size()) return error_at(t, std::string("unterminated tag: missing '") + close + "'");
      if (brackets.empty()) {
        char end_mod = 0;
        size_t q = p;
        if ((src_[q] == '-' || (block && src_[q] == '+')) && src_.compare(q + 1, 2, close) == 0) end_mod = src_[q++];
        if (src_.compare(q, 2, close) == 0) {
          Token end{block ? Token::Kind::kBlockEnd : Token::Kind::kVarEnd, close, 0, 0};
          set_pos(end, p);
          tokens_.push_back(end);
          finish_tag(q + 2, end_mod, block);
          return Status::Ok();
        }
      }
      Token tok{Token::Kind::kOp, "", 0, 0};
      set_pos(tok, p);
      char c = src_[p];
      if (c == '\'' || c == '"') {
        EM_RETURN_IF_ERROR(lex_string(p, tok));
      } else if (is_digit(c)) {
        lex_number(p, tok);
      } else if (is_name_start(c)) {
        size_t s = p;
        while (p < src_.size() && is_name_char(src_[p])) ++p;
        tok.kind = Token::Kind::kName;
        tok.text = src_.substr(s, p - s);
      } else {
        static const char* kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        bool two = false;
        for (const char* op : kTwo)
          if (src_.compare(p, 2, op) == 0) two = true;
        if (!two && !std::strchr("+-*/%~<>=.,:|()[]{}", c)) {
          return error_at(p, std::string("unexpected character '") + c + "' in tag");
        }
        tok.text = src_.substr(p, two ? 2 : 1);
        p += two ? 2 : 1;
        if (c == '(' || c == '[' || c == '{') {
          brackets.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
        } else if (c == ')' || c == ']' || c == '}') {
          if (brackets.empty()) return error_at(p - 1, std::string("unexpected '") + c + "'");
          if (brackets.back() != c)
            return error_at(p - 1, std::string("unexpected '") + c + "', expected '" + brackets.back() + "'");
          brackets.pop_back();
        }
      }
      tokens_.push_back(std::move(tok));
    }
  }

  void lex_number(size_t& p, Token& tok) {
    auto digits = [&](size_t q) {
      size_t s = q;
      while (q < src_.size() &&
             (is_digit(src_[q]) || (src_[q] == '_' && q > s && q + 1 < src_.size() && is_digit(src_[q + 1]))))
        ++q;
      return q;
    };
    size_t s = p;
    size_t q = digits(p);
    bool after_dot = !tokens_.empty() && tokens_.back().kind == Token::Kind::kOp && tokens_.back().text == ".";
    bool is_float = false;
    if (!after_dot) {
      if (q + 1 < src_.size() && src_[q] == '.' && is_digit(src_[q + 1])) {
        q = digits(q + 1);
        is_float = true;
      }
      size_t e = q;
      if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
        ++e;
        if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
        if (e < src_.size() && is_digit(src_[e])) {
          q = digits(e);
          is_float = true;
        }
      }
    }
    tok.kind = is_float ? Token::Kind::kFloat : Token::Kind::kInt;
    for (size_t i = s; i < q; ++i)
      if (src_[i] != '_') tok.text += src_[i];
    p = q;
  }

  // Python string-literal escapes (jinja2 decodes literals with unicode-escape).
  Status lex_string(size_t& p, Token& tok) {
    char quote = src_[p];
    size_t start = p++;
    std::string out;
    while (p < src_.size() && src_[p] != quote) {
      if (src_[p] != '\\' || p + 1 >= src_.size()) {
        out += src_[p++];
        continue;
      }
      char e = src_[p + 1];
      p += 2;
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'v':
          out += '\v';
          break;
        case '\n':
          break;  // line continuation
        case 'N':
          return error_at(p - 2, "unsupported construct: \\N{name} escape in string literal");
        case 'x':
        case 'u':
        case 'U': {
          size_t len = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          char32_t cp = 0;
          for (size_t i = 0; i < len; ++i) {
            int h = p + i < src_.size() ? hex_value(src_[p + i]) : -1;
            if (h < 0) return error_at(p - 2, std::string("truncated \\") + e + " escape in string literal");
            cp = cp * 16 + static_cast<char32_t>(h);
          }
          if (cp > 0x10FFFF) return error_at(p - 2, "invalid \\U escape in string literal");
          p += len;
          out += utf8_encode(std::u32string(1, cp));
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            char32_t cp = static_cast<char32_t>(e - '0');
            for (int i = 0; i < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++i)
              cp = cp * 8 + static_cast<char32_t>(src_[p++] - '0');
            out += utf8_encode(std::u32string(1, cp));
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    if (p >= src_.size()) return error_at(start, "unterminated string literal");
    ++p;
    tok.kind = Token::Kind::kString;
    tok.text = std::move(out);
    return Status::Ok();
  }

  std::string src_;
  LexOptions opt_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  bool line_starting_ = true;
};

// jinja2 splits on \r\n, \r and \n, joins with \n, and drops one trailing newline unless
// keep_trailing_newline.
std::string normalize_newlines(std::string_view s, bool keep_trailing_newline) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r') {
      out += '\n';
      if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else {
      out += s[i];
    }
  }
  if (!keep_trailing_newline && !out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

Result<std::vector<Token>> lex_template(std::string_view source, const LexOptions& opt) {
  Lexer lexer(normalize_newlines(source, opt.keep_trailing_newline), opt);
  return lexer.run();
}

}  // namespace expertmesh::chat
