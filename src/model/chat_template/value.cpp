#include "model/chat_template/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace expertmesh::chat {

// ---- containers -------------------------------------------------------------------------------

const Value* DictData::find(const Value& key) const {
  for (const auto& [k, v] : items)
    if (values_equal(k, key)) return &v;
  return nullptr;
}

const Value* DictData::find_key(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k.is_string() && k.as_string() == key) return &v;
  return nullptr;
}

void DictData::set(Value key, Value value) {
  for (auto& [k, v] : items) {
    if (values_equal(k, key)) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(std::move(key), std::move(value));
}

const Value* CallArgs::get(size_t i, std::string_view name) const {
  if (i < pos.size()) return &pos[i];
  for (const auto& [k, v] : kw)
    if (k == name) return &v;
  return nullptr;
}

Value Value::list(std::vector<Value> items, bool is_tuple) {
  auto d = std::make_shared<ListData>();
  d->items = std::move(items);
  d->is_tuple = is_tuple;
  return Value(Storage(std::move(d)));
}

Value Value::sequence(std::vector<Value> items, SeqKind kind) {
  Value v = list(std::move(items));
  v.mutable_list().seq = kind;
  return v;
}

Value Value::markup(std::string s) {
  Value v(std::move(s));
  v.markup_ = true;
  return v;
}

Value Value::dict(std::vector<std::pair<Value, Value>> items) {
  auto d = std::make_shared<DictData>();
  d->items = std::move(items);
  return Value(Storage(std::move(d)));
}

Value Value::make_namespace() {
  auto d = std::make_shared<DictData>();
  d->is_namespace = true;
  return Value(Storage(std::move(d)));
}

Value Value::callable(std::string name, std::function<Result<Value>(const CallArgs&)> fn) {
  return Value(Storage(std::make_shared<Callable>(Callable{std::move(name), std::move(fn)})));
}

const void* Value::identity() const {
  switch (kind()) {
    case Kind::kList:
      return std::get<std::shared_ptr<ListData>>(v_).get();
    case Kind::kDict:
      return std::get<std::shared_ptr<DictData>>(v_).get();
    case Kind::kCallable:
      return std::get<std::shared_ptr<Callable>>(v_).get();
    default:
      return nullptr;
  }
}

bool Value::truthy() const {
  switch (kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return as_bool();
    case Kind::kInt:
      return as_int() != 0;
    case Kind::kFloat:
      return as_float() != 0.0;
    case Kind::kString:
      return !as_string().empty();
    case Kind::kList:
      return as_list().single_pass() || !as_list().items.empty();
    case Kind::kDict:
      return as_dict().is_namespace || !as_dict().items.empty();
    case Kind::kCallable:
      return true;
  }
  return false;
}

std::string Value::type_name() const {
  switch (kind()) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return markup_ ? "Markup" : "str";
    case Kind::kList:
      return seq_type_name(as_list());
    case Kind::kDict:
      return as_dict().is_namespace ? "Namespace" : "dict";
    case Kind::kCallable:
      return "function";
  }
  return "?";
}

// ---- printing ---------------------------------------------------------------------------------

std::string seq_type_name(const ListData& l) {
  switch (l.seq) {
    case SeqKind::kList:
      return l.is_tuple ? "tuple" : "list";
    case SeqKind::kGenerator:
      return "generator";
    case SeqKind::kReverseIter:
      return "list_reverseiterator";
    case SeqKind::kDictItems:
      return "dict_items";
    case SeqKind::kDictKeys:
      return "dict_keys";
    case SeqKind::kDictValues:
      return "dict_values";
    case SeqKind::kRange:
      return "range";
  }
  return "list";
}

