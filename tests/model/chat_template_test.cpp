// Chat-template interpreter (src/model/chat_template): every construct, filter, test and method
// against outputs of Python jinja2 configured as HF transformers configures it
// (chat_template_cases.h), plus error locations, limits and a mutation fuzz.
#include "model/chat_template/chat_template.h"

#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <string>

#include "tests/model/chat_template_cases.h"

namespace expertmesh::chat {
namespace {

std::tm fixed_clock() {
  std::tm t{};
  t.tm_year = 125;  // 2025-03-07 14:05:09, a Friday
  t.tm_mon = 2;
  t.tm_mday = 7;
  t.tm_hour = 14;
  t.tm_min = 5;
  t.tm_sec = 9;
  t.tm_wday = 5;
  t.tm_yday = 65;
  return t;
}

Result<std::string> render(const std::string& tmpl,
                           const nlohmann::ordered_json& vars = nlohmann::ordered_json::object(),
                           TemplateOptions opt = {}) {
  if (!opt.now) opt.now = fixed_clock;
  EM_ASSIGN_OR_RETURN(ChatTemplate t, ChatTemplate::parse(tmpl, opt));
  return t.render(Value::from_json(vars));
}

TEST(ChatTemplate, MatchesJinja2OnEveryCase) {
  int n_ok = 0, n_err = 0;
  for (const auto& c : testdata::kJinjaCases) {
    SCOPED_TRACE(c.name);
    auto r = render(c.tmpl, nlohmann::ordered_json::parse(c.vars));
    if (c.expected) {
      ASSERT_TRUE(r.ok()) << r.status().to_string();
      EXPECT_EQ(*r, c.expected);
      ++n_ok;
    } else {
      ASSERT_FALSE(r.ok()) << "jinja2 raised an error but we rendered: " << *r;
      EXPECT_NE(r.status().message().find("chat template: line "), std::string::npos) << r.status().message();
      ++n_err;
    }
  }
  EXPECT_GT(n_ok, 70);
  EXPECT_GT(n_err, 10);
}

TEST(ChatTemplate, ErrorsNameLineColumnAndConstruct) {
  auto r = render("line one\n{% if true %}\n  {% include 'x.jinja' %}\n{% endif %}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("line 3:6"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("unsupported tag 'include'"), std::string::npos);

  r = render("{% for x in xs %}\n{{ x.y.z }}{% endfor %}",
             {{"xs", nlohmann::ordered_json::array({nlohmann::ordered_json::object()})}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("line 2:"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("has no attribute 'y'"), std::string::npos) << r.status().message();

  r = render("{{ raise_exception('Conversation roles must alternate user/assistant') }}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("Conversation roles must alternate user/assistant"), std::string::npos);

  r = render("{% for x in [1] recursive %}{% endfor %}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("recursive"), std::string::npos);

  r = render("{{ 'abc' | nosuchfilter }}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(r.status().message().find("nosuchfilter"), std::string::npos);
}

TEST(ChatTemplate, ConformanceFixesMatchJinja2) {
  // Every construct the real-template sweep found rendered differently from jinja2.
  int n = 0;
  for (const auto& c : testdata::kConformanceCases) {
    SCOPED_TRACE(c.name);
    auto r = render(c.tmpl, nlohmann::ordered_json::parse(c.vars));
    if (c.expected) {
      ASSERT_TRUE(r.ok()) << r.status().to_string();
      EXPECT_EQ(*r, c.expected);
    } else {
      ASSERT_FALSE(r.ok()) << "jinja2 raised an error but we rendered: " << *r;
      EXPECT_NE(r.status().message().find("chat template: line "), std::string::npos) << r.status().message();
    }
    ++n;
  }
  EXPECT_GE(n, 80);
}

TEST(ChatTemplate, MarkupEscapesWhatItIsCombinedWith) {
  // Functionary v3.1 builds tool descriptions as `"..."|safe + t | tojson`: the Markup on the
  // left HTML-escapes the JSON on the right, which is what HF renders and the model was trained on.
  auto r = render("{{ \"Use '\"|safe + t.name + \"'\\n\"|safe + t | tojson }}",
                  {{"t", {{"name", "f"}, {"d", "<x> & \"y\""}}}});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(*r, "Use 'f'\n{&#34;name&#34;: &#34;f&#34;, &#34;d&#34;: &#34;&lt;x&gt; &amp; \\&#34;y\\&#34;&#34;}");
  // `~` joins as plain str: nothing is escaped.
  r = render("{{ '<a>'|safe ~ '<b>' }}");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "<a><b>");
}

TEST(ChatTemplate, GeneratorsAreSinglePassAndNotJson) {
  // map/select return generators: always truthy, consumed by the first loop, no len(), no JSON.
  auto r = render(
      "{% set g = xs|select('odd') %}{{ 'T' if xs|select('gt', 9) else 'F' }}"
      "{% for x in g %}{{ x }}{% endfor %}|{% for x in g %}{{ x }}{% endfor %}|{{ xs|map('string')|join(',') }}",
      {{"xs", {1, 2, 3}}});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(*r, "T13||1,2,3");
  r = render("{{ tools | map(attribute='function') | tojson }}", {{"tools", {{{"function", 1}}}}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("Object of type generator is not JSON serializable"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("line 1:"), std::string::npos);
  r = render("{{ xs|select('odd')|length }}", {{"xs", {1}}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("has no len()"), std::string::npos) << r.status().message();
}

TEST(ChatTemplate, UnsupportedConstructsAreNamedWithTheirPosition) {
  struct Case {
    const char* tmpl;
    const char* where;
    const char* what;
  };
  const Case cases[] = {
      {"ok\n{{ 'a b' | urlencode }}", "line 2:", "jinja2 filter 'urlencode' is not implemented"},
      {"{{ 'x' ~ '\\N{BULLET}' }}", "line 1:11", "\\N{name} escape"},
      {"{{ 123456789012345678901234567890 }}", "line 1:4", "does not fit in 64 bits"},
      {"{{ 'a'.encode() }}", "line 1:", "str.encode()"},
      {"{{ '{:>5}'.format('x') }}", "line 1:", "format specs"},
      {"{% for x in [1] recursive %}{% endfor %}", "line 1:17", "recursive for loop"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.tmpl);
    auto r = render(c.tmpl);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(c.where), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(c.what), std::string::npos) << r.status().message();
  }
  // The immutable sandbox's refusal says why (Kimi-K2's tool-call template hits it).
  auto r = render("{% set l = [] %}{{ l.append(1) }}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("access to attribute 'append' of 'list' object is unsafe"), std::string::npos)
      << r.status().message();
}

TEST(ChatTemplate, GenerationTagRendersItsBody) {
  // transformers' AssistantTracker extension: {% generation %} only marks a span.
  auto r = render("a{% generation %}b{{ 1 + 1 }}{% endgeneration %}c");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(*r, "ab2c");
}

TEST(ChatTemplate, WhitespaceOptionsCanBeTurnedOff) {
  TemplateOptions opt;
  opt.lex.trim_blocks = false;
  opt.lex.lstrip_blocks = false;
  opt.lex.keep_trailing_newline = true;
  auto r = render("a\n  {% if true %}\nb{% endif %}\n", nlohmann::ordered_json::object(), opt);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "a\n  \nb\n");
  auto hf = render("a\n  {% if true %}\nb{% endif %}\n");
  ASSERT_TRUE(hf.ok());
  EXPECT_EQ(*hf, "a\nb");
}

TEST(ChatTemplate, StrftimeNowUsesTheInjectedClock) {
  TemplateOptions opt;
  opt.now = [] {
    std::tm t = fixed_clock();
    t.tm_year = 99;  // 1999
    return t;
  };
  auto r = render("{{ strftime_now('%Y-%m-%d') }}", nlohmann::ordered_json::object(), opt);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "1999-03-07");
}

TEST(ChatTemplate, ApplyPassesTheHfVariables) {
  auto t = ChatTemplate::parse(
      "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
      "{% if add_generation_prompt %}<assistant>{% endif %}{{ tools is none }}{{ documents is none }}"
      "{{ enable_thinking }}{{ eos_token }}");
  ASSERT_TRUE(t.ok());
  ChatInputs in;
  in.messages = nlohmann::ordered_json::parse(R"([{"role":"user","content":"hi"}])");
  in.add_generation_prompt = true;
  in.bos_token = "<s>";
  in.eos_token = "</s>";
  in.extra = {{"enable_thinking", false}, {"messages", "must not override"}};
  auto r = t->apply(in);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(*r, "<s><user>hi<assistant>TrueTrueFalse</s>");
}

TEST(ChatTemplate, ListMutationIsOptIn) {
  // Kimi-K2's tool-call template keeps a queue in a namespace with append/pop(0).
  const std::string t =
      "{%- set q = namespace(ids=[]) -%}{%- set _ = q.ids.append('a') -%}{%- set _ = q.ids.append('b') -%}"
      "{%- set _ = q.ids.extend(['c']) -%}{{ q.ids.pop(0) }}{{ q.ids }}{{ q.ids.pop() }}{{ q.ids | length }}";
  auto sandboxed = render(t);  // HF's ImmutableSandboxedEnvironment refuses list.append
  ASSERT_FALSE(sandboxed.ok());
  EXPECT_NE(sandboxed.status().message().find("append"), std::string::npos) << sandboxed.status().message();
  TemplateOptions opt;
  opt.limits.allow_list_mutation = true;
  auto r = render(t, nlohmann::ordered_json::object(), opt);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(*r, "a['b', 'c']c1");
  auto empty = render("{{ [].pop() }}", nlohmann::ordered_json::object(), opt);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("pop from empty list"), std::string::npos);
  EXPECT_FALSE(render("{{ (1, 2).append(3) }}", nlohmann::ordered_json::object(), opt).ok());
}

TEST(ChatTemplate, LimitsStopRunawayTemplates) {
  TemplateOptions opt;
  opt.limits.max_steps = 200000;
  opt.limits.max_output_bytes = 1 << 16;
  // Nested loops: 10^10 iterations without the step limit.
  auto r = render("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
                  nlohmann::ordered_json::object(), opt);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("steps"), std::string::npos) << r.status().message();
  r = render("{% for a in range(100000) %}xxxxxxxxxxxxxxxx{% endfor %}", nlohmann::ordered_json::object(), opt);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("output exceeds"), std::string::npos) << r.status().message();
  r = render("{{ 'x' * 100000000 }}", nlohmann::ordered_json::object(), opt);
  ASSERT_FALSE(r.ok());
  // Unbounded macro recursion.
  r = render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nested deeper"), std::string::npos) << r.status().message();
  // Expression nesting beyond the parser's depth.
  std::string deep = "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}";
  r = render(deep);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nesting"), std::string::npos) << r.status().message();
  std::string deep_not = "{{ " + [] {
    std::string s;
    for (int i = 0; i < 5000; ++i) s += "not ";
    return s;
  }() + "1 }}";
  EXPECT_FALSE(render(deep_not).ok());
  // Hostile input nesting.
  ChatInputs in;
  in.messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json* cur = &in.messages;
  for (int i = 0; i < 1000; ++i) {
    cur->push_back(nlohmann::ordered_json::array());
    cur = &cur->back();
  }
  auto t = ChatTemplate::parse("{{ messages }}");
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->apply(in).ok());
}

// Random mutations of a template exercising most constructs must never crash or hang: each
// render ends with a string or a Status.
TEST(ChatTemplate, MutatedTemplatesNeverCrash) {
  const std::string base =
      "{%- set ns = namespace(n=0, last=none) -%}\n"
      "{%- macro fmt(m, sep=': ') -%}{{ m.role | upper }}{{ sep }}{{ m.content | trim }}{%- endmacro -%}\n"
      "{%- for m in messages if m.role != 'tool' %}\n"
      "  {%- set ns.n = ns.n + 1 %}{{ loop.index }}/{{ loop.length }} {{ fmt(m) }}\n"
      "  {%- if m.content is string and '</think>' in m.content %}{{ m.content.split('</think>')[-1].lstrip('\\n') }}\n"
      "  {%- elif m.tool_calls %}{% for c in m.tool_calls %}{{ c.function.arguments | tojson(indent=2) }}{% endfor %}\n"
      "  {%- else %}{{ (m.content or '')[::-1] ~ ns.n }}{% endif %}\n"
      "{%- else %}empty{% endfor %}{# comment #}{{ messages | map(attribute='role') | join(',') }}\n"
      "{{ {'a': [1, 2.5, true, none]} | tojson }}{{ range(3) | list }}{{ 'x' if add_generation_prompt else 'y' }}";
  const nlohmann::ordered_json vars = nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": " sys "}, {"role": "user", "content": "<think>a</think>\n\nb"},
                 {"role": "assistant", "content": null, "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]},
                 {"role": "tool", "content": "r"}],
    "add_generation_prompt": true})");
  auto ref = render(base, vars);
  ASSERT_TRUE(ref.ok()) << ref.status().to_string();
  const std::vector<std::string> pieces = {
      "{%",   "%}", "{{", "}}", "{#", "#}", "-",     "+",   "(",      ")",  "[",    "]",   "{",    "}",     "'",
      "\"",   "|",  ".",  ",",  ":",  "if", "endif", "for", "endfor", "in", "not",  "is",  "set",  "macro", "endmacro",
      "loop", "ns", "~",  "*",  "**", "\\", "\n",    " ",   "0",      "-1", "None", "raw", "else", "elif",  "call"};
  std::mt19937 rng(1234);
  TemplateOptions opt;
  opt.limits.max_steps = 100000;
  opt.limits.max_output_bytes = 1 << 20;
  int ok = 0, failed = 0;
  auto start = std::chrono::steady_clock::now();
  for (int iter = 0; iter < 1500; ++iter) {
    std::string t = base;
    int n_mut = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n_mut; ++k) {
      size_t pos = rng() % (t.size() + 1);
      switch (rng() % 3) {
        case 0:
          t.erase(pos, 1 + rng() % 6);
          break;
        case 1:
          t.insert(pos, pieces[rng() % pieces.size()]);
          break;
        default: {
          size_t from = rng() % (t.size() + 1);
          t.insert(pos, t.substr(from, 1 + rng() % 12));
        }
      }
    }
    auto r = render(t, vars, opt);
    (r.ok() ? ok : failed)++;
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GT(ok, 100);  // mutations are not all fatal: the fuzz reaches the evaluator
  EXPECT_GT(failed, 100);
  EXPECT_LT(secs, 60.0);
}

}  // namespace
}  // namespace expertmesh::chat
