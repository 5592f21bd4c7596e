// Request schema of the HTTP API: parses and validates the JSON bodies of POST
// /v1/chat/completions, /v1/completions and the peer's (llama-server's) /completion, /tokenize
// and /detokenize into plain structs. Pure functions: no sockets, no model.
//
// Contract: every parse_* either returns a fully validated request or a Status whose message
// names the offending field and what was expected (`"temperature" must be a number`,
// `"messages[2].content" must be a string, an array of content parts or null`). Status codes:
// kInvalidArgument / kUnsupported → HTTP 400, kOutOfRange (body larger than the limit) → 413;
// see api_error_from_status(). Nothing here throws, whatever the bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace expertmesh::coordinator::http {

using Json = nlohmann::ordered_json;  // keeps client key order (tool schemas reach the template as sent)

// Limits applied while parsing; the server fills them from its flags.
struct ApiLimits {
  size_t max_body_bytes = 8u << 20;    // larger bodies: 413
  size_t max_prompt_bytes = 4u << 20;  // total prompt / message text
  int32_t max_tokens_cap = 32768;      // max_tokens / n_predict above this: 400
  size_t max_messages = 4096;
  size_t max_stop_strings = 16;
  int32_t max_n_probs = 20;      // logprobs / top_logprobs / n_probs
  size_t max_logit_bias = 4096;  // logit_bias entries (OpenAI allows 300; the peer has no limit)
  size_t max_json_depth = 64;
};

// Sampling and generation options shared by all generating endpoints. Unset optionals mean
// "server default".
struct GenerationParams {
  int32_t n_predict = -1;  // -1: not given (the server applies its default / the cap)
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<double> min_p;
  std::optional<int32_t> top_k;
  std::optional<int64_t> seed;  // -1 (peer): random
  std::vector<std::string> stop;
  int32_t n_probs = 0;  // top alternatives per token to report; 0: no logprobs
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool ignore_eos = false;     // the peer's extension: generate through end-of-generation tokens

  // Penalties (OpenAI's frequency/presence, the peer's repeat_*; see model/sampling.h).
  std::optional<double> repeat_penalty, frequency_penalty, presence_penalty;
  std::optional<int32_t> repeat_last_n;  // -1: the whole slot context
  std::optional<bool> penalize_nl;
  // logit_bias as sent; token ids are checked and strings tokenized by the server, which knows
  // the vocabulary. `field` names the entry for errors.
  struct LogitBias {
    std::optional<int64_t> id;  // else `text`
    std::string text;
    float bias = 0;  // -inf: banned ("false" in the peer's form)
    std::string field;
  };
  std::vector<LogitBias> logit_bias;
};

struct ToolCall {
  std::string id;
  std::string type = "function";
  std::string name;
  Json arguments;  // as sent: a JSON string (OpenAI) or an object
};

struct ChatMessage {
  std::string role;                    // system, developer, user, assistant, tool
  std::optional<std::string> content;  // text parts joined; nullopt: null / absent
  std::string reasoning_content;       // assistant (DeepSeek/Qwen extension)
  std::string name;
  std::string tool_call_id;  // role tool
  std::vector<ToolCall> tool_calls;
};

// OpenAI's tool_choice. "none" still shows the tools to the template (as the peer does) but the
// output is not parsed for tool calls. "required" and a named function need constrained
// sampling, which expertmesh does not have: the parser refuses them rather than ignoring them.
enum class ToolChoice { kAuto, kNone };

struct ChatRequest {
  std::string model;
  std::vector<ChatMessage> messages;
  Json tools;                                  // null when absent; else the validated array as sent
  ToolChoice tool_choice = ToolChoice::kAuto;  // kAuto when absent
  Json chat_template_kwargs = Json::object();  // peer extension, e.g. {"enable_thinking": false}
  bool logprobs = false;
  GenerationParams gen;
  std::string user;
};

// Whether the generated text is parsed for tool calls: tools were sent and tool_choice allows them.
bool parses_tool_calls(const ChatRequest& req);

// /v1/completions and /completion: the prompt is text or token ids.
struct CompletionRequest {
  std::string model;
  std::string prompt;
  std::vector<int32_t> prompt_tokens;
  bool prompt_is_tokens = false;
  GenerationParams gen;
  std::string user;
};

struct TokenizeRequest {
  std::string content;
  bool add_special = false;
  bool with_pieces = false;
};

struct DetokenizeRequest {
  std::vector<int32_t> tokens;
};

// Body bytes → JSON object (size limit, syntax, depth, top-level object).
Result<Json> parse_json_body(std::string_view body, const ApiLimits& lim);

Result<ChatRequest> parse_chat_request(std::string_view body, const ApiLimits& lim);
Result<CompletionRequest> parse_oai_completion_request(std::string_view body, const ApiLimits& lim);  // /v1/completions
Result<CompletionRequest> parse_completion_request(std::string_view body, const ApiLimits& lim);      // /completion
Result<TokenizeRequest> parse_tokenize_request(std::string_view body, const ApiLimits& lim);
Result<DetokenizeRequest> parse_detokenize_request(std::string_view body, const ApiLimits& lim);

// The messages as a chat template expects them (HF apply_chat_template): role, content
// (string or null), plus reasoning_content, name, tool_call_id, tool_calls when present.
Json messages_for_template(const ChatRequest& req);

// HTTP error of a failed parse or request: {"error": {"code", "message", "type"}}.
struct ApiError {
  int code = 400;
  std::string type = "invalid_request_error";
  std::string message;
};
ApiError api_error_from_status(const Status& s);
Json error_body(const ApiError& e);

}  // namespace expertmesh::coordinator::http
