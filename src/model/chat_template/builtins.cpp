// Lookup, operators, iteration and tests of the chat-template interpreter (Python semantics).
#include "model/chat_template/builtins.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>

namespace expertmesh::chat {

namespace {

std::string object_name(const Value& v) {
  if (v.is_none()) return "None";
  return v.type_name() + " object";
}

Status undefined_error(const Value& v) {
  std::string h = v.undefined_hint();
  return Status::InvalidArgument(h.empty() ? "value is undefined" : h);
}

Status type_error(const std::string& op, const Value& a, const Value& b) {
  return Status::InvalidArgument("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" +
                                 b.type_name() + "'");
}

// Code points of a string as separate UTF-8 strings (fast path for ASCII).
std::vector<std::string> code_points(const std::string& s) {
  std::vector<std::string> out;
  if (is_ascii(s)) {
    out.reserve(s.size());
    for (char c : s) out.emplace_back(1, c);
    return out;
  }
  for (char32_t cp : utf8_decode(s)) out.push_back(utf8_encode(std::u32string(1, cp)));
  return out;
}

Result<Value> repeat(const Value& seq, int64_t n, const BuiltinLimits& lim) {
  if (n <= 0 && seq.is_string()) return seq.is_markup() ? Value::markup("") : Value(std::string());
  if (n <= 0) return Value::list({}, seq.as_list().is_tuple);
  if (seq.is_string()) {
    const std::string& s = seq.as_string();
    if (!s.empty() && static_cast<uint64_t>(n) > lim.max_size / s.size())
      return Status::OutOfRange("string repetition exceeds the size limit");
    std::string out;
    out.reserve(s.size() * static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) out += s;
    return seq.is_markup() ? Value::markup(std::move(out)) : Value(std::move(out));
  }
  const auto& items = seq.as_list().items;
  if (!items.empty() && static_cast<uint64_t>(n) > lim.max_size / items.size())
    return Status::OutOfRange("list repetition exceeds the size limit");
  std::vector<Value> out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), items.begin(), items.end());
  return Value::list(std::move(out), seq.as_list().is_tuple);
}

double py_fmod(double a, double b) {
  double r = std::fmod(a, b);
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

}  // namespace

Result<Value> get_attr(const Value& obj, const std::string& name, const BuiltinLimits& lim) {
  if (obj.is_undefined()) return undefined_error(obj);
  if (obj.is_dict() && obj.as_dict().is_namespace) {
    if (const Value* v = obj.as_dict().find_key(name)) return *v;
    return Value::undefined("'Namespace object' has no attribute '" + name + "'");
  }
  if (auto m = bound_method(obj, name, lim)) return *m;
  // The mutating methods of list and dict exist in Python but the immutable sandbox refuses them
  // (before any item of that name is considered), as jinja2 does.
  static const char* const kListMutators[] = {"append", "pop",     "extend", "insert",
                                              "sort",   "reverse", "remove", "clear"};
  static const char* const kDictMutators[] = {"update", "pop", "setdefault", "popitem", "clear"};
  bool unsafe = false;
  if (obj.is_plain_list())
    for (const char* m : kListMutators) unsafe = unsafe || name == m;
  if (obj.is_dict())
    for (const char* m : kDictMutators) unsafe = unsafe || name == m;
  if (unsafe)
    return Value::undefined("access to attribute '" + name + "' of '" + obj.type_name() +
                            "' object is unsafe (templates may not modify lists or dicts)");
  if (obj.is_dict()) {
    if (const Value* v = obj.as_dict().find_key(name)) return *v;
  }
  return Value::undefined("'" + object_name(obj) + "' has no attribute '" + name + "'");
}

