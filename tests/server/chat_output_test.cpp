// ChatOutputParser: reasoning extraction (<think>, thinking forced open), Hermes and Qwen3-Coder
// tool calls, malformed blocks, and the incremental contract — every split of every text into
// feeds gives the one-shot result.
#include "coordinator/server/chat_output.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace expertmesh::coordinator::server {
namespace {

ChatOutputOptions deepseek(bool forced = false, bool tools = false) {
  ChatOutputOptions o;
  o.thinking_forced_open = forced;
  o.parse_tool_calls = tools;
  return o;
}

ChatOutputOptions none_fmt(bool tools = false) {
  ChatOutputOptions o;
  o.reasoning = ReasoningFormat::kNone;
  o.parse_tool_calls = tools;
  return o;
}

void expect_eq(const ChatDelta& got, const ChatDelta& want, const std::string& where) {
  EXPECT_EQ(got.content, want.content) << where;
  EXPECT_EQ(got.reasoning, want.reasoning) << where;
  ASSERT_EQ(got.tool_calls.size(), want.tool_calls.size()) << where;
  for (size_t i = 0; i < want.tool_calls.size(); ++i) {
    EXPECT_EQ(got.tool_calls[i].name, want.tool_calls[i].name) << where;
    EXPECT_EQ(got.tool_calls[i].arguments, want.tool_calls[i].arguments) << where;
  }
}

ChatDelta feed_pieces(const std::vector<std::string>& pieces, const ChatOutputOptions& opt) {
  ChatOutputParser p(opt);
  ChatDelta all;
  for (const auto& s : pieces) all.append(p.feed(s));
  all.append(p.finish());
  return all;
}

// The one-shot parse equals `want`, and so does every split into two and three feeds and
// every byte fed alone.
void check_all_splits(const std::string& text, const ChatOutputOptions& opt, const ChatDelta& want) {
  expect_eq(ChatOutputParser::parse(text, opt), want, "one-shot: " + text);
  for (size_t i = 0; i <= text.size(); ++i) {
    expect_eq(feed_pieces({text.substr(0, i), text.substr(i)}, opt), want, "split " + std::to_string(i));
    for (size_t j = i; j <= text.size(); ++j)
      expect_eq(feed_pieces({text.substr(0, i), text.substr(i, j - i), text.substr(j)}, opt), want,
                "split " + std::to_string(i) + "," + std::to_string(j));
    if (::testing::Test::HasFailure()) return;
  }
  std::vector<std::string> bytes;
  for (char c : text) bytes.emplace_back(1, c);
  expect_eq(feed_pieces(bytes, opt), want, "byte by byte: " + text);
}

ChatDelta want(std::string content, std::string reasoning = "", std::vector<ParsedToolCall> calls = {}) {
  ChatDelta d;
  d.content = std::move(content);
  d.reasoning = std::move(reasoning);
  d.tool_calls = std::move(calls);
  return d;
}

TEST(ChatOutput, ReasoningBlockGoesToReasoningContent) {
  check_all_splits("<think>\nLet me think.\n</think>\n\nThe answer is 4.", deepseek(),
                   want("The answer is 4.", "Let me think."));
}

TEST(ChatOutput, LeadingWhitespaceBeforeThinkStaysContent) {
  check_all_splits("  <think>a b</think>  c", deepseek(), want("  c", "a b"));
}

TEST(ChatOutput, InnerWhitespaceOfReasoningKeptTrailingDropped) {
  check_all_splits("<think>  one\n\ntwo \n</think>x", deepseek(), want("x", "one\n\ntwo"));
}

TEST(ChatOutput, ThinkingForcedOpenOnlyClosingTag) {
  check_all_splits("\nreasoning here\n</think>\n\nanswer", deepseek(/*forced=*/true), want("answer", "reasoning here"));
}

TEST(ChatOutput, UnclosedReasoningIsAllReasoning) {
  check_all_splits("<think>still thinking </thi", deepseek(), want("", "still thinking </thi"));
  check_all_splits("no tags, forced open", deepseek(true), want("", "no tags, forced open"));
}

TEST(ChatOutput, ConsecutiveThinkBlocksConcatenate) {
  check_all_splits("<think>a</think>\n<think>b</think>\nc", deepseek(), want("c", "ab"));
}

TEST(ChatOutput, ThinkNotAtStartIsContent) {
  check_all_splits("hello <think>x</think> there", deepseek(), want("hello <think>x</think> there"));
}

TEST(ChatOutput, PartialThinkPrefixThatIsNotATag) {
  check_all_splits("<thin air", deepseek(), want("<thin air"));
  check_all_splits("<", deepseek(), want("<"));
  check_all_splits("   ", deepseek(), want("   "));
  check_all_splits("", deepseek(), want(""));
}

TEST(ChatOutput, ReasoningFormatNoneLeavesTags) {
  check_all_splits("<think>a</think>b", none_fmt(), want("<think>a</think>b"));
  ReasoningFormat f;
  EXPECT_TRUE(parse_reasoning_format("none", &f));
  EXPECT_EQ(f, ReasoningFormat::kNone);
  EXPECT_TRUE(parse_reasoning_format("deepseek", &f));
  EXPECT_EQ(f, ReasoningFormat::kDeepseek);
  EXPECT_FALSE(parse_reasoning_format("auto-ish", &f));
}

TEST(ChatOutput, HermesToolCall) {
  const std::string text =
      "I will check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 3}}\n"
      "</tool_call>";
  check_all_splits(text, deepseek(false, true),
                   want("I will check.\n", "", {{"get_weather", R"({"city":"Paris","days":3})"}}));
}

TEST(ChatOutput, SeveralToolCallsAfterReasoning) {
  const std::string text =
      "<think>need two</think>\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"b\", \"arguments\": \"{\\\"x\\\":1}\"}\n</tool_call>\n";
  check_all_splits(text, deepseek(false, true), want("", "need two", {{"a", "{}"}, {"b", R"({"x":1})"}}));
}

TEST(ChatOutput, WithoutToolsTagsStayContent) {
  const std::string text = "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>";
  check_all_splits(text, deepseek(), want(text));
}

TEST(ChatOutput, MalformedToolCallStaysContent) {
  const std::string bad = "<tool_call>\n{\"name\": \"a\", \"arguments\": {\n</tool_call>";
  check_all_splits("x " + bad + " y", deepseek(false, true), want("x " + bad + " y"));
  const std::string no_name = "<tool_call>{\"arguments\": {}}</tool_call>";
  check_all_splits(no_name, deepseek(false, true), want(no_name));
  const std::string deep = "<tool_call>" + std::string(5000, '[') + "</tool_call>";
  EXPECT_EQ(ChatOutputParser::parse(deep, deepseek(false, true)).content, deep);
}

TEST(ChatOutput, UnclosedToolCallAtEnd) {
  check_all_splits("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"q\": 1}}", deepseek(false, true),
                   want("", "", {{"f", R"({"q":1})"}}));
  check_all_splits("ok <tool_call>\n{\"name\": \"f\"", deepseek(false, true), want("ok <tool_call>\n{\"name\": \"f\""));
}

TEST(ChatOutput, PartialToolTagHeldBackWhileStreaming) {
  ChatOutputParser p(deepseek(false, true));
  ChatDelta d = p.feed("Hello <tool_");
  EXPECT_EQ(d.content, "Hello ");  // "<tool_" may open a call
  d = p.feed("box> world");
  EXPECT_EQ(d.content, "<tool_box> world");
  d = p.feed(" <tool_call>{\"name\": \"f\", \"arguments\": {}}");
  EXPECT_EQ(d.content, " ");
  EXPECT_TRUE(d.tool_calls.empty());  // not closed yet
  d = p.feed("</tool_call>");
  ASSERT_EQ(d.tool_calls.size(), 1u);
  EXPECT_EQ(d.tool_calls[0].name, "f");
  EXPECT_TRUE(p.finish().empty());
}

TEST(ChatOutput, ReasoningStreamsBeforeClose) {
  ChatOutputParser p(deepseek());
  EXPECT_EQ(p.feed("<think>\nab").reasoning, "ab");
  EXPECT_EQ(p.feed("c \n").reasoning, "c");  // trailing whitespace waits
  EXPECT_EQ(p.feed("d</").reasoning, " \nd");
  ChatDelta d = p.feed("think>\n\nans");
  EXPECT_EQ(d.reasoning, "");
  EXPECT_EQ(d.content, "ans");
}

TEST(ChatOutput, Qwen3CoderXmlToolCall) {
  ChatOutputOptions o = deepseek(false, true);
  o.tools = http::Json::parse(R"([{"type": "function", "function": {"name": "write",
      "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "n": {"type": "integer"},
      "code": {"type": "string"}}}}}])");
  const std::string text =
      "<tool_call>\n<function=write>\n<parameter=path>\n123\n</parameter>\n<parameter=n>\n7\n</parameter>\n"
      "<parameter=code>\nprint(1)\n</parameter>\n</function>\n</tool_call>";
  check_all_splits(text, o, want("", "", {{"write", R"j({"path":"123","n":7,"code":"print(1)"})j"}}));
  // Without the schema a value that parses as JSON is JSON.
  o.tools = nullptr;
  EXPECT_EQ(ChatOutputParser::parse(text, o).tool_calls.at(0).arguments, R"j({"path":123,"n":7,"code":"print(1)"})j");
  const std::string broken = "<tool_call>\n<function=write>\n<parameter=path>\nx\n</function>\n</tool_call>";
  check_all_splits(broken, o, want(broken));
}

