// Real chat templates from ../shared/golden rendered against Python jinja2's output
// (chat_template_golden_cases.h): Qwen3 (tokenizer_config.json and the thinking_0527 one),
// Qwen2 (tokenizer_config.json) and phi-3 (tokenizer.chat_template of its vocab GGUF, read with
// our GGUF reader); plus mutations of the real Qwen3 template never crashing.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "model/chat_template/chat_template.h"
#include "model/gguf/gguf.h"
#include "tests/common/golden.h"
#include "tests/model/chat_template_golden_cases.h"

namespace expertmesh::chat {
namespace {

using Json = nlohmann::ordered_json;

struct GoldenTemplate {
  std::string source;
  std::string bos, eos;  // what the expected outputs were rendered with
};

std::string tokenizer_config_template(const std::string& rel) {
  std::ifstream f(testing::golden_dir() / rel);
  std::stringstream ss;
  ss << f.rdbuf();
  Json cfg = Json::parse(ss.str(), nullptr, false);
  if (cfg.is_discarded() || !cfg.contains("chat_template")) return {};
  return cfg["chat_template"].get<std::string>();
}

std::map<std::string, GoldenTemplate> load_templates() {
  std::map<std::string, GoldenTemplate> t;
  t["qwen3"] = {tokenizer_config_template("vocab/qwen3/tokenizer_config.json"), "", "<|im_end|>"};
  t["qwen3_thinking0527"] = {tokenizer_config_template("vocab/qwen3/tokenizer_config.thinking_0527.json"), "",
                             "<|im_end|>"};
  t["qwen2"] = {tokenizer_config_template("vocab/qwen2/tokenizer_config.json"), "", "<|endoftext|>"};
  auto phi = gguf::File::open((testing::golden_dir() / "vocab/ggml-vocab-phi-3.gguf").string());
  if (phi.ok()) {
    auto s = (*phi)->get_string("tokenizer.chat_template");
    if (s.ok()) t["phi3"] = {*s, "<s>", "<|endoftext|>"};
  }
  return t;
}

TEST(ChatTemplateGolden, RealTemplatesMatchJinja2) {
  EM_REQUIRE_GOLDEN();
  auto templates = load_templates();
  for (const auto& [name, t] : templates) ASSERT_FALSE(t.source.empty()) << "template " << name << " not found";
  std::map<std::string, ChatTemplate> parsed;
  for (const auto& [name, t] : templates) {
    auto p = ChatTemplate::parse(t.source);
    ASSERT_TRUE(p.ok()) << name << ": " << p.status().to_string();
    parsed.emplace(name, *p);
  }
  int n_checked = 0;
  for (const auto& c : testdata::kGoldenChatCases) {
    SCOPED_TRACE(c.name);
    const GoldenTemplate& gt = templates.at(c.tmpl);
    ChatInputs in;
    in.messages = Json::parse(c.messages);
    if (c.tools) in.tools = Json::parse(c.tools);
    in.add_generation_prompt = c.add_generation_prompt;
    in.bos_token = gt.bos;
    in.eos_token = gt.eos;
    in.extra = Json::parse(c.extra);
    auto r = parsed.at(c.tmpl).apply(in);
    if (c.expected) {
      ASSERT_TRUE(r.ok()) << r.status().to_string();
      EXPECT_EQ(*r, c.expected);
    } else {
      EXPECT_FALSE(r.ok()) << "jinja2 raised an error but we rendered: " << *r;
    }
    ++n_checked;
  }
  EXPECT_GE(n_checked, 40);
}

TEST(ChatTemplateGolden, Qwen3ThinkingSwitch) {
  EM_REQUIRE_GOLDEN();
  auto t = ChatTemplate::parse(tokenizer_config_template("vocab/qwen3/tokenizer_config.json"));
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  ChatInputs in;
  in.messages = Json::parse(R"([{"role":"user","content":"hi"}])");
  in.add_generation_prompt = true;
  auto on = t->apply(in);
  in.extra = {{"enable_thinking", false}};
  auto off = t->apply(in);
  ASSERT_TRUE(on.ok() && off.ok());
  EXPECT_EQ(*on, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(*off, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

TEST(ChatTemplateGolden, MutatedQwen3TemplateNeverCrashes) {
  EM_REQUIRE_GOLDEN();
  const std::string base = tokenizer_config_template("vocab/qwen3/tokenizer_config.json");
  ASSERT_FALSE(base.empty());
  ChatInputs in;
  in.messages = Json::parse(testdata::kGoldenChatCases[0].messages);
  in.tools = Json::parse(R"([{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}])");
  in.add_generation_prompt = true;
  std::mt19937 rng(42);
  const char* pieces[] = {"{%", "%}",   "{{",  "}}",    "-",      "(",    ")",   "[", "]",  "'", "|",
                          ".",  "not ", "if ", "endif", "endfor", "loop", "ns.", "~", "::", "\n"};
  TemplateOptions opt;
  opt.limits.max_steps = 200000;
  int ok = 0, failed = 0;
  for (int iter = 0; iter < 400; ++iter) {
    std::string t = base;
    for (int k = 0; k < 3; ++k) {
      size_t pos = rng() % (t.size() + 1);
      if (rng() % 2) {
        t.erase(pos, 1 + rng() % 8);
      } else {
        t.insert(pos, pieces[rng() % (sizeof(pieces) / sizeof(pieces[0]))]);
      }
    }
    auto p = ChatTemplate::parse(t, opt);
    if (!p.ok()) {
      ++failed;
      continue;
    }
    (p->apply(in).ok() ? ok : failed)++;
  }
  EXPECT_GT(ok, 20);
  EXPECT_GT(failed, 20);
}

}  // namespace
}  // namespace expertmesh::chat
