// The generating routes: POST /v1/chat/completions, /v1/completions and /completion. Each parses
// and validates the body, turns it into prompt tokens and a GenerationRequest, submits it to
// the Scheduler and answers either with one JSON body (waiting for the kDone event) or with a
// stream of server-sent events fed by an EventChannel.
#include <fmt/format.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <functional>
#include <memory>
#include <random>

#include "coordinator/http/openai_response.h"
#include "coordinator/server/chat_output.h"
#include "coordinator/server/chat_prompt.h"
#include "coordinator/server/event_channel.h"
#include "coordinator/server/routes.h"

namespace expertmesh::coordinator::server {

namespace {

using http::Json;

// How long a waiting handler sleeps between looks at its client.
constexpr std::chrono::milliseconds kPollInterval{100};

std::string random_id(const char* prefix) {
  static constexpr char kAlnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::random_device rd;
  std::mt19937 rng(rd());
  std::string id = prefix;
  for (int i = 0; i < 32; ++i) id += kAlnum[rng() % (sizeof(kAlnum) - 1)];
  return id;
}

http::ResponseMeta make_meta(const char* prefix, const std::string& request_model, const std::string& alias) {
  http::ResponseMeta m;
  m.id = random_id(prefix);
  m.created = static_cast<int64_t>(std::time(nullptr));
  m.model = request_model.empty() ? alias : request_model;
  return m;
}

http::Usage usage_of(const GenerationEvent& done) {
  return http::Usage{done.n_prompt, done.n_predicted, done.n_cached};
}

// Status of a failed submit(): a full queue or a stopping server is 503, the rest as parsed.
void send_submit_error(httplib::Response& res, const Status& s) {
  http::ApiError e = http::api_error_from_status(s);
  if (s.code() == StatusCode::kUnsupported || s.code() == StatusCode::kAborted) {
    e.code = 503;
    e.type = "unavailable_error";
  }
  send_error(res, e);
}

}  // namespace

namespace {

// One submitted request and its event channel. Destroying the owner (the handler or the stream
// provider's state) without having seen the end cancels the request.
struct Job {
  Scheduler* sched = nullptr;
  std::shared_ptr<EventChannel> ch = std::make_shared<EventChannel>();
  uint64_t id = 0;
  bool submitted = false, finished = false;
  HttpCounters* counters = nullptr;
  const std::atomic<bool>* stopping = nullptr;  // the server's stop() flag

