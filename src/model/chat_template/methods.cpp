// Methods of str, dict and list as templates call them (`s.startswith(...)`, `d.items()`), and
// the Python string helpers they share with the filters.
#include <algorithm>

#include "model/chat_template/builtins.h"

namespace expertmesh::chat {

namespace {

bool py_is_space(char32_t c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

Status arg_error(const std::string& method, const std::string& what) {
  return Status::InvalidArgument(method + "() " + what);
}

Result<std::string> str_arg(const CallArgs& a, size_t i, const char* name, const std::string& method) {
  const Value* v = a.get(i, name);
  if (!v) return arg_error(method, std::string("missing required argument '") + name + "'");
  if (!v->is_string())
    return arg_error(method, std::string("argument '") + name + "' must be str, not " + v->type_name());
  return v->as_string();
}

int64_t int_arg(const CallArgs& a, size_t i, const char* name, int64_t dflt) {
  const Value* v = a.get(i, name);
  return (v && v->is_number() && !v->is_float()) ? v->as_int() : dflt;
}

Result<Value> affix_method(const std::string& s, const CallArgs& a, bool starts, const std::string& m) {
  const Value* p = a.get(0, "prefix");
  if (!p) return arg_error(m, "takes at least 1 argument");
  std::vector<std::string> cands;
  if (p->is_string()) {
    cands.push_back(p->as_string());
  } else if (p->is_list() && p->as_list().is_tuple) {
    for (const auto& e : p->as_list().items) {
      if (!e.is_string()) return arg_error(m, "tuple elements must be str");
      cands.push_back(e.as_string());
    }
  } else {
    return arg_error(m, "first arg must be str or a tuple of str, not " + p->type_name());
  }
  for (const auto& c : cands) {
    if (c.size() > s.size()) continue;
    if (starts ? s.compare(0, c.size(), c) == 0 : s.compare(s.size() - c.size(), c.size(), c) == 0) return Value(true);
  }
  return Value(false);
}

Value split_value(const std::vector<std::string>& parts) {
  std::vector<Value> items;
  items.reserve(parts.size());
  for (const auto& p : parts) items.emplace_back(p);
  return Value::list(std::move(items));
}

// str.format with positional ({} {0}) and keyword ({name}) fields; no format specs.
Result<Value> str_format(const std::string& s, const CallArgs& a) {
  std::string out;
  size_t auto_idx = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '}' && i + 1 < s.size() && s[i + 1] == '}') {
      out += '}';
      ++i;
      continue;
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < s.size() && s[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    size_t e = s.find('}', i);
    if (e == std::string::npos) return arg_error("format", "single '{' encountered in format string");
    std::string field = s.substr(i + 1, e - i - 1);
    if (field.find_first_of(":!.[") != std::string::npos)
      return Status::Unsupported("str.format: format specs and conversions are not supported");
    const Value* v = nullptr;
    if (field.empty()) {
      v = auto_idx < a.pos.size() ? &a.pos[auto_idx] : nullptr;
      ++auto_idx;
    } else if (std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
      size_t k = std::stoul(field);
      v = k < a.pos.size() ? &a.pos[k] : nullptr;
    } else {
      for (const auto& [k, val] : a.kw)
        if (k == field) v = &val;
    }
    if (!v) return arg_error("format", "missing argument for field '{" + field + "}'");
    out += v->str();
    i = e;
  }
  return Value(std::move(out));
}

// s[start:end] for the optional start/end arguments (positions i, i + 1) of find, count,
// startswith, ...; `offset` receives start as a code point index.
Result<std::string> sub_range(const std::string& s, const CallArgs& a, size_t i, int64_t* offset) {
  const Value* b = a.get(i, "start");
  const Value* e = a.get(i + 1, "end");
  *offset = 0;
  if (!b && !e) return s;
  Value none = Value::none();
  EM_ASSIGN_OR_RETURN(Value r, get_slice(Value(s), b ? *b : none, e ? *e : none, none));
  if (b && b->is_number() && !b->is_float()) {
    int64_t n = static_cast<int64_t>(utf8_decode(s).size());
    *offset = std::clamp<int64_t>(b->as_int() < 0 ? b->as_int() + n : b->as_int(), 0, n);
    if (*offset > n) return std::string();
  }
  if (!r.is_string()) return Status::InvalidArgument("slice indices must be integers or None");
  return r.as_string();
}

Result<Value> call_str_method(const std::string& full, const std::string& m, const CallArgs& a,
                              const BuiltinLimits& lim) {
  int64_t offset = 0;
  const std::string* sp = &full;
  std::string part;
  if (m == "startswith" || m == "endswith" || m == "find" || m == "rfind" || m == "index" || m == "rindex" ||
      m == "count") {
    EM_ASSIGN_OR_RETURN(part, sub_range(full, a, 1, &offset));
    sp = &part;
  }
  const std::string& s = *sp;
  if (m == "startswith" || m == "endswith") return affix_method(s, a, m == "startswith", m);
  if (m == "strip" || m == "lstrip" || m == "rstrip")
    return Value(py_strip(s, a.get(0, "chars"), m != "rstrip", m != "lstrip"));
  if (m == "upper") return Value(py_upper(s));
  if (m == "lower") return Value(py_lower(s));
  if (m == "title") return Value(py_title(s));
  if (m == "capitalize") return Value(py_capitalize(s));
  if (m == "split" || m == "rsplit") {
    const Value* sep = a.get(0, "sep");
    if (sep && sep->is_string() && sep->as_string().empty()) return arg_error(m, "empty separator");
    if (sep && !sep->is_none() && !sep->is_string())
      return arg_error(m, "must be str or None, not " + sep->type_name());
    return split_value(py_split(s, sep, int_arg(a, 1, "maxsplit", -1), m == "rsplit"));
  }
  if (m == "splitlines") {
    const Value* keep = a.get(0, "keepends");
    bool keepends = keep && keep->truthy();
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\n' || s[i] == '\r') {
        size_t brk = i;
        if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
        parts.push_back(s.substr(start, (keepends ? i + 1 : brk) - start));
        start = i + 1;
      }
    }
    if (start < s.size()) parts.push_back(s.substr(start));
    return split_value(parts);
  }
  if (m == "replace") {
    EM_ASSIGN_OR_RETURN(std::string old, str_arg(a, 0, "old", m));
    EM_ASSIGN_OR_RETURN(std::string repl, str_arg(a, 1, "new", m));
    std::string r = py_replace(s, old, repl, int_arg(a, 2, "count", -1));
    if (r.size() > lim.max_size) return Status::OutOfRange("string exceeds the size limit");
    return Value(std::move(r));
  }
  if (m == "find" || m == "rfind" || m == "index" || m == "rindex" || m == "count") {
    EM_ASSIGN_OR_RETURN(std::string sub, str_arg(a, 0, "sub", m));
    if (m == "count") {
      if (sub.empty()) return Value(static_cast<int64_t>(utf8_decode(s).size() + 1));
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value(n);
    }
    size_t p = (m == "find" || m == "index") ? s.find(sub) : s.rfind(sub);
    if (p == std::string::npos) {
      if (m == "index" || m == "rindex") return arg_error(m, "substring not found");
      return Value(int64_t{-1});
    }
    return Value(offset + static_cast<int64_t>(utf8_decode(s.substr(0, p)).size()));  // code point index
  }
  if (m == "join") {
    const Value* it = a.get(0, "iterable");
    if (!it) return arg_error(m, "takes exactly one argument");
    EM_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(*it));
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].is_string())
        return arg_error(
            m, "sequence item " + std::to_string(i) + ": expected str instance, " + items[i].type_name() + " found");
      if (i) out += s;
      out += items[i].as_string();
      if (out.size() > lim.max_size) return Status::OutOfRange("string exceeds the size limit");
    }
    return Value(std::move(out));
  }
  if (m == "format") return str_format(s, a);
  if (m == "isspace") {
    std::u32string u = utf8_decode(s);
    return Value(!u.empty() && std::all_of(u.begin(), u.end(), py_is_space));
  }
  return call_more_str_method(s, m, a, lim);
}

