#include "coordinator/server/http_server.h"

#include <fmt/format.h>
#include <httplib.h>

#include <algorithm>
#include <ctime>
#include <exception>

#include "coordinator/http/openai_response.h"
#include "coordinator/server/auth.h"
#include "coordinator/server/metrics.h"
#include "coordinator/server/routes.h"

namespace expertmesh::coordinator::server {

void send_json(httplib::Response& res, const http::Json& body, int status) {
  res.status = status;
  res.set_content(http::dump_json(body), "application/json; charset=utf-8");
}

void send_error(httplib::Response& res, const http::ApiError& e) { send_json(res, http::error_body(e), e.code); }

void send_status_error(httplib::Response& res, const Status& s) { send_error(res, http::api_error_from_status(s)); }

namespace {

// Paths served without an API key (the peer's public endpoints).
bool is_public_path(const std::string& path) {
  return path == "/health" || path == "/v1/health" || path == "/models" || path == "/v1/models";
}

// Fills the body of an error response a handler left empty (unknown route, 413 from httplib's
// own body limit, 400 for a request line httplib rejected).
httplib::Server::HandlerResponse fill_error(const HttpServerOptions& opt, const httplib::Request& req,
                                            httplib::Response& res) {
  if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
  http::ApiError e;
  e.code = res.status;
  if (res.status == 404) {
    e.type = "not_found_error";
    e.message = fmt::format("no route for {} {}", req.method, req.path);
  } else if (res.status == 413) {
    e.message = fmt::format("request body is larger than the limit of {} bytes", opt.limits.max_body_bytes);
  } else if (res.status >= 500) {
    e.type = "server_error";
    e.message = fmt::format("HTTP {}", res.status);
  } else {
    e.message = fmt::format("HTTP {}", res.status);
  }
  send_error(res, e);
  return httplib::Server::HandlerResponse::Handled;
}

}  // namespace

HttpServer::HttpServer(Scheduler& sched, const Tokenizer& tok, const chat::ChatTemplate& tmpl, HttpServerOptions opt)
    : sched_(sched), tok_(tok), tmpl_(tmpl), opt_(std::move(opt)) {}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start() {
  if (svr_) return Status::Internal("HttpServer::start called twice");
  started_unix_ = static_cast<int64_t>(std::time(nullptr));
  svr_ = std::make_unique<httplib::Server>();
  httplib::Server& svr = *svr_;
  const size_t n_slots = sched_.stats().slots.size();
  const size_t n_threads =
      opt_.n_http_threads > 0 ? static_cast<size_t>(opt_.n_http_threads) : std::max<size_t>(16, 2 * n_slots + 8);
  svr.new_task_queue = [n_threads] { return new httplib::ThreadPool(n_threads); };
  svr.set_payload_max_length(opt_.limits.max_body_bytes);
  svr.set_read_timeout(60);
  svr.set_write_timeout(60);

  svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    counters_.requests.fetch_add(1);
    if (is_public_path(req.path) ||
        api_key_accepted(opt_.api_keys, req.get_header_value("Authorization"), req.get_header_value("X-Api-Key")))
      return httplib::Server::HandlerResponse::Unhandled;
    http::ApiError e;
    e.code = 401;
    e.type = "authentication_error";
    e.message = "Invalid API Key";
    send_error(res, e);
    return httplib::Server::HandlerResponse::Handled;
  });
  svr.set_error_handler(httplib::Server::HandlerWithResponse(
      [this](const httplib::Request& req, httplib::Response& res) { return fill_error(opt_, req, res); }));
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    http::ApiError e;
    e.code = 500;
    e.type = "server_error";
    e.message = "internal error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& ex) {
      e.message = std::string("internal error: ") + ex.what();
    } catch (...) {
    }
    send_error(res, e);
  });
  svr.set_logger([this](const httplib::Request&, const httplib::Response& res) {
    if (res.status >= 500) {
      counters_.errors_5xx.fetch_add(1);
    } else if (res.status >= 400) {
      counters_.errors_4xx.fetch_add(1);
    }
  });

  // Every handler is wrapped so the routes are plain functions of (server, request, response).
  const auto route = [this](void (*fn)(HttpServer&, const httplib::Request&, httplib::Response&)) {
    return [this, fn](const httplib::Request& req, httplib::Response& res) { fn(*this, req, res); };
  };
  svr.Post("/v1/chat/completions", route(&Routes::chat_completions));
  svr.Post("/chat/completions", route(&Routes::chat_completions));
  svr.Post("/v1/completions", route(&Routes::oai_completions));
  svr.Post("/completion", route(&Routes::native_completion));
  svr.Post("/completions", route(&Routes::native_completion));
  svr.Post("/tokenize", route(&Routes::tokenize));
  svr.Post("/detokenize", route(&Routes::detokenize));
  svr.Get("/v1/models", route(&Routes::models));
  svr.Get("/models", route(&Routes::models));
  svr.Get("/health", route(&Routes::health));
  svr.Get("/v1/health", route(&Routes::health));
  svr.Get("/props", route(&Routes::props));
  svr.Get("/slots", route(&Routes::slots));
  svr.Get("/metrics", route(&Routes::metrics));

  if (opt_.port == 0) {
    port_ = svr.bind_to_any_port(opt_.host);
  } else {
    port_ = svr.bind_to_port(opt_.host, opt_.port) ? opt_.port : -1;
  }
  if (port_ < 0) {
    svr_.reset();
    return Status::IoError(
        fmt::format("--host/--port: cannot listen on {}:{} (address in use or not local?)", opt_.host, opt_.port));
  }
  listener_ = std::thread([this] { svr_->listen_after_bind(); });
  return Status::Ok();
}