  ~Job() { abandon(); }
  // The client is gone (or the handler gave up): stop delivering and free the slot.
  void abandon() {
    if (!submitted || finished) return;
    finished = true;
    ch->close();
    sched->cancel(id);
  }
};

// Everything a non-streaming response needs, gathered from the events.
struct Collected {
  std::string text;
  std::vector<http::TokenLogprob> probs;
  GenerationEvent end;  // kDone or kError
};

// Adds one event to `c`; true when it ended the request (kDone or kError).
bool absorb(Job& job, Collected& c, GenerationEvent ev) {
  if (ev.kind == GenerationEvent::Kind::kToken) {
    c.text += ev.text;
    c.probs.insert(c.probs.end(), ev.probs.begin(), ev.probs.end());
    return false;
  }
  job.finished = true;
  c.end = std::move(ev);
  return true;
}

// Collects events until the request ends (true) or `deadline` passes (false). A stopping
// server ends it with kAborted.
bool collect_until(Job& job, Collected& c, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    std::optional<GenerationEvent> ev = job.ch->pop(std::clamp(left, std::chrono::milliseconds(0), kPollInterval));
    if (ev) {
      if (absorb(job, c, std::move(*ev))) return true;
      continue;
    }
    if (job.stopping->load()) {
      job.abandon();
      c.end.kind = GenerationEvent::Kind::kError;
      c.end.error = Status::Aborted("the server is stopping");
      return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
  }
}

// Writes one chunk of a chunked response (nothing when empty), ending the response after the
// `last` one. A failed write means the client left: the job is cancelled (a disconnect unless
// the answer was already complete) and false stops the provider.
bool send_chunk(Job& job, httplib::DataSink& sink, const std::string& bytes, bool last) {
  if (!bytes.empty() && !sink.write(bytes.data(), bytes.size())) {
    if (!last) job.counters->disconnects.fetch_add(1);
    job.abandon();
    return false;
  }
  if (last) sink.done();
  return true;
}

// The JSON body of a finished non-streaming request (its end is kDone).
using BodyFn = std::function<Json(Collected&)>;

void send_collected(httplib::Response& res, Collected& c, const BodyFn& body) {
  if (c.end.kind == GenerationEvent::Kind::kError) return send_submit_error(res, c.end.error);
  send_json(res, body(c));
}

// Answers a non-streaming request. An answer ready within opt.plain_wait goes out as one JSON
// body with its status. A longer one becomes a chunked application/json response: a space every
// opt.heartbeat while it is computed (JSON allows leading whitespace), then the body. A failed
// heartbeat means the client left: the request is cancelled and its slot freed. An error in
// that phase is sent as the error body (the 200 status is already on the wire).
void respond_plain(const HttpServerOptions& opt, httplib::Response& res, std::shared_ptr<Job> job, BodyFn body) {
  auto c = std::make_shared<Collected>();
  if (collect_until(*job, *c, std::chrono::steady_clock::now() + opt.plain_wait)) return send_collected(res, *c, body);
  const std::chrono::milliseconds heartbeat = opt.heartbeat;
  res.set_chunked_content_provider(
      "application/json",
      [job, c, body, heartbeat](size_t, httplib::DataSink& sink) {
        const bool ended = collect_until(*job, *c, std::chrono::steady_clock::now() + heartbeat);
        std::string bytes = " ";
        if (ended)
          bytes = http::dump_json(c->end.kind == GenerationEvent::Kind::kError
                                      ? http::error_body(http::api_error_from_status(c->end.error))
                                      : body(*c));
        return send_chunk(*job, sink, bytes, ended);
      },
      [job](bool) { job->abandon(); });
}

// Turns the events of one stream into SSE bytes; called on the HTTP thread in event order.
using Formatter = std::function<std::string(const GenerationEvent&)>;

// Streams `job`'s events through `fmt` as a chunked text/event-stream response. A failed write
// or an unwritable socket cancels the job (freeing its slot); so does the response being torn
// down before the end (the releaser).
void stream_response(httplib::Response& res, std::shared_ptr<Job> job, Formatter format) {
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [job, format](size_t, httplib::DataSink& sink) {
        std::optional<GenerationEvent> ev = job->ch->pop(kPollInterval);
        if (!ev) {
          // Nothing yet: a socket the peer closed is noticed here or at the next write.
          if (job->stopping->load()) {
            job->abandon();
            return false;
          }
          if (!sink.is_writable()) {
            job->counters->disconnects.fetch_add(1);
            job->abandon();
            return false;
          }
          return true;
        }
        const bool last = ev->kind != GenerationEvent::Kind::kToken;
        if (last) job->finished = true;
        const std::string bytes = format(*ev);
        return send_chunk(*job, sink, bytes, last);
      },
      [job](bool) { job->abandon(); });
}

// logit_bias entries → (id, bias) for the sampler: ids checked against the vocabulary, strings
// tokenized (every token of the text gets the bias, as in the peer). Banning every token is an
// error: there would be nothing left to sample.
Result<std::vector<std::pair<int32_t, float>>> resolve_logit_bias(
    const Tokenizer& tok, const std::vector<http::GenerationParams::LogitBias>& in) {
  std::vector<std::pair<int32_t, float>> out;
  for (const auto& b : in) {
    std::vector<int32_t> ids;
    if (b.id) {
      if (*b.id < 0 || *b.id >= tok.n_vocab())
        return Status::InvalidArgument(
            fmt::format("\"{}\": token id {} is outside the vocabulary [0, {})", b.field, *b.id, tok.n_vocab()));
      ids.push_back(static_cast<int32_t>(*b.id));
    } else {
      ids = tok.encode(b.text, /*add_special=*/false);
      if (ids.empty()) return Status::InvalidArgument(fmt::format("\"{}\": the text gives no tokens", b.field));
    }
    for (int32_t id : ids) out.emplace_back(id, b.bias);
  }
  // Later entries for the same id replace earlier ones in the peer (a map); keep only the last.
  std::vector<std::pair<int32_t, float>> last;
  std::vector<bool> seen(static_cast<size_t>(tok.n_vocab()), false);
  for (auto it = out.rbegin(); it != out.rend(); ++it) {
    if (seen[size_t(it->first)]) continue;
    seen[size_t(it->first)] = true;
    last.push_back(*it);
  }
  size_t n_banned = 0;
  for (const auto& [id, b] : last) n_banned += std::isinf(b) && b < 0;
  if (n_banned > 0 && n_banned >= size_t(tok.n_vocab()))
    return Status::InvalidArgument("\"logit_bias\" bans every token of the vocabulary");
  return last;
}

// The sampling and stopping options of a request over the server's defaults; the seed is
// resolved here (absent or -1: random), so the scheduler never sees "random".
Result<GenerationRequest> make_request(const HttpServerOptions& opt, const Tokenizer& tok,
                                       const http::GenerationParams& g, std::vector<int32_t> prompt) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.n_predict = g.n_predict >= 0 ? g.n_predict : opt.n_predict;
  r.sampling = opt.sampling;
  if (g.temperature) r.sampling.temp = static_cast<float>(*g.temperature);
  if (g.top_p) r.sampling.top_p = static_cast<float>(*g.top_p);
  if (g.min_p) r.sampling.min_p = static_cast<float>(*g.min_p);
  if (g.top_k) r.sampling.top_k = *g.top_k;
  if (g.repeat_penalty) r.sampling.repeat_penalty = static_cast<float>(*g.repeat_penalty);
  if (g.frequency_penalty) r.sampling.frequency_penalty = static_cast<float>(*g.frequency_penalty);
  if (g.presence_penalty) r.sampling.presence_penalty = static_cast<float>(*g.presence_penalty);
  if (g.repeat_last_n) r.sampling.repeat_last_n = *g.repeat_last_n;
  if (g.penalize_nl) r.sampling.penalty_exempt = *g.penalize_nl ? -1 : tok.newline();
  if (!g.logit_bias.empty()) {
    EM_ASSIGN_OR_RETURN(r.sampling.logit_bias, resolve_logit_bias(tok, g.logit_bias));
  }
  if (g.seed && *g.seed >= 0) {
    r.sampling.seed = static_cast<uint32_t>(*g.seed);
  } else {
    r.sampling.seed = std::random_device{}();
  }
  r.stop = g.stop;
  r.n_probs = g.n_probs;
  r.ignore_eos = g.ignore_eos;
  return r;
}