const char* const kStrMethods[] = {"startswith", "endswith",   "strip",  "lstrip", "rstrip",     "upper",   "lower",
                                   "title",      "capitalize", "split",  "rsplit", "splitlines", "replace", "find",
                                   "rfind",      "index",      "rindex", "count",  "join",       "format",  "isspace"};

Result<Value> call_dict_method(const Value& d, const std::string& m, const CallArgs& a) {
  const DictData& dd = d.as_dict();
  if (m == "items") {
    std::vector<Value> out;
    for (const auto& [k, v] : dd.items) out.push_back(Value::list({k, v}, true));
    return Value::sequence(std::move(out), SeqKind::kDictItems);
  }
  if (m == "keys" || m == "values") {
    std::vector<Value> out;
    for (const auto& [k, v] : dd.items) out.push_back(m == "keys" ? k : v);
    return Value::sequence(std::move(out), m == "keys" ? SeqKind::kDictKeys : SeqKind::kDictValues);
  }
  if (m == "copy") return Value::dict(dd.items);
  if (m == "get") {
    const Value* k = a.get(0, "key");
    if (!k) return arg_error(m, "expected at least 1 argument");
    if (const Value* v = dd.find(*k)) return *v;
    const Value* dflt = a.get(1, "default");
    return dflt ? *dflt : Value::none();
  }
  return Status::Internal("unhandled dict method " + m);
}

