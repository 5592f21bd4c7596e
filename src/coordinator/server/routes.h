// Internal to the HTTP server: the route handlers (http_server.cpp: server plumbing and the
// informational routes; routes_generate.cpp: the generating routes) and their shared helpers.
#pragma once

#include <httplib.h>

#include "coordinator/http/openai_request.h"
#include "coordinator/server/http_server.h"

namespace expertmesh::coordinator::server {

// Writes `body` as the JSON response with `status`.
void send_json(httplib::Response& res, const http::Json& body, int status = 200);
// Writes the error body {"error": {...}} with e.code as the status.
void send_error(httplib::Response& res, const http::ApiError& e);
void send_status_error(httplib::Response& res, const Status& s);

struct HttpServer::Routes {
  // routes_generate.cpp
  static void chat_completions(HttpServer& s, const httplib::Request& req, httplib::Response& res);
  static void oai_completions(HttpServer& s, const httplib::Request& req, httplib::Response& res);
  static void native_completion(HttpServer& s, const httplib::Request& req, httplib::Response& res);
  // http_server.cpp
  static void tokenize(HttpServer& s, const httplib::Request& req, httplib::Response& res);
  static void detokenize(HttpServer& s, const httplib::Request& req, httplib::Response& res);
  static void models(HttpServer& s, const httplib::Request& req, httplib::Response& res);
  static void health(HttpServer& s, const httplib::Request& req, httplib::Response& res);
  static void props(HttpServer& s, const httplib::Request& req, httplib::Response& res);
  static void slots(HttpServer& s, const httplib::Request& req, httplib::Response& res);
  static void metrics(HttpServer& s, const httplib::Request& req, httplib::Response& res);
  static http::Json generation_settings(const HttpServer& s, int64_t n_ctx_slot);
  // /v1/completions and /completion alike: parses the body with `parse`, tokenizes the prompt
  // and submits it. On failure the error response is written and `job` is null.
  struct CompletionJob;
  using CompletionParser = Result<http::CompletionRequest> (*)(std::string_view, const http::ApiLimits&);
  static CompletionJob submit_completion(HttpServer& s, const httplib::Request& req, httplib::Response& res,
                                         CompletionParser parse);
};

}  // namespace expertmesh::coordinator::server