// Shared front half of the generating routes: prompt length check, submit. On failure the
// response is written and nullptr returned.
std::shared_ptr<Job> submit_job(Scheduler& sched, HttpCounters& counters, const std::atomic<bool>& stopping,
                                int64_t n_ctx_slot, Result<GenerationRequest> made, const char* prompt_field,
                                httplib::Response& res) {
  if (!made.ok()) {
    send_status_error(res, made.status());
    return nullptr;
  }
  GenerationRequest gen = std::move(*made);
  const int64_t n_prompt = static_cast<int64_t>(gen.prompt.size());
  if (n_prompt == 0) {
    send_status_error(res, Status::InvalidArgument(fmt::format("\"{}\": the prompt gives no tokens", prompt_field)));
    return nullptr;
  }
  if (n_prompt >= n_ctx_slot) {
    send_status_error(res, Status::InvalidArgument(fmt::format(
                               "\"{}\": the prompt has {} tokens; the slot context holds {} (-c / --parallel)",
                               prompt_field, n_prompt, n_ctx_slot)));
    return nullptr;
  }
  auto job = std::make_shared<Job>();
  job->sched = &sched;
  job->counters = &counters;
  job->stopping = &stopping;
  std::shared_ptr<EventChannel> ch = job->ch;
  auto id = sched.submit(std::move(gen), [ch](const GenerationEvent& ev) { return ch->push(ev); });
  if (!id.ok()) {
    send_submit_error(res, id.status());
    return nullptr;
  }
  job->id = *id;
  job->submitted = true;
  return job;
}

// True when the rendered prompt ends inside an opened <think> (the template forced thinking
// open): the generation then starts in the reasoning and only </think> will appear.
bool prompt_opens_thinking(const Tokenizer& tok, const std::vector<int32_t>& prompt) {
  constexpr size_t kTail = 16;  // <think> is one special token, or several plain ones, then "\n"
  const size_t n = std::min(prompt.size(), kTail);
  std::string tail = tok.decode(std::vector<int32_t>(prompt.end() - static_cast<std::ptrdiff_t>(n), prompt.end()));
  while (!tail.empty() && (tail.back() == ' ' || tail.back() == '\n' || tail.back() == '\r' || tail.back() == '\t'))
    tail.pop_back();
  return tail.ends_with("<think>");
}

}  // namespace

