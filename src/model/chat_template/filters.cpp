// jinja2's built-in filters as chat templates use them, plus transformers' `tojson` override
// (json.dumps with ensure_ascii=False and its indent/separators/sort_keys options).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <vector>

#include "model/chat_template/builtins.h"

namespace expertmesh::chat {

namespace {

const char* const kFilters[] = {
    "abs",        "attr",    "batch",   "capitalize", "center",      "count",    "d",          "default", "dictsort",
    "e",          "escape",  "first",   "float",      "forceescape", "format",   "indent",     "int",     "items",
    "join",       "last",    "length",  "list",       "lower",       "map",      "max",        "min",     "reject",
    "rejectattr", "replace", "reverse", "round",      "safe",        "select",   "selectattr", "slice",   "sort",
    "string",     "sum",     "title",   "tojson",     "trim",        "truncate", "unique",     "upper",   "wordcount"};

Status filter_error(const std::string& f, const std::string& msg) { return Status::InvalidArgument(f + ": " + msg); }

// Dotted attribute path of map/selectattr/sort/...: "a.b" looks up a then b (jinja2
// make_attrgetter; integer parts index lists).
Result<Value> attr_path(const Value& v, const std::string& path, const BuiltinLimits& lim) {
  Value cur = v;
  size_t start = 0;
  while (start <= path.size()) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    EM_ASSIGN_OR_RETURN(cur, numeric ? get_item(cur, Value(static_cast<int64_t>(std::stoll(part))), lim)
                                     : get_item(cur, Value(part), lim));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return cur;
}

Value lower_if_string(const Value& v, bool case_sensitive) {
  return (!case_sensitive && v.is_string()) ? Value(py_lower(v.as_string())) : v;
}

bool bool_kw(const CallArgs& a, size_t i, const char* name, bool dflt) {
  const Value* v = a.get(i, name);
  return v ? v->truthy() : dflt;
}

// select/reject/selectattr/rejectattr: keep items whose test (or truthiness) equals `keep`.
Result<Value> select_items(const std::string& f, const Value& seq, const CallArgs& a, bool by_attr, bool keep,
                           const BuiltinLimits& lim) {
  // jinja2 guards with `if value:` (None selects nothing).
  if (!seq.truthy()) return Value::sequence({}, SeqKind::kGenerator);
  EM_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(seq));
  size_t first_test = 0;
  std::string attr;
  if (by_attr) {
    if (a.pos.empty() || !a.pos[0].is_string()) return filter_error(f, "needs an attribute name");
    attr = a.pos[0].as_string();
    first_test = 1;
  }
  std::string test;
  CallArgs targs;
  if (a.pos.size() > first_test) {
    if (!a.pos[first_test].is_string()) return filter_error(f, "test name must be a string");
    test = a.pos[first_test].as_string();
    targs.pos.assign(a.pos.begin() + static_cast<std::ptrdiff_t>(first_test) + 1, a.pos.end());
  }
  std::vector<Value> out;
  for (const auto& it : items) {
    Value subject = it;
    if (by_attr) {
      EM_ASSIGN_OR_RETURN(subject, attr_path(it, attr, lim));
    }
    bool r = subject.truthy();
    if (!test.empty()) {
      EM_ASSIGN_OR_RETURN(r, apply_test(test, subject, targs));
    }
    if (r == keep) out.push_back(it);
  }
  return Value::sequence(std::move(out), SeqKind::kGenerator);
}

Result<Value> map_items(const Value& seq, const CallArgs& a, const BuiltinLimits& lim) {
  if (!seq.truthy()) return Value::sequence({}, SeqKind::kGenerator);  // jinja2 guards with `if value:`
  EM_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(seq));
  std::vector<Value> out;
  if (const Value* attr = a.get(99, "attribute")) {
    const Value* dflt = a.get(99, "default");
    for (const auto& it : items) {
      EM_ASSIGN_OR_RETURN(Value v, attr_path(it, attr->str(), lim));
      out.push_back(v.is_undefined() && dflt ? *dflt : v);
    }
    return Value::sequence(std::move(out), SeqKind::kGenerator);
  }
  if (a.pos.empty() || !a.pos[0].is_string()) return filter_error("map", "needs a filter name or attribute=");
  CallArgs fargs;
  fargs.pos.assign(a.pos.begin() + 1, a.pos.end());
  fargs.kw = a.kw;
  for (const auto& it : items) {
    EM_ASSIGN_OR_RETURN(Value v, apply_filter(a.pos[0].as_string(), it, fargs, lim));
    out.push_back(std::move(v));
  }
  return Value::sequence(std::move(out), SeqKind::kGenerator);
}

