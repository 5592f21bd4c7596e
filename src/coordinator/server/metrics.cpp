#include "coordinator/server/metrics.h"

#include <fmt/format.h>

#include "coordinator/server/http_server.h"

namespace expertmesh::coordinator::server {

namespace {

void metric(std::string& out, const char* name, const char* type, const char* help, double value) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
}

}  // namespace

std::string prometheus_metrics(const SchedulerStats& s, const HttpCounters& http) {
  int64_t busy = 0, kv_tokens = 0;
  for (const SlotInfo& slot : s.slots) {
    busy += slot.busy ? 1 : 0;
    kv_tokens += slot.busy ? slot.n_past : slot.n_cached_tokens;
  }
  const double n_slots = static_cast<double>(s.slots.size());
  const double kv_cells = n_slots * static_cast<double>(s.n_ctx_slot);
  const auto rate = [](uint64_t n, double sec) { return sec > 0 ? static_cast<double>(n) / sec : 0.0; };

  std::string out;
  metric(out, "llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed.",
         static_cast<double>(s.prompt_tokens_total));
  metric(out, "llamacpp:prompt_seconds_total", "counter", "Prompt process time", s.prompt_seconds_total);
  metric(out, "llamacpp:tokens_predicted_total", "counter", "Number of generation tokens processed.",
         static_cast<double>(s.predicted_tokens_total));
  metric(out, "llamacpp:tokens_predicted_seconds_total", "counter", "Predict process time", s.predicted_seconds_total);
  metric(out, "llamacpp:prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.",
         rate(s.prompt_tokens_total, s.prompt_seconds_total));
  metric(out, "llamacpp:predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.",
         rate(s.predicted_tokens_total, s.predicted_seconds_total));
  metric(out, "llamacpp:kv_cache_usage_ratio", "gauge", "KV-cache usage. 1 means 100 percent usage.",
         kv_cells > 0 ? static_cast<double>(kv_tokens) / kv_cells : 0.0);
  metric(out, "llamacpp:kv_cache_tokens", "gauge", "KV-cache tokens.", static_cast<double>(kv_tokens));
  metric(out, "llamacpp:requests_processing", "gauge", "Number of request processing.", static_cast<double>(busy));
  metric(out, "llamacpp:requests_deferred", "gauge", "Number of request deferred.", static_cast<double>(s.queued));

  metric(out, "expertmesh:requests_total", "counter", "Generation requests accepted by the scheduler.",
         static_cast<double>(s.requests_total));
  metric(out, "expertmesh:requests_failed_total", "counter", "Generation requests that ended in an error.",
         static_cast<double>(s.requests_failed));
  metric(out, "expertmesh:requests_cancelled_total", "counter",
         "Generation requests cancelled (client gone or server stopping).", static_cast<double>(s.requests_cancelled));
  metric(out, "expertmesh:cached_tokens_total", "counter", "Prompt tokens reused from a slot's KV cache.",
         static_cast<double>(s.cached_tokens_total));
  metric(out, "expertmesh:decode_steps_total", "counter", "Batched decode steps run.",
         static_cast<double>(s.decode_steps));
  metric(out, "expertmesh:queue_depth", "gauge", "Requests waiting for a slot.", static_cast<double>(s.queued));
  metric(out, "expertmesh:slots_total", "gauge", "Slots (--parallel).", n_slots);
  metric(out, "expertmesh:slots_busy", "gauge", "Slots running a request.", static_cast<double>(busy));
  metric(out, "expertmesh:slot_usage_ratio", "gauge", "Busy slots / slots.",
         n_slots > 0 ? static_cast<double>(busy) / n_slots : 0.0);
  metric(out, "expertmesh:http_requests_total", "counter", "HTTP requests handled.",
         static_cast<double>(http.requests.load()));
  metric(out, "expertmesh:http_client_errors_total", "counter", "HTTP 4xx responses.",
         static_cast<double>(http.errors_4xx.load()));
  metric(out, "expertmesh:http_server_errors_total", "counter", "HTTP 5xx responses.",
         static_cast<double>(http.errors_5xx.load()));
  metric(out, "expertmesh:http_disconnects_total", "counter", "Streams cancelled because the client disconnected.",
         static_cast<double>(http.disconnects.load()));
  return out;
}

}  // namespace expertmesh::coordinator::server
