#include "coordinator/sweep/results.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

namespace expertmesh::coordinator {
namespace {

// The numeric fields, in the order the CSV writes them: name in JSON/CSV and member.
struct NumField {
  const char* key;
  double RecipeResult::*member;
};
constexpr NumField kNumFields[] = {
    {"size_gib", &RecipeResult::size_gib},
    {"bpw", &RecipeResult::bpw},
    {"ppl", &RecipeResult::ppl},
    {"ppl_err", &RecipeResult::ppl_err},
    {"kld_mean", &RecipeResult::kld_mean},
    {"kld_median", &RecipeResult::kld_median},
    {"kld_p99", &RecipeResult::kld_p99},
    {"same_top_p", &RecipeResult::same_top_p},
    {"rms_dp", &RecipeResult::rms_dp},
    {"quantize_seconds", &RecipeResult::quantize_seconds},
    {"eval_tokens_per_s", &RecipeResult::eval_tokens_per_s},
};

struct StrField {
  const char* key;
  std::string RecipeResult::*member;
};
constexpr StrField kStrFields[] = {
    {"name", &RecipeResult::name},
    {"recipe", &RecipeResult::recipe},
    {"recipe_hash", &RecipeResult::recipe_hash},
    {"model_path", &RecipeResult::model_path},
};

std::string csv_quote(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string md_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|')
      out += "\\|";
    else if (c == '\n' || c == '\r')
      out += ' ';
    else
      out += c;
  }
  return out;
}

std::vector<size_t> complete_by_size(const std::vector<RecipeResult>& rs) {
  std::vector<size_t> idx;
  for (size_t i = 0; i < rs.size(); ++i)
    if (rs[i].complete) idx.push_back(i);
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    if (rs[a].size_gib != rs[b].size_gib) return rs[a].size_gib < rs[b].size_gib;
    return rs[a].name < rs[b].name;
  });
  return idx;
}

}  // namespace

nlohmann::json to_json(const RecipeResult& r) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& f : kStrFields) j[f.key] = r.*f.member;
  j["is_base"] = r.is_base;
  for (const auto& f : kNumFields) j[f.key] = r.*f.member;
  j["complete"] = r.complete;
  return j;
}

Result<RecipeResult> recipe_result_from_json(const nlohmann::json& j) {
  if (!j.is_object()) return Status::InvalidArgument("a result must be a JSON object");
  RecipeResult r;
  for (const auto& f : kStrFields) {
    auto it = j.find(f.key);
    if (it == j.end() || !it->is_string())
      return Status::InvalidArgument(fmt::format("result field \"{}\" must be a string", f.key));
    r.*f.member = it->get<std::string>();
  }
  for (const auto& f : kNumFields) {
    auto it = j.find(f.key);
    if (it == j.end() || !it->is_number())
      return Status::InvalidArgument(fmt::format("result \"{}\": field \"{}\" must be a number", r.name, f.key));
    r.*f.member = it->get<double>();
  }
  for (const char* key : {"is_base", "complete"}) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_boolean())
      return Status::InvalidArgument(fmt::format("result \"{}\": field \"{}\" must be true or false", r.name, key));
  }
  r.is_base = j["is_base"].get<bool>();
  r.complete = j["complete"].get<bool>();
  return r;
}

nlohmann::json results_to_json(const std::vector<RecipeResult>& rs) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& r : rs) arr.push_back(to_json(r));
  return nlohmann::json{{"results", arr}};
}

Result<std::vector<RecipeResult>> results_from_json(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("results") || !j["results"].is_array())
    return Status::InvalidArgument("results file must be an object with a \"results\" array");
  std::vector<RecipeResult> rs;
  for (size_t i = 0; i < j["results"].size(); ++i) {
    auto r = recipe_result_from_json(j["results"][i]);
    if (!r.ok()) return r.status().with_context(fmt::format("results[{}]", i));
    rs.push_back(std::move(*r));
  }
  return rs;
}

std::string results_csv(const std::vector<RecipeResult>& rs) {
  std::string s = "name,is_base";
  for (const auto& f : kNumFields) s += fmt::format(",{}", f.key);
  s += ",recipe\n";
  for (size_t i : complete_by_size(rs)) {
    const RecipeResult& r = rs[i];
    s += csv_quote(r.name) + (r.is_base ? ",1" : ",0");
    for (const auto& f : kNumFields) s += fmt::format(",{:.9g}", r.*f.member);
    s += "," + csv_quote(r.recipe) + "\n";
  }
  return s;
}

std::string results_markdown(const std::vector<RecipeResult>& rs) {
  const auto front = pareto_front(rs);
  std::string s =
      "| recipe | size GiB | bpw | PPL | ± | mean KLD | median KLD | 99% KLD | same top % | RMS Δp % | quantize s | "
      "eval t/s | Pareto |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|\n";
  for (size_t i : complete_by_size(rs)) {
    const RecipeResult& r = rs[i];
    const bool on_front = std::find(front.begin(), front.end(), i) != front.end();
    s += fmt::format(
        "| {}{} | {:.4f} | {:.3f} | {:.4f} | {:.4f} | {:.6f} | {:.6f} | {:.6f} | {:.2f} | {:.3f} | {:.1f} | "
        "{:.1f} | {} |\n",
        md_escape(r.name), r.is_base ? " (base)" : "", r.size_gib, r.bpw, r.ppl, r.ppl_err, r.kld_mean, r.kld_median,
        r.kld_p99, r.same_top_p, r.rms_dp, r.quantize_seconds, r.eval_tokens_per_s, on_front ? "★" : "");
  }
  return s;
}

std::vector<size_t> pareto_front(const std::vector<RecipeResult>& rs) {
  std::vector<size_t> cand;
  for (size_t i = 0; i < rs.size(); ++i)
    if (rs[i].complete && !rs[i].is_base) cand.push_back(i);
  std::vector<size_t> front;
  for (size_t i : cand) {
    bool beaten = false;
    for (size_t j : cand) {
      if (i == j) continue;
      const bool le = rs[j].size_gib <= rs[i].size_gib && rs[j].kld_mean <= rs[i].kld_mean;
      const bool lt = rs[j].size_gib < rs[i].size_gib || rs[j].kld_mean < rs[i].kld_mean;
      if (le && lt) {
        beaten = true;
        break;
      }
    }
    if (!beaten) front.push_back(i);
  }
  std::stable_sort(front.begin(), front.end(), [&](size_t a, size_t b) { return rs[a].size_gib < rs[b].size_gib; });
  return front;
}

}  // namespace expertmesh::coordinator
