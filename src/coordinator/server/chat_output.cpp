#include "coordinator/server/chat_output.h"

#include <algorithm>
#include <utility>

namespace expertmesh::coordinator::server {

namespace {

using http::Json;

constexpr std::string_view kThinkOpen = "<think>";
constexpr std::string_view kThinkClose = "</think>";
constexpr std::string_view kToolOpen = "<tool_call>";
constexpr std::string_view kToolClose = "</tool_call>";
constexpr std::string_view kFunctionOpen = "<function=";
constexpr std::string_view kFunctionClose = "</function>";
constexpr std::string_view kParamOpen = "<parameter=";
constexpr std::string_view kParamClose = "</parameter>";

// Model output is bounded by n_predict, but a body like "[[[[..." must not reach the JSON
// parser's recursion unbounded.
constexpr int kMaxJsonDepth = 64;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string_view strip(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

size_t skip_space(std::string_view s, size_t i) {
  while (i < s.size() && is_space(s[i])) ++i;
  return i;
}

// Length of the longest suffix of `s` that is a proper prefix of `tag` (text that may still
// become the tag once more arrives).
size_t partial_tag_suffix(std::string_view s, std::string_view tag) {
  for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; --n)
    if (s.substr(s.size() - n) == tag.substr(0, n)) return n;
  return 0;
}

// True when the nesting of [ and { in `s` (outside strings) stays within kMaxJsonDepth.
bool json_depth_ok(std::string_view s) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') in_string = true;
    if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

// JSON text of `s`, or discarded when it is not JSON (never throws).
Json parse_json(std::string_view s) {
  if (!json_depth_ok(s)) return Json(Json::value_t::discarded);
  return Json::parse(s.begin(), s.end(), nullptr, /*allow_exceptions=*/false);
}

std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

// Hermes / Qwen3: {"name": "...", "arguments": {...}} (arguments may also be a JSON string).
bool parse_json_call(std::string_view body, ParsedToolCall* call) {
  const Json j = parse_json(body);
  if (!j.is_object()) return false;
  auto name = j.find("name");
  if (name == j.end() || !name->is_string() || name->get<std::string>().empty()) return false;
  call->name = name->get<std::string>();
  auto args = j.find("arguments");
  if (args == j.end() || args->is_null()) {
    call->arguments = "{}";
  } else if (args->is_string()) {
    call->arguments = args->get<std::string>();
  } else {
    call->arguments = dump(*args);
  }
  return true;
}

// True when the schema of tool `fn`'s parameter `param` in `tools` declares type "string".
bool declared_string(const Json& tools, const std::string& fn, const std::string& param) {
  if (!tools.is_array()) return false;
  for (const Json& t : tools) {
    if (!t.is_object() || !t.contains("function") || !t["function"].is_object()) continue;
    const Json& f = t["function"];
    if (!f.contains("name") || f["name"] != fn) continue;
    if (!f.contains("parameters") || !f["parameters"].is_object()) return false;
    const Json& props = f["parameters"].value("properties", Json::object());
    if (!props.is_object() || !props.contains(param) || !props[param].is_object()) return false;
    auto type = props[param].find("type");
    return type != props[param].end() && *type == "string";
  }
  return false;
}

// Qwen3-Coder: <function=NAME>(<parameter=P>V</parameter>)*</function>, whitespace between
// elements allowed. V is stripped; it is its JSON value when it parses as JSON and the tool's
// schema does not declare P a string, else the text.
bool parse_xml_call(std::string_view body, const Json& tools, ParsedToolCall* call) {
  if (!body.starts_with(kFunctionOpen)) return false;
  size_t i = kFunctionOpen.size();
  const size_t name_end = body.find('>', i);
  if (name_end == std::string_view::npos) return false;
  const std::string name(strip(body.substr(i, name_end - i)));
  if (name.empty()) return false;
  Json args = Json::object();
  i = skip_space(body, name_end + 1);
  while (body.substr(i).starts_with(kParamOpen)) {
    i += kParamOpen.size();
    const size_t key_end = body.find('>', i);
    if (key_end == std::string_view::npos) return false;
    const std::string key(strip(body.substr(i, key_end - i)));
    const size_t val_end = body.find(kParamClose, key_end + 1);
    if (key.empty() || val_end == std::string_view::npos) return false;
    const std::string_view raw = strip(body.substr(key_end + 1, val_end - key_end - 1));
    Json value = declared_string(tools, name, key) ? Json(Json::value_t::discarded) : parse_json(raw);
    args[key] = value.is_discarded() ? Json(std::string(raw)) : std::move(value);
    i = skip_space(body, val_end + kParamClose.size());
  }
  if (!body.substr(i).starts_with(kFunctionClose)) return false;
  if (skip_space(body, i + kFunctionClose.size()) != body.size()) return false;
  call->name = name;
  call->arguments = dump(args);
  return true;
}

}  // namespace

const char* reasoning_format_name(ReasoningFormat f) { return f == ReasoningFormat::kNone ? "none" : "deepseek"; }

bool parse_reasoning_format(std::string_view name, ReasoningFormat* out) {
  if (name == "none") {
    *out = ReasoningFormat::kNone;
  } else if (name == "deepseek" || name == "auto") {
    *out = ReasoningFormat::kDeepseek;
  } else {
    return false;
  }
  return true;
}

void ChatDelta::append(ChatDelta d) {
  content += d.content;
  reasoning += d.reasoning;
  for (auto& c : d.tool_calls) tool_calls.push_back(std::move(c));
}

ChatOutputParser::ChatOutputParser(ChatOutputOptions opt) : opt_(std::move(opt)) {
  if (opt_.reasoning == ReasoningFormat::kNone) {
    state_ = State::kContent;
  } else {
    state_ = opt_.thinking_forced_open ? State::kReasoning : State::kStart;
  }
}

ChatDelta ChatOutputParser::feed(std::string_view text) {
  buf_.append(text);
  ChatDelta out;
  run(/*final=*/false, out);
  // Keep the buffer to what is still unconsumed.
  buf_.erase(0, pos_);
  pos_ = 0;
  return out;
}

ChatDelta ChatOutputParser::finish() {
  ChatDelta out;
  run(/*final=*/true, out);
  buf_.clear();
  pos_ = 0;
  return out;
}

ChatDelta ChatOutputParser::parse(std::string_view text, const ChatOutputOptions& opt) {
  ChatOutputParser p(opt);
  ChatDelta out = p.feed(text);
  out.append(p.finish());
  return out;
}

void ChatOutputParser::run(bool final, ChatDelta& out) {
  while (step(final, out)) {
  }
}

bool ChatOutputParser::step(bool final, ChatDelta& out) {
  switch (state_) {
    case State::kStart:
      return step_think_open(final, /*keep_ws=*/true, out);
    case State::kAfterThink:
      return step_think_open(final, /*keep_ws=*/false, out);
    case State::kReasoning:
      return step_reasoning(final, out);
    case State::kContent:
      return step_content(final, out);
    case State::kTool:
      return step_tool(final, out);
    case State::kAfterTool: {
      pos_ = skip_space(buf_, pos_);
      if (pos_ == buf_.size()) return false;
      state_ = State::kContent;
      return true;
    }
  }
  return false;
}

// At the start of the output (keep_ws: leading whitespace is content) or after </think>
// (whitespace dropped): a <think> opens a reasoning block, anything else is content.
bool ChatOutputParser::step_think_open(bool final, bool keep_ws, ChatDelta& out) {
  const size_t tag = skip_space(buf_, pos_);
  const std::string_view rest = std::string_view(buf_).substr(tag);
  if (rest.starts_with(kThinkOpen)) {
    if (keep_ws) out.content.append(buf_, pos_, tag - pos_);
    pos_ = tag + kThinkOpen.size();
    state_ = State::kReasoning;
    reasoning_text_ = false;
    reasoning_ws_.clear();
    return true;
  }
  const bool undecided = rest.empty() || kThinkOpen.starts_with(rest);
  if (undecided && !final) return false;
  if (!keep_ws) pos_ = tag;
  state_ = State::kContent;
  return true;
}

void ChatOutputParser::add_reasoning(std::string_view text, ChatDelta& out) {
  for (char c : text) {
    if (is_space(c)) {
      // Leading whitespace of a block is dropped; inner whitespace waits for the next text.
      if (reasoning_text_) reasoning_ws_ += c;
      continue;
    }
    out.reasoning += reasoning_ws_;
    reasoning_ws_.clear();
    out.reasoning += c;
    reasoning_text_ = true;
  }
}

bool ChatOutputParser::step_reasoning(bool final, ChatDelta& out) {
  const std::string_view rest = std::string_view(buf_).substr(pos_);
  const size_t close = rest.find(kThinkClose);
  if (close != std::string_view::npos) {
    add_reasoning(rest.substr(0, close), out);
    reasoning_ws_.clear();  // trailing whitespace of the block
    pos_ += close + kThinkClose.size();
    state_ = State::kAfterThink;
    return true;
  }
  const size_t keep = final ? 0 : partial_tag_suffix(rest, kThinkClose);
  add_reasoning(rest.substr(0, rest.size() - keep), out);
  pos_ += rest.size() - keep;
  if (final) reasoning_ws_.clear();
  return false;
}

bool ChatOutputParser::step_content(bool final, ChatDelta& out) {
  const std::string_view rest = std::string_view(buf_).substr(pos_);
  if (!opt_.parse_tool_calls) {
    out.content += rest;
    pos_ = buf_.size();
    return false;
  }
  const size_t open = rest.find(kToolOpen);
  if (open != std::string_view::npos) {
    out.content += rest.substr(0, open);
    pos_ += open + kToolOpen.size();
    state_ = State::kTool;
    return true;
  }
  const size_t keep = final ? 0 : partial_tag_suffix(rest, kToolOpen);
  out.content += rest.substr(0, rest.size() - keep);
  pos_ += rest.size() - keep;
  return false;
}

bool ChatOutputParser::step_tool(bool final, ChatDelta& out) {
  const std::string_view rest = std::string_view(buf_).substr(pos_);
  const size_t close = rest.find(kToolClose);
  if (close == std::string_view::npos && !final) return false;
  const std::string_view body = rest.substr(0, close == std::string_view::npos ? rest.size() : close);
  const size_t consumed = close == std::string_view::npos ? rest.size() : close + kToolClose.size();
  ParsedToolCall call;
  if (parse_tool_body(body, &call)) {
    out.tool_calls.push_back(std::move(call));
    state_ = State::kAfterTool;
  } else {
    // Not a call: the block stays in the content as generated.
    out.content += kToolOpen;
    out.content += rest.substr(0, consumed);
    state_ = State::kContent;
  }
  pos_ += consumed;
  return true;
}

bool ChatOutputParser::parse_tool_body(std::string_view body, ParsedToolCall* call) const {
  const std::string_view s = strip(body);
  if (s.starts_with(kFunctionOpen)) return parse_xml_call(s, opt_.tools, call);
  return parse_json_call(s, call);
}

std::vector<http::ToolCall> openai_tool_calls(std::vector<ParsedToolCall> calls,
                                              const std::function<std::string()>& make_id) {
  std::vector<http::ToolCall> out;
  out.reserve(calls.size());
  for (auto& c : calls) {
    http::ToolCall t;
    t.id = make_id();
    t.name = std::move(c.name);
    t.arguments = std::move(c.arguments);  // a JSON string, as OpenAI sends arguments
    out.push_back(std::move(t));
  }
  return out;
}

http::FinishReason chat_finish_reason(http::FinishReason generated, bool has_tool_calls) {
  return generated != http::FinishReason::kLength && has_tool_calls ? http::FinishReason::kToolCalls : generated;
}

namespace {

Json tool_call_chunk_json(const http::ResponseMeta& meta, size_t index, const http::ToolCall& call) {
  Json fn = Json::object();
  fn["name"] = call.name;
  fn["arguments"] = call.arguments;
  Json tc = Json::object();
  tc["index"] = index;
  tc["id"] = call.id;
  tc["type"] = "function";
  tc["function"] = std::move(fn);
  Json j = http::chat_chunk_role_json(meta);  // the chunk envelope; its delta is replaced
  j["choices"][0]["delta"] = Json{{"tool_calls", Json::array({std::move(tc)})}};
  return j;
}

}  // namespace

ChatStreamFormatter::ChatStreamFormatter(http::ResponseMeta meta, ChatOutputOptions opt,
                                         std::function<std::string()> make_id)
    : meta_(std::move(meta)), parser_(std::move(opt)), make_id_(std::move(make_id)) {}

std::string ChatStreamFormatter::feed(std::string_view text, std::vector<http::TokenLogprob> logprobs) {
  return frames(parser_.feed(text), std::move(logprobs));
}

std::string ChatStreamFormatter::finish() { return frames(parser_.finish(), {}); }

std::string ChatStreamFormatter::frames(ChatDelta d, std::vector<http::TokenLogprob> lp) {
  std::string out;
  if (!d.reasoning.empty()) {
    out += http::sse_frame(http::chat_chunk_content_json(meta_, d.reasoning, lp, /*reasoning=*/true));
    lp.clear();
  }
  if (!d.content.empty() || (!lp.empty() && d.tool_calls.empty())) {
    out += http::sse_frame(http::chat_chunk_content_json(meta_, d.content, lp));
    lp.clear();
  }
  for (const auto& call : openai_tool_calls(std::move(d.tool_calls), make_id_))
    out += http::sse_frame(tool_call_chunk_json(meta_, n_calls_++, call));
  return out;
}

}  // namespace expertmesh::coordinator::server