Result<Value> call_list_method(const Value& l, const std::string& m, const CallArgs& a) {
  const Value* x = a.get(0, "value");
  if (!x) return arg_error(m, "takes exactly one argument");
  const auto& items = l.as_list().items;
  if (m == "count") {
    int64_t n = 0;
    for (const auto& v : items) n += values_equal(v, *x) ? 1 : 0;
    return Value(n);
  }
  for (size_t i = 0; i < items.size(); ++i)
    if (values_equal(items[i], *x)) return Value(static_cast<int64_t>(i));
  return arg_error(m, x->repr() + " is not in list");
}

// Markup.<name>(...): str arguments escaped (join: the items), the result Markup; split and
// splitlines only convert their results.
Value markup_method(const std::string& s, const std::string& name, const BuiltinLimits& lim) {
  return Value::callable("Markup." + name, [s, name, lim](const CallArgs& a) -> Result<Value> {
    CallArgs e = a;
    if (name != "split" && name != "rsplit" && name != "splitlines") {
      auto esc = [&](Value& v) {
        if (v.is_string()) {
          v = markup_escape(v);
        } else if (name == "join" && v.is_list()) {
          std::vector<Value> items;
          for (const auto& x : v.as_list().items) items.push_back(markup_escape(x));
          v = Value::list(std::move(items));
        }
      };
      for (auto& v : e.pos) esc(v);
      for (auto& kv : e.kw) esc(kv.second);
    }
    EM_ASSIGN_OR_RETURN(Value r, call_str_method(s, name, e, lim));
    return as_markup(r);
  });
}

// list.append(x) / list.extend(xs) return None; list.pop([i]) removes and returns item i
// (default the last), an error on an empty list or a bad index, like Python.
Result<Value> mutate_list(const Value& l, const std::string& m, const CallArgs& a, const BuiltinLimits& lim) {
  if (l.as_list().is_tuple) return arg_error(m, "'tuple' object has no attribute '" + m + "'");
  auto& items = l.mutable_list().items;
  if (m == "pop") {
    int64_t n = static_cast<int64_t>(items.size());
    int64_t i = n - 1;
    if (const Value* v = a.get(0, "index")) {
      if (!v->is_number() || v->is_float()) return arg_error(m, "index must be an integer");
      i = v->as_int() < 0 ? v->as_int() + n : v->as_int();
    }
    if (n == 0 || i < 0 || i >= n) return arg_error(m, n == 0 ? "pop from empty list" : "pop index out of range");
    Value out = items[static_cast<size_t>(i)];
    items.erase(items.begin() + i);
    return out;
  }
  const Value* x = a.get(0, m == "append" ? "object" : "iterable");
  if (!x) return arg_error(m, "takes exactly one argument");
  std::vector<Value> add = {*x};
  if (m == "extend") {
    EM_ASSIGN_OR_RETURN(add, iterate(*x));
  }
  if (items.size() + add.size() > lim.max_size) return Status::OutOfRange("list exceeds the size limit");
  items.insert(items.end(), add.begin(), add.end());
  return Value::none();
}

}  // namespace

std::optional<Value> bound_method(const Value& obj, const std::string& name, const BuiltinLimits& lim) {
  if (obj.is_string()) {
    bool known = is_more_str_method(name);
    for (const char* m : kStrMethods) known = known || name == m;
    if (!known) return std::nullopt;
    std::string s = obj.as_string();
    if (obj.is_markup() && markup_wraps(name)) return markup_method(s, name, lim);
    return Value::callable("str." + name,
                           [s, name, lim](const CallArgs& a) { return call_str_method(s, name, a, lim); });
  } else if (obj.is_dict() && !obj.as_dict().is_namespace) {
    if (name == "items" || name == "keys" || name == "values" || name == "get" || name == "copy")
      return Value::callable("dict." + name, [obj, name](const CallArgs& a) { return call_dict_method(obj, name, a); });
  } else if (obj.is_list() && (obj.as_list().plain() || obj.as_list().seq == SeqKind::kRange)) {
    if (name == "count" || name == "index")
      return Value::callable("list." + name, [obj, name](const CallArgs& a) { return call_list_method(obj, name, a); });
    if (lim.allow_list_mutation && (name == "append" || name == "pop" || name == "extend"))
      return Value::callable("list." + name,
                             [obj, name, lim](const CallArgs& a) { return mutate_list(obj, name, a, lim); });
  }
  return std::nullopt;
}

