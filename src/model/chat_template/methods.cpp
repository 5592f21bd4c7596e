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
bool is_alpha_ascii(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

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

Result<Value> call_str_method(const std::string& s, const std::string& m, const CallArgs& a, const BuiltinLimits& lim) {
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
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\n' || s[i] == '\r') {
        parts.push_back(s.substr(start, i - start));
        if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
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
    return Value(static_cast<int64_t>(utf8_decode(s.substr(0, p)).size()));  // code point index
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
  if (m == "isdigit" || m == "isnumeric" || m == "isdecimal")
    return Value(!s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }));
  if (m == "isalpha") return Value(!s.empty() && std::all_of(s.begin(), s.end(), is_alpha_ascii));
  if (m == "isalnum")
    return Value(!s.empty() &&
                 std::all_of(s.begin(), s.end(), [](char c) { return is_alpha_ascii(c) || (c >= '0' && c <= '9'); }));
  if (m == "isspace") {
    std::u32string u = utf8_decode(s);
    return Value(!u.empty() && std::all_of(u.begin(), u.end(), py_is_space));
  }
  if (m == "islower" || m == "isupper") {
    bool cased = false;
    for (char c : s) {
      if (m == "islower" ? (c >= 'A' && c <= 'Z') : (c >= 'a' && c <= 'z')) return Value(false);
      cased = cased || is_alpha_ascii(c);
    }
    return Value(cased);
  }
  return Status::Internal("unhandled str method " + m);
}

const char* const kStrMethods[] = {"startswith", "endswith", "strip",      "lstrip",    "rstrip",    "upper",
                                   "lower",      "title",    "capitalize", "split",     "rsplit",    "splitlines",
                                   "replace",    "find",     "rfind",      "index",     "rindex",    "count",
                                   "join",       "format",   "isdigit",    "isnumeric", "isdecimal", "isalpha",
                                   "isalnum",    "isspace",  "islower",    "isupper"};

Result<Value> call_dict_method(const Value& d, const std::string& m, const CallArgs& a) {
  const DictData& dd = d.as_dict();
  if (m == "items") {
    std::vector<Value> out;
    for (const auto& [k, v] : dd.items) out.push_back(Value::list({k, v}, true));
    return Value::list(std::move(out));
  }
  if (m == "keys" || m == "values") {
    std::vector<Value> out;
    for (const auto& [k, v] : dd.items) out.push_back(m == "keys" ? k : v);
    return Value::list(std::move(out));
  }
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
    for (const char* m : kStrMethods) {
      if (name != m) continue;
      std::string s = obj.as_string();
      return Value::callable("str." + name,
                             [s, name, lim](const CallArgs& a) { return call_str_method(s, name, a, lim); });
    }
  } else if (obj.is_dict() && !obj.as_dict().is_namespace) {
    if (name == "items" || name == "keys" || name == "values" || name == "get")
      return Value::callable("dict." + name, [obj, name](const CallArgs& a) { return call_dict_method(obj, name, a); });
  } else if (obj.is_list()) {
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

std::string py_upper(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
  return out;
}

std::string py_lower(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return out;
}

std::string py_title(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    bool lower = c >= 'a' && c <= 'z', upper = c >= 'A' && c <= 'Z';
    if (lower && !prev_cased) c = static_cast<char>(c - 32);
    if (upper && prev_cased) c = static_cast<char>(c + 32);
    prev_cased = lower || upper || (static_cast<unsigned char>(c) >= 0x80 && prev_cased);
  }
  return out;
}

std::string py_capitalize(const std::string& s) {
  std::string out = py_lower(s);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 32);
  return out;
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