Result<Value> sort_items(const Value& seq, const CallArgs& a, const BuiltinLimits& lim) {
  EM_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(seq));
  bool reverse = bool_kw(a, 0, "reverse", false);
  bool cs = bool_kw(a, 1, "case_sensitive", false);
  const Value* attr = a.get(2, "attribute");
  std::vector<std::pair<Value, Value>> keyed;
  for (const auto& it : items) {
    Value k = it;
    if (attr) {
      EM_ASSIGN_OR_RETURN(k, attr_path(it, attr->str(), lim));
    }
    keyed.emplace_back(lower_if_string(k, cs), it);
  }
  Status err;
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    auto c = values_compare(x.first, y.first);
    if (!c.ok()) {
      err = c.status();
      return false;
    }
    return reverse ? *c > 0 : *c < 0;
  });
  EM_RETURN_IF_ERROR(err);
  std::vector<Value> out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return Value::list(std::move(out));
}

Result<Value> min_max(const Value& seq, const CallArgs& a, bool want_max, const BuiltinLimits& lim) {
  EM_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(seq));
  if (items.empty()) return Value::undefined("no min/max of an empty sequence");
  bool cs = bool_kw(a, 0, "case_sensitive", false);
  const Value* attr = a.get(1, "attribute");
  size_t best = 0;
  Value best_key;
  for (size_t i = 0; i < items.size(); ++i) {
    Value k = items[i];
    if (attr) {
      EM_ASSIGN_OR_RETURN(k, attr_path(items[i], attr->str(), lim));
    }
    k = lower_if_string(k, cs);
    if (i == 0) {
      best_key = k;
      continue;
    }
    EM_ASSIGN_OR_RETURN(int c, values_compare(k, best_key));
    if (want_max ? c > 0 : c < 0) {
      best = i;
      best_key = k;
    }
  }
  return items[best];
}

Result<Value> tojson_filter(const Value& v, const CallArgs& a) {
  JsonDumpOptions o;
  o.ensure_ascii = bool_kw(a, 0, "ensure_ascii", false);
  if (const Value* ind = a.get(1, "indent")) {
    if (ind->is_string()) {
      o.indent_str = ind->as_string();
      o.indent = 0;
    } else if (ind->is_number() && !ind->is_float()) {
      o.indent = static_cast<int>(std::clamp<int64_t>(ind->as_int(), 0, 64));
    } else if (!ind->is_none()) {
      return filter_error("tojson", "indent must be an int, a str or None");
    }
  }
  if (const Value* sep = a.get(2, "separators")) {
    if (sep->is_list() && sep->as_list().items.size() == 2 && sep->as_list().items[0].is_string() &&
        sep->as_list().items[1].is_string()) {
      o.item_sep = sep->as_list().items[0].as_string();
      o.key_sep = sep->as_list().items[1].as_string();
      if (o.item_sep.empty() || o.key_sep.empty()) return Status::Unsupported("tojson: empty separators");
    } else if (!sep->is_none()) {
      return filter_error("tojson", "separators must be a pair of strings");
    }
  }
  o.sort_keys = bool_kw(a, 3, "sort_keys", false);
  EM_ASSIGN_OR_RETURN(std::string s, python_json_dumps(v, o));
  return Value(std::move(s));
}

// jinja2 3.1 do_indent: indents every line but the first (and blank lines only with blank=True).
std::string indent_text(const std::string& s, const std::string& ind, bool first, bool blank) {
  std::string text = s + "\n";
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n' || text[i] == '\r' || text[i] == '\v' || text[i] == '\f') {
      lines.push_back(text.substr(start, i - start));
      if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      start = i + 1;
    }
  }
  std::string rv;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i) rv += "\n";
    if (i && (blank || !lines[i].empty())) rv += ind;
    rv += lines[i];
  }
  return first ? ind + rv : rv;
}

