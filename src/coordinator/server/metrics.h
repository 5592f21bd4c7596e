// GET /metrics: Prometheus text exposition (format 0.0.4) of the scheduler's counters. The
// peer's metrics keep their names (llamacpp:prompt_tokens_total, llamacpp:tokens_predicted_total,
// llamacpp:prompt_tokens_seconds, llamacpp:predicted_tokens_seconds, llamacpp:kv_cache_usage_ratio,
// llamacpp:kv_cache_tokens, llamacpp:requests_processing, llamacpp:requests_deferred, ...) so
// dashboards built for llama-server work unchanged; what the peer lacks is under expertmesh:*
// (requests, failures, cancellations, HTTP errors, slot use, decode steps).
#pragma once

#include <string>

#include "coordinator/server/scheduler.h"

namespace expertmesh::coordinator::server {

struct HttpCounters;

// Pure function of the snapshot; every metric has # HELP and # TYPE lines.
std::string prometheus_metrics(const SchedulerStats& s, const HttpCounters& http);

}  // namespace expertmesh::coordinator::server