Result<Value> get_item(const Value& obj, const Value& key, const BuiltinLimits& lim) {
  if (obj.is_undefined()) return undefined_error(obj);
  if (obj.is_dict()) {
    if (const Value* v = obj.as_dict().find(key)) return *v;
  } else if (obj.is_list() && !obj.as_list().plain() && obj.as_list().seq != SeqKind::kRange) {
    return Value::undefined("'" + obj.type_name() + "' object is not subscriptable");
  } else if ((obj.is_list() || obj.is_string()) && key.is_number() && !key.is_float()) {
    int64_t i = key.as_int();
    if (obj.is_list()) {
      int64_t n = static_cast<int64_t>(obj.as_list().items.size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) return obj.as_list().items[static_cast<size_t>(i)];
    } else {
      std::vector<std::string> cps = code_points(obj.as_string());
      int64_t n = static_cast<int64_t>(cps.size());
      if (i < 0) i += n;
      if (i >= 0 && i < n)
        return obj.is_markup() ? Value::markup(cps[static_cast<size_t>(i)]) : Value(cps[static_cast<size_t>(i)]);
    }
    return Value::undefined("'" + object_name(obj) + "' has no element " + key.repr());
  }
  if (key.is_string()) {
    if (auto m = bound_method(obj, key.as_string(), lim)) return *m;
    return Value::undefined("'" + object_name(obj) + "' has no attribute '" + key.as_string() + "'");
  }
  return Value::undefined("'" + object_name(obj) + "' has no element " + key.repr());
}

Result<Value> get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  if (obj.is_undefined()) return undefined_error(obj);
  if (!obj.is_string() && !(obj.is_list() && (obj.as_list().plain() || obj.as_list().seq == SeqKind::kRange)))
    return Value::undefined("'" + obj.type_name() + "' object is not subscriptable");
  auto idx = [](const Value& v, const char* what) -> Result<std::optional<int64_t>> {
    if (v.is_undefined() || v.is_none()) return std::optional<int64_t>();
    if (!v.is_number() || v.is_float())
      return Status::InvalidArgument(std::string("slice ") + what + " must be an integer or None");
    return std::optional<int64_t>(v.as_int());
  };
  EM_ASSIGN_OR_RETURN(auto b, idx(start, "start"));
  EM_ASSIGN_OR_RETURN(auto e, idx(stop, "stop"));
  EM_ASSIGN_OR_RETURN(auto s, idx(step, "step"));
  int64_t st = s.value_or(1);
  if (st == 0) return Status::InvalidArgument("slice step cannot be zero");
  std::vector<std::string> cps;
  if (obj.is_string()) cps = code_points(obj.as_string());
  int64_t n = obj.is_string() ? static_cast<int64_t>(cps.size()) : static_cast<int64_t>(obj.as_list().items.size());
  // CPython's PySlice_AdjustIndices.
  auto adjust = [&](std::optional<int64_t> v, int64_t dflt) {
    if (!v) return dflt;
    int64_t x = *v;
    if (x < 0) {
      x += n;
      if (x < 0) x = st < 0 ? -1 : 0;
    } else if (x >= n) {
      x = st < 0 ? n - 1 : n;
    }
    return x;
  };
  int64_t lo = adjust(b, st < 0 ? n - 1 : 0);
  int64_t hi = adjust(e, st < 0 ? -1 : n);
  std::vector<Value> items;
  std::string str;
  for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) {
    if (obj.is_string()) {
      str += cps[static_cast<size_t>(i)];
    } else {
      items.push_back(obj.as_list().items[static_cast<size_t>(i)]);
    }
  }
  if (obj.is_string()) return obj.is_markup() ? Value::markup(std::move(str)) : Value(std::move(str));
  return Value::list(std::move(items), obj.as_list().is_tuple);
}

Result<Value> negate(const Value& v) {
  if (v.is_undefined()) return undefined_error(v);
  if (v.is_float()) return Value(-v.as_float());
  if (v.is_number()) {
    if (v.as_int() == std::numeric_limits<int64_t>::min()) return Status::OutOfRange("integer overflow");
    return Value(-v.as_int());
  }
  return Status::InvalidArgument("bad operand type for unary -: '" + v.type_name() + "'");
}