// Python int(s, base): optional sign, the 0x/0o/0b prefix when base is 0 or matches, single
// underscores between digits; base 0 also refuses leading zeros of a decimal.
std::optional<int64_t> parse_py_int(std::string s, int64_t base) {
  bool neg = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    neg = s[0] == '-';
    s.erase(0, 1);
  }
  auto prefix_base = [&]() -> int64_t {
    if (s.size() < 2 || s[0] != '0') return 0;
    char p = static_cast<char>(s[1] | 0x20);
    return p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
  };
  int64_t pb = prefix_base();
  if (pb && (base == 0 || base == pb)) {
    s.erase(0, 2);
    if (!s.empty() && s[0] == '_') s.erase(0, 1);
    base = pb;
  } else if (base == 0) {
    if (s.size() > 1 && s[0] == '0' && s.find_first_not_of("0_") != std::string::npos) return std::nullopt;
    base = 10;
  }
  if (base < 2 || base > 36 || s.empty() || s.front() == '_' || s.back() == '_') return std::nullopt;
  int64_t r = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '_') {
      if (s[i + 1] == '_') return std::nullopt;
      continue;
    }
    int d = (c >= '0' && c <= '9') ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'z' ? (c | 0x20) - 'a' + 10 : 99;
    if (d >= base) return std::nullopt;
    if (__builtin_mul_overflow(r, base, &r) || __builtin_add_overflow(r, d, &r)) return std::nullopt;
  }
  return neg ? -r : r;
}

// jinja2 do_int: int(value, base), else int(float(value)), else the default.
Result<Value> to_int(const Value& v, const CallArgs& a) {
  const Value* dflt = a.get(0, "default");
  Value d = dflt ? *dflt : Value(int64_t{0});
  if (v.is_number())
    return v.is_float() ? (std::isfinite(v.as_float()) ? Value(static_cast<int64_t>(v.as_float())) : d)
                        : Value(v.as_int());
  if (!v.is_string()) return d;
  std::string s = py_strip(v.as_string(), nullptr, true, true);
  if (s.empty()) return d;
  const Value* b = a.get(1, "base");
  if (auto i = parse_py_int(s, b && b->is_number() ? b->as_int() : 10)) return Value(*i);
  if (s.find_first_of("xXpP") != std::string::npos) return d;  // strtod reads hex floats, Python does not
  char* end = nullptr;
  double f = std::strtod(s.c_str(), &end);
  if (end && *end == 0 && std::isfinite(f)) return Value(static_cast<int64_t>(f));
  return d;
}

Result<Value> to_float(const Value& v, const CallArgs& a) {
  const Value* dflt = a.get(0, "default");
  Value d = dflt ? *dflt : Value(0.0);
  if (v.is_number()) return Value(v.as_float());
  if (!v.is_string()) return d;
  std::string s = py_strip(v.as_string(), nullptr, true, true);
  char* end = nullptr;
  double f = std::strtod(s.c_str(), &end);
  if (!s.empty() && end && *end == 0) return Value(f);
  return d;
}

Result<Value> round_filter(const Value& v, const CallArgs& a) {
  if (!v.is_number()) return filter_error("round", "needs a number, not " + v.type_name());
  int64_t prec = 0;
  if (const Value* p = a.get(0, "precision"); p && p->is_number()) prec = p->as_int();
  std::string method = "common";
  if (const Value* m = a.get(1, "method")) method = m->str();
  if (method != "common" && method != "ceil" && method != "floor")
    return filter_error("round", "method must be common, ceil or floor");
  double x = v.as_float();
  double scale = std::pow(10.0, static_cast<double>(std::clamp<int64_t>(prec, -300, 300)));
  double r;
  if (method == "ceil") {
    r = std::ceil(x * scale) / scale;
  } else if (method == "floor") {
    r = std::floor(x * scale) / scale;
  } else {
    // Python round() rounds the exact binary value half-to-even at `prec` decimals, which is
    // what printf's correctly rounded %.Nf does (round(2.675, 2) == 2.67).
    if (prec >= 0 && prec <= 300 && std::isfinite(x)) {
      std::vector<char> buf(static_cast<size_t>(prec) + 400);
      std::snprintf(buf.data(), buf.size(), "%.*f", static_cast<int>(prec), x);
      r = std::strtod(buf.data(), nullptr);
    } else {
      r = std::nearbyint(x * scale) / scale;
    }
  }
  if (v.is_int() && method == "common") return Value(v.as_int());
  return Value(r);
}

