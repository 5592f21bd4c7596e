// Sweep results (issue: `sweep`): one record per recipe, their files (results.json, CSV, a
// Markdown table sorted by size) and the Pareto front of size against KLD.
//
// A record is `complete` only when every figure of its phases was measured; partial records are
// kept in results.json (so a rerun can resume) but never reported in the tables as final.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace expertmesh::coordinator {

struct RecipeResult {
  std::string name;
  std::string recipe;       // the exact recipe text (preset + flags, or the GGUF evaluated as is)
  std::string recipe_hash;  // identifies the quantized file (recipe + base + imatrix)
  std::string model_path;   // the quantized (or given) GGUF
  bool is_base = false;     // the reference model the KLD is measured against
  double size_gib = 0;      // tensor data of the model file, GiB
  double bpw = 0;           // bits per weight over all tensors
  double ppl = 0, ppl_err = 0;
  double kld_mean = 0, kld_median = 0, kld_p99 = 0;
  double same_top_p = 0;  // percent of tokens whose top-1 equals the base's
  double rms_dp = 0;      // RMS of the change in the probability of the right token, percent
  double quantize_seconds = 0;
  double eval_tokens_per_s = 0;
  bool complete = false;
};

nlohmann::json to_json(const RecipeResult& r);
// Errors name the missing or mistyped field.
Result<RecipeResult> recipe_result_from_json(const nlohmann::json& j);

// results.json: {"results": [...]} in recipe order.
nlohmann::json results_to_json(const std::vector<RecipeResult>& rs);
Result<std::vector<RecipeResult>> results_from_json(const nlohmann::json& j);

// CSV (RFC 4180 quoting) and a Markdown table of the complete results, sorted by size (then name).
std::string results_csv(const std::vector<RecipeResult>& rs);
std::string results_markdown(const std::vector<RecipeResult>& rs);

// Indices of the complete, non-base results not beaten on both size and mean KLD: r is beaten
// when another result has size <= r.size and kld <= r.kld with at least one strictly smaller.
// Ascending by size.
std::vector<size_t> pareto_front(const std::vector<RecipeResult>& rs);

}  // namespace expertmesh::coordinator
