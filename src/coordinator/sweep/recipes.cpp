#include "coordinator/sweep/recipes.h"

#include <fmt/format.h>

#include <cctype>
#include <set>

#include "common/sha256.h"
#include "coordinator/quantize/presets.h"

namespace expertmesh::coordinator {
namespace {

bool valid_name(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '+' && c != '-') return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Logical lines: (first physical line number, text) with backslash continuations joined.
std::vector<std::pair<int, std::string>> logical_lines(std::string_view text) {
  std::vector<std::pair<int, std::string>> out;
  std::string cur;
  int line = 0, first = 0;
  bool continuing = false;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t nl = text.find('\n', pos);
    std::string_view phys = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    if (!phys.empty() && phys.back() == '\r') phys.remove_suffix(1);
    ++line;
    if (!continuing) first = line;
    const std::string_view t = trim(phys);
    if (!continuing && (t.empty() || t.front() == '#')) {
      // comment or blank
    } else if (!t.empty() && t.back() == '\\') {
      cur += std::string(t.substr(0, t.size() - 1)) + " ";
      continuing = true;
    } else {
      cur += std::string(t);
      out.emplace_back(first, std::move(cur));
      cur.clear();
      continuing = false;
    }
    if (nl == std::string_view::npos) break;
    pos = nl + 1;
  }
  if (continuing) out.emplace_back(first, std::move(cur));
  return out;
}

}  // namespace

Result<std::vector<std::string>> split_words(std::string_view s) {
  std::vector<std::string> words;
  std::string cur;
  bool in_word = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (in_word) words.push_back(std::move(cur)), cur.clear(), in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\'') {
      const size_t end = s.find('\'', i + 1);
      if (end == std::string_view::npos)
        return Status::InvalidArgument(fmt::format("unterminated ' at column {}", i + 1));
      cur += s.substr(i + 1, end - i - 1);
      i = end;
    } else if (c == '"') {
      size_t j = i + 1;
      for (; j < s.size() && s[j] != '"'; ++j) {
        if (s[j] == '\\' && j + 1 < s.size() && (s[j + 1] == '"' || s[j + 1] == '\\')) ++j;
        cur += s[j];
      }
      if (j >= s.size()) return Status::InvalidArgument(fmt::format("unterminated \" at column {}", i + 1));
      i = j;
    } else if (c == '\\' && i + 1 < s.size()) {
      cur += s[++i];
    } else {
      cur += c;
    }
  }
  if (in_word) words.push_back(std::move(cur));
  return words;
}

Result<std::vector<Recipe>> parse_recipes(std::string_view text, const std::string& file_name) {
  std::vector<Recipe> out;
  std::set<std::string> names;
  for (auto& [line, body] : logical_lines(text)) {
    auto fail = [&, line = line](const std::string& msg) {
      return Status::InvalidArgument(fmt::format("{}:{}: {}", file_name, line, msg));
    };
    const size_t colon = body.find(':');
    if (colon == std::string::npos) return fail("expected 'NAME: TYPE [flags...]' or 'NAME: file=PATH.gguf'");
    Recipe r;
    r.line = line;
    r.name = std::string(trim(std::string_view(body).substr(0, colon)));
    if (!valid_name(r.name)) return fail(fmt::format("recipe name '{}' must be [A-Za-z0-9_.+-]+", r.name));
    if (!names.insert(r.name).second) return fail(fmt::format("recipe name '{}' is used twice", r.name));
    auto words = split_words(std::string_view(body).substr(colon + 1));
    if (!words.ok()) return fail(std::string(words.status().message()));
    if (words->empty()) return fail(fmt::format("recipe '{}' has no type", r.name));
    for (size_t i = 0; i < words->size(); ++i) r.text += (i ? " " : "") + (*words)[i];
    const std::string& head = words->front();
    if (head.rfind("file=", 0) == 0) {
      if (words->size() != 1) return fail("a file= recipe takes no flags");
      r.gguf_path = head.substr(5);
      if (r.gguf_path.empty()) return fail("file= needs a path");
    } else {
      auto preset = parse_quant_preset(head);
      if (!preset.ok()) return fail(std::string(preset.status().message()));
      r.type = head;
      r.args.assign(words->begin() + 1, words->end());
    }
    out.push_back(std::move(r));
  }
  if (out.empty()) return Status::InvalidArgument(fmt::format("{}: no recipes", file_name));
  return out;
}

std::string recipe_hash(const Recipe& r, const std::string& base_identity, const std::string& imatrix_identity) {
  // Length-prefixed fields, so that no two different inputs serialise to the same bytes.
  std::string key;
  auto add = [&](const std::string& s) { key += fmt::format("{}:{};", s.size(), s); };
  add("expertmesh-recipe-v1");
  add(r.is_file() ? "file" : "quantize");
  add(r.is_file() ? r.gguf_path : r.type);
  add(std::to_string(r.args.size()));
  for (const auto& a : r.args) add(a);
  add(base_identity);
  add(imatrix_identity);
  return sha256_hex(key.data(), key.size());
}

}  // namespace expertmesh::coordinator
