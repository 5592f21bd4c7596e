// `expertmesh quantize [options] IN.gguf [OUT.gguf] TYPE [nthreads]` — llama-quantize's CLI.
// TYPE is a preset name (IQ4_KS, Q4_K_M, F32, COPY, ...) or its llama_ftype number. Without
// OUT the output is ggml-model-<TYPE>.gguf next to the input, as the peer does.
#include <charconv>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

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

}  // namespace

Status cmd_quantize(RankContext& ctx, const std::vector<std::string>& args) {
  QuantizeJob job;
  std::string a1, a2, a3, a4;
  auto type_flag = [](std::optional<GgmlType>* dst, const char* flag) {
    return [dst, flag](const std::string& v) -> Status {
      auto t = parse_type_name(v);
      if (!t.ok()) return Status::InvalidArgument(fmt::format("{}: {}", flag, t.status().message()));
      *dst = *t;
      return Status::Ok();
    };
  };
  FlagSet fs("quantize", "Quantize a GGUF model (llama-quantize compatible).\nTYPE is one of: " + preset_list());
  fs.add_bool({"--pure"}, &job.options.pure, "use TYPE for every quantizable tensor (row-size fallbacks still apply)");
  fs.add_string({"--imatrix"}, &job.imatrix_path, "FILE", "importance matrix (.dat) to weight the quantization");
  fs.add_bool({"--allow-requantize"}, &job.options.allow_requantize, "allow quantized inputs (dequantized first)");
  fs.add_bool({"--leave-output-tensor"}, &job.options.leave_output_tensor, "keep output.weight as it is");
  fs.add_bool({"--ignore-imatrix-rules"}, &job.options.ignore_imatrix_rules,
              "quantize very-low-bpw types without imatrix data");
  fs.add_bool({"--hide-imatrix"}, &job.hide_imatrix, "do not record the imatrix file/dataset names in the output");
  fs.add_custom({"--token-embedding-type"}, "TYPE", "type of token_embd.weight",
                type_flag(&job.options.token_embedding_type, "--token-embedding-type"));
  fs.add_custom({"--output-tensor-type"}, "TYPE", "type of output.weight",
                type_flag(&job.options.output_tensor_type, "--output-tensor-type"));
  fs.add_custom({"--ffn-gate-inp-type"}, "TYPE", "type of the MoE routers (ffn_gate_inp), kept as is otherwise",
                type_flag(&job.options.ffn_gate_inp_type, "--ffn-gate-inp-type"));
  fs.positional("IN.gguf", &a1, "input model (any shard of a split model)");
  fs.positional("OUT.gguf", &a2, "output file (optional)", false);
  fs.positional("TYPE", &a3, "quantization type or preset", false);
  fs.positional("nthreads", &a4, "threads (default: all cores)", false);
  EM_RETURN_IF_ERROR(fs.parse(args));
  if (fs.help_requested()) {
    if (ctx.is_root()) std::fputs(fs.usage().c_str(), stdout);
    return Status::Ok();
  }
  // Positionals as the peer reads them: IN [OUT] TYPE [nthreads].
  std::vector<std::string> pos;
  for (auto* s : {&a2, &a3, &a4})
    if (!s->empty()) pos.push_back(*s);
  job.input_path = a1;
  std::string type_arg, threads_arg;
  if (pos.empty()) return Status::InvalidArgument("quantize: missing TYPE (see expertmesh quantize --help)");
  if (pos.size() == 1) {
    type_arg = pos[0];
  } else if (pos.size() == 2 && is_integer(pos[1]) && parse_quant_preset(pos[0]).ok()) {
    type_arg = pos[0];
    threads_arg = pos[1];
  } else {
    job.output_path = pos[0];
    type_arg = pos[1];
    if (pos.size() == 3) threads_arg = pos[2];
  }
  EM_ASSIGN_OR_RETURN(job.options.preset, parse_quant_preset(type_arg));
  if (job.output_path.empty())
    job.output_path = (std::filesystem::path(job.input_path).parent_path() /
                       fmt::format("ggml-model-{}.gguf", job.options.preset.name))
                          .string();
  job.n_threads = ctx.n_threads;
  if (!threads_arg.empty()) {
    if (!is_integer(threads_arg) || std::stoi(threads_arg) <= 0)
      return Status::InvalidArgument(fmt::format("quantize: nthreads must be a positive integer, got '{}'", threads_arg));
    job.n_threads = std::stoi(threads_arg);
  }
  // One rank does the work until the cluster quantize job deals tensors to ranks.
  if (!ctx.is_root()) return Status::Ok();
  return run_quantize_job(job, ctx.log);
}

}  // namespace expertmesh::cli
