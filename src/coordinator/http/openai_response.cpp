#include "coordinator/http/openai_response.h"

#include <cmath>
#include <limits>

namespace expertmesh::coordinator::http {

namespace {

Json bytes_json(const std::string& s) {
  Json a = Json::array();
  for (unsigned char c : s) a.push_back(static_cast<int>(c));
  return a;
}

// Length of the longest prefix of `s` that is complete, valid UTF-8 (the peer trims token
// text to it: a token may end inside a multi-byte character).
size_t valid_utf8_prefix(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) break;
    bool ok = true;
    for (size_t k = 1; k < n; ++k) ok = ok && (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    if (!ok) break;
    i += n;
  }
  return i;
}

// JSON has no -inf: a zero probability is reported as the lowest finite double, like OpenAI's
// -9999-style floor but exact.
double finite_logprob(double lp) { return std::isfinite(lp) ? lp : -std::numeric_limits<double>::max(); }

Json token_entry(const TokenLogprob& t) {
  Json e = Json::object();
  e["id"] = t.id;
  e["token"] = t.token.substr(0, valid_utf8_prefix(t.token));
  e["bytes"] = bytes_json(t.token);
  e["logprob"] = finite_logprob(t.logprob);
  return e;
}

Json chunk_base(const ResponseMeta& meta, Json choices) {
  Json j = Json::object();
  j["choices"] = std::move(choices);
  j["created"] = meta.created;
  j["id"] = meta.id;
  j["model"] = meta.model;
  j["system_fingerprint"] = "expertmesh";
  j["object"] = "chat.completion.chunk";
  if (meta.timings) j["timings"] = timings_json(*meta.timings);
  return j;
}

}  // namespace

namespace {

// A whole (non-chunk) response around its one choice, keys in the peer's order: choices,
// created, model, system_fingerprint, object, usage (when given), id, timings (when set).
Json response_json(const ResponseMeta& meta, Json choice, const char* object, const std::optional<Usage>& usage) {
  Json j = Json::object();
  j["choices"] = Json::array({std::move(choice)});
  j["created"] = meta.created;
  j["model"] = meta.model;
  j["system_fingerprint"] = "expertmesh";
  j["object"] = object;
  if (usage) j["usage"] = usage_json(*usage);
  j["id"] = meta.id;
  if (meta.timings) j["timings"] = timings_json(*meta.timings);
  return j;
}

}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kToolCalls:
      return "tool_calls";
  }
  return "stop";
}

Json usage_json(const Usage& u) {
  Json j = Json::object();
  j["completion_tokens"] = u.completion_tokens;
  j["prompt_tokens"] = u.prompt_tokens;
  j["total_tokens"] = u.prompt_tokens + u.completion_tokens;
  j["prompt_tokens_details"] = Json{{"cached_tokens", u.cached_tokens}};
  return j;
}

Json timings_json(const Timings& t) {
  auto per_token = [](double ms, int64_t n) { return n > 0 ? ms / static_cast<double>(n) : 0.0; };
  auto per_second = [](double ms, int64_t n) { return ms > 0 ? 1e3 * static_cast<double>(n) / ms : 0.0; };
  Json j = Json::object();
  j["prompt_n"] = t.prompt_n;
  j["prompt_ms"] = t.prompt_ms;
  j["prompt_per_token_ms"] = per_token(t.prompt_ms, t.prompt_n);
  j["prompt_per_second"] = per_second(t.prompt_ms, t.prompt_n);
  j["predicted_n"] = t.predicted_n;
  j["predicted_ms"] = t.predicted_ms;
  j["predicted_per_token_ms"] = per_token(t.predicted_ms, t.predicted_n);
  j["predicted_per_second"] = per_second(t.predicted_ms, t.predicted_n);
  return j;
}

Json chat_logprobs_json(const std::vector<TokenLogprob>& toks) {
  Json content = Json::array();
  for (const auto& t : toks) {
    Json e = token_entry(t);
    Json top = Json::array();
    for (const auto& alt : t.top) top.push_back(token_entry(alt));
    e["top_logprobs"] = std::move(top);
    content.push_back(std::move(e));
  }
  return Json{{"content", std::move(content)}};
}

Json completion_logprobs_json(const std::vector<TokenLogprob>& toks, int64_t text_offset0) {
  Json tokens = Json::array(), lps = Json::array(), tops = Json::array(), offsets = Json::array();
  int64_t off = text_offset0;
  for (const auto& t : toks) {
    tokens.push_back(t.token.substr(0, valid_utf8_prefix(t.token)));
    lps.push_back(finite_logprob(t.logprob));
    Json top = Json::object();
    for (const auto& alt : t.top) top[alt.token.substr(0, valid_utf8_prefix(alt.token))] = finite_logprob(alt.logprob);
    tops.push_back(std::move(top));
    offsets.push_back(off);
    off += static_cast<int64_t>(t.token.size());
  }
  Json j = Json::object();
  j["tokens"] = std::move(tokens);
  j["token_logprobs"] = std::move(lps);
  j["top_logprobs"] = std::move(tops);
  j["text_offset"] = std::move(offsets);
  return j;
}

