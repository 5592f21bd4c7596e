#include "coordinator/quantize/options.h"

#include <fmt/format.h>

#include <charconv>
#include <cstdlib>

namespace expertmesh {
namespace {

std::vector<std::string_view> split_on(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return out;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

}  // namespace

Status parse_custom_quants(std::string_view arg, std::vector<CustomQuantRule>* rules) {
  for (std::string_view item : split_on(arg, ',')) {
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      return Status::InvalidArgument(fmt::format("--custom-q: item '{}' is not regex=type (in '{}')", item, arg));
    CustomQuantRule r;
    r.pattern = std::string(item.substr(0, eq));
    const std::string_view type = item.substr(eq + 1);
    auto t = parse_type_name(type);
    if (!t.ok()) return Status::InvalidArgument(fmt::format("--custom-q: unknown type '{}' in item '{}'", type, item));
    r.type = *t;
    // std::regex reports a bad pattern by throwing; keep that inside this function.
    try {
      r.regex = std::regex(r.pattern);
    } catch (const std::regex_error& e) {
      return Status::InvalidArgument(fmt::format("--custom-q: bad regex '{}': {}", r.pattern, e.what()));
    }
    rules->push_back(std::move(r));
  }
  return Status::Ok();
}

Result<KvOverride> parse_kv_override(std::string_view arg) {
  const size_t eq = arg.find('=');
  if (eq == std::string_view::npos || eq == 0 || eq >= 128)
    return Status::InvalidArgument(
        fmt::format("--override-kv: malformed '{}': expected KEY=TYPE:VALUE with a key of 1..127 bytes", arg));
  KvOverride o;
  o.key = std::string(arg.substr(0, eq));
  const std::string_view rest = arg.substr(eq + 1);
  auto bad = [&](const char* what) {
    return Status::InvalidArgument(fmt::format("--override-kv: '{}': {}", arg, what));
  };
  if (starts_with(rest, "int:")) {
    const std::string_view v = rest.substr(4);
    int64_t x = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (v.empty() || ec != std::errc() || p != v.data() + v.size()) return bad("value is not an integer");
    o.value = gguf::Value::i32(static_cast<int32_t>(x));  // the peer stores int overrides as i32
  } else if (starts_with(rest, "float:")) {
    const std::string v(rest.substr(6));
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || end != v.c_str() + v.size()) return bad("value is not a number");
    o.value = gguf::Value::f32(static_cast<float>(x));
  } else if (starts_with(rest, "bool:")) {
    const std::string_view v = rest.substr(5);
    if (v != "true" && v != "false") return bad("bool value must be true or false");
    o.value = gguf::Value::boolean(v == "true");
  } else if (starts_with(rest, "str:")) {
    const std::string_view v = rest.substr(4);
    if (v.size() > 127) return bad("string value cannot exceed 127 bytes");
    o.value = gguf::Value::string(std::string(v));
  } else {
    return bad("TYPE must be int, float, bool or str");
  }
  return o;
}

Result<int64_t> parse_split_size(std::string_view arg) {
  if (arg.size() < 2 || (arg.back() != 'M' && arg.back() != 'G'))
    return Status::InvalidArgument(
        fmt::format("--split-max-size: '{}': expected a positive number followed by M or G", arg));
  const std::string_view num = arg.substr(0, arg.size() - 1);
  int64_t n = 0;
  auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), n);
  if (ec != std::errc() || p != num.data() + num.size() || n <= 0 || n > (int64_t{1} << 31))
    return Status::InvalidArgument(fmt::format("--split-max-size: '{}': size must be a positive integer", arg));
  return n * (arg.back() == 'M' ? int64_t{1000} * 1000 : int64_t{1000} * 1000 * 1000);
}

}  // namespace expertmesh
