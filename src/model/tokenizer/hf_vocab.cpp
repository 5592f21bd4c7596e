#include "model/tokenizer/hf_vocab.h"

#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace expertmesh::hf {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr int32_t kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5;

Result<std::string> read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) return Status::IoError(fmt::format("{}: cannot open", p.string()));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Result<json> read_json(const fs::path& p) {
  EM_ASSIGN_OR_RETURN(std::string text, read_file(p));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::Corruption(fmt::format("{}: not valid JSON", p.string()));
  return j;
}

// A token given as "text" or {"content": "text"} (tokenizer_config.json); "" when absent/null.
std::string token_string(const json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  return "";
}

struct Added {
  std::string text;
  bool special = true;
};

}  // namespace

Result<VocabSummary> add_hf_vocab(const std::string& dir_s, const std::string& pre_in, gguf::Writer* w) {
  const fs::path dir(dir_s);
  std::map<int64_t, std::string> vocab;  // id -> token
  std::vector<std::string> merges;
  std::map<int64_t, Added> added;

  const fs::path tj = dir / "tokenizer.json";
  if (fs::exists(tj)) {
    EM_ASSIGN_OR_RETURN(json t, read_json(tj));
    const json* model = t.contains("model") ? &t["model"] : nullptr;
    if (!model || !model->is_object() || !model->contains("vocab") || !(*model)["vocab"].is_object())
      return Status::Corruption(fmt::format("{}: key 'model.vocab' missing or not an object", tj.string()));
    if (model->contains("type") && (*model)["type"].is_string() && (*model)["type"] != "BPE")
      return Status::Unsupported(fmt::format("{}: key 'model.type' is '{}'; only byte-level BPE is supported",
                                             tj.string(), (*model)["type"].get<std::string>()));
    for (const auto& [k, v] : (*model)["vocab"].items()) {
      if (!v.is_number_integer()) return Status::Corruption(fmt::format("{}: model.vocab['{}'] is not an integer", tj.string(), k));
      vocab[v.get<int64_t>()] = k;
    }
    if (model->contains("merges") && (*model)["merges"].is_array()) {
      for (const json& m : (*model)["merges"]) {
        if (m.is_string()) merges.push_back(m.get<std::string>());
        else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
          merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
        else return Status::Corruption(fmt::format("{}: key 'model.merges' has an entry that is not a pair", tj.string()));
      }
    }
    if (t.contains("added_tokens") && t["added_tokens"].is_array()) {
      for (const json& a : t["added_tokens"]) {
        if (!a.is_object() || !a.contains("id") || !a.contains("content")) continue;
        added[a["id"].get<int64_t>()] = {a["content"].get<std::string>(), a.value("special", true)};
      }
    }
  } else {
    const fs::path vj = dir / "vocab.json", mt = dir / "merges.txt";
    EM_ASSIGN_OR_RETURN(json v, read_json(vj));
    if (!v.is_object()) return Status::Corruption(fmt::format("{}: not a JSON object of token -> id", vj.string()));
    for (const auto& [k, id] : v.items()) {
      if (!id.is_number_integer()) return Status::Corruption(fmt::format("{}: token '{}' has a non-integer id", vj.string(), k));
      vocab[id.get<int64_t>()] = k;
    }
    EM_ASSIGN_OR_RETURN(std::string mtext, read_file(mt));
    std::istringstream ms(mtext);
    for (std::string line; std::getline(ms, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line.rfind("#version", 0) == 0) continue;
      merges.push_back(line);
    }
  }

  json cfg = json::object();
  const fs::path cj = dir / "tokenizer_config.json";
  if (fs::exists(cj)) {
    EM_ASSIGN_OR_RETURN(cfg, read_json(cj));
    if (cfg.contains("added_tokens_decoder") && cfg["added_tokens_decoder"].is_object()) {
      for (const auto& [k, a] : cfg["added_tokens_decoder"].items()) {
        int64_t id = -1;
        auto [end, ec] = std::from_chars(k.data(), k.data() + k.size(), id);
        if (ec != std::errc() || end != k.data() + k.size() || id < 0)
          return Status::Corruption(fmt::format("{}: added_tokens_decoder key '{}' is not an id", cj.string(), k));
        if (!a.is_object() || !a.contains("content") || !a["content"].is_string())
          return Status::Corruption(fmt::format("{}: added_tokens_decoder['{}'] has no content", cj.string(), k));
        added[id] = {a["content"].get<std::string>(), a.value("special", true)};
      }
    }
  }
  if (vocab.empty()) return Status::Corruption(fmt::format("{}: empty vocabulary", dir_s));

  std::string pre = pre_in;
  if (pre.empty()) {
    const std::string cls = cfg.value("tokenizer_class", std::string());
    if (cls.find("Qwen2") != std::string::npos) pre = "qwen2";
    else
      return Status::InvalidArgument(fmt::format(
          "{}: cannot tell the pre-tokenizer (tokenizer_class '{}'); pass --pre NAME (e.g. qwen2, llama-bpe, gpt-2)",
          dir_s, cls));
  }

  int64_t n = 0;
  if (!vocab.empty()) n = std::max(n, vocab.rbegin()->first + 1);
  if (!added.empty()) n = std::max(n, added.rbegin()->first + 1);
  if (vocab.begin()->first < 0 || (!added.empty() && added.begin()->first < 0))
    return Status::Corruption(fmt::format("{}: negative token id", dir_s));
  std::vector<std::string> tokens(n);
  std::vector<gguf::Value> types(n);
  std::map<std::string, int32_t> by_text;
  for (int64_t i = 0; i < n; ++i) {
    int32_t type = kNormal;
    if (auto a = added.find(i); a != added.end()) {
      tokens[i] = a->second.text;
      type = a->second.special ? kControl : kUserDefined;
    } else if (auto v = vocab.find(i); v != vocab.end()) {
      tokens[i] = v->second;
    } else {
      tokens[i] = fmt::format("[PAD{}]", i);
      type = kUnused;
    }
    types[i] = gguf::Value::i32(type);
    by_text.emplace(tokens[i], static_cast<int32_t>(i));
  }

  if (!w->find("general.architecture")) w->set("general.architecture", gguf::Value::string(pre == "qwen2" ? "qwen2" : "llama"));
  if (!w->find("general.name")) w->set("general.name", gguf::Value::string(fs::absolute(dir).filename().string()));
  w->set("tokenizer.ggml.model", gguf::Value::string("gpt2"));
  w->set("tokenizer.ggml.pre", gguf::Value::string(pre));
  w->set("tokenizer.ggml.tokens", gguf::Value::string_array(tokens));
  w->set("tokenizer.ggml.token_type", gguf::Value::array_of(gguf::ValueType::INT32, std::move(types)));
  w->set("tokenizer.ggml.merges", gguf::Value::string_array(merges));
  const std::pair<const char*, const char*> ids[] = {{"bos_token", "tokenizer.ggml.bos_token_id"},
                                                     {"eos_token", "tokenizer.ggml.eos_token_id"},
                                                     {"unk_token", "tokenizer.ggml.unknown_token_id"},
                                                     {"pad_token", "tokenizer.ggml.padding_token_id"}};
  for (const auto& [cfg_key, gguf_key] : ids) {
    const std::string t = token_string(cfg, cfg_key);
    if (t.empty()) continue;
    auto it = by_text.find(t);
    if (it == by_text.end())
      return Status::Corruption(fmt::format("{}: key '{}' names token '{}', which is not in the vocabulary", cj.string(), cfg_key, t));
    w->set(gguf_key, gguf::Value::u32(static_cast<uint32_t>(it->second)));
  }
  for (const auto& [cfg_key, gguf_key] : {std::pair{"add_bos_token", "tokenizer.ggml.add_bos_token"},
                                          std::pair{"add_eos_token", "tokenizer.ggml.add_eos_token"}}) {
    auto it = cfg.find(cfg_key);
    if (it != cfg.end() && it->is_boolean()) w->set(gguf_key, gguf::Value::boolean(it->get<bool>()));
  }
  if (cfg.contains("chat_template") && cfg["chat_template"].is_string())
    w->set("tokenizer.chat_template", gguf::Value::string(cfg["chat_template"].get<std::string>()));
  VocabSummary s;
  s.pre = pre;
  s.n_tokens = static_cast<size_t>(n);
  s.n_merges = merges.size();
  s.n_added = added.size();
  return s;
}

Result<VocabSummary> write_vocab_gguf(const std::string& dir, const std::string& pre, const std::string& out) {
  gguf::Writer w;
  EM_ASSIGN_OR_RETURN(VocabSummary s, add_hf_vocab(dir, pre, &w));
  w.set_vocab_only(true);
  EM_RETURN_IF_ERROR(w.validate());
  EM_ASSIGN_OR_RETURN(auto paths, w.write(out));
  (void)paths;
  return s;
}

}  // namespace expertmesh::hf
