// The less common str methods (padding, partition, prefix removal, Unicode character classes),
// Python's padding rules, and how a Markup receiver changes a method: markupsafe escapes the str
// arguments of the methods it wraps and returns Markup results.
#include <algorithm>

#include "model/chat_template/builtins.h"

namespace expertmesh::chat {

namespace {

const char* const kMoreStrMethods[] = {
    "removeprefix", "removesuffix", "partition", "rpartition",   "zfill",      "ljust",      "rjust",
    "center",       "swapcase",     "casefold",  "isascii",      "istitle",    "expandtabs", "isalpha",
    "isdigit",      "isdecimal",    "isnumeric", "isalnum",      "islower",    "isupper",    "format_map",
    "encode",       "translate",    "maketrans", "isidentifier", "isprintable"};

// Methods markupsafe.Markup overrides: string arguments are escaped, string results are Markup.
const char* const kMarkupWrapped[] = {
    "capitalize", "title",    "lower",        "upper",        "replace",   "ljust",      "rjust",
    "lstrip",     "rstrip",   "center",       "strip",        "translate", "expandtabs", "swapcase",
    "zfill",      "casefold", "removeprefix", "removesuffix", "partition", "rpartition", "format",
    "format_map", "join",     "split",        "rsplit",       "splitlines"};

bool in_list(const std::string& name, const char* const* begin, const char* const* end) {
  return std::any_of(begin, end, [&](const char* m) { return name == m; });
}

Result<std::string> need_str(const CallArgs& a, size_t i, const char* name, const std::string& m) {
  const Value* v = a.get(i, name);
  if (!v) return Status::InvalidArgument(m + "() missing required argument '" + name + "'");
  if (!v->is_string()) return Status::InvalidArgument(m + "() argument must be str, not " + v->type_name());
  return v->as_string();
}

Result<int64_t> need_int(const CallArgs& a, size_t i, const char* name, const std::string& m) {
  const Value* v = a.get(i, name);
  if (!v) return Status::InvalidArgument(m + "() missing required argument '" + name + "'");
  if (!v->is_number() || v->is_float())
    return Status::InvalidArgument("'" + v->type_name() + "' object cannot be interpreted as an integer");
  return v->as_int();
}

Value tuple3(std::string a, std::string b, std::string c) {
  return Value::list({Value(std::move(a)), Value(std::move(b)), Value(std::move(c))}, true);
}

template <typename Pred>
Value all_code_points(const std::string& s, Pred pred) {
  std::u32string u = utf8_decode(s);
  return Value(!u.empty() && std::all_of(u.begin(), u.end(), pred));
}

Result<Value> partition(const std::string& s, const CallArgs& a, bool from_right, const std::string& m) {
  EM_ASSIGN_OR_RETURN(std::string sep, need_str(a, 0, "sep", m));
  if (sep.empty()) return Status::InvalidArgument("empty separator");
  size_t p = from_right ? s.rfind(sep) : s.find(sep);
  if (p == std::string::npos) return from_right ? tuple3("", "", s) : tuple3(s, "", "");
  return tuple3(s.substr(0, p), sep, s.substr(p + sep.size()));
}

std::string expand_tabs(const std::string& s, int64_t tab) {
  std::string out;
  int64_t col = 0;
  for (char32_t c : utf8_decode(s)) {
    if (c == U'\t') {
      int64_t n = tab > 0 ? tab - col % tab : 0;
      out.append(static_cast<size_t>(n), ' ');
      col += n;
    } else {
      out += utf8_encode(std::u32string(1, c));
      col = (c == U'\n' || c == U'\r') ? 0 : col + 1;
    }
  }
  return out;
}

}  // namespace

std::string py_pad(const std::string& s, int64_t width, const std::string& fill, char align) {
  int64_t len = static_cast<int64_t>(utf8_decode(s).size());
  width = std::min<int64_t>(width, len + (1 << 20));  // bounded; templates pad to small widths
  if (width <= len) return s;
  int64_t marg = width - len;
  int64_t left = align == 'l' ? 0 : align == 'r' ? marg : marg / 2 + (marg & width & 1);  // CPython's rule
  std::string out;
  for (int64_t i = 0; i < left; ++i) out += fill;
  out += s;
  for (int64_t i = left; i < marg; ++i) out += fill;
  return out;
}

bool is_more_str_method(const std::string& name) {
  return in_list(name, std::begin(kMoreStrMethods), std::end(kMoreStrMethods));
}

Result<Value> call_more_str_method(const std::string& s, const std::string& m, const CallArgs& a,
                                   const BuiltinLimits& lim) {
  if (m == "removeprefix" || m == "removesuffix") {
    EM_ASSIGN_OR_RETURN(std::string x, need_str(a, 0, m == "removeprefix" ? "prefix" : "suffix", m));
    if (x.size() > s.size()) return Value(s);
    if (m == "removeprefix") return Value(s.compare(0, x.size(), x) == 0 ? s.substr(x.size()) : s);
    return Value(s.compare(s.size() - x.size(), x.size(), x) == 0 ? s.substr(0, s.size() - x.size()) : s);
  }
  if (m == "partition" || m == "rpartition") return partition(s, a, m == "rpartition", m);
  if (m == "ljust" || m == "rjust" || m == "center" || m == "zfill") {
    EM_ASSIGN_OR_RETURN(int64_t width, need_int(a, 0, "width", m));
    if (width > static_cast<int64_t>(lim.max_size)) return Status::OutOfRange("string exceeds the size limit");
    if (m == "zfill") {
      // Zeros go after a leading sign.
      bool sign = !s.empty() && (s[0] == '+' || s[0] == '-');
      std::string padded = py_pad(sign ? s.substr(1) : s, sign ? width - 1 : width, "0", 'r');
      return Value(sign ? s.substr(0, 1) + padded : padded);
    }
    std::string fill = " ";
    if (const Value* f = a.get(1, "fillchar")) {
      if (!f->is_string() || utf8_decode(f->as_string()).size() != 1)
        return Status::InvalidArgument("The fill character must be exactly one character long");
      fill = f->as_string();
    }
    return Value(py_pad(s, width, fill, m == "ljust" ? 'l' : m == "rjust" ? 'r' : 'c'));
  }
  if (m == "swapcase") return Value(py_swapcase(s));
  if (m == "casefold") return Value(py_casefold(s));
  if (m == "expandtabs") {
    const Value* t = a.get(0, "tabsize");
    return Value(expand_tabs(s, t && t->is_number() ? t->as_int() : 8));
  }
  if (m == "format_map") {
    const Value* d = a.get(0, "mapping");
    if (!d || !d->is_dict()) return Status::InvalidArgument("format_map() argument must be a mapping");
    CallArgs kw;
    for (const auto& [k, v] : d->as_dict().items) kw.kw.emplace_back(k.str(), v);
    return bound_method(Value(s), "format", lim)->as_callable().fn(kw);
  }
  if (m == "isascii") return Value(is_ascii(s));
  if (m == "istitle") return Value(py_is_title(s));
  if (m == "islower") return Value(py_is_lower(s));
  if (m == "isupper") return Value(py_is_upper(s));
  if (m == "isalpha") return all_code_points(s, py_is_alpha_cp);
  if (m == "isdecimal") return all_code_points(s, py_is_decimal_cp);
  if (m == "isdigit") return all_code_points(s, py_is_digit_cp);
  if (m == "isnumeric") return all_code_points(s, py_is_numeric_cp);
  if (m == "isalnum") return all_code_points(s, [](char32_t c) { return py_is_alpha_cp(c) || py_is_numeric_cp(c); });
  return Status::Unsupported("unsupported construct: str." + m + "()");
}

std::string jinja_truncate(const std::string& s, int64_t length, bool killwords, const std::string& end,
                           int64_t leeway) {
  std::u32string u = utf8_decode(s);
  int64_t n = static_cast<int64_t>(u.size());
  if (n <= length + leeway) return s;
  int64_t keep = std::clamp<int64_t>(length - static_cast<int64_t>(utf8_decode(end).size()), 0, n);
  std::string head = utf8_encode(std::u32string_view(u).substr(0, static_cast<size_t>(keep)));
  if (killwords) return head + end;
  size_t sp = head.rfind(' ');  // rsplit(" ", 1)[0]
  return (sp == std::string::npos ? head : head.substr(0, sp)) + end;
}

bool markup_wraps(const std::string& name) {
  return in_list(name, std::begin(kMarkupWrapped), std::end(kMarkupWrapped));
}

Value as_markup(const Value& v) {
  if (v.is_string()) return v.is_markup() ? v : Value::markup(v.as_string());
  if (v.is_plain_list()) {
    std::vector<Value> items;
    for (const auto& x : v.as_list().items) items.push_back(as_markup(x));
    return Value::list(std::move(items), v.as_list().is_tuple);
  }
  return v;
}

}  // namespace expertmesh::chat