Result<Value> binary_op(const std::string& op, const Value& a, const Value& b, const BuiltinLimits& lim) {
  if (op == "~") {
    std::string s = a.str() + b.str();
    if (s.size() > lim.max_size) return Status::OutOfRange("string exceeds the size limit");
    return Value(std::move(s));
  }
  if (a.is_undefined()) return undefined_error(a);
  if (b.is_undefined()) return undefined_error(b);
  if (op == "%" && a.is_string()) {
    std::vector<Value> args = b.is_list() && b.as_list().is_tuple ? b.as_list().items : std::vector<Value>{b};
    if (!a.is_markup()) {
      EM_ASSIGN_OR_RETURN(std::string s, percent_format(a.as_string(), args));
      return Value(std::move(s));
    }
    // Markup % args escapes every argument (dict values too) before formatting.
    for (auto& v : args) {
      if (v.is_dict()) {
        Value d = Value::dict();
        for (const auto& [k, x] : v.as_dict().items) d.mutable_dict().set(k, markup_escape(x));
        v = d;
      } else if (!v.is_number() && !v.is_none()) {
        v = markup_escape(v);
      }
    }
    EM_ASSIGN_OR_RETURN(std::string s, percent_format(a.as_string(), args));
    return Value::markup(std::move(s));
  }
  if (a.is_number() && b.is_number()) {
    bool ints = !a.is_float() && !b.is_float();
    int64_t x = a.as_int(), y = b.as_int(), r = 0;
    double fx = a.as_float(), fy = b.as_float();
    if (op == "+") {
      if (!ints) return Value(fx + fy);
      if (__builtin_add_overflow(x, y, &r)) return Status::OutOfRange("integer overflow");
      return Value(r);
    }
    if (op == "-") {
      if (!ints) return Value(fx - fy);
      if (__builtin_sub_overflow(x, y, &r)) return Status::OutOfRange("integer overflow");
      return Value(r);
    }
    if (op == "*") {
      if (!ints) return Value(fx * fy);
      if (__builtin_mul_overflow(x, y, &r)) return Status::OutOfRange("integer overflow");
      return Value(r);
    }
    if (op == "/") {
      if (fy == 0) return Status::InvalidArgument("division by zero");
      return Value(fx / fy);
    }
    if (op == "//" || op == "%") {
      if ((ints && y == 0) || (!ints && fy == 0)) return Status::InvalidArgument("integer division or modulo by zero");
      if (ints) {
        if (x == std::numeric_limits<int64_t>::min() && y == -1) return Status::OutOfRange("integer overflow");
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          --q;
          m += y;
        }
        return op == "//" ? Value(q) : Value(m);
      }
      double m = py_fmod(fx, fy);
      return op == "//" ? Value(std::floor((fx - m) / fy + 0.5)) : Value(m);
    }
    if (op == "**") {
      if (ints && y >= 0) {
        int64_t acc = 1;
        for (int64_t i = 0; i < y; ++i) {
          if (__builtin_mul_overflow(acc, x, &acc)) return Status::OutOfRange("integer overflow");
          if (acc == 0 || acc == 1) break;
        }
        if (acc == 1 && x == -1 && (y % 2)) acc = -1;
        return Value(acc);
      }
      return Value(std::pow(fx, fy));
    }
  }
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      if (a.as_string().size() + b.as_string().size() > lim.max_size)
        return Status::OutOfRange("string exceeds the size limit");
      // A Markup operand escapes the plain str on the other side (Markup.__add__/__radd__).
      if (a.is_markup() || b.is_markup())
        return Value::markup(markup_escape(a).as_string() + markup_escape(b).as_string());
      return Value(a.as_string() + b.as_string());
    }
    if (a.is_plain_list() && b.is_plain_list() && a.as_list().is_tuple == b.as_list().is_tuple) {
      if (a.as_list().items.size() + b.as_list().items.size() > lim.max_size)
        return Status::OutOfRange("list exceeds the size limit");
      std::vector<Value> items = a.as_list().items;
      items.insert(items.end(), b.as_list().items.begin(), b.as_list().items.end());
      return Value::list(std::move(items), a.as_list().is_tuple);
    }
    if (a.is_string() || b.is_string())
      return Status::InvalidArgument("can only concatenate str (not \"" + (a.is_string() ? b : a).type_name() +
                                     "\") to str");
  }
  if (op == "*") {
    if ((a.is_string() || a.is_plain_list()) && b.is_number() && !b.is_float()) return repeat(a, b.as_int(), lim);
    if ((b.is_string() || b.is_plain_list()) && a.is_number() && !a.is_float()) return repeat(b, a.as_int(), lim);
  }
  return type_error(op, a, b);
}

Result<bool> contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string())
        return Status::InvalidArgument("'in <string>' requires string as left operand, not " + item.type_name());
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Value::Kind::kList: {
      auto& items = container.mutable_list().items;
      for (size_t i = 0; i < items.size(); ++i) {
        if (!values_equal(items[i], item)) continue;
        // A generator is consumed up to and including the match.
        if (container.as_list().single_pass())
          items.erase(items.begin(), items.begin() + static_cast<ptrdiff_t>(i) + 1);
        return true;
      }
      if (container.as_list().single_pass()) items.clear();
      return false;
    }
    case Value::Kind::kDict:
      return container.as_dict().find(item) != nullptr;
    default:
      return Status::InvalidArgument("argument of type '" + container.type_name() + "' is not iterable");
  }
}