// Random texts assembled from tag fragments and filler: the split invariant holds for every
// option set (catches hold-back and state bugs that hand-written cases miss).
TEST(ChatOutput, RandomTextsSplitInvariant) {
  const std::vector<std::string> parts = {"<think>",
                                          "</think>",
                                          "<tool_call>",
                                          "</tool_call>",
                                          "{\"name\": \"f\", \"arguments\": {}}",
                                          "<",
                                          "</",
                                          " ",
                                          "\n",
                                          "a",
                                          "<tool",
                                          "<thi",
                                          "<function=g><parameter=p>1</parameter></function>",
                                          "}"};
  std::mt19937 rng(1234);
  const std::vector<ChatOutputOptions> opts = {deepseek(), deepseek(true), deepseek(false, true), deepseek(true, true),
                                               none_fmt(true)};
  for (int iter = 0; iter < 150; ++iter) {
    std::string text;
    const int n = 1 + static_cast<int>(rng() % 7);
    for (int k = 0; k < n; ++k) text += parts[rng() % parts.size()];
    const ChatOutputOptions& o = opts[rng() % opts.size()];
    const ChatDelta one = ChatOutputParser::parse(text, o);
    for (size_t i = 0; i <= text.size(); ++i)
      expect_eq(feed_pieces({text.substr(0, i), text.substr(i)}, o), one, "text: " + text);
    std::vector<std::string> bytes;
    for (char c : text) bytes.emplace_back(1, c);
    expect_eq(feed_pieces(bytes, o), one, "bytes: " + text);
    if (HasFailure()) return;
  }
}

