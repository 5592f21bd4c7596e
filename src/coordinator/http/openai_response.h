// Response schema of the HTTP API: builds the JSON bodies and server-sent-event frames of the
// OpenAI endpoints (chat.completion, chat.completion.chunk, text_completion) and the peer's
// native ones (/completion, /tokenize, /detokenize), field for field as OpenAI / llama-server
// write them. Pure functions; serialisation never throws (invalid UTF-8 in token text is
// replaced by U+FFFD, as the peer does).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/http/openai_request.h"

namespace expertmesh::coordinator::http {

enum class FinishReason { kStop, kLength, kToolCalls };
const char* finish_reason_name(FinishReason r);

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens served from the KV cache
};

// One generated token with its log-probability and the top alternatives (already sorted).
struct TokenLogprob {
  int32_t id = 0;
  std::string token;  // the token's text (may be a partial UTF-8 sequence)
  double logprob = 0;
  std::vector<TokenLogprob> top;  // alternatives; their own `top` is ignored
};

// The peer's `timings` object of /completion and the OpenAI responses (llama-server extension).
struct Timings {
  int64_t prompt_n = 0;
  double prompt_ms = 0;
  int64_t predicted_n = 0;
  double predicted_ms = 0;
};

// Identity shared by the frames of one response.
struct ResponseMeta {
  std::string id;       // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;  // unix seconds
  std::string model;
  std::optional<Timings> timings;  // included as "timings" when set
};

Json usage_json(const Usage& u);
Json timings_json(const Timings& t);
// Chat logprobs: {"content": [{"id", "token", "bytes", "logprob", "top_logprobs": [...]}]}.
Json chat_logprobs_json(const std::vector<TokenLogprob>& toks);
// Legacy completions logprobs: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}.
Json completion_logprobs_json(const std::vector<TokenLogprob>& toks, int64_t text_offset0);

// Non-streaming chat.completion with one choice.
struct ChatResult {
  std::string content;
  std::string reasoning_content;  // emitted as message.reasoning_content when non-empty
  std::vector<ToolCall> tool_calls;
  FinishReason finish = FinishReason::kStop;
  Usage usage;
  std::vector<TokenLogprob> logprobs;  // empty: "logprobs": null
  bool want_logprobs = false;
};
Json chat_completion_json(const ResponseMeta& meta, const ChatResult& r);

// Streaming: the first chunk carries {"role": "assistant", "content": null}; content chunks
// {"content": piece}; the last chunk an empty delta with the finish_reason; with
// include_usage a final chunk with "choices": [] and "usage".
Json chat_chunk_role_json(const ResponseMeta& meta);
Json chat_chunk_content_json(const ResponseMeta& meta, const std::string& piece, const std::vector<TokenLogprob>& lp,
                             bool reasoning = false);
Json chat_chunk_finish_json(const ResponseMeta& meta, FinishReason finish);
Json chat_chunk_usage_json(const ResponseMeta& meta, const Usage& u);

// text_completion (non-streaming, and one streamed piece with finish = nullopt).
Json text_completion_json(const ResponseMeta& meta, const std::string& text, std::optional<FinishReason> finish,
                          const std::optional<Usage>& usage, const std::vector<TokenLogprob>& lp, bool want_logprobs);

// /completion (llama-server native).
struct NativeCompletion {
  std::string content;
  int32_t id_slot = 0;
  bool stop = true;  // false on intermediate stream frames
  int64_t tokens_predicted = 0;
  int64_t tokens_evaluated = 0;
  int64_t tokens_cached = 0;
  bool truncated = false;
  bool stopped_eos = false;
  bool stopped_word = false;
  bool stopped_limit = false;
  std::string stopping_word;
  std::vector<TokenLogprob> probs;  // "completion_probabilities" when non-empty
};
Json native_completion_json(const ResponseMeta& meta, const NativeCompletion& c);
Json native_completion_chunk_json(const std::string& piece, const std::vector<TokenLogprob>& probs);

Json tokenize_json(const std::vector<int32_t>& tokens);
// with_pieces: [{"id", "piece"}], piece a string, or the bytes as an int array when not UTF-8.
Json tokenize_with_pieces_json(const std::vector<int32_t>& tokens, const std::vector<std::string>& pieces);
Json detokenize_json(const std::string& content);

// Server-sent events: "data: <json>\n\n"; the stream ends with "data: [DONE]\n\n".
std::string sse_frame(const Json& j);
std::string sse_done();
// JSON text of a body, never throwing on invalid UTF-8.
std::string dump_json(const Json& j);

}  // namespace expertmesh::coordinator::http