Result<std::vector<Value>> iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return std::vector<Value>{};
    case Value::Kind::kList:
      // A generator or iterator yields its items once.
      if (v.as_list().single_pass()) return std::exchange(v.mutable_list().items, {});
      return v.as_list().items;
    case Value::Kind::kDict: {
      std::vector<Value> keys;
      for (const auto& kv : v.as_dict().items) keys.push_back(kv.first);
      return keys;
    }
    case Value::Kind::kString: {
      std::vector<Value> out;
      for (auto& cp : code_points(v.as_string())) out.emplace_back(std::move(cp));
      return out;
    }
    default:
      return Status::InvalidArgument("'" + v.type_name() + "' object is not iterable");
  }
}

Result<int64_t> length_of(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return int64_t{0};
    case Value::Kind::kString:
      return is_ascii(v.as_string()) ? static_cast<int64_t>(v.as_string().size())
                                     : static_cast<int64_t>(utf8_decode(v.as_string()).size());
    case Value::Kind::kList:
      if (v.as_list().single_pass()) break;
      return static_cast<int64_t>(v.as_list().items.size());
    case Value::Kind::kDict:
      return static_cast<int64_t>(v.as_dict().items.size());
    default:
      break;
  }
  return Status::InvalidArgument("object of type '" + v.type_name() + "' has no len()");
}

// ---- tests ------------------------------------------------------------------------------------

namespace {

const char* const kTests[] = {
    "defined", "undefined", "none",     "boolean",     "true",   "false", "integer", "float",       "number", "string",
    "mapping", "iterable",  "sequence", "callable",    "sameas", "in",    "eq",      "equalto",     "==",     "ne",
    "!=",      "lt",        "lessthan", "<",           "le",     "<=",    "gt",      "greaterthan", ">",      "ge",
    ">=",      "odd",       "even",     "divisibleby", "lower",  "upper", "escaped", "filter",      "test"};

}  // namespace

bool has_test(const std::string& name) {
  for (const char* t : kTests)
    if (name == t) return true;
  return false;
}

Result<bool> apply_test(const std::string& name, const Value& v, const CallArgs& args) {
  using K = Value::Kind;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict() && !v.as_dict().is_namespace;
  // jinja2's Undefined defines __iter__, __len__, __getitem__ and __call__ (all but __iter__
  // and __len__ raise), so these duck-typing tests say yes for it.
  if (name == "iterable") return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
  if (name == "sequence")
    return v.is_undefined() || v.is_string() || v.is_plain_list() || v.is_dict() ||
           (v.is_list() && v.as_list().seq == SeqKind::kRange);
  if (name == "callable") return v.is_undefined() || v.is_callable();
  if (name == "escaped") return v.is_markup();
  // jinja2 applies these to str(value).
  if (name == "lower") return py_is_lower(v.str());
  if (name == "upper") return py_is_upper(v.str());
  // `"upper" is filter`: whether a filter/test of that name exists.
  if (name == "filter") return v.is_string() && has_filter(v.as_string());
  if (name == "test") return v.is_string() && has_test(v.as_string());
  const Value* arg = args.get(0, "other");
  if (name == "odd" || name == "even") {
    if (!v.is_number() || v.is_float()) return Status::InvalidArgument("test '" + name + "' needs an integer");
    int64_t r = v.as_int() % 2;
    return name == "odd" ? r != 0 : r == 0;
  }
  if (!arg) return Status::InvalidArgument("test '" + name + "' needs an argument");
  if (name == "sameas") {
    if (v.kind() != arg->kind()) return false;
    if (v.identity() || arg->identity()) return v.identity() == arg->identity();
    if (v.kind() == K::kString || v.kind() == K::kFloat) return false;  // distinct objects in general
    return values_equal(v, *arg);
  }
  if (name == "in") return contains(*arg, v);
  if (name == "eq" || name == "equalto" || name == "==") return values_equal(v, *arg);
  if (name == "ne" || name == "!=") return !values_equal(v, *arg);
  if (name == "divisibleby") {
    if (!v.is_number() || !arg->is_number()) return Status::InvalidArgument("test 'divisibleby' needs numbers");
    if (arg->as_float() == 0) return Status::InvalidArgument("integer division or modulo by zero");
    if (v.is_float() || arg->is_float()) return std::fmod(v.as_float(), arg->as_float()) == 0;
    return v.as_int() % arg->as_int() == 0;
  }
  EM_ASSIGN_OR_RETURN(int c, values_compare(v, *arg));
  if (name == "lt" || name == "lessthan" || name == "<") return c < 0;
  if (name == "le" || name == "<=") return c <= 0;
  if (name == "gt" || name == "greaterthan" || name == ">") return c > 0;
  if (name == "ge" || name == ">=") return c >= 0;
  return Status::Unsupported("no test named '" + name + "'");
}