std::string python_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  // Shortest round-trip digits in scientific form, re-laid out by Python's repr rule: plain
  // notation for decimal exponents in [-4, 16), scientific ("1e+16", "1.5e-05") otherwise.
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string s(buf, r.ptr);
  bool neg = s[0] == '-';
  if (neg) s.erase(0, 1);
  size_t e = s.find('e');
  int exp = std::stoi(s.substr(e + 1));
  std::string digits;
  for (size_t i = 0; i < e; ++i)
    if (s[i] != '.') digits += s[i];
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out += "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else if (static_cast<size_t>(exp) + 1 >= digits.size()) {
      out += digits + std::string(static_cast<size_t>(exp) + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, static_cast<size_t>(exp) + 1) + "." + digits.substr(static_cast<size_t>(exp) + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char eb[16];
  std::snprintf(eb, sizeof(eb), "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return out + eb;
}

namespace {

// Python's str.isprintable() is false for categories Cc, Cf, Co, Cs, Zl, Zp and Zs other than the
// space; repr() writes those as escapes. The ranges below cover the code points of those
// categories that occur in practice (controls, soft hyphen, zero-width and bidi marks, line and
// paragraph separators, exotic spaces, the BOM, private use).
bool py_printable(char32_t c) {
  if (c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD) return false;
  if ((c >= 0x600 && c <= 0x605) || c == 0x61C || c == 0x6DD || c == 0x70F || c == 0x180E) return false;
  if (c == 0x1680 || (c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F)) return false;
  if ((c >= 0x205F && c <= 0x2064) || (c >= 0x2066 && c <= 0x206F) || c == 0x3000 || c == 0xFEFF) return false;
  if ((c >= 0xD800 && c <= 0xF8FF) || (c >= 0xFFF9 && c <= 0xFFFB) || c >= 0xF0000) return false;
  return true;
}

std::string repr_string(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char32_t q = (has_single && !has_double) ? U'"' : U'\'';
  std::string out(1, static_cast<char>(q));
  for (char32_t c : utf8_decode(s)) {
    char b[16];
    if (c == U'\\') {
      out += "\\\\";
    } else if (c == q) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == U'\n') {
      out += "\\n";
    } else if (c == U'\r') {
      out += "\\r";
    } else if (c == U'\t') {
      out += "\\t";
    } else if (c >= 0xDC80 && c <= 0xDCFF) {
      std::snprintf(b, sizeof(b), "\\udc%02x", static_cast<unsigned>(c - 0xDC00));  // surrogateescape'd byte
      out += b;
    } else if (!py_printable(c)) {
      std::snprintf(b, sizeof(b),
                    c < 0x100     ? "\\x%02x"
                    : c < 0x10000 ? "\\u%04x"
                                  : "\\U%08x",
                    static_cast<unsigned>(c));
      out += b;
    } else {
      out += utf8_encode(std::u32string(1, c));
    }
  }
  out += static_cast<char>(q);
  return out;
}

}  // namespace

std::string Value::str() const {
  switch (kind()) {
    case Kind::kUndefined:
      return "";
    case Kind::kString:
      return as_string();
    default:
      return repr();
  }
}

std::string Value::repr() const {
  switch (kind()) {
    case Kind::kUndefined:
      return "";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return as_bool() ? "True" : "False";
    case Kind::kInt:
      return std::to_string(as_int());
    case Kind::kFloat:
      return python_float_repr(as_float());
    case Kind::kString:
      return markup_ ? "Markup(" + repr_string(as_string()) + ")" : repr_string(as_string());
    case Kind::kList: {
      const ListData& l = as_list();
      if (l.seq == SeqKind::kRange) {
        std::string r = "range(" + std::to_string(l.range_args[0]) + ", " + std::to_string(l.range_args[1]);
        return r + (l.range_args[2] != 1 ? ", " + std::to_string(l.range_args[2]) : "") + ")";
      }
      // Python prints the address here; no template output can depend on it.
      if (l.single_pass()) return "<" + seq_type_name(l) + " object>";
      if (!l.plain()) {
        std::vector<Value> inner = l.items;
        return seq_type_name(l) + "(" + Value::list(std::move(inner)).repr() + ")";
      }
      std::string out = l.is_tuple ? "(" : "[";
      for (size_t i = 0; i < l.items.size(); ++i) out += (i ? ", " : "") + l.items[i].repr();
      if (l.is_tuple && l.items.size() == 1) out += ",";
      return out + (l.is_tuple ? ")" : "]");
    }
    case Kind::kDict: {
      const DictData& d = as_dict();
      std::string out = "{";
      for (size_t i = 0; i < d.items.size(); ++i)
        out += (i ? ", " : "") + d.items[i].first.repr() + ": " + d.items[i].second.repr();
      out += "}";
      return d.is_namespace ? "<Namespace " + out + ">" : out;
    }
    case Kind::kCallable:
      return "<function " + as_callable().name + ">";
  }
  return "";
}

