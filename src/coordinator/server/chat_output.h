// Splits the generated text of a chat completion into what OpenAI clients expect, as
// llama-server does with its default `--reasoning-format deepseek`:
//
//   reasoning   text inside <think>...</think> (Qwen3, DeepSeek-R1) → reasoning_content. The
//               block may only open the output (after optional whitespace, which stays
//               content), or the prompt may already have opened it ("thinking forced open":
//               the output starts inside it and only </think> appears). Reasoning is trimmed
//               of surrounding whitespace, whitespace after </think> is dropped, and several
//               consecutive blocks are concatenated. Unclosed at the end: all of it is reasoning.
//   tool calls  with tools in the request, <tool_call>BODY</tool_call> blocks anywhere in the
//               content (Hermes / Qwen3: BODY is {"name": ..., "arguments": {...}}; Qwen3-Coder:
//               <function=NAME><parameter=P>V</parameter>...</function>) become tool calls;
//               whitespace right after a block is dropped. A block whose body parses as
//               neither stays in the content verbatim. An unclosed block at the end is a call
//               when its body parses, else content.
//
// Incremental: feed() returns only text that is final — a tail that may still become a tag
// (`<tool_c`, `</thi`), trailing reasoning whitespace and an unfinished tool call are held
// back. Contract: for any split of a text into feed()s, the concatenation of every returned
// delta plus finish() equals the one-shot parse(). Pure; never throws; not thread-safe.
//
// ChatStreamFormatter (below) turns the deltas into the chat.completion.chunk SSE frames of a
// streamed response; openai_tool_calls()/chat_finish_reason() serve the non-streaming one.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/http/openai_request.h"
#include "coordinator/http/openai_response.h"

namespace expertmesh::coordinator::server {

// --reasoning-format: none leaves <think> tags in the content; deepseek extracts them.
enum class ReasoningFormat { kNone, kDeepseek };
const char* reasoning_format_name(ReasoningFormat f);
// "none" | "deepseek" | "auto" (the peer's per-template detection; for the <think> syntax
// parsed here it is deepseek); false for anything else.
bool parse_reasoning_format(std::string_view name, ReasoningFormat* out);

struct ChatOutputOptions {
  ReasoningFormat reasoning = ReasoningFormat::kDeepseek;
  bool thinking_forced_open = false;  // the prompt ended inside <think>
  bool parse_tool_calls = false;      // the request had tools
  // The request's tools (OpenAI array). Qwen3-Coder parameter values are JSON-decoded unless
  // the tool's schema declares the parameter a string; null: decode when valid JSON.
  http::Json tools;
};

// A completed call; arguments is JSON text (an object for both syntaxes).
struct ParsedToolCall {
  std::string name;
  std::string arguments;
  bool operator==(const ParsedToolCall&) const = default;
};

struct ChatDelta {
  std::string content;
  std::string reasoning;
  std::vector<ParsedToolCall> tool_calls;
  bool empty() const { return content.empty() && reasoning.empty() && tool_calls.empty(); }
  void append(ChatDelta d);
};

class ChatOutputParser {
 public:
  explicit ChatOutputParser(ChatOutputOptions opt);
  // Appends generated text; returns what became final.
  ChatDelta feed(std::string_view text);
  // The generation ended: returns everything still held back. Further feed()s are not expected.
  ChatDelta finish();
  // One-shot: a fresh parser fed `text` then finished.
  static ChatDelta parse(std::string_view text, const ChatOutputOptions& opt);

 private:
  enum class State { kStart, kReasoning, kAfterThink, kContent, kTool, kAfterTool };
  // Consumes buf_ from pos_ as far as is final (all of it when `final`), appending to `out`.
  void run(bool final, ChatDelta& out);
  // One step in the current state; false when it must wait for more text.
  bool step(bool final, ChatDelta& out);
  bool step_think_open(bool final, bool keep_ws, ChatDelta& out);
  bool step_reasoning(bool final, ChatDelta& out);
  bool step_content(bool final, ChatDelta& out);
  bool step_tool(bool final, ChatDelta& out);
  void add_reasoning(std::string_view text, ChatDelta& out);
  // BODY of <tool_call>BODY</tool_call> → a call, or false when it is neither syntax.
  bool parse_tool_body(std::string_view body, ParsedToolCall* call) const;

  ChatOutputOptions opt_;
  State state_;
  std::string buf_;
  size_t pos_ = 0;               // buf_[0, pos_) is consumed
  std::string reasoning_ws_;     // trailing reasoning whitespace, emitted if text follows
  bool reasoning_text_ = false;  // the current block has produced non-whitespace
};

// OpenAI tool calls of parsed ones; arguments stay JSON text (a JSON string in the response),
// ids come from `make_id`.
std::vector<http::ToolCall> openai_tool_calls(std::vector<ParsedToolCall> calls,
                                              const std::function<std::string()>& make_id);

// The peer's rule: a generation cut by the length limit stays "length"; otherwise tool calls
// make it "tool_calls".
http::FinishReason chat_finish_reason(http::FinishReason generated, bool has_tool_calls);

// Streaming chat: turns generated text into chat.completion.chunk SSE frames through a
// ChatOutputParser — {"reasoning_content": ...} and {"content": ...} deltas, and each completed
// call as {"tool_calls": [{"index", "id", "type": "function", "function": {"name",
// "arguments"}}]} (index counting calls in the response). The role chunk, the finish chunk and
// usage stay with the caller. A token's logprobs ride on its first frame, or on an empty
// content frame when all of its text is held back.
class ChatStreamFormatter {
 public:
  ChatStreamFormatter(http::ResponseMeta meta, ChatOutputOptions opt, std::function<std::string()> make_id);
  std::string feed(std::string_view text, std::vector<http::TokenLogprob> logprobs);
  std::string finish();  // the frames of everything held back
  bool sent_tool_calls() const { return n_calls_ > 0; }

 private:
  std::string frames(ChatDelta d, std::vector<http::TokenLogprob> logprobs);
  http::ResponseMeta meta_;
  ChatOutputParser parser_;
  std::function<std::string()> make_id_;
  size_t n_calls_ = 0;
};

}  // namespace expertmesh::coordinator::server