void HttpServer::Routes::chat_completions(HttpServer& s, const httplib::Request& req, httplib::Response& res) {
  auto parsed = http::parse_chat_request(req.body, s.opt_.limits);
  if (!parsed.ok()) return send_status_error(res, parsed.status());
  const http::ChatRequest& cr = *parsed;
  auto prompt = chat_prompt_tokens(s.tmpl_, s.tok_, cr);
  if (!prompt.ok()) return send_status_error(res, prompt.status());
  ChatOutputOptions out_opt;
  out_opt.reasoning = s.opt_.reasoning_format;
  out_opt.thinking_forced_open = prompt_opens_thinking(s.tok_, *prompt);
  out_opt.parse_tool_calls = http::parses_tool_calls(cr);
  out_opt.tools = cr.tools;
  std::shared_ptr<Job> job = submit_job(s.sched_, s.counters_, s.stopping_, s.sched_.stats().n_ctx_slot,
                                        make_request(s.opt_, s.tok_, cr.gen, std::move(*prompt)), "messages", res);
  if (!job) return;
  http::ResponseMeta meta = make_meta("chatcmpl-", cr.model, s.opt_.model_alias);
  const bool want_lp = cr.logprobs;

  if (!cr.gen.stream)
    return respond_plain(s.opt_, res, job, [meta, want_lp, out_opt](Collected& c) {
      http::ResponseMeta m = meta;
      m.timings = c.end.timings;
      ChatDelta parsed_out = ChatOutputParser::parse(c.text, out_opt);
      http::ChatResult r;
      r.content = std::move(parsed_out.content);
      r.reasoning_content = std::move(parsed_out.reasoning);
      r.tool_calls = openai_tool_calls(std::move(parsed_out.tool_calls), [] { return random_id("call_"); });
      r.finish = chat_finish_reason(c.end.finish, !r.tool_calls.empty());
      r.usage = usage_of(c.end);
      r.want_logprobs = want_lp;
      if (want_lp) r.logprobs = std::move(c.probs);
      return http::chat_completion_json(m, r);
    });
  const bool include_usage = cr.gen.include_usage;
  auto first = std::make_shared<bool>(true);
  // The formatter (parser state, tool calls sent) lives with the stream; the HTTP thread calls
  // it in event order.
  auto chat = std::make_shared<ChatStreamFormatter>(meta, out_opt, [] { return random_id("call_"); });
  stream_response(res, job, [meta, want_lp, include_usage, first, chat](const GenerationEvent& ev) {
    std::string out;
    if (*first) {
      out += http::sse_frame(http::chat_chunk_role_json(meta));
      *first = false;
    }
    if (ev.kind == GenerationEvent::Kind::kToken)
      return out + chat->feed(ev.text, want_lp ? ev.probs : std::vector<http::TokenLogprob>{});
    if (ev.kind == GenerationEvent::Kind::kError)
      return out + http::sse_frame(http::error_body(http::api_error_from_status(ev.error)));
    out += chat->finish();
    http::ResponseMeta last = meta;
    last.timings = ev.timings;
    out += http::sse_frame(http::chat_chunk_finish_json(last, chat_finish_reason(ev.finish, chat->sent_tool_calls())));
    if (include_usage) out += http::sse_frame(http::chat_chunk_usage_json(meta, usage_of(ev)));
    return out + http::sse_done();
  });
}

struct HttpServer::Routes::CompletionJob {
  std::shared_ptr<Job> job;
  http::CompletionRequest cr;
};

HttpServer::Routes::CompletionJob HttpServer::Routes::submit_completion(HttpServer& s, const httplib::Request& req,
                                                                        httplib::Response& res,
                                                                        CompletionParser parse) {
  CompletionJob out;
  auto parsed = parse(req.body, s.opt_.limits);
  if (!parsed.ok()) {
    send_status_error(res, parsed.status());
    return out;
  }
  out.cr = std::move(*parsed);
  auto prompt = completion_prompt_tokens(s.tok_, out.cr);
  if (!prompt.ok()) {
    send_status_error(res, prompt.status());
    return out;
  }
  out.job = submit_job(s.sched_, s.counters_, s.stopping_, s.sched_.stats().n_ctx_slot,
                       make_request(s.opt_, s.tok_, out.cr.gen, std::move(*prompt)), "prompt", res);
  return out;
}

