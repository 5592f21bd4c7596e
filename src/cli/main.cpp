// expertmesh: one binary, many subcommands, 1..N MPI ranks in lockstep.
//
//   expertmesh [--log-level debug|info|warn|error] COMMAND [args...]
//   mpirun -np N expertmesh COMMAND [args...]
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/commands.h"
#include "common/rank_context.h"

namespace expertmesh::cli {

std::span<const Command> commands() {
  static const Command kCommands[] = {
      {"bench", "prompt processing and generation speed as llama-bench's table (pp/tg tokens/s)", cmd_bench},
      {"convert", "write a vocab-only GGUF from a Hugging Face tokenizer directory (--vocab-only)", cmd_convert},
      {"inspect", "print a GGUF file's metadata, tensors and a size summary (gguf-dump)", cmd_inspect},
      {"perplexity", "perplexity and KL-divergence of a model on a text file (llama-perplexity)", cmd_perplexity},
      {"quantize", "quantize a GGUF model (llama-quantize compatible flags)", cmd_quantize},
      {"run", "generate text from a prompt (llama-cli): greedy or top-k/top-p/min-p/temp sampling", cmd_run},
      {"synth", "write a seeded random model (llama, qwen3, qwen3moe) for tests and demos", cmd_synth},
  };
  return kCommands;
}

namespace {

void print_usage(FILE* out) {
  std::fprintf(out, "usage: expertmesh [--log-level LEVEL] COMMAND [options]\n\ncommands:\n");
  for (const auto& c : commands()) std::fprintf(out, "  %-12s %s\n", c.name, c.summary);
  std::fprintf(out, "\n`expertmesh COMMAND --help` describes a command's options.\n");
}

int run_main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  LogLevel level = LogLevel::kInfo;
  size_t i = 0;
  while (i < args.size() && args[i].rfind("-", 0) == 0) {
    if (args[i] == "-h" || args[i] == "--help") {
      print_usage(stdout);
      return 0;
    }
    if (args[i] == "--version") {
      std::printf("expertmesh %s\n", EXPERTMESH_VERSION);
      return 0;
    }
    if (args[i] == "--log-level" && i + 1 < args.size()) {
      if (!parse_log_level(args[i + 1], &level)) {
        std::fprintf(stderr, "expertmesh: --log-level: unknown level '%s' (debug, info, warn, error, quiet)\n",
                     args[i + 1].c_str());
        return 2;
      }
      i += 2;
      continue;
    }
    std::fprintf(stderr, "expertmesh: unknown global option '%s'\n", args[i].c_str());
    print_usage(stderr);
    return 2;
  }
  if (i >= args.size()) {
    print_usage(stderr);
    return 2;
  }
  const Command* cmd = nullptr;
  for (const auto& c : commands())
    if (args[i] == c.name) cmd = &c;
  if (!cmd) {
    std::fprintf(stderr, "expertmesh: unknown command '%s'\n", args[i].c_str());
    print_usage(stderr);
    return 2;
  }

  auto session = MpiSession::init(&argc, &argv);
  if (!session.ok()) {
    std::fprintf(stderr, "expertmesh: %s\n", session.status().to_string().c_str());
    return 1;
  }
  auto ctx = RankContext::create(MPI_COMM_WORLD, level);
  if (!ctx.ok()) {
    std::fprintf(stderr, "expertmesh: %s\n", ctx.status().to_string().c_str());
    return 1;
  }
  RankContext& rc = **ctx;
  std::vector<std::string> cmd_args(args.begin() + static_cast<long>(i) + 1, args.end());
  Status local = cmd->run(rc, cmd_args);
  // All ranks agree on the outcome; the failing rank prints its own message, others stay quiet
  // unless they are rank 0 (which names the failing rank).
  Status agreed = rc.agree(local);
  if (!agreed.ok()) {
    if (!local.ok()) {
      std::fprintf(stderr, "expertmesh %s: error: %s\n", cmd->name, local.message().c_str());
    } else if (rc.is_root()) {
      std::fprintf(stderr, "expertmesh %s: error: %s\n", cmd->name, agreed.message().c_str());
    }
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace expertmesh::cli

int main(int argc, char** argv) { return expertmesh::cli::run_main(argc, argv); }
