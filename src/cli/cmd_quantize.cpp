// `expertmesh quantize [options] IN.gguf [OUT.gguf] TYPE [nthreads]` — llama-quantize's CLI.
// TYPE is a preset name (IQ4_KS, Q4_K_M, F32, COPY, ...) or its llama_ftype number. Without
// OUT the output is ggml-model-<TYPE>.gguf next to the input, as the peer does. Under mpirun every
// rank runs this command; the job deals tensors to ranks (coordinator/quantize/job.h).
#include <fmt/format.h>
#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <thread>

#include "cli/commands.h"
#include "cli/flags.h"
#include "coordinator/quantize/job.h"

namespace expertmesh::cli {
namespace {

bool is_integer(const std::string& s) {
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return !s.empty() && ec == std::errc() && p == s.data() + s.size();
}

std::string preset_list() {
  std::string s;
  for (const auto& p : quant_presets()) s += fmt::format("{}{}", s.empty() ? "" : " ", p.name);
  return s;
}

// A handler storing a ggml type name into `dst`; errors name the flag.
std::function<Status(const std::string&)> type_flag(std::optional<GgmlType>* dst, const char* flag) {
  return [dst, flag](const std::string& v) -> Status {
    auto t = parse_type_name(v);
    if (!t.ok()) return Status::InvalidArgument(fmt::format("{}: unknown type '{}'", flag, v));
    *dst = *t;
    return Status::Ok();
  };
}

void add_type_flags(FlagSet* fs, QuantizeOptions* o) {
  struct TypeFlag {
    const char* name;
    std::optional<GgmlType>* dst;
    const char* help;
  };
  TensorClassTypes& c = o->class_types;
  const TypeFlag flags[] = {
      {"--token-embedding-type", &o->token_embedding_type, "type of token_embd.weight"},
      {"--per-layer-token-embedding-type", &o->per_layer_token_embedding_type, "type of per_layer_token_embd.weight"},
      {"--output-tensor-type", &o->output_tensor_type, "type of output.weight"},
      {"--ffn-gate-inp-type", &o->ffn_gate_inp_type, "type of the MoE routers (ffn_gate_inp), kept as is otherwise"},
      {"--attn-q-type", &c.attn_q, "type of attn_q tensors (through the preset rules, as the peer)"},
      {"--attn-k-type", &c.attn_k, "type of attn_k tensors (through the preset rules)"},
      {"--attn-v-type", &c.attn_v, "type of attn_v tensors (through the preset rules)"},
      {"--attn-qkv-type", &c.attn_qkv, "type of attn_qkv tensors (no effect in the peer's rules; use --custom-q)"},
      {"--attn-output-type", &c.attn_output, "type of attn_output tensors (through the preset rules)"},
      {"--ffn-gate-type", &c.ffn_gate, "type of ffn_gate tensors (through the preset rules)"},
      {"--ffn-down-type", &c.ffn_down, "type of ffn_down tensors (through the preset rules)"},
      {"--ffn-up-type", &c.ffn_up, "type of ffn_up tensors (through the preset rules)"},
  };
  for (const auto& f : flags) fs->add_custom({f.name}, "TYPE", f.help, type_flag(f.dst, f.name));
}

// Positionals as the peer reads them: IN [OUT] TYPE [nthreads].
Status resolve_positionals(const std::string& in, const std::vector<std::string>& pos, QuantizeJob* job,
                           std::string* threads_arg) {
  job->input_path = in;
  std::string type_arg;
  if (pos.empty()) return Status::InvalidArgument("quantize: missing TYPE (see expertmesh quantize --help)");
  if (pos.size() == 1) {
    type_arg = pos[0];
  } else if (pos.size() == 2 && is_integer(pos[1]) && parse_quant_preset(pos[0]).ok()) {
    type_arg = pos[0];
    *threads_arg = pos[1];
  } else {
    job->output_path = pos[0];
    type_arg = pos[1];
    if (pos.size() == 3) *threads_arg = pos[2];
  }
  EM_ASSIGN_OR_RETURN(job->options.preset, parse_quant_preset(type_arg));
  if (job->output_path.empty()) {
    // The peer leaves out ".gguf" when --keep-split appends the shard suffix.
    const std::string name =
        fmt::format("ggml-model-{}{}", job->options.preset.name, job->layout.keep_split ? "" : ".gguf");
    job->output_path = (std::filesystem::path(job->input_path).parent_path() / name).string();
  }
  return Status::Ok();
}

}  // namespace

Status cmd_quantize(RankContext& ctx, const std::vector<std::string>& args) {
  QuantizeJob job;
  std::string a1, a2, a3, a4, split_size;
  int64_t split_tensors = 0;
  std::vector<std::string> custom_q, overrides, repack_patterns;
  QuantizeOptions& o = job.options;
  FlagSet fs("quantize", "Quantize a GGUF model (llama-quantize compatible).\nTYPE is one of: " + preset_list());
  fs.add_bool({"--pure"}, &o.pure, "use TYPE for every quantizable tensor (row-size fallbacks still apply)");
  fs.add_string({"--imatrix"}, &job.imatrix_path, "FILE", "importance matrix (.dat) to weight the quantization");
  fs.add_list({"--include-weights"}, &job.include_weights, "S", "use only imatrix entries whose names contain S");
  fs.add_list({"--exclude-weights"}, &job.exclude_weights, "S", "drop imatrix entries whose names contain S");
  fs.add_bool({"--allow-requantize"}, &o.allow_requantize, "allow quantized inputs (dequantized first)");
  fs.add_bool({"--leave-output-tensor"}, &o.leave_output_tensor, "keep output.weight as it is");
  fs.add_bool({"--ignore-imatrix-rules"}, &o.ignore_imatrix_rules, "quantize very-low-bpw types without imatrix data");
  fs.add_bool({"--hide-imatrix"}, &job.hide_imatrix, "do not record the imatrix file/dataset names in the output");
  fs.add_bool({"--dry-run"}, &job.dry_run, "print each tensor's type and size and the totals; write nothing");
  fs.add_bool({"--keep-split"}, &job.layout.keep_split, "one output file per input shard");
  fs.add_string({"--split-max-size"}, &split_size, "N(M|G)", "split the output in shards of at most N MB / GB");
  fs.add_int({"--split-max-tensors"}, &split_tensors, "N", "split the output in shards of at most N tensors");
  fs.add_list({"--custom-q"}, &custom_q, "REGEX=TYPE,...",
              "per-tensor types, first matching regex wins (repeatable; ignored with --pure)");
  fs.add_list({"--override-kv"}, &overrides, "KEY=TYPE:VALUE", "set metadata KEY (TYPE int, float, bool, str)");
  fs.add_bool({"--repack"}, &o.repack, "only re-lay quantized tensors as their _R4/_R8 variants (no requantization)");
  fs.add_list({"--repack-pattern"}, &repack_patterns, "REGEX,...", "with --repack: only tensors matching a regex");
  add_type_flags(&fs, &o);
  fs.positional("IN.gguf", &a1, "input model (any shard of a split model)");
  fs.positional("OUT.gguf", &a2, "output file (optional)", false);
  fs.positional("TYPE", &a3, "quantization type or preset", false);
  fs.positional("nthreads", &a4, "threads (default: all cores)", false);
  EM_RETURN_IF_ERROR(fs.parse(args));
  if (fs.help_requested()) {
    if (ctx.is_root()) std::fputs(fs.usage().c_str(), stdout);
    return Status::Ok();
  }
  for (const auto& q : custom_q) EM_RETURN_IF_ERROR(parse_custom_quants(q, &o.custom_quants));
  for (const auto& kv : overrides) {
    EM_ASSIGN_OR_RETURN(KvOverride ov, parse_kv_override(kv));
    job.kv_overrides.push_back(std::move(ov));
  }
  for (const auto& r : repack_patterns)
    for (size_t b = 0, e; b <= r.size(); b = e + 1) {
      e = r.find(',', b);
      if (e == std::string::npos) e = r.size();
      o.repack_patterns.push_back(r.substr(b, e - b));
    }
  if (!split_size.empty()) {
    EM_ASSIGN_OR_RETURN(job.layout.split.max_bytes, parse_split_size(split_size));
  }
  if (split_tensors < 0) return Status::InvalidArgument("--split-max-tensors: must be a positive number of tensors");
  job.layout.split.max_tensors = split_tensors;
  if (!job.include_weights.empty() && !job.exclude_weights.empty())
    return Status::InvalidArgument("--include-weights and --exclude-weights cannot be used together");
  std::vector<std::string> pos;
  for (auto* s : {&a2, &a3, &a4})
    if (!s->empty()) pos.push_back(*s);
  std::string threads_arg;
  EM_RETURN_IF_ERROR(resolve_positionals(a1, pos, &job, &threads_arg));
  job.n_threads = ctx.n_threads;
  if (!threads_arg.empty()) {
    if (!is_integer(threads_arg) || std::stoi(threads_arg) <= 0)
      return Status::InvalidArgument(
          fmt::format("quantize: nthreads must be a positive integer, got '{}'", threads_arg));
    job.n_threads = std::stoi(threads_arg);
  }
  if (o.class_types.attn_qkv && ctx.is_root())
    ctx.log.warn(
        "--attn-qkv-type has no effect: as in ik_llama.cpp, attn_qkv tensors follow the attn_q rule "
        "(--attn-q-type); use --custom-q for them");
  job.progress_bar = ctx.is_root() && ::isatty(STDERR_FILENO) != 0;
  QuantizeRanks ranks;
  ranks.rank = ctx.rank;
  ranks.world = ctx.world;
  ranks.agree = [&ctx](const Status& s) { return ctx.agree(s); };
  return run_quantize_job(job, ctx.log, ranks);
}

}  // namespace expertmesh::cli