// ---- printf-style formatting ------------------------------------------------------------------

Result<std::string> percent_format(const std::string& fmt, const std::vector<Value>& args) {
  std::string out;
  size_t ai = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out += fmt[i];
      continue;
    }
    size_t j = i + 1;
    // "%(key)s" takes its argument from a single mapping argument.
    const Value* keyed = nullptr;
    if (j < fmt.size() && fmt[j] == '(') {
      size_t close = fmt.find(')', j);
      if (close == std::string::npos) return Status::InvalidArgument("incomplete format key");
      if (args.size() != 1 || !args[0].is_dict()) return Status::InvalidArgument("format requires a mapping");
      keyed = args[0].as_dict().find_key(fmt.substr(j + 1, close - j - 1));
      if (!keyed) return Status::InvalidArgument("KeyError: '" + fmt.substr(j + 1, close - j - 1) + "'");
      j = close + 1;
    }
    std::string spec = "%";
    while (j < fmt.size() && std::string_view("-+ #0").find(fmt[j]) != std::string_view::npos) spec += fmt[j++];
    while (j < fmt.size() && fmt[j] >= '0' && fmt[j] <= '9') spec += fmt[j++];
    if (j < fmt.size() && fmt[j] == '.') {
      spec += fmt[j++];
      while (j < fmt.size() && fmt[j] >= '0' && fmt[j] <= '9') spec += fmt[j++];
    }
    if (j >= fmt.size()) return Status::InvalidArgument("incomplete format");
    char conv = fmt[j];
    i = j;
    if (conv == '%') {
      out += '%';
      continue;
    }
    if (!keyed && ai >= args.size()) return Status::InvalidArgument("not enough arguments for format string");
    const Value& a = keyed ? *keyed : args[ai++];
    char buf[512];
    if (conv == 's' || conv == 'r') {
      std::string s = conv == 's' ? a.str() : a.repr();
      if (spec.size() > 1) {
        if (spec.size() > 8) return Status::InvalidArgument("format width too large");
        std::snprintf(buf, sizeof(buf), (spec + "s").c_str(), s.c_str());
        out += (s.size() >= sizeof(buf) - 1) ? s : std::string(buf);
      } else {
        out += s;
      }
    } else if (std::string_view("dixXoc").find(conv) != std::string_view::npos) {
      if (!a.is_number()) return Status::InvalidArgument(std::string("%") + conv + " format: a number is required");
      if (spec.size() > 8) return Status::InvalidArgument("format width too large");
      if (conv == 'c') {
        out += utf8_encode(std::u32string(1, static_cast<char32_t>(a.as_int())));
        continue;
      }
      std::string f = spec + "ll" + (conv == 'i' ? 'd' : conv);
      std::snprintf(buf, sizeof(buf), f.c_str(),
                    static_cast<long long>(a.is_float() ? std::trunc(a.as_float()) : a.as_int()));
      out += buf;
    } else if (std::string_view("feEgG").find(conv) != std::string_view::npos) {
      if (!a.is_number()) return Status::InvalidArgument(std::string("%") + conv + " format: a number is required");
      if (spec.size() > 8) return Status::InvalidArgument("format width too large");
      std::snprintf(buf, sizeof(buf), (spec + conv).c_str(), a.as_float());
      out += buf;
    } else {
      return Status::InvalidArgument(std::string("unsupported format character '") + conv + "'");
    }
  }
  if (ai < args.size() && !(args.size() == 1 && args[0].is_dict()))
    return Status::InvalidArgument("not all arguments converted during string formatting");
  return out;
}

}  // namespace expertmesh::chat
