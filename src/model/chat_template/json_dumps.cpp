// json.dumps as Python writes it (transformers' `tojson` filter): separators, indent, sort_keys,
// ensure_ascii, float repr and the "not JSON serializable" errors for non-JSON values.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "model/chat_template/value.h"

namespace expertmesh::chat {

namespace {

void json_escape(std::string_view s, bool ensure_ascii, std::string& out) {
  out += '"';
  if (ensure_ascii && !is_ascii(s)) {
    for (char32_t cp : utf8_decode(s)) {
      char b[16];
      if (cp >= 0x80) {
        if (cp >= 0x10000) {
          uint32_t v = cp - 0x10000;
          std::snprintf(b, sizeof(b), "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
        } else {
          std::snprintf(b, sizeof(b), "\\u%04x", static_cast<unsigned>(cp));
        }
        out += b;
      } else {
        std::string one(1, static_cast<char>(cp));
        std::string tmp;
        json_escape(one, false, tmp);
        out += tmp.substr(1, tmp.size() - 2);
      }
    }
    out += '"';
    return;
  }
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char b[8];
          std::snprintf(b, sizeof(b), "\\u%04x", c);
          out += b;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

struct JsonWriter {
  const JsonDumpOptions& opt;
  std::string item_sep, key_sep, unit;
  std::string out;

  Result<std::string> key_string(const Value& k) {
    switch (k.kind()) {
      case Value::Kind::kString:
        return k.as_string();
      case Value::Kind::kBool:
        return std::string(k.as_bool() ? "true" : "false");
      case Value::Kind::kNone:
        return std::string("null");
      case Value::Kind::kInt:
      case Value::Kind::kFloat:
        return k.repr();
      default:
        return Status::InvalidArgument("keys must be str, int, float, bool or None, not " + k.type_name());
    }
  }

  void newline(int depth) {
    out += '\n';
    for (int i = 0; i < depth; ++i) out += unit;
  }

  Status write(const Value& v, int depth) {
    if (depth > 512) return Status::OutOfRange("json nesting too deep");
    bool pretty = opt.indent >= 0 || !opt.indent_str.empty();
    switch (v.kind()) {
      case Value::Kind::kNone:
        out += "null";
        return Status::Ok();
      case Value::Kind::kBool:
        out += v.as_bool() ? "true" : "false";
        return Status::Ok();
      case Value::Kind::kInt:
        out += std::to_string(v.as_int());
        return Status::Ok();
      case Value::Kind::kFloat: {
        double d = v.as_float();
        out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : python_float_repr(d);
        return Status::Ok();
      }
      case Value::Kind::kString:
        json_escape(v.as_string(), opt.ensure_ascii, out);
        return Status::Ok();
      case Value::Kind::kList: {
        if (!v.as_list().plain())
          return Status::InvalidArgument("Object of type " + v.type_name() + " is not JSON serializable");
        const auto& items = v.as_list().items;
        if (items.empty()) {
          out += "[]";
          return Status::Ok();
        }
        out += '[';
        for (size_t i = 0; i < items.size(); ++i) {
          if (i) out += item_sep;
          if (pretty) newline(depth + 1);
          EM_RETURN_IF_ERROR(write(items[i], depth + 1));
        }
        if (pretty) newline(depth);
        out += ']';
        return Status::Ok();
      }
      case Value::Kind::kDict: {
        std::vector<std::pair<std::string, const Value*>> items;
        for (const auto& [k, val] : v.as_dict().items) {
          EM_ASSIGN_OR_RETURN(std::string ks, key_string(k));
          items.emplace_back(std::move(ks), &val);
        }
        if (opt.sort_keys)
          std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        if (items.empty()) {
          out += "{}";
          return Status::Ok();
        }
        out += '{';
        for (size_t i = 0; i < items.size(); ++i) {
          if (i) out += item_sep;
          if (pretty) newline(depth + 1);
          json_escape(items[i].first, opt.ensure_ascii, out);
          out += key_sep;
          EM_RETURN_IF_ERROR(write(*items[i].second, depth + 1));
        }
        if (pretty) newline(depth);
        out += '}';
        return Status::Ok();
      }
      default:
        return Status::InvalidArgument("Object of type " + v.type_name() + " is not JSON serializable");
    }
  }
};

}  // namespace

Result<std::string> python_json_dumps(const Value& v, const JsonDumpOptions& opt) {
  JsonWriter w{opt, {}, {}, {}, {}};
  bool pretty = opt.indent >= 0 || !opt.indent_str.empty();
  w.item_sep = !opt.item_sep.empty() ? opt.item_sep : (pretty ? "," : ", ");
  w.key_sep = !opt.key_sep.empty() ? opt.key_sep : ": ";
  w.unit = !opt.indent_str.empty() ? opt.indent_str : std::string(static_cast<size_t>(std::max(opt.indent, 0)), ' ');
  EM_RETURN_IF_ERROR(w.write(v, 0));
  return std::move(w.out);
}

}  // namespace expertmesh::chat