// ---- string helpers ---------------------------------------------------------------------------

std::string py_strip(const std::string& s, const Value* chars, bool left, bool right) {
  bool default_ws = !chars || chars->is_none() || chars->is_undefined();
  std::u32string set = default_ws ? std::u32string() : utf8_decode(chars->str());
  auto strip_it = [&](char32_t c) { return default_ws ? py_is_space(c) : set.find(c) != std::u32string::npos; };
  if (is_ascii(s) && (default_ws || is_ascii(chars->str()))) {
    size_t b = 0, e = s.size();
    if (left)
      while (b < e && strip_it(static_cast<unsigned char>(s[b]))) ++b;
    if (right)
      while (e > b && strip_it(static_cast<unsigned char>(s[e - 1]))) --e;
    return s.substr(b, e - b);
  }
  std::u32string u = utf8_decode(s);
  size_t b = 0, e = u.size();
  if (left)
    while (b < e && strip_it(u[b])) ++b;
  if (right)
    while (e > b && strip_it(u[e - 1])) --e;
  return utf8_encode(std::u32string_view(u).substr(b, e - b));
}

std::vector<std::string> py_split(const std::string& s, const Value* sep, int64_t maxsplit, bool from_right) {
  std::vector<std::string> parts;
  if (!sep || sep->is_none() || sep->is_undefined()) {
    // Runs of whitespace separate; leading/trailing whitespace is dropped (ASCII whitespace).
    auto ws = [](char c) { return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F); };
    if (!from_right) {
      size_t i = 0;
      while (i < s.size()) {
        while (i < s.size() && ws(s[i])) ++i;
        if (i >= s.size()) break;
        if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
          parts.push_back(s.substr(i));  // the remainder keeps its trailing whitespace
          break;
        }
        size_t j = i;
        while (j < s.size() && !ws(s[j])) ++j;
        parts.push_back(s.substr(i, j - i));
        i = j;
      }
      return parts;
    }
    size_t i = s.size();
    while (i > 0) {
      while (i > 0 && ws(s[i - 1])) --i;
      if (i == 0) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        parts.push_back(s.substr(0, i));  // the remainder keeps its leading whitespace
        break;
      }
      size_t j = i;
      while (j > 0 && !ws(s[j - 1])) --j;
      parts.push_back(s.substr(j, i - j));
      i = j;
    }
    std::reverse(parts.begin(), parts.end());
    return parts;
  }
  const std::string& d = sep->as_string();
  if (!from_right) {
    size_t start = 0;
    for (size_t p = s.find(d); p != std::string::npos; p = s.find(d, start)) {
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) break;
      parts.push_back(s.substr(start, p - start));
      start = p + d.size();
    }
    parts.push_back(s.substr(start));
    return parts;
  }
  size_t end = s.size();
  while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
    if (end < d.size()) break;
    size_t p = s.rfind(d, end - d.size());
    if (p == std::string::npos) break;
    parts.push_back(s.substr(p + d.size(), end - p - d.size()));
    end = p;
  }
  parts.push_back(s.substr(0, end));
  std::reverse(parts.begin(), parts.end());
  return parts;
}

std::string py_replace(const std::string& s, const std::string& old, const std::string& repl, int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts `repl` between code points (and at both ends), up to count times.
    std::u32string u = utf8_decode(s);
    int64_t done = 0;
    for (size_t i = 0; i <= u.size(); ++i) {
      if (count < 0 || done < count) {
        out += repl;
        ++done;
      }
      if (i < u.size()) out += utf8_encode(std::u32string(1, u[i]));
    }
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  for (size_t p = s.find(old); p != std::string::npos && (count < 0 || done < count); p = s.find(old, start)) {
    out.append(s, start, p - start);
    out += repl;
    start = p + old.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

}  // namespace expertmesh::chat