Json chat_completion_json(const ResponseMeta& meta, const ChatResult& r) {
  Json msg = Json::object();
  msg["role"] = "assistant";
  msg["content"] = (r.content.empty() && !r.tool_calls.empty()) ? Json(nullptr) : Json(r.content);
  if (!r.reasoning_content.empty()) msg["reasoning_content"] = r.reasoning_content;
  if (!r.tool_calls.empty()) {
    Json calls = Json::array();
    for (const auto& c : r.tool_calls) {
      Json fn = Json::object();
      fn["name"] = c.name;
      fn["arguments"] = c.arguments.is_string() ? c.arguments.get<std::string>() : dump_json(c.arguments);
      Json jc = Json::object();
      jc["type"] = "function";
      jc["function"] = std::move(fn);
      jc["id"] = c.id;
      calls.push_back(std::move(jc));
    }
    msg["tool_calls"] = std::move(calls);
  }
  Json choice = Json::object();
  choice["finish_reason"] = finish_reason_name(r.finish);
  choice["index"] = 0;
  choice["message"] = std::move(msg);
  choice["logprobs"] = r.want_logprobs ? chat_logprobs_json(r.logprobs) : Json(nullptr);
  return response_json(meta, std::move(choice), "chat.completion", r.usage);
}

Json chat_chunk_role_json(const ResponseMeta& meta) {
  Json delta = Json::object();
  delta["role"] = "assistant";
  delta["content"] = nullptr;
  Json choice = Json::object();
  choice["finish_reason"] = nullptr;
  choice["index"] = 0;
  choice["delta"] = std::move(delta);
  return chunk_base(meta, Json::array({std::move(choice)}));
}

Json chat_chunk_content_json(const ResponseMeta& meta, const std::string& piece, const std::vector<TokenLogprob>& lp,
                             bool reasoning) {
  Json delta = Json::object();
  delta[reasoning ? "reasoning_content" : "content"] = piece;
  Json choice = Json::object();
  choice["finish_reason"] = nullptr;
  choice["index"] = 0;
  choice["delta"] = std::move(delta);
  if (!lp.empty()) choice["logprobs"] = chat_logprobs_json(lp);
  return chunk_base(meta, Json::array({std::move(choice)}));
}

Json chat_chunk_finish_json(const ResponseMeta& meta, FinishReason finish) {
  Json choice = Json::object();
  choice["finish_reason"] = finish_reason_name(finish);
  choice["index"] = 0;
  choice["delta"] = Json::object();
  return chunk_base(meta, Json::array({std::move(choice)}));
}

Json chat_chunk_usage_json(const ResponseMeta& meta, const Usage& u) {
  Json j = chunk_base(meta, Json::array());
  j["usage"] = usage_json(u);
  return j;
}

Json text_completion_json(const ResponseMeta& meta, const std::string& text, std::optional<FinishReason> finish,
                          const std::optional<Usage>& usage, const std::vector<TokenLogprob>& lp, bool want_logprobs) {
  Json choice = Json::object();
  choice["text"] = text;
  choice["index"] = 0;
  choice["logprobs"] = want_logprobs ? completion_logprobs_json(lp, 0) : Json(nullptr);
  choice["finish_reason"] = finish ? Json(finish_reason_name(*finish)) : Json(nullptr);
  return response_json(meta, std::move(choice), "text_completion", usage);
}

Json native_completion_json(const ResponseMeta& meta, const NativeCompletion& c) {
  Json j = Json::object();
  j["content"] = c.content;
  j["id_slot"] = c.id_slot;
  j["stop"] = c.stop;
  j["model"] = meta.model;
  j["tokens_predicted"] = c.tokens_predicted;
  j["tokens_evaluated"] = c.tokens_evaluated;
  j["truncated"] = c.truncated;
  j["stopped_eos"] = c.stopped_eos;
  j["stopped_word"] = c.stopped_word;
  j["stopped_limit"] = c.stopped_limit;
  j["stopping_word"] = c.stopping_word;
  j["tokens_cached"] = c.tokens_cached;
  if (meta.timings) j["timings"] = timings_json(*meta.timings);
  if (!c.probs.empty()) j["completion_probabilities"] = chat_logprobs_json(c.probs)["content"];
  return j;
}

Json native_completion_chunk_json(const std::string& piece, const std::vector<TokenLogprob>& probs) {
  Json j = Json::object();
  j["content"] = piece;
  j["stop"] = false;
  if (!probs.empty()) j["completion_probabilities"] = chat_logprobs_json(probs)["content"];
  return j;
}

Json tokenize_json(const std::vector<int32_t>& tokens) { return Json{{"tokens", tokens}}; }

Json tokenize_with_pieces_json(const std::vector<int32_t>& tokens, const std::vector<std::string>& pieces) {
  Json arr = Json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& p = i < pieces.size() ? pieces[i] : std::string();
    Json e = Json::object();
    e["id"] = tokens[i];
    e["piece"] = valid_utf8_prefix(p) == p.size() ? Json(p) : bytes_json(p);
    arr.push_back(std::move(e));
  }
  return Json{{"tokens", std::move(arr)}};
}

Json detokenize_json(const std::string& content) { return Json{{"content", content}}; }

std::string dump_json(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string sse_frame(const Json& j) { return "data: " + dump_json(j) + "\n\n"; }

std::string sse_done() { return "data: [DONE]\n\n"; }

}  // namespace expertmesh::coordinator::http