// ---- JSON -------------------------------------------------------------------------------------

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::none();
    case nlohmann::ordered_json::value_t::boolean:
      return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return Value::list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      std::vector<std::pair<Value, Value>> items;
      items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) {
        items.emplace_back();
        items.back().first = Value(it.key());
        items.back().second = from_json(it.value());
      }
      return Value::dict(std::move(items));
    }
    default:
      return Value::none();
  }
}

Result<nlohmann::ordered_json> Value::to_json() const {
  switch (kind()) {
    case Kind::kNone:
      return nlohmann::ordered_json(nullptr);
    case Kind::kBool:
      return nlohmann::ordered_json(as_bool());
    case Kind::kInt:
      return nlohmann::ordered_json(as_int());
    case Kind::kFloat:
      return nlohmann::ordered_json(as_float());
    case Kind::kString:
      return nlohmann::ordered_json(as_string());
    case Kind::kList: {
      if (!as_list().plain())
        return Status::InvalidArgument("Object of type " + type_name() + " is not JSON serializable");
      nlohmann::ordered_json a = nlohmann::ordered_json::array();
      for (const auto& e : as_list().items) {
        EM_ASSIGN_OR_RETURN(auto je, e.to_json());
        a.push_back(std::move(je));
      }
      return a;
    }
    case Kind::kDict: {
      nlohmann::ordered_json o = nlohmann::ordered_json::object();
      for (const auto& [k, v] : as_dict().items) {
        EM_ASSIGN_OR_RETURN(auto jv, v.to_json());
        o[k.str()] = std::move(jv);
      }
      return o;
    }
    default:
      return Status::InvalidArgument("Object of type " + type_name() + " is not JSON serializable");
  }
}

// ---- comparison -------------------------------------------------------------------------------

bool values_equal(const Value& a, const Value& b) {
  using K = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::kUndefined:
    case K::kNone:
      return true;
    case K::kString:
      return a.as_string() == b.as_string();
    case K::kList: {
      const auto& x = a.as_list();
      const auto& y = b.as_list();
      if (x.single_pass() || y.single_pass()) return a.identity() == b.identity();
      if (x.seq != y.seq || x.is_tuple != y.is_tuple || x.items.size() != y.items.size()) return false;
      for (size_t i = 0; i < x.items.size(); ++i)
        if (!values_equal(x.items[i], y.items[i])) return false;
      return true;
    }
    case K::kDict: {
      const auto& x = a.as_dict();
      const auto& y = b.as_dict();
      if (x.is_namespace || y.is_namespace) return a.identity() == b.identity();
      if (x.items.size() != y.items.size()) return false;
      for (const auto& [k, v] : x.items) {
        const Value* o = y.find(k);
        if (!o || !values_equal(v, *o)) return false;
      }
      return true;
    }
    case K::kCallable:
      return a.identity() == b.identity();
    default:
      return false;
  }
}

Result<int> values_compare(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) {
      double x = a.as_float(), y = b.as_float();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    int64_t x = a.as_int(), y = b.as_int();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    int c = a.as_string().compare(b.as_string());  // UTF-8 byte order is code point order
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_plain_list() && b.is_plain_list() && a.as_list().is_tuple == b.as_list().is_tuple) {
    const auto& x = a.as_list().items;
    const auto& y = b.as_list().items;
    for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
      if (values_equal(x[i], y[i])) continue;
      return values_compare(x[i], y[i]);
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  return Status::InvalidArgument("'<' not supported between instances of '" + a.type_name() + "' and '" +
                                 b.type_name() + "'");
}

// ---- UTF-8 ------------------------------------------------------------------------------------

bool is_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

std::u32string utf8_decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    char32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = n > 0 && i + static_cast<size_t>(n) <= s.size();
    for (int k = 1; ok && k < n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((cc & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (!ok) {
      out += static_cast<char32_t>(0xDC00 + c);  // keep the invalid byte, re-encoded verbatim
      ++i;
      continue;
    }
    out += cp;
    i += static_cast<size_t>(n);
  }
  return out;
}

std::string utf8_encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t cp : s) {
    if (cp >= 0xDC80 && cp <= 0xDCFF) {
      out += static_cast<char>(cp - 0xDC00);
    } else if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  return out;
}

}  // namespace expertmesh::chat
