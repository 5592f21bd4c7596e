// The HTTP front-end of `expertmesh serve` (issue 7), rank 0 only: llama-server's and OpenAI's
// endpoints on top of a Scheduler.
//
//   POST /v1/chat/completions, /chat/completions   OpenAI chat (stream: true → SSE, "data: [DONE]")
//   POST /v1/completions                           OpenAI text completions (also streaming)
//   POST /completion, /completions                 the peer's native completion (also streaming)
//   POST /tokenize, /detokenize                    the peer's
//   GET  /v1/models, /models                       OpenAI model list (the peer's "meta" included)
//   GET  /health                                   {"status": "ok", "slots_idle", "slots_processing"}
//   GET  /metrics                                  Prometheus text (the peer's llamacpp:* names + ours)
//   GET  /props, /slots                            the peer's shapes (subset)
//
// Safety: every error is a JSON body {"error": {"code", "message", "type"}} — 400 naming the
// field for bad requests, 401 for a missing/wrong API key (constant-time compare; /health and
// /v1/models stay open as in the peer), 404 for unknown routes, 413 for bodies over the limit,
// 503 when the queue is full, 500 for anything a handler throws. Nothing a client sends can
// crash the process.
//
// Disconnects: a streaming client that goes away makes the next chunk write fail; the request
// is cancelled and its slot freed. httplib 0.11 gives a plain (non-streaming) handler no view of
// its socket, so a non-streaming request runs to its end (bounded by n_predict / the slot's
// context) before its connection is noticed gone.
//
// Threads: httplib's worker threads run the handlers; they only call the Scheduler's
// thread-safe methods and the (immutable) Tokenizer and ChatTemplate.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "coordinator/http/openai_request.h"
#include "coordinator/server/chat_output.h"
#include "coordinator/server/scheduler.h"
#include "model/chat_template/chat_template.h"
#include "model/sampling.h"
#include "model/tokenizer/tokenizer.h"

namespace httplib {
class Server;
}

namespace expertmesh::coordinator::server {

struct HttpServerOptions {
  std::string host = "127.0.0.1";     // loopback unless --host says otherwise
  int port = 8080;                    // 0: an ephemeral port (see HttpServer::port())
  std::vector<std::string> api_keys;  // empty: no authentication
  http::ApiLimits limits;
  int32_t n_predict = -1;   // -n: default when a request gives none (-1: until EOG / context full)
  SamplingParams sampling;  // server defaults (the peer's: temp 0.8, top_k 40, top_p 0.95, min_p 0.05)
  std::string model_alias;  // "model" of responses and /v1/models
  std::string model_path;   // /props
  http::Json model_meta = http::Json::object();  // /v1/models "meta" (n_vocab, n_ctx_train, ...)
  int n_http_threads = 0;                        // 0: enough for every slot to stream plus some spare
  // Non-streaming generations not done within plain_wait become a chunked JSON response with a
  // space every heartbeat until the body: httplib 0.11 gives a handler no socket, so only a
  // failed write shows that the client left (and frees its slot).
  std::chrono::milliseconds plain_wait{2000};
  std::chrono::milliseconds heartbeat{1000};
  // --reasoning-format: how /v1/chat/completions splits <think> blocks off the content.
  ReasoningFormat reasoning_format = ReasoningFormat::kDeepseek;
};

// Counters the HTTP layer keeps itself (the Scheduler counts tokens and requests it ran).
struct HttpCounters {
  std::atomic<uint64_t> requests{0};     // every request that reached a handler
  std::atomic<uint64_t> errors_4xx{0};   // client errors answered
  std::atomic<uint64_t> errors_5xx{0};   // server errors answered
  std::atomic<uint64_t> disconnects{0};  // generations cancelled because the client left
};

class HttpServer {
 public:
  // `sched`, `tok` and `tmpl` (not owned) outlive the server.
  HttpServer(Scheduler& sched, const Tokenizer& tok, const chat::ChatTemplate& tmpl, HttpServerOptions opt);
  ~HttpServer();  // stop()s
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port (port 0: any free port) and starts serving on a background thread. Returns
  // once the socket is bound, so port() is valid and connections are accepted (queued by the
  // kernel until the listener thread picks them up). Errors name host and port.
  Status start();
  // The bound port (after start()).
  int port() const { return port_; }
  // Stops accepting, finishes the handlers in flight and joins the listener thread. Handlers
  // waiting on generations must be released first (Scheduler::shutdown() does, through
  // kError events). Idempotent.
  void stop();

  const HttpCounters& counters() const { return counters_; }

  // Route handlers, defined across http_server.cpp (info routes) and routes_generate.cpp.
  struct Routes;

 private:
  Scheduler& sched_;
  const Tokenizer& tok_;
  const chat::ChatTemplate& tmpl_;
  HttpServerOptions opt_;
  HttpCounters counters_;
  int64_t started_unix_ = 0;
  std::unique_ptr<httplib::Server> svr_;
  std::thread listener_;
  int port_ = -1;
  // Set by stop(): handlers still waiting on a generation give up (503) instead of blocking it.
  std::atomic<bool> stopping_{false};
};

}  // namespace expertmesh::coordinator::server
