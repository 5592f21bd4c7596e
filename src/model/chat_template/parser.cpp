#include "model/chat_template/parser.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>

namespace expertmesh::chat {

namespace {

using TK = Token::Kind;

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, int max_depth) : t_(tokens), max_depth_(max_depth) {}

  Result<Body> parse_all() {
    std::string ended_by;
    EM_ASSIGN_OR_RETURN(Body body, parse_body({}, &ended_by));
    return body;
  }

 private:
  // ---- token helpers ----
  const Token& cur() const { return t_[i_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  bool is_op(const char* s) const { return cur().kind == TK::kOp && cur().text == s; }
  bool is_name(const char* s) const { return cur().kind == TK::kName && cur().text == s; }
  void advance() {
    if (i_ + 1 < t_.size()) ++i_;
  }
  Status err(const Token& at, const std::string& msg) const {
    return Status::InvalidArgument("chat template: line " + std::to_string(at.line) + ":" + std::to_string(at.col) +
                                   ": " + msg);
  }
  static std::string describe(const Token& t) {
    switch (t.kind) {
      case TK::kEof:
        return "end of template";
      case TK::kBlockEnd:
        return "end of statement block";
      case TK::kVarEnd:
        return "end of print statement";
      case TK::kString:
        return "string literal";
      default:
        return "'" + t.text + "'";
    }
  }
  Status expect_op(const char* s) {
    if (!is_op(s)) return err(cur(), std::string("expected '") + s + "', got " + describe(cur()));
    advance();
    return Status::Ok();
  }
  Status expect_block_end(const char* tag) {
    if (cur().kind != TK::kBlockEnd)
      return err(cur(), std::string("'") + tag + "' statement: expected '%}', got " + describe(cur()));
    advance();
    return Status::Ok();
  }
  Result<std::string> expect_name(const char* what) {
    if (cur().kind != TK::kName) return err(cur(), std::string("expected ") + what + ", got " + describe(cur()));
    std::string n = cur().text;
    advance();
    return n;
  }
  ExprPtr node(Expr::Kind k, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = at.line;
    e->col = at.col;
    return e;
  }
  struct DepthGuard {
    int& d;
    explicit DepthGuard(int& depth) : d(depth) { ++d; }
    ~DepthGuard() { --d; }
  };
  Status check_depth() const {
    if (depth_ > max_depth_) return err(cur(), "template nesting deeper than " + std::to_string(max_depth_));
    return Status::Ok();
  }

  // ---- statements ----
  Result<Body> parse_body(const std::vector<std::string>& end_tags, std::string* ended_by) {
    DepthGuard g(depth_);
    EM_RETURN_IF_ERROR(check_depth());
    Body body;
    for (;;) {
      const Token& tok = cur();
      if (tok.kind == TK::kEof) {
        if (end_tags.empty()) return body;
        return err(tok, "unexpected end of template, expected '" + end_tags.front() + "'");
      }
      if (tok.kind == TK::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kText;
        s->line = tok.line;
        s->col = tok.col;
        s->text = tok.text;
        body.push_back(std::move(s));
        advance();
        continue;
      }
      if (tok.kind == TK::kVarBegin) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kOutput;
        s->line = tok.line;
        s->col = tok.col;
        advance();
        EM_ASSIGN_OR_RETURN(s->expr, parse_tuple(true));
        if (cur().kind != TK::kVarEnd) return err(cur(), "expected '}}', got " + describe(cur()));
        advance();
        body.push_back(std::move(s));
        continue;
      }
      if (tok.kind != TK::kBlockBegin) return err(tok, "unexpected " + describe(tok));
      const Token& kw = peek();
      if (kw.kind != TK::kName) return err(kw, "expected a statement name after '{%', got " + describe(kw));
      if (std::find(end_tags.begin(), end_tags.end(), kw.text) != end_tags.end()) {
        *ended_by = kw.text;
        advance();
        advance();
        return body;
      }
      EM_ASSIGN_OR_RETURN(StmtPtr s, parse_statement());
      body.push_back(std::move(s));
    }
  }

  Result<StmtPtr> parse_statement() {
    advance();  // {%
    const Token& kw = cur();
    auto s = std::make_unique<Stmt>();
    s->line = kw.line;
    s->col = kw.col;
    std::string name = kw.text;
    advance();
    if (name == "if") return parse_if(std::move(s));
    if (name == "for") return parse_for(std::move(s));
    if (name == "set") return parse_set(std::move(s));
    if (name == "macro") return parse_macro(std::move(s));
    if (name == "call") return parse_call_block(std::move(s));
    if (name == "filter") return parse_filter_block(std::move(s));
    if (name == "break" || name == "continue") {
      s->kind = name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      EM_RETURN_IF_ERROR(expect_block_end(name.c_str()));
      return s;
    }
    if (name == "with") return parse_with(std::move(s));
    if (name == "generation") {
      s->kind = Stmt::Kind::kGeneration;
      EM_RETURN_IF_ERROR(expect_block_end("generation"));
      EM_RETURN_IF_ERROR(parse_single_body(*s, "endgeneration"));
      return s;
    }
    static const char* kEnds[] = {"endif",     "endfor", "endset", "endmacro",      "endcall",
                                  "endfilter", "elif",   "else",   "endgeneration", "endwith"};
    for (const char* e : kEnds)
      if (name == e) return err(kw, "unexpected '" + name + "' tag (no open block it could close)");
    return err(kw, "unsupported tag '" + name + "'");
  }

  Status parse_single_body(Stmt& s, const char* end_tag) {
    std::string ended_by;
    EM_ASSIGN_OR_RETURN(Body b, parse_body({end_tag}, &ended_by));
    s.bodies.push_back(std::move(b));
    return expect_block_end(end_tag);
  }

  // {% with a = x, b = y %}: the values are evaluated in the enclosing scope, the names are
  // visible only inside the block.
  Result<StmtPtr> parse_with(StmtPtr s) {
    s->kind = Stmt::Kind::kWith;
    while (cur().kind != TK::kBlockEnd) {
      if (!s->params.empty()) EM_RETURN_IF_ERROR(expect_op(","));
      MacroParam p;
      EM_ASSIGN_OR_RETURN(p.name, expect_name("a variable name"));
      EM_RETURN_IF_ERROR(expect_op("="));
      EM_ASSIGN_OR_RETURN(p.default_value, parse_expression(true));
      s->params.push_back(std::move(p));
    }
    EM_RETURN_IF_ERROR(expect_block_end("with"));
    EM_RETURN_IF_ERROR(parse_single_body(*s, "endwith"));
    return s;
  }

  Result<StmtPtr> parse_if(StmtPtr s) {
    s->kind = Stmt::Kind::kIf;
    for (;;) {
      EM_ASSIGN_OR_RETURN(ExprPtr c, parse_tuple(false));
      EM_RETURN_IF_ERROR(expect_block_end("if"));
      std::string ended_by;
      EM_ASSIGN_OR_RETURN(Body b, parse_body({"elif", "else", "endif"}, &ended_by));
      s->conds.push_back(std::move(c));
      s->bodies.push_back(std::move(b));
      if (ended_by == "elif") continue;
      if (ended_by == "else") {
        EM_RETURN_IF_ERROR(expect_block_end("else"));
        EM_ASSIGN_OR_RETURN(s->else_body, parse_body({"endif"}, &ended_by));
      }
      EM_RETURN_IF_ERROR(expect_block_end("endif"));
      return s;
    }
  }

  Result<AssignTarget> parse_target(bool allow_attr) {
    AssignTarget t;
    bool paren = is_op("(");
    if (paren) advance();
    EM_ASSIGN_OR_RETURN(std::string first, expect_name("a variable name"));
    t.names.push_back(first);
    if (allow_attr && !paren && is_op(".")) {
      advance();
      EM_ASSIGN_OR_RETURN(t.attr, expect_name("an attribute name"));
      return t;
    }
    while (is_op(",")) {
      advance();
      if (cur().kind != TK::kName) break;  // trailing comma
      t.names.push_back(cur().text);
      advance();
    }
    if (paren) EM_RETURN_IF_ERROR(expect_op(")"));
    for (const auto& n : t.names)
      if (n == "true" || n == "false" || n == "none" || n == "True" || n == "False" || n == "None" || n == "loop")
        return err(cur(), "cannot assign to '" + n + "'");
    return t;
  }

  Result<StmtPtr> parse_for(StmtPtr s) {
    s->kind = Stmt::Kind::kFor;
    EM_ASSIGN_OR_RETURN(s->target, parse_target(false));
    if (!is_name("in")) return err(cur(), "'for' statement: expected 'in', got " + describe(cur()));
    advance();
    EM_ASSIGN_OR_RETURN(s->expr, parse_tuple(false, /*no_condexpr_in_items=*/true));
    if (is_name("if")) {
      advance();
      EM_ASSIGN_OR_RETURN(s->cond, parse_expression(true));
    }
    if (is_name("recursive")) return err(cur(), "unsupported construct: recursive for loop");
    EM_RETURN_IF_ERROR(expect_block_end("for"));
    std::string ended_by;
    EM_ASSIGN_OR_RETURN(Body b, parse_body({"else", "endfor"}, &ended_by));
    s->bodies.push_back(std::move(b));
    if (ended_by == "else") {
      EM_RETURN_IF_ERROR(expect_block_end("else"));
      EM_ASSIGN_OR_RETURN(s->else_body, parse_body({"endfor"}, &ended_by));
    }
    EM_RETURN_IF_ERROR(expect_block_end("endfor"));
    return s;
  }

  Result<StmtPtr> parse_set(StmtPtr s) {
    EM_ASSIGN_OR_RETURN(s->target, parse_target(true));
    if (is_op("=")) {
      advance();
      s->kind = Stmt::Kind::kSet;
      EM_ASSIGN_OR_RETURN(s->expr, parse_tuple(true));
      EM_RETURN_IF_ERROR(expect_block_end("set"));
      return s;
    }
    s->kind = Stmt::Kind::kSetBlock;
    if (s->target.names.size() != 1 || !s->target.attr.empty())
      return err(cur(), "block 'set' needs a single variable name");
    if (is_op("|")) {
      EM_ASSIGN_OR_RETURN(s->expr, parse_filter_chain(nullptr));
    }
    EM_RETURN_IF_ERROR(expect_block_end("set"));
    EM_RETURN_IF_ERROR(parse_single_body(*s, "endset"));
    return s;
  }

  Status parse_params(Stmt& s) {
    EM_RETURN_IF_ERROR(expect_op("("));
    while (!is_op(")")) {
      if (!s.params.empty()) EM_RETURN_IF_ERROR(expect_op(","));
      if (is_op(")")) break;
      MacroParam p;
      EM_ASSIGN_OR_RETURN(p.name, expect_name("a parameter name"));
      if (is_op("=")) {
        advance();
        EM_ASSIGN_OR_RETURN(p.default_value, parse_expression(true));
      } else {
        for (const auto& q : s.params)
          if (q.default_value) return err(cur(), "parameter without a default follows a parameter with one");
      }
      s.params.push_back(std::move(p));
    }
    advance();
    return Status::Ok();
  }

  Result<StmtPtr> parse_macro(StmtPtr s) {
    s->kind = Stmt::Kind::kMacro;
    EM_ASSIGN_OR_RETURN(s->text, expect_name("a macro name"));
    EM_RETURN_IF_ERROR(parse_params(*s));
    EM_RETURN_IF_ERROR(expect_block_end("macro"));
    EM_RETURN_IF_ERROR(parse_single_body(*s, "endmacro"));
    return s;
  }

  Result<StmtPtr> parse_call_block(StmtPtr s) {
    s->kind = Stmt::Kind::kCallBlock;
    if (is_op("(")) EM_RETURN_IF_ERROR(parse_params(*s));
    const Token& at = cur();
    EM_ASSIGN_OR_RETURN(s->expr, parse_expression(true));
    if (s->expr->kind != Expr::Kind::kCall) return err(at, "'call' statement: expected a call expression");
    EM_RETURN_IF_ERROR(expect_block_end("call"));
    EM_RETURN_IF_ERROR(parse_single_body(*s, "endcall"));
    return s;
  }

  Result<StmtPtr> parse_filter_block(StmtPtr s) {
    s->kind = Stmt::Kind::kFilterBlock;
    EM_ASSIGN_OR_RETURN(s->expr, parse_filter_chain(nullptr, /*leading_pipe=*/false));
    EM_RETURN_IF_ERROR(expect_block_end("filter"));
    EM_RETURN_IF_ERROR(parse_single_body(*s, "endfilter"));
    return s;
  }

  // ---- expressions (jinja2 precedence) ----
  // `a, b` without parentheses forms a tuple (print statements, set values, for iterables).
  Result<ExprPtr> parse_tuple(bool with_condexpr, bool no_condexpr_in_items = false) {
    const Token& at = cur();
    EM_ASSIGN_OR_RETURN(ExprPtr first, parse_expression(with_condexpr && !no_condexpr_in_items));
    if (!is_op(",")) return first;
    ExprPtr t = node(Expr::Kind::kTuple, at);
    t->args.push_back(std::move(first));
    while (is_op(",")) {
      advance();
      if (cur().kind == TK::kBlockEnd || cur().kind == TK::kVarEnd || is_name("if")) break;
      EM_ASSIGN_OR_RETURN(ExprPtr e, parse_expression(with_condexpr && !no_condexpr_in_items));
      t->args.push_back(std::move(e));
    }
    return t;
  }

  Result<ExprPtr> parse_expression(bool with_condexpr) {
    DepthGuard g(depth_);
    EM_RETURN_IF_ERROR(check_depth());
    const Token& at = cur();
    EM_ASSIGN_OR_RETURN(ExprPtr e, parse_or());
    while (with_condexpr && is_name("if")) {
      advance();
      EM_ASSIGN_OR_RETURN(ExprPtr c, parse_or());
      ExprPtr ce = node(Expr::Kind::kCondExpr, at);
      ce->args.push_back(std::move(e));
      ce->args.push_back(std::move(c));
      if (is_name("else")) {
        advance();
        EM_ASSIGN_OR_RETURN(ExprPtr other, parse_expression(true));
        ce->args.push_back(std::move(other));
      } else {
        ce->args.push_back(nullptr);
      }
      e = std::move(ce);
    }
    return e;
  }

  Result<ExprPtr> parse_binary_chain(Expr::Kind kind, const char* word, Result<ExprPtr> (Parser::*next)()) {
    const Token& at = cur();
    EM_ASSIGN_OR_RETURN(ExprPtr left, (this->*next)());
    while (is_name(word)) {
      advance();
      EM_ASSIGN_OR_RETURN(ExprPtr right, (this->*next)());
      ExprPtr b = node(kind, at);
      b->args.push_back(std::move(left));
      b->args.push_back(std::move(right));
      left = std::move(b);
    }
    return left;
  }
  Result<ExprPtr> parse_or() { return parse_binary_chain(Expr::Kind::kOr, "or", &Parser::parse_and); }
  Result<ExprPtr> parse_and() { return parse_binary_chain(Expr::Kind::kAnd, "and", &Parser::parse_not); }

  Result<ExprPtr> parse_not() {
    if (is_name("not")) {
      DepthGuard g(depth_);
      EM_RETURN_IF_ERROR(check_depth());
      ExprPtr n = node(Expr::Kind::kNot, cur());
      advance();
      EM_ASSIGN_OR_RETURN(ExprPtr inner, parse_not());
      n->args.push_back(std::move(inner));
      return n;
    }
    return parse_compare();
  }

  Result<ExprPtr> parse_compare() {
    const Token& at = cur();
    EM_ASSIGN_OR_RETURN(ExprPtr first, parse_math1());
    ExprPtr cmp;
    for (;;) {
      std::string op;
      if (cur().kind == TK::kOp && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                    cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        advance();
      } else if (is_name("in")) {
        op = "in";
        advance();
      } else if (is_name("not") && peek().kind == TK::kName && peek().text == "in") {
        op = "notin";
        advance();
        advance();
      } else {
        break;
      }
      if (!cmp) {
        cmp = node(Expr::Kind::kCompare, at);
        cmp->args.push_back(std::move(first));
      }
      EM_ASSIGN_OR_RETURN(ExprPtr rhs, parse_math1());
      cmp->ops.push_back(op);
      cmp->args.push_back(std::move(rhs));
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  Result<ExprPtr> parse_binary_ops(std::initializer_list<const char*> ops, Result<ExprPtr> (Parser::*next)()) {
    const Token& at = cur();
    EM_ASSIGN_OR_RETURN(ExprPtr left, (this->*next)());
    for (;;) {
      const char* match = nullptr;
      for (const char* op : ops)
        if (is_op(op)) match = op;
      if (!match) return left;
      advance();
      EM_ASSIGN_OR_RETURN(ExprPtr right, (this->*next)());
      ExprPtr b = node(Expr::Kind::kBinary, at);
      b->name = match;
      b->args.push_back(std::move(left));
      b->args.push_back(std::move(right));
      left = std::move(b);
    }
  }
  Result<ExprPtr> parse_math1() { return parse_binary_ops({"+", "-"}, &Parser::parse_concat); }
  Result<ExprPtr> parse_concat() { return parse_binary_ops({"~"}, &Parser::parse_math2); }
  Result<ExprPtr> parse_math2() { return parse_binary_ops({"*", "/", "//", "%"}, &Parser::parse_pow); }
  Result<ExprPtr> parse_pow() { return parse_binary_ops({"**"}, &Parser::parse_unary_filtered); }
  Result<ExprPtr> parse_unary_filtered() { return parse_unary(true); }

  Result<ExprPtr> parse_unary(bool with_filter) {
    DepthGuard g(depth_);
    EM_RETURN_IF_ERROR(check_depth());
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      e = node(is_op("-") ? Expr::Kind::kNeg : Expr::Kind::kPos, cur());
      advance();
      EM_ASSIGN_OR_RETURN(ExprPtr inner, parse_unary(false));
      e->args.push_back(std::move(inner));
    } else {
      EM_ASSIGN_OR_RETURN(e, parse_primary());
    }
    EM_ASSIGN_OR_RETURN(e, parse_postfix(std::move(e)));
    if (with_filter) {
      EM_ASSIGN_OR_RETURN(e, parse_filter_expr(std::move(e)));
    }
    return e;
  }

  Result<ExprPtr> parse_primary() {
    const Token& tok = cur();
    switch (tok.kind) {
      case TK::kName: {
        ExprPtr e = node(Expr::Kind::kLiteral, tok);
        if (tok.text == "true" || tok.text == "True") {
          e->literal = Value(true);
        } else if (tok.text == "false" || tok.text == "False") {
          e->literal = Value(false);
        } else if (tok.text == "none" || tok.text == "None") {
          e->literal = Value::none();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = tok.text;
        }
        advance();
        return e;
      }
      case TK::kString: {
        ExprPtr e = node(Expr::Kind::kLiteral, tok);
        std::string s;
        while (cur().kind == TK::kString) {
          s += cur().text;
          advance();
        }
        e->literal = Value(std::move(s));
        return e;
      }
      case TK::kInt: {
        ExprPtr e = node(Expr::Kind::kLiteral, tok);
        int64_t v = 0;
        auto r = std::from_chars(tok.text.data(), tok.text.data() + tok.text.size(), v);
        if (r.ec != std::errc()) {
          return err(tok, "unsupported construct: integer literal " + tok.text + " does not fit in 64 bits");
        } else {
          e->literal = Value(v);
        }
        advance();
        return e;
      }
      case TK::kFloat: {
        ExprPtr e = node(Expr::Kind::kLiteral, tok);
        e->literal = Value(std::strtod(tok.text.c_str(), nullptr));
        advance();
        return e;
      }
      case TK::kOp:
        if (tok.text == "(") return parse_paren();
        if (tok.text == "[") return parse_list();
        if (tok.text == "{") return parse_dict();
        [[fallthrough]];
      default:
        return err(tok, "unexpected " + describe(tok) + " in expression");
    }
  }

  Result<ExprPtr> parse_paren() {
    ExprPtr t = node(Expr::Kind::kTuple, cur());
    advance();
    if (is_op(")")) {
      advance();
      return t;
    }
    EM_ASSIGN_OR_RETURN(ExprPtr first, parse_expression(true));
    if (is_op(")")) {
      advance();
      return first;
    }
    t->args.push_back(std::move(first));
    while (is_op(",")) {
      advance();
      if (is_op(")")) break;
      EM_ASSIGN_OR_RETURN(ExprPtr e, parse_expression(true));
      t->args.push_back(std::move(e));
    }
    EM_RETURN_IF_ERROR(expect_op(")"));
    return t;
  }

  Result<ExprPtr> parse_list() {
    ExprPtr l = node(Expr::Kind::kList, cur());
    advance();
    while (!is_op("]")) {
      if (!l->args.empty()) EM_RETURN_IF_ERROR(expect_op(","));
      if (is_op("]")) break;
      EM_ASSIGN_OR_RETURN(ExprPtr e, parse_expression(true));
      l->args.push_back(std::move(e));
    }
    advance();
    return l;
  }

  Result<ExprPtr> parse_dict() {
    ExprPtr d = node(Expr::Kind::kDict, cur());
    advance();
    while (!is_op("}")) {
      if (!d->args.empty()) EM_RETURN_IF_ERROR(expect_op(","));
      if (is_op("}")) break;
      EM_ASSIGN_OR_RETURN(ExprPtr k, parse_expression(true));
      EM_RETURN_IF_ERROR(expect_op(":"));
      EM_ASSIGN_OR_RETURN(ExprPtr v, parse_expression(true));
      d->args.push_back(std::move(k));
      d->args.push_back(std::move(v));
    }
    advance();
    return d;
  }

  Result<ExprPtr> parse_postfix(ExprPtr e) {
    for (;;) {
      const Token& at = cur();
      if (is_op(".")) {
        advance();
        if (cur().kind != TK::kName && cur().kind != TK::kInt)
          return err(cur(), "expected an attribute name after '.', got " + describe(cur()));
        ExprPtr a = node(cur().kind == TK::kName ? Expr::Kind::kGetAttr : Expr::Kind::kGetItem, at);
        if (a->kind == Expr::Kind::kGetAttr) {
          a->name = cur().text;
          a->args.push_back(std::move(e));
        } else {
          ExprPtr idx = node(Expr::Kind::kLiteral, cur());
          idx->literal = Value(static_cast<int64_t>(std::strtoll(cur().text.c_str(), nullptr, 10)));
          a->args.push_back(std::move(e));
          a->args.push_back(std::move(idx));
        }
        advance();
        e = std::move(a);
      } else if (is_op("[")) {
        EM_ASSIGN_OR_RETURN(e, parse_subscript(std::move(e)));
      } else if (is_op("(")) {
        ExprPtr c = node(Expr::Kind::kCall, at);
        c->args.push_back(std::move(e));
        EM_RETURN_IF_ERROR(parse_call_args(*c));
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  Result<ExprPtr> parse_subscript(ExprPtr obj) {
    const Token& at = cur();
    advance();  // [
    ExprPtr parts[3];
    int n_colons = 0;
    for (;;) {
      if (is_op(":")) {
        if (++n_colons > 2) return err(cur(), "too many ':' in slice");
        advance();
        continue;
      }
      if (is_op("]")) break;
      if (parts[n_colons]) return err(cur(), "expected ']' or ':', got " + describe(cur()));
      EM_ASSIGN_OR_RETURN(parts[n_colons], parse_expression(true));
      if (n_colons == 0 && is_op(",")) return err(cur(), "unsupported construct: tuple subscript");
    }
    advance();
    ExprPtr s = node(n_colons ? Expr::Kind::kSlice : Expr::Kind::kGetItem, at);
    s->args.push_back(std::move(obj));
    if (!n_colons) {
      if (!parts[0]) return err(at, "empty subscript");
      s->args.push_back(std::move(parts[0]));
    } else {
      for (auto& p : parts) s->args.push_back(std::move(p));
    }
    return s;
  }

  Status parse_call_args(Expr& call) {
    EM_RETURN_IF_ERROR(expect_op("("));
    bool first = true;
    while (!is_op(")")) {
      if (!first) EM_RETURN_IF_ERROR(expect_op(","));
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) return err(cur(), "unsupported construct: *args / **kwargs in a call");
      if (cur().kind == TK::kName && peek().kind == TK::kOp && peek().text == "=") {
        std::string k = cur().text;
        advance();
        advance();
        EM_ASSIGN_OR_RETURN(ExprPtr v, parse_expression(true));
        call.kwargs.emplace_back(std::move(k), std::move(v));
      } else {
        if (!call.kwargs.empty()) return err(cur(), "positional argument follows keyword argument");
        EM_ASSIGN_OR_RETURN(ExprPtr v, parse_expression(true));
        call.args.push_back(std::move(v));
      }
    }
    advance();
    return Status::Ok();
  }

  Result<ExprPtr> parse_filter_expr(ExprPtr e) {
    for (;;) {
      if (is_op("|")) {
        EM_ASSIGN_OR_RETURN(e, parse_filter_chain(std::move(e)));
      } else if (is_name("is")) {
        EM_ASSIGN_OR_RETURN(e, parse_test(std::move(e)));
      } else if (is_op("(")) {
        ExprPtr c = node(Expr::Kind::kCall, cur());
        c->args.push_back(std::move(e));
        EM_RETURN_IF_ERROR(parse_call_args(*c));
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  // One or more `| name(args)`; `subject` null inside {% filter %} / {% set x | f %}.
  Result<ExprPtr> parse_filter_chain(ExprPtr subject, bool leading_pipe = true) {
    bool first = true;
    while ((first && !leading_pipe) || is_op("|")) {
      if (!(first && !leading_pipe)) advance();
      first = false;
      ExprPtr f = node(Expr::Kind::kFilter, cur());
      EM_ASSIGN_OR_RETURN(f->name, expect_name("a filter name"));
      while (is_op(".")) {
        advance();
        EM_ASSIGN_OR_RETURN(std::string part, expect_name("a filter name"));
        f->name += "." + part;
      }
      f->args.push_back(std::move(subject));
      if (is_op("(")) EM_RETURN_IF_ERROR(parse_call_args(*f));
      subject = std::move(f);
    }
    return subject;
  }

  Result<ExprPtr> parse_test(ExprPtr subject) {
    ExprPtr t = node(Expr::Kind::kTest, cur());
    advance();  // is
    if (is_name("not")) {
      t->negated = true;
      advance();
    }
    EM_ASSIGN_OR_RETURN(t->name, expect_name("a test name"));
    t->args.push_back(std::move(subject));
    if (is_op("(")) {
      EM_RETURN_IF_ERROR(parse_call_args(*t));
    } else if ((cur().kind == TK::kName || cur().kind == TK::kString || cur().kind == TK::kInt ||
                cur().kind == TK::kFloat || is_op("(") || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) return err(cur(), "you cannot chain multiple tests with 'is'");
      EM_ASSIGN_OR_RETURN(ExprPtr arg, parse_primary());
      EM_ASSIGN_OR_RETURN(arg, parse_postfix(std::move(arg)));
      t->args.push_back(std::move(arg));
    }
    return t;
  }

  const std::vector<Token>& t_;
  size_t i_ = 0;
  int depth_ = 0;
  int max_depth_;
};

}  // namespace

Result<Body> parse_template(const std::vector<Token>& tokens, int max_depth) {
  if (tokens.empty()) return Body{};
  Parser p(tokens, max_depth);
  return p.parse_all();
}

}  // namespace expertmesh::chat
