#include "model/chat_template/interpreter.h"

#include <optional>
#include <utility>

namespace expertmesh::chat {

const Value* Scope::lookup(const std::string& name) const {
  for (const Scope* s = this; s; s = s->parent.get()) {
    auto it = s->vars.find(name);
    if (it != s->vars.end()) return &it->second;
  }
  return nullptr;
}

namespace {

constexpr const char* kLocated = "chat template: line ";

enum class Flow { kNormal, kBreak, kContinue };

ScopePtr child_of(const ScopePtr& parent) {
  auto s = std::make_shared<Scope>();
  s->parent = parent;
  return s;
}

std::string describe(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::kName:
      return "variable '" + e.name + "'";
    case Expr::Kind::kGetAttr:
      return "attribute '" + e.name + "'";
    case Expr::Kind::kGetItem:
      return "subscript";
    case Expr::Kind::kSlice:
      return "slice";
    case Expr::Kind::kCall:
      return "call";
    case Expr::Kind::kFilter:
      return "filter '" + e.name + "'";
    case Expr::Kind::kTest:
      return "test '" + e.name + "'";
    case Expr::Kind::kBinary:
      return "operator '" + e.name + "'";
    case Expr::Kind::kCompare:
      return "comparison";
    case Expr::Kind::kNeg:
      return "unary '-'";
    default:
      return "expression";
  }
}

// Whether an expression / body refers to variable `n` (jinja2 gives a macro `varargs` and
// `kwargs` only when its body mentions them; otherwise extra arguments are an error).
bool expr_mentions(const Expr& e, const std::string& n) {
  if (e.kind == Expr::Kind::kName && e.name == n) return true;
  for (const auto& a : e.args)
    if (a && expr_mentions(*a, n)) return true;
  for (const auto& kv : e.kwargs)
    if (kv.second && expr_mentions(*kv.second, n)) return true;
  return false;
}

bool body_mentions(const Body& body, const std::string& n) {
  for (const auto& s : body) {
    for (const Expr* e : {s->expr.get(), s->cond.get()})
      if (e && expr_mentions(*e, n)) return true;
    for (const auto& c : s->conds)
      if (c && expr_mentions(*c, n)) return true;
    for (const auto& p : s->params)
      if (p.default_value && expr_mentions(*p.default_value, n)) return true;
    for (const auto& b : s->bodies)
      if (body_mentions(b, n)) return true;
    if (body_mentions(s->else_body, n)) return true;
  }
  return false;
}

class Interpreter {
 public:
  explicit Interpreter(const RenderLimits& lim) : lim_(lim) {
    blim_.max_size = lim.max_output_bytes;
    blim_.allow_list_mutation = lim.allow_list_mutation;
  }

  Result<std::string> run(const Body& body, ScopePtr globals) {
    std::string out;
    EM_ASSIGN_OR_RETURN(Flow f, exec_body(body, globals, out));
    (void)f;  // break/continue outside a loop are no-ops, as jinja2's parser would reject them
    return out;
  }

 private:
  static Status locate(const Status& s, int line, int col, const std::string& construct) {
    if (s.message().rfind(kLocated, 0) == 0) return s;
    std::string msg =
        kLocated + std::to_string(line) + ":" + std::to_string(col) + ": " + construct + ": " + s.message();
    return s.code() == StatusCode::kUnsupported  ? Status::Unsupported(msg)
           : s.code() == StatusCode::kOutOfRange ? Status::OutOfRange(msg)
                                                 : Status::InvalidArgument(msg);
  }

  Status tick(int line, int col) {
    if (++steps_ > lim_.max_steps)
      return locate(Status::OutOfRange("evaluation exceeded " + std::to_string(lim_.max_steps) + " steps"), line, col,
                    "limit");
    return Status::Ok();
  }

  struct DepthGuard {
    int& d;
    explicit DepthGuard(int& depth) : d(depth) { ++d; }
    ~DepthGuard() { --d; }
  };