void HttpServer::stop() {
  if (!svr_) return;
  stopping_.store(true);
  svr_->stop();
  if (listener_.joinable()) listener_.join();
}

// ---- informational routes -------------------------------------------------------------------

http::Json HttpServer::Routes::generation_settings(const HttpServer& s, int64_t n_ctx_slot) {
  const SamplingParams& sp = s.opt_.sampling;
  http::Json g = http::Json::object();
  g["n_ctx"] = n_ctx_slot;
  g["n_predict"] = s.opt_.n_predict;
  g["model"] = s.opt_.model_alias;
  g["seed"] = -1;
  g["temperature"] = sp.temp;
  g["top_k"] = sp.top_k;
  g["top_p"] = sp.top_p;
  g["min_p"] = sp.min_p;
  g["min_keep"] = sp.min_keep;
  g["repeat_last_n"] = sp.repeat_last_n;
  g["repeat_penalty"] = sp.repeat_penalty;
  g["frequency_penalty"] = sp.frequency_penalty;
  g["presence_penalty"] = sp.presence_penalty;
  g["penalize_nl"] = sp.penalty_exempt < 0;
  g["stop"] = http::Json::array();
  g["max_tokens"] = s.opt_.n_predict;
  g["n_probs"] = 0;
  g["ignore_eos"] = false;
  g["stream"] = false;
  return g;
}

void HttpServer::Routes::tokenize(HttpServer& s, const httplib::Request& req, httplib::Response& res) {
  auto r = http::parse_tokenize_request(req.body, s.opt_.limits);
  if (!r.ok()) return send_status_error(res, r.status());
  const std::vector<int32_t> ids = s.tok_.encode(r->content, r->add_special, /*parse_special=*/true);
  if (!r->with_pieces) return send_json(res, http::tokenize_json(ids));
  std::vector<std::string> pieces;
  pieces.reserve(ids.size());
  for (int32_t id : ids) pieces.push_back(s.tok_.token_to_piece(id, /*special=*/true));
  send_json(res, http::tokenize_with_pieces_json(ids, pieces));
}