// The "data:" frames of an SSE text as JSON.
std::vector<http::Json> frames_of(const std::string& sse) {
  std::vector<http::Json> out;
  size_t pos = 0;
  while (pos < sse.size()) {
    const size_t end = sse.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "unterminated frame";
    if (end == std::string::npos) break;
    const std::string frame = sse.substr(pos, end - pos);
    EXPECT_EQ(frame.rfind("data: ", 0), 0u) << frame;
    out.push_back(http::Json::parse(frame.substr(6), nullptr, false));
    EXPECT_FALSE(out.back().is_discarded()) << frame;
    pos = end + 2;
  }
  return out;
}

// Streaming: random splits of a reasoning + content + two tool calls output give the OpenAI
// streaming shape — reasoning and content deltas whose concatenation is the one-shot parse,
// then one tool_calls delta per call with index 0, 1, a fresh id, type and function.
TEST(ChatStreamFormatter, ReasoningContentAndToolCallChunks) {
  const std::string text =
      "<think>plan</think>\n\nCalling.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>";
  const ChatOutputOptions opt = deepseek(false, true);
  const ChatDelta one = ChatOutputParser::parse(text, opt);
  ASSERT_EQ(one.tool_calls.size(), 2u);
  std::mt19937 rng(99);
  for (int iter = 0; iter < 50; ++iter) {
    http::ResponseMeta meta;
    meta.id = "chatcmpl-t";
    meta.model = "m";
    int next_id = 0;
    ChatStreamFormatter f(meta, opt, [&] { return "call_" + std::to_string(next_id++); });
    std::string sse;
    for (size_t pos = 0; pos < text.size();) {
      const size_t n = 1 + rng() % 9;
      sse += f.feed(text.substr(pos, n), {});
      pos += n;
    }
    sse += f.finish();
    EXPECT_TRUE(f.sent_tool_calls());
    std::string content, reasoning;
    std::vector<http::Json> calls;
    for (const http::Json& j : frames_of(sse)) {
      EXPECT_EQ(j["object"], "chat.completion.chunk");
      EXPECT_EQ(j["id"], "chatcmpl-t");
      const http::Json& choice = j["choices"][0];
      EXPECT_TRUE(choice["finish_reason"].is_null());
      const http::Json& d = choice["delta"];
      ASSERT_EQ(d.size(), 1u) << d.dump();
      if (d.contains("content")) content += d["content"].get<std::string>();
      if (d.contains("reasoning_content")) reasoning += d["reasoning_content"].get<std::string>();
      if (d.contains("tool_calls")) {
        EXPECT_TRUE(content.size() == one.content.size()) << "a call before the content that precedes it";
        calls.push_back(d["tool_calls"].at(0));
      }
    }
    EXPECT_EQ(content, one.content);
    EXPECT_EQ(reasoning, one.reasoning);
    ASSERT_EQ(calls.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_EQ(calls[i]["index"], i);
      EXPECT_EQ(calls[i]["id"], "call_" + std::to_string(i));
      EXPECT_EQ(calls[i]["type"], "function");
      EXPECT_EQ(calls[i]["function"]["name"], one.tool_calls[i].name);
      EXPECT_EQ(calls[i]["function"]["arguments"], one.tool_calls[i].arguments);  // a JSON string
    }
    if (HasFailure()) return;
  }
}