  Status append(std::string& out, const std::string& s, int line, int col) {
    if (out.size() + s.size() > lim_.max_output_bytes)
      return locate(Status::OutOfRange("output exceeds " + std::to_string(lim_.max_output_bytes) + " bytes"), line, col,
                    "limit");
    out += s;
    return Status::Ok();
  }

  // ---- statements ----
  Result<Flow> exec_body(const Body& body, const ScopePtr& scope, std::string& out) {
    for (const auto& s : body) {
      EM_ASSIGN_OR_RETURN(Flow f, exec(*s, scope, out));
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

  Result<Flow> exec(const Stmt& s, const ScopePtr& scope, std::string& out) {
    DepthGuard g(depth_);
    if (depth_ > lim_.max_eval_depth)
      return locate(Status::OutOfRange("evaluation nested too deeply"), s.line, s.col, "limit");
    EM_RETURN_IF_ERROR(tick(s.line, s.col));
    switch (s.kind) {
      case Stmt::Kind::kText:
        EM_RETURN_IF_ERROR(append(out, s.text, s.line, s.col));
        return Flow::kNormal;
      case Stmt::Kind::kOutput: {
        EM_ASSIGN_OR_RETURN(Value v, eval(*s.expr, scope));
        EM_RETURN_IF_ERROR(append(out, v.str(), s.line, s.col));
        return Flow::kNormal;
      }
      case Stmt::Kind::kIf:
        for (size_t i = 0; i < s.conds.size(); ++i) {
          EM_ASSIGN_OR_RETURN(Value c, eval(*s.conds[i], scope));
          if (c.truthy()) return exec_body(s.bodies[i], scope, out);
        }
        return exec_body(s.else_body, scope, out);
      case Stmt::Kind::kFor:
        EM_RETURN_IF_ERROR(exec_for(s, scope, out));
        return Flow::kNormal;
      case Stmt::Kind::kSet: {
        EM_ASSIGN_OR_RETURN(Value v, eval(*s.expr, scope));
        EM_RETURN_IF_ERROR(assign(s, s.target, std::move(v), scope));
        return Flow::kNormal;
      }
      case Stmt::Kind::kSetBlock: {
        std::string body;
        EM_RETURN_IF_ERROR(exec_body(s.bodies[0], scope, body).status());
        Value v(std::move(body));
        if (s.expr) {
          EM_ASSIGN_OR_RETURN(v, eval_filter(*s.expr, &v, scope));
        }
        EM_RETURN_IF_ERROR(assign(s, s.target, std::move(v), scope));
        return Flow::kNormal;
      }
      case Stmt::Kind::kFilterBlock: {
        std::string body;
        EM_RETURN_IF_ERROR(exec_body(s.bodies[0], scope, body).status());
        Value rendered(std::move(body));
        EM_ASSIGN_OR_RETURN(Value v, eval_filter(*s.expr, &rendered, scope));
        EM_RETURN_IF_ERROR(append(out, v.str(), s.line, s.col));
        return Flow::kNormal;
      }
      case Stmt::Kind::kMacro:
        scope->vars[s.text] = make_macro(s, scope, s.text);
        return Flow::kNormal;
      case Stmt::Kind::kCallBlock: {
        const Expr& call = *s.expr;
        EM_ASSIGN_OR_RETURN(Value callee, eval(*call.args[0], scope));
        EM_ASSIGN_OR_RETURN(CallArgs args, eval_args(call, scope));
        args.kw.emplace_back("caller", make_macro(s, scope, "caller"));
        EM_ASSIGN_OR_RETURN(Value r, invoke(callee, args, call));
        EM_RETURN_IF_ERROR(append(out, r.str(), s.line, s.col));
        return Flow::kNormal;
      }
      case Stmt::Kind::kBreak:
        return Flow::kBreak;
      case Stmt::Kind::kContinue:
        return Flow::kContinue;
      case Stmt::Kind::kGeneration:
        return exec_body(s.bodies[0], scope, out);
      case Stmt::Kind::kWith: {
        ScopePtr inner = child_of(scope);
        for (const auto& p : s.params) {
          EM_ASSIGN_OR_RETURN(inner->vars[p.name], eval(*p.default_value, scope));
        }
        return exec_body(s.bodies[0], inner, out);
      }
    }
    return Flow::kNormal;
  }

  Status bind_target(const Stmt& s, const AssignTarget& t, const Value& v, Scope& scope) {
    if (t.names.size() == 1) {
      scope.vars[t.names[0]] = v;
      return Status::Ok();
    }
    auto items = iterate(v);
    if (!items.ok()) return locate(items.status(), s.line, s.col, "unpacking");
    if (items->size() != t.names.size())
      return locate(Status::InvalidArgument(items->size() > t.names.size() ? "too many values to unpack"
                                                                           : "not enough values to unpack"),
                    s.line, s.col, "unpacking");
    for (size_t i = 0; i < t.names.size(); ++i) scope.vars[t.names[i]] = (*items)[i];
    return Status::Ok();
  }

  Status assign(const Stmt& s, const AssignTarget& t, Value v, const ScopePtr& scope) {
    if (t.attr.empty()) return bind_target(s, t, v, *scope);
    const Value* ns = scope->lookup(t.names[0]);
    if (!ns || !ns->is_dict() || !ns->as_dict().is_namespace)
      return locate(Status::InvalidArgument("cannot assign attribute on non-namespace object"), s.line, s.col,
                    "set " + t.names[0] + "." + t.attr);
    ns->mutable_dict().set(Value(t.attr), std::move(v));
    return Status::Ok();
  }

  Status exec_for(const Stmt& s, const ScopePtr& scope, std::string& out) {
    EM_ASSIGN_OR_RETURN(Value seq, eval(*s.expr, scope));
    auto all = iterate(seq);
    if (!all.ok()) return locate(all.status(), s.expr->line, s.expr->col, "for loop");
    std::vector<Value> items;
    if (s.cond) {
      for (auto& it : *all) {
        EM_RETURN_IF_ERROR(tick(s.line, s.col));
        ScopePtr probe = child_of(scope);
        EM_RETURN_IF_ERROR(bind_target(s, s.target, it, *probe));
        EM_ASSIGN_OR_RETURN(Value keep, eval(*s.cond, probe));
        if (keep.truthy()) items.push_back(std::move(it));
      }
    } else {
      items = std::move(*all);
    }
    if (items.empty()) return exec_body(s.else_body, child_of(scope), out).status();
    const int64_t n = static_cast<int64_t>(items.size());
    // loop.changed(*values): true when the values differ from those of its previous call.
    auto last_changed = std::make_shared<std::optional<Value>>();
    Value changed = Value::callable("loop.changed", [last_changed](const CallArgs& a) -> Result<Value> {
      Value now = Value::list(a.pos, true);
      if (*last_changed && values_equal(**last_changed, now)) return Value(false);
      *last_changed = now;
      return Value(true);
    });
    for (int64_t i = 0; i < n; ++i) {
      EM_RETURN_IF_ERROR(tick(s.line, s.col));  // an empty body still costs a step per iteration
      ScopePtr body = child_of(scope);
      EM_RETURN_IF_ERROR(bind_target(s, s.target, items[static_cast<size_t>(i)], *body));
      std::vector<std::pair<Value, Value>> loop = {
          {Value("index"), Value(i + 1)},
          {Value("index0"), Value(i)},
          {Value("revindex"), Value(n - i)},
          {Value("revindex0"), Value(n - i - 1)},
          {Value("first"), Value(i == 0)},
          {Value("last"), Value(i == n - 1)},
          {Value("length"), Value(n)},
          {Value("depth"), Value(int64_t{1})},
          {Value("depth0"), Value(int64_t{0})},
          {Value("previtem"),
           i > 0 ? items[static_cast<size_t>(i - 1)] : Value::undefined("there is no previous item")},
          {Value("nextitem"),
           i + 1 < n ? items[static_cast<size_t>(i + 1)] : Value::undefined("there is no next item")},
          {Value("changed"), changed},
          {Value("cycle"), Value::callable("loop.cycle", [i](const CallArgs& a) -> Result<Value> {
             if (a.pos.empty()) return Status::InvalidArgument("no items for cycling given");
             return a.pos[static_cast<size_t>(i) % a.pos.size()];
           })}};
      body->vars["loop"] = Value::dict(std::move(loop));
      EM_ASSIGN_OR_RETURN(Flow f, exec_body(s.bodies[0], body, out));
      if (f == Flow::kBreak) break;
    }
    return Status::Ok();
  }

  // A macro (or the `caller` of a call block) as a callable. It refers to its defining scope
  // weakly: the scope owns the macro, so a strong reference would be a cycle.
  Value make_macro(const Stmt& s, const ScopePtr& scope, const std::string& name) {
    std::weak_ptr<Scope> weak = scope;
    const Stmt* def = &s;
    const bool has_varargs = body_mentions(s.bodies[0], "varargs");
    const bool has_kwargs = body_mentions(s.bodies[0], "kwargs");
    return Value::callable(name, [this, def, weak, name, has_varargs, has_kwargs](const CallArgs& a) -> Result<Value> {
      ScopePtr parent = weak.lock();
      if (!parent) return Status::InvalidArgument("macro '" + name + "' called after its scope ended");
      if (macro_depth_ >= lim_.max_macro_depth)
        return Status::OutOfRange("macro calls nested deeper than " + std::to_string(lim_.max_macro_depth));
      DepthGuard g(macro_depth_);
      ScopePtr local = child_of(parent);
      if (a.pos.size() > def->params.size() && !has_varargs)
        return Status::InvalidArgument("macro '" + name + "' takes not more than " +
                                       std::to_string(def->params.size()) + " argument(s)");
      std::vector<Value> extra_pos;
      for (size_t i = def->params.size(); i < a.pos.size(); ++i) extra_pos.push_back(a.pos[i]);
      Value extra_kw = Value::dict();
      for (const auto& [k, v] : a.kw) {
        bool known = k == "caller";
        for (const auto& p : def->params) known = known || p.name == k;
        if (!known && !has_kwargs)
          return Status::InvalidArgument("macro '" + name + "' takes no keyword argument '" + k + "'");
        if (!known) extra_kw.mutable_dict().set(Value(k), v);
        if (k == "caller") local->vars["caller"] = v;
      }
      if (has_varargs) local->vars["varargs"] = Value::list(std::move(extra_pos), true);
      if (has_kwargs) local->vars["kwargs"] = extra_kw;
      for (size_t i = 0; i < def->params.size(); ++i) {
        const MacroParam& p = def->params[i];
        if (const Value* v = a.get(i, p.name)) {
          local->vars[p.name] = *v;
        } else if (p.default_value) {
          EM_ASSIGN_OR_RETURN(local->vars[p.name], eval(*p.default_value, local));
        } else {
          local->vars[p.name] = Value::undefined("parameter '" + p.name + "' was not provided");
        }
      }
      std::string out;
      EM_RETURN_IF_ERROR(exec_body(def->bodies[0], local, out).status());
      return Value(std::move(out));
    });
  }

  // ---- expressions ----
  Result<CallArgs> eval_args(const Expr& e, const ScopePtr& scope) {
    CallArgs a;
    for (size_t i = 1; i < e.args.size(); ++i) {
      EM_ASSIGN_OR_RETURN(Value v, eval(*e.args[i], scope));
      a.pos.push_back(std::move(v));
    }
    for (const auto& [k, x] : e.kwargs) {
      EM_ASSIGN_OR_RETURN(Value v, eval(*x, scope));
      a.kw.emplace_back(k, std::move(v));
    }
    return a;
  }

  Result<Value> invoke(const Value& callee, const CallArgs& args, const Expr& at) {
    if (callee.is_undefined())
      return locate(
          Status::InvalidArgument(callee.undefined_hint().empty() ? "value is undefined" : callee.undefined_hint()),
          at.line, at.col, "call");
    if (!callee.is_callable())
      return locate(Status::InvalidArgument("'" + callee.type_name() + "' object is not callable"), at.line, at.col,
                    "call");
    auto r = callee.as_callable().fn(args);
    if (!r.ok()) return locate(r.status(), at.line, at.col, "call to '" + callee.as_callable().name + "'");
    return r;
  }

  // `subject | f(args)`. In a block filter chain ({% filter %}, {% set x | f %}) the innermost
  // subject is null and `block_subject` (the rendered body) stands for it.
  Result<Value> eval_filter(const Expr& e, const Value* block_subject, const ScopePtr& scope) {
    Value v;
    if (!e.args[0]) {
      v = block_subject ? *block_subject : Value();
    } else if (block_subject) {
      EM_ASSIGN_OR_RETURN(v, eval_filter(*e.args[0], block_subject, scope));
    } else {
      EM_ASSIGN_OR_RETURN(v, eval(*e.args[0], scope));
    }
    EM_ASSIGN_OR_RETURN(CallArgs a, eval_args(e, scope));
    auto r = apply_filter(e.name, v, a, blim_);
    if (!r.ok()) return locate(r.status(), e.line, e.col, describe(e));
    return r;
  }

  Result<Value> eval(const Expr& e, const ScopePtr& scope) {
    DepthGuard g(depth_);
    if (depth_ > lim_.max_eval_depth)
      return locate(Status::OutOfRange("evaluation nested too deeply"), e.line, e.col, "limit");
    EM_RETURN_IF_ERROR(tick(e.line, e.col));
    auto r = eval_node(e, scope);
    if (!r.ok()) return locate(r.status(), e.line, e.col, describe(e));
    // Charge the work of building big values (range(), filters, string ops) to the step budget,
    // so no template can loop over large materialised values for free.
    if (r->is_list()) {
      steps_ += r->as_list().items.size() / 4;
    } else if (r->is_string()) {
      steps_ += r->as_string().size() / 256;
    }
    EM_RETURN_IF_ERROR(tick(e.line, e.col));
    return r;
  }

  Result<Value> eval_node(const Expr& e, const ScopePtr& scope) {
    using K = Expr::Kind;
    switch (e.kind) {
      case K::kLiteral:
        return e.literal;
      case K::kName: {
        const Value* v = scope->lookup(e.name);
        return v ? *v : Value::undefined("'" + e.name + "' is undefined");
      }
      case K::kList:
      case K::kTuple: {
        std::vector<Value> items;
        for (const auto& x : e.args) {
          EM_ASSIGN_OR_RETURN(Value v, eval(*x, scope));
          items.push_back(std::move(v));
        }
        return Value::list(std::move(items), e.kind == K::kTuple);
      }
      case K::kDict: {
        Value d = Value::dict();
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          EM_ASSIGN_OR_RETURN(Value k, eval(*e.args[i], scope));
          EM_ASSIGN_OR_RETURN(Value v, eval(*e.args[i + 1], scope));
          d.mutable_dict().set(std::move(k), std::move(v));
        }
        return d;
      }
      case K::kGetAttr: {
        EM_ASSIGN_OR_RETURN(Value o, eval(*e.args[0], scope));
        return get_attr(o, e.name, blim_);
      }
      case K::kGetItem: {
        EM_ASSIGN_OR_RETURN(Value o, eval(*e.args[0], scope));
        EM_ASSIGN_OR_RETURN(Value k, eval(*e.args[1], scope));
        return get_item(o, k, blim_);
      }
      case K::kSlice: {
        EM_ASSIGN_OR_RETURN(Value o, eval(*e.args[0], scope));
        Value parts[3];
        for (int i = 0; i < 3; ++i)
          if (e.args[static_cast<size_t>(i) + 1]) {
            EM_ASSIGN_OR_RETURN(parts[i], eval(*e.args[static_cast<size_t>(i) + 1], scope));
          }
        return get_slice(o, parts[0], parts[1], parts[2]);
      }
      case K::kCall: {
        EM_ASSIGN_OR_RETURN(Value callee, eval(*e.args[0], scope));
        EM_ASSIGN_OR_RETURN(CallArgs a, eval_args(e, scope));
        return invoke(callee, a, e);
      }
      case K::kFilter:
        return eval_filter(e, nullptr, scope);
      case K::kTest: {
        EM_ASSIGN_OR_RETURN(Value v, eval(*e.args[0], scope));
        EM_ASSIGN_OR_RETURN(CallArgs a, eval_args(e, scope));
        EM_ASSIGN_OR_RETURN(bool r, apply_test(e.name, v, a));
        return Value(e.negated ? !r : r);
      }
      case K::kNeg:
      case K::kPos: {
        EM_ASSIGN_OR_RETURN(Value v, eval(*e.args[0], scope));
        if (e.kind == K::kNeg) return negate(v);
        if (!v.is_number()) return Status::InvalidArgument("bad operand type for unary +: '" + v.type_name() + "'");
        return v;
      }
      case K::kNot: {
        EM_ASSIGN_OR_RETURN(Value v, eval(*e.args[0], scope));
        return Value(!v.truthy());
      }
      case K::kBinary: {
        EM_ASSIGN_OR_RETURN(Value a, eval(*e.args[0], scope));
        EM_ASSIGN_OR_RETURN(Value b, eval(*e.args[1], scope));
        return binary_op(e.name, a, b, blim_);
      }
      case K::kCompare:
        return eval_compare(e, scope);
      case K::kAnd:
      case K::kOr: {
        EM_ASSIGN_OR_RETURN(Value a, eval(*e.args[0], scope));
        if (a.truthy() == (e.kind == K::kOr)) return a;
        return eval(*e.args[1], scope);
      }
      case K::kCondExpr: {
        EM_ASSIGN_OR_RETURN(Value c, eval(*e.args[1], scope));
        if (c.truthy()) return eval(*e.args[0], scope);
        if (e.args[2]) return eval(*e.args[2], scope);
        return Value::undefined("the inline if-expression evaluated to false and no else section was defined");
      }
    }
    return Status::Internal("unknown expression kind");
  }

  Result<Value> eval_compare(const Expr& e, const ScopePtr& scope) {
    EM_ASSIGN_OR_RETURN(Value left, eval(*e.args[0], scope));
    for (size_t i = 0; i < e.ops.size(); ++i) {
      EM_ASSIGN_OR_RETURN(Value right, eval(*e.args[i + 1], scope));
      const std::string& op = e.ops[i];
      bool r;
      if (op == "==" || op == "!=") {
        r = values_equal(left, right) == (op == "==");
      } else if (op == "in" || op == "notin") {
        EM_ASSIGN_OR_RETURN(bool c, contains(right, left));
        r = c == (op == "in");
      } else {
        for (const Value* v : {&left, &right})
          if (v->is_undefined())
            return Status::InvalidArgument(v->undefined_hint().empty() ? "value is undefined" : v->undefined_hint());
        EM_ASSIGN_OR_RETURN(int c, values_compare(left, right));
        r = op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0;
      }
      if (!r) return Value(false);
      left = std::move(right);
    }
    return Value(true);
  }

  RenderLimits lim_;
  BuiltinLimits blim_;
  uint64_t steps_ = 0;
  int depth_ = 0;
  int macro_depth_ = 0;
};

}  // namespace

Result<std::string> render_body(const Body& body, ScopePtr globals, const RenderLimits& limits) {
  Interpreter in(limits);
  return in.run(body, std::move(globals));
}

}  // namespace expertmesh::chat