void HttpServer::Routes::detokenize(HttpServer& s, const httplib::Request& req, httplib::Response& res) {
  auto r = http::parse_detokenize_request(req.body, s.opt_.limits);
  if (!r.ok()) return send_status_error(res, r.status());
  for (size_t i = 0; i < r->tokens.size(); ++i) {
    if (r->tokens[i] < 0 || r->tokens[i] >= s.tok_.n_vocab()) {
      return send_status_error(
          res, Status::InvalidArgument(fmt::format("\"tokens[{}]\": token id {} is outside the vocabulary [0, {})", i,
                                                   r->tokens[i], s.tok_.n_vocab())));
    }
  }
  send_json(res, http::detokenize_json(s.tok_.decode(r->tokens, /*special=*/true)));
}

void HttpServer::Routes::models(HttpServer& s, const httplib::Request&, httplib::Response& res) {
  http::Json m = http::Json::object();
  m["id"] = s.opt_.model_alias;
  m["object"] = "model";
  m["created"] = s.started_unix_;
  m["owned_by"] = "llamacpp";
  m["meta"] = s.opt_.model_meta;
  const SchedulerStats st = s.sched_.stats();
  m["max_model_len"] = st.n_ctx_slot;
  http::Json body = http::Json::object();
  body["object"] = "list";
  body["data"] = http::Json::array({m});
  send_json(res, body);
}

void HttpServer::Routes::health(HttpServer& s, const httplib::Request& req, httplib::Response& res) {
  const SchedulerStats st = s.sched_.stats();
  int64_t idle = 0, busy = 0;
  for (const SlotInfo& slot : st.slots) (slot.busy ? busy : idle) += 1;
  http::Json h = http::Json::object();
  h["status"] = idle > 0 ? "ok" : "no slot available";
  h["slots_idle"] = idle;
  h["slots_processing"] = busy;
  send_json(res, h, idle == 0 && req.has_param("fail_on_no_slot") ? 503 : 200);
}

void HttpServer::Routes::props(HttpServer& s, const httplib::Request&, httplib::Response& res) {
  const SchedulerStats st = s.sched_.stats();
  http::Json p = http::Json::object();
  p["system_prompt"] = "";
  p["model_alias"] = s.opt_.model_alias;
  p["model_path"] = s.opt_.model_path;
  p["default_generation_settings"] = generation_settings(s, st.n_ctx_slot);
  p["total_slots"] = st.slots.size();
  p["model_name"] = s.opt_.model_alias;
  p["chat_template"] = s.tmpl_.source();
  p["bos_token"] = s.tok_.bos() >= 0 ? s.tok_.token_to_piece(s.tok_.bos(), true) : std::string();
  p["eos_token"] = s.tok_.eos() >= 0 ? s.tok_.token_to_piece(s.tok_.eos(), true) : std::string();
  p["modalities"] = {{"vision", false}, {"audio", false}};
  p["n_ctx"] = st.n_ctx_slot * static_cast<int64_t>(st.slots.size());
  send_json(res, p);
}

void HttpServer::Routes::slots(HttpServer& s, const httplib::Request&, httplib::Response& res) {
  const SchedulerStats st = s.sched_.stats();
  http::Json arr = http::Json::array();
  for (const SlotInfo& slot : st.slots) {
    http::Json j = generation_settings(s, st.n_ctx_slot);
    j["id"] = slot.id;
    j["id_task"] = slot.busy ? static_cast<int64_t>(slot.request) : int64_t{-1};
    j["state"] = slot.busy ? 1 : 0;  // the peer's SLOT_STATE_IDLE = 0, PROCESSING = 1
    j["is_processing"] = slot.busy;
    j["n_prompt_tokens"] = slot.n_prompt;
    j["n_past"] = slot.n_past;
    j["n_cached_tokens"] = slot.n_cached_tokens;
    j["next_token"] = {{"has_next_token", slot.busy}, {"n_decoded", slot.n_predicted}};
    arr.push_back(std::move(j));
  }
  send_json(res, arr);
}

void HttpServer::Routes::metrics(HttpServer& s, const httplib::Request&, httplib::Response& res) {
  res.status = 200;
  res.set_header("Process-Start-Time-Unix", std::to_string(s.started_unix_));
  res.set_content(prometheus_metrics(s.sched_.stats(), s.counters_), "text/plain; version=0.0.4");
}

}  // namespace expertmesh::coordinator::server