// Logprobs are never dropped: a token whose text is held back still reports them.
TEST(ChatStreamFormatter, HeldBackTokenKeepsItsLogprobs) {
  ChatStreamFormatter f(http::ResponseMeta{}, deepseek(false, true), [] { return std::string("id"); });
  http::TokenLogprob lp;
  lp.id = 5;
  lp.token = "<tool";
  lp.logprob = -0.5;
  const std::vector<http::Json> fr = frames_of(f.feed("<tool", {lp}));
  ASSERT_EQ(fr.size(), 1u);
  EXPECT_EQ(fr[0]["choices"][0]["delta"]["content"], "");
  EXPECT_EQ(fr[0]["choices"][0]["logprobs"]["content"][0]["id"], 5);
  const std::vector<http::Json> rest = frames_of(f.finish());
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0]["choices"][0]["delta"]["content"], "<tool");
  EXPECT_FALSE(f.sent_tool_calls());
}

TEST(ChatOutput, FinishReasonAndOpenAiToolCalls) {
  using http::FinishReason;
  EXPECT_EQ(chat_finish_reason(FinishReason::kStop, true), FinishReason::kToolCalls);
  EXPECT_EQ(chat_finish_reason(FinishReason::kStop, false), FinishReason::kStop);
  EXPECT_EQ(chat_finish_reason(FinishReason::kLength, true), FinishReason::kLength);
  int n = 0;
  auto calls = openai_tool_calls({{"f", R"({"a":1})"}, {"g", "{}"}}, [&] { return "c" + std::to_string(n++); });
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[1].id, "c1");
  EXPECT_EQ(calls[0].name, "f");
  ASSERT_TRUE(calls[0].arguments.is_string());
  EXPECT_EQ(calls[0].arguments.get<std::string>(), R"({"a":1})");
  // The non-streaming body: content null next to tool calls, arguments as a JSON string.
  http::ChatResult r;
  r.tool_calls = calls;
  r.finish = FinishReason::kToolCalls;
  const http::Json body = http::chat_completion_json(http::ResponseMeta{}, r);
  const http::Json& msg = body["choices"][0]["message"];
  EXPECT_TRUE(msg["content"].is_null());
  EXPECT_EQ(msg["tool_calls"][0]["function"]["arguments"], R"({"a":1})");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "tool_calls");
}

}  // namespace
}  // namespace expertmesh::coordinator::server