void HttpServer::Routes::oai_completions(HttpServer& s, const httplib::Request& req, httplib::Response& res) {
  CompletionJob cj = submit_completion(s, req, res, &http::parse_oai_completion_request);
  if (!cj.job) return;
  const http::CompletionRequest& cr = cj.cr;
  std::shared_ptr<Job> job = std::move(cj.job);
  http::ResponseMeta meta = make_meta("cmpl-", cr.model, s.opt_.model_alias);
  const bool want_lp = cr.gen.n_probs > 0;

  if (!cr.gen.stream)
    return respond_plain(s.opt_, res, job, [meta, want_lp](Collected& c) {
      http::ResponseMeta m = meta;
      m.timings = c.end.timings;
      return http::text_completion_json(m, c.text, c.end.finish, usage_of(c.end), c.probs, want_lp);
    });
  const bool include_usage = cr.gen.include_usage;
  stream_response(res, job, [meta, want_lp, include_usage](const GenerationEvent& ev) {
    if (ev.kind == GenerationEvent::Kind::kToken) {
      if (ev.text.empty() && !(want_lp && !ev.probs.empty())) return std::string();
      return http::sse_frame(http::text_completion_json(meta, ev.text, std::nullopt, std::nullopt, ev.probs, want_lp));
    }
    if (ev.kind == GenerationEvent::Kind::kError)
      return http::sse_frame(http::error_body(http::api_error_from_status(ev.error)));
    std::optional<http::Usage> usage;
    if (include_usage) usage = usage_of(ev);
    return http::sse_frame(http::text_completion_json(meta, "", ev.finish, usage, {}, false)) + http::sse_done();
  });
}

namespace {

http::NativeCompletion native_of(const GenerationEvent& end, std::string content, std::vector<http::TokenLogprob> p) {
  http::NativeCompletion n;
  n.content = std::move(content);
  n.id_slot = end.slot;
  n.stop = true;
  n.tokens_predicted = end.n_predicted;
  n.tokens_evaluated = end.n_prompt;
  n.tokens_cached = end.n_cached;
  n.stopped_eos = end.stopped_eos;
  n.stopped_word = end.stopped_word;
  n.stopped_limit = end.stopped_limit;
  n.stopping_word = end.stopping_word;
  n.probs = std::move(p);
  return n;
}

}  // namespace

void HttpServer::Routes::native_completion(HttpServer& s, const httplib::Request& req, httplib::Response& res) {
  CompletionJob cj = submit_completion(s, req, res, &http::parse_completion_request);
  if (!cj.job) return;
  const http::CompletionRequest& cr = cj.cr;
  std::shared_ptr<Job> job = std::move(cj.job);
  http::ResponseMeta meta = make_meta("cmpl-", cr.model, s.opt_.model_alias);

  if (!cr.gen.stream)
    return respond_plain(s.opt_, res, job, [meta](Collected& c) {
      http::ResponseMeta m = meta;
      m.timings = c.end.timings;
      return http::native_completion_json(m, native_of(c.end, std::move(c.text), std::move(c.probs)));
    });
  // The peer's native stream: {"content": piece, "stop": false} frames, then the full final
  // object with "stop": true and empty content; no [DONE].
  stream_response(res, job, [meta](const GenerationEvent& ev) {
    if (ev.kind == GenerationEvent::Kind::kToken) {
      if (ev.text.empty() && ev.probs.empty()) return std::string();
      return http::sse_frame(http::native_completion_chunk_json(ev.text, ev.probs));
    }
    if (ev.kind == GenerationEvent::Kind::kError)
      return http::sse_frame(http::error_body(http::api_error_from_status(ev.error)));
    http::ResponseMeta last = meta;
    last.timings = ev.timings;
    return http::sse_frame(http::native_completion_json(last, native_of(ev, "", {})));
  });
}

}  // namespace expertmesh::coordinator::server
