// `expertmesh synth`: writes a seeded random model (model/synth.h) for tests and demos.
//
// Every rank parses and validates the flags (so a bad flag fails everywhere alike); only rank 0
// generates and writes the file.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "model/synth.h"

namespace expertmesh::cli {

Status cmd_synth(RankContext& ctx, const std::vector<std::string>& args) {
  synth::Options o;
  std::string out;
  int64_t seed = 1;
  int threads = ctx.n_threads;
  gguf::SplitOptions split;
  std::string arch_help = "architecture:";
  for (const auto& a : synth::archs()) arch_help += std::string(" ") + a.name;
  arch_help += fmt::format(" (default {})", o.arch);

  FlagSet fs("synth", "write a seeded random model with the GGUF keys and tensors llama.cpp expects for --arch");
  fs.add_string({"--arch"}, &o.arch, "NAME", arch_help);
  fs.add_int({"--layers"}, &o.n_layer, "N", fmt::format("transformer blocks (default {})", o.n_layer));
  fs.add_int({"--embd"}, &o.n_embd, "N", fmt::format("embedding width n_embd (default {})", o.n_embd));
  fs.add_int({"--heads"}, &o.n_head, "N", fmt::format("attention heads (default {})", o.n_head));
  fs.add_int({"--kv-heads"}, &o.n_head_kv, "N", "KV heads, must divide --heads (default: --heads)");
  fs.add_int({"--head-dim"}, &o.head_dim, "N", "per-head width (default: --embd / --heads)");
  fs.add_int({"--ff"}, &o.n_ff, "N", fmt::format("dense FFN width (default {})", o.n_ff));
  fs.add_int({"--experts"}, &o.n_expert, "N", fmt::format("routed experts, MoE archs (default {})", o.n_expert));
  fs.add_int({"--top-k"}, &o.n_expert_used, "N", fmt::format("experts used per token (default {})", o.n_expert_used));
  fs.add_int({"--ff-exp"}, &o.n_ff_exp, "N", fmt::format("expert FFN width (default {})", o.n_ff_exp));
  fs.add_string({"--vocab"}, &o.vocab_path, "FILE.gguf", "copy every tokenizer.* key from this GGUF");
  fs.add_int({"--vocab-size"}, &o.vocab_size, "N",
             "size of the built-in byte-level SentencePiece vocabulary, >= 259 (default 512)");
  fs.add_int({"--ctx"}, &o.n_ctx, "N", fmt::format("context_length (default {})", o.n_ctx));
  fs.add_float({"--rope-base"}, &o.rope_base, "F", "rope.freq_base (default: 1e4 llama, 1e6 qwen3*)");
  fs.add_float({"--rms-eps"}, &o.rms_eps, "F", "layer_norm_rms_epsilon (default: 1e-5 llama, 1e-6 qwen3*)");
  fs.add_custom({"--dtype"}, "f32|f16|bf16", "type of the weight matrices; norms are F32 (default bf16)",
                [&o](const std::string& v) {
                  EM_ASSIGN_OR_RETURN(o.dtype, synth::parse_dtype(v));
                  return Status::Ok();
                });
  fs.add_int({"--seed"}, &seed, "S", "random seed, >= 0; same seed and flags give the same bytes (default 1)");
  fs.add_int({"-t", "--threads"}, &threads, "N", "generator threads (default: all cores)");
  fs.add_int({"--split-max-tensors"}, &split.max_tensors, "N",
             "write shards OUT-0000i-of-0000N.gguf of at most N tensors each (default: one file)");
  fs.add_string({"-o", "--output"}, &out, "OUT.gguf", "output file (required)");
  EM_RETURN_IF_ERROR(fs.parse(args));
  if (fs.help_requested()) {
    if (ctx.is_root()) std::fputs(fs.usage().c_str(), stdout);
    return Status::Ok();
  }
  if (seed < 0) return Status::InvalidArgument(fmt::format("--seed: must be >= 0, got {}", seed));
  if (threads <= 0) return Status::InvalidArgument(fmt::format("--threads: must be > 0, got {}", threads));
  if (split.max_tensors < 0)
    return Status::InvalidArgument(fmt::format("--split-max-tensors: must be > 0, got {}", split.max_tensors));
  if (out.empty()) return Status::InvalidArgument("-o: an output path is required (-o OUT.gguf)");
  o.seed = static_cast<uint64_t>(seed);
  EM_RETURN_IF_ERROR(synth::validate(o));
  if (!ctx.is_root()) return Status::Ok();

  const auto t0 = std::chrono::steady_clock::now();
  EM_ASSIGN_OR_RETURN(synth::Summary s, synth::write_model(o, out, threads, split));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string where = s.paths.empty() ? out : s.paths.front();
  if (s.paths.size() > 1) where += fmt::format(" (+{} more shards)", s.paths.size() - 1);
  std::printf("wrote %s: %s, %lld tensors, %.2fM params, %.1f MiB, vocab %lld, %s, seed %llu (%.2f s)\n",
              where.c_str(), o.arch.c_str(), static_cast<long long>(s.n_tensors), s.n_params / 1e6,
              static_cast<double>(s.file_size) / (1024.0 * 1024.0), static_cast<long long>(s.n_vocab),
              type_name(o.dtype), static_cast<unsigned long long>(o.seed), secs);
  return Status::Ok();
}

}  // namespace expertmesh::cli