Result<Value> unique_items(const Value& seq, const CallArgs& a, const BuiltinLimits& lim) {
  EM_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(seq));
  bool cs = bool_kw(a, 0, "case_sensitive", false);
  const Value* attr = a.get(1, "attribute");
  std::vector<Value> seen, out;
  for (const auto& it : items) {
    Value k = it;
    if (attr) {
      EM_ASSIGN_OR_RETURN(k, attr_path(it, attr->str(), lim));
    }
    k = lower_if_string(k, cs);
    bool dup = false;
    for (const auto& s : seen) dup = dup || values_equal(s, k);
    if (dup) continue;
    seen.push_back(k);
    out.push_back(it);
  }
  return Value::sequence(std::move(out), SeqKind::kGenerator);
}

Result<Value> join_filter(const Value& seq, const CallArgs& a, const BuiltinLimits& lim) {
  EM_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(seq));
  const Value* d = a.get(0, "d");
  const Value* attr = a.get(1, "attribute");
  std::string sep = d ? d->str() : "";
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    Value v = items[i];
    if (attr) {
      EM_ASSIGN_OR_RETURN(v, attr_path(v, attr->str(), lim));
    }
    if (i) out += sep;
    out += v.str();
    if (out.size() > lim.max_size) return Status::OutOfRange("string exceeds the size limit");
  }
  return Value(std::move(out));
}

Result<Value> items_filter(const Value& v) {
  if (v.is_undefined()) return Value::sequence({}, SeqKind::kGenerator);
  if (!v.is_dict()) return filter_error("items", "can only get item pairs from a mapping");
  std::vector<Value> out;
  for (const auto& [k, val] : v.as_dict().items) out.push_back(Value::list({k, val}, true));
  return Value::sequence(std::move(out), SeqKind::kGenerator);
}

}  // namespace

bool has_filter(const std::string& name) {
  for (const char* f : kFilters)
    if (name == f) return true;
  return false;
}

Result<Value> apply_filter(const std::string& f, const Value& v, const CallArgs& a, const BuiltinLimits& lim) {
  if (f == "safe") return v.is_markup() ? v : Value::markup(v.str());
  if (f == "default" || f == "d") {
    const Value* dflt = a.get(0, "default_value");
    bool boolean = bool_kw(a, 1, "boolean", false);
    if (v.is_undefined() || (boolean && !v.truthy())) return dflt ? *dflt : Value(std::string());
    return v;
  }
  if (f == "tojson") return tojson_filter(v, a);
  if (f == "length" || f == "count") {
    EM_ASSIGN_OR_RETURN(int64_t n, length_of(v));
    return Value(n);
  }
  if (f == "string") return v.is_markup() ? v : Value(v.str());
  if (f == "list") {
    EM_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    return Value::list(std::move(items));
  }
  if (f == "items") return items_filter(v);
  if (f == "join") return join_filter(v, a, lim);
  if (f == "first" || f == "last") {
    // jinja2's last() needs reversed(): generators and iterators have none.
    if (f == "last" && v.is_list() && v.as_list().single_pass())
      return Status::InvalidArgument("'" + v.type_name() + "' object is not reversible");
    if (f == "first" && v.is_list() && v.as_list().single_pass()) {
      auto& items = v.mutable_list().items;  // next(iter(gen)) consumes one item
      if (items.empty()) return Value::undefined("No first item, sequence was empty.");
      Value front = items.front();
      items.erase(items.begin());
      return front;
    }
    EM_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    if (items.empty()) return Value::undefined("No " + f + " item, sequence was empty.");
    return f == "first" ? items.front() : items.back();
  }
  if (f == "reverse") {
    if (v.is_string()) {
      std::u32string u = utf8_decode(v.as_string());
      std::reverse(u.begin(), u.end());
      return Value(utf8_encode(u));
    }
    // reversed() of a list is an iterator; a generator has no reversed() and becomes a list.
    bool reversible = v.is_list() && !v.as_list().single_pass();
    EM_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    std::reverse(items.begin(), items.end());
    return reversible ? Value::sequence(std::move(items), SeqKind::kReverseIter) : Value::list(std::move(items));
  }
  if (f == "map") return map_items(v, a, lim);
  if (f == "select" || f == "reject") return select_items(f, v, a, false, f == "select", lim);
  if (f == "selectattr" || f == "rejectattr") return select_items(f, v, a, true, f == "selectattr", lim);
  if (f == "unique") return unique_items(v, a, lim);
  if (f == "sort") return sort_items(v, a, lim);
  if (f == "min" || f == "max") return min_max(v, a, f == "max", lim);
  if (f == "sum") {
    EM_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    const Value* attr = a.get(0, "attribute");
    const Value* start = a.get(1, "start");
    Value acc = start ? *start : Value(int64_t{0});
    for (const auto& it : items) {
      Value x = it;
      if (attr) {
        EM_ASSIGN_OR_RETURN(x, attr_path(it, attr->str(), lim));
      }
      EM_ASSIGN_OR_RETURN(acc, binary_op("+", acc, x, lim));
    }
    return acc;
  }
  if (f == "attr") {
    const Value* n = a.get(0, "name");
    if (!n || !n->is_string()) return filter_error(f, "needs an attribute name");
    // Python getattr only: a dict's items are not attributes.
    if (v.is_undefined()) return get_attr(v, n->as_string(), lim);
    if (auto m = bound_method(v, n->as_string(), lim)) return *m;
    return Value::undefined("'" + v.type_name() + " object' has no attribute '" + n->as_string() + "'");
  }
  if (f == "int") return to_int(v, a);
  if (f == "float") return to_float(v, a);
  if (f == "round") return round_filter(v, a);
  if (f == "abs") {
    if (!v.is_number()) return Status::InvalidArgument("bad operand type for abs(): '" + v.type_name() + "'");
    if (v.is_float()) return Value(std::fabs(v.as_float()));
    if (v.as_int() < 0) return negate(v);
    return Value(v.as_int());
  }
  if (f == "format") {
    if (!v.is_string()) return filter_error(f, "the format string must be a str");
    if (v.is_markup()) return binary_op("%", v, Value::list(a.pos, true), lim);
    EM_ASSIGN_OR_RETURN(std::string s, percent_format(v.as_string(), a.pos));
    return Value(std::move(s));
  }
  if (f == "indent") {
    const Value* w = a.get(0, "width");
    std::string ind =
        w ? (w->is_string() ? w->as_string()
                            : std::string(static_cast<size_t>(std::clamp<int64_t>(w->as_int(), 0, 256)), ' '))
          : std::string(4, ' ');
    return Value(indent_text(v.str(), ind, bool_kw(a, 1, "first", false), bool_kw(a, 2, "blank", false)));
  }
  if (f == "dictsort") {
    if (!v.is_dict()) return filter_error(f, "needs a mapping");
    EM_ASSIGN_OR_RETURN(Value pairs, items_filter(v));
    bool cs = bool_kw(a, 0, "case_sensitive", false);
    bool by_value = a.get(1, "by") && a.get(1, "by")->str() == "value";
    CallArgs sa;
    sa.kw = {{"reverse", Value(bool_kw(a, 2, "reverse", false))},
             {"case_sensitive", Value(cs)},
             {"attribute", Value(by_value ? "1" : "0")}};
    return sort_items(pairs, sa, lim);
  }
  if (f == "slice") {
    // jinja2 do_slice: `n` columns, the first len % n of them one item longer.
    EM_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    const Value* n = a.get(0, "slices");
    const Value* fill = a.get(1, "fill_with");
    if (!n || !n->is_number() || n->as_int() <= 0) return filter_error(f, "needs a positive number of slices");
    int64_t slices = std::min<int64_t>(n->as_int(), static_cast<int64_t>(lim.max_size));
    int64_t len = static_cast<int64_t>(items.size()), per = len / slices, extra = len % slices, offset = 0;
    std::vector<Value> out;
    for (int64_t k = 0; k < slices; ++k) {
      int64_t start = offset + k * per;
      if (k < extra) ++offset;
      int64_t stop = offset + (k + 1) * per;
      std::vector<Value> col(items.begin() + start, items.begin() + stop);
      if (fill && !fill->is_none() && k >= extra) col.push_back(*fill);
      out.push_back(Value::list(std::move(col)));
    }
    return Value::sequence(std::move(out), SeqKind::kGenerator);
  }
  if (f == "batch") {
    EM_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    const Value* n = a.get(0, "linecount");
    if (!n || !n->is_number() || n->as_int() <= 0) return filter_error(f, "needs a positive line count");
    std::vector<Value> out, cur;
    for (const auto& it : items) {
      cur.push_back(it);
      if (static_cast<int64_t>(cur.size()) == n->as_int()) out.push_back(Value::list(std::exchange(cur, {})));
    }
    if (!cur.empty()) {
      if (const Value* fill = a.get(1, "fill_with"))
        while (static_cast<int64_t>(cur.size()) < n->as_int()) cur.push_back(*fill);
      out.push_back(Value::list(std::move(cur)));
    }
    return Value::sequence(std::move(out), SeqKind::kGenerator);
  }
  // String filters: jinja2 applies them to str(value).
  std::string s = v.str();
  // These call the str method on soft_str(value), so a Markup stays a Markup.
  auto same_kind = [&v](std::string r) { return v.is_markup() ? Value::markup(std::move(r)) : Value(std::move(r)); };
  if (f == "upper") return same_kind(py_upper(s));
  if (f == "lower") return same_kind(py_lower(s));
  if (f == "capitalize") return same_kind(py_capitalize(s));
  if (f == "title") {
    // jinja2's title: words start after runs of '-', whitespace, '(', '{', '[', '<'.
    std::string out;
    bool word_start = true;
    for (char c : s) {
      bool sep = c == '-' || c == ' ' || (c >= 0x09 && c <= 0x0D) || c == '(' || c == '{' || c == '[' || c == '<';
      if (sep) {
        out += c;
        word_start = true;
      } else {
        out += word_start ? py_upper(std::string(1, c)) : py_lower(std::string(1, c));
        word_start = false;
      }
    }
    return Value(std::move(out));
  }
  if (f == "trim") {
    const Value* chars = a.get(0, "chars");
    Value esc = chars && v.is_markup() && chars->is_string() ? markup_escape(*chars) : Value();
    return same_kind(py_strip(s, esc.is_string() ? &esc : chars, true, true));
  }
  if (f == "center") {
    const Value* w = a.get(0, "width");
    return same_kind(py_pad(s, w && w->is_number() ? w->as_int() : 80, " ", 'c'));
  }
  if (f == "replace") {
    const Value* o = a.get(0, "old");
    const Value* n = a.get(1, "new");
    if (!o || !n) return filter_error(f, "needs old and new");
    const Value* c = a.get(2, "count");
    std::string r = py_replace(s, o->str(), n->str(), c && c->is_number() ? c->as_int() : -1);
    if (r.size() > lim.max_size) return Status::OutOfRange("string exceeds the size limit");
    return Value(std::move(r));
  }
  if (f == "escape" || f == "e") return markup_escape(v);
  if (f == "forceescape") return Value::markup(html_escape(s));
  if (f == "wordcount") return Value(static_cast<int64_t>(py_split(s, nullptr, -1, false).size()));
  if (f == "truncate") {
    const Value* len = a.get(0, "length");
    const Value* end = a.get(2, "end");
    const Value* leeway = a.get(3, "leeway");
    return Value(jinja_truncate(s, len && len->is_number() ? len->as_int() : 255, bool_kw(a, 1, "killwords", false),
                                end ? end->str() : "...", leeway && leeway->is_number() ? leeway->as_int() : 5));
  }
  static const char* const kJinjaOnly[] = {"filesizeformat", "groupby", "pprint",   "random", "striptags",
                                           "urlencode",      "urlize",  "wordwrap", "xmlattr"};
  for (const char* j : kJinjaOnly)
    if (f == j) return Status::Unsupported("unsupported construct: jinja2 filter '" + f + "' is not implemented");
  return Status::Unsupported("no filter named '" + f + "'");
}

}  // namespace expertmesh::chat
