// expertmesh: one binary, many subcommands, 1..N MPI ranks in lockstep.
//
//   expertmesh [--log-level debug|info|warn|error] COMMAND [args...]
//   mpirun -np N expertmesh COMMAND [args...]
#include <fmt/format.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "comm/topology.h"
#include "common/rank_context.h"
#include "worker/heap_prime.h"

namespace expertmesh::cli {

std::span<const Command> commands() {
  static const Command kCommands[] = {
      {"bench", "prompt processing and generation speed as llama-bench's table (pp/tg tokens/s)", cmd_bench},
      {"convert", "write a vocab-only GGUF from a Hugging Face tokenizer directory (--vocab-only)", cmd_convert},
      {"imatrix", "importance matrix of a model on a calibration text (llama-imatrix .dat)", cmd_imatrix},
      {"inspect", "print a GGUF file's metadata, tensors and a size summary (gguf-dump)", cmd_inspect},
      {"perplexity", "perplexity and KL-divergence of a model on a text file (llama-perplexity)", cmd_perplexity},
      {"plan", "print the placement of a model on N ranks: per-layer split, per-rank bytes, traffic", cmd_plan},
      {"quantize", "quantize a GGUF model (llama-quantize compatible flags)", cmd_quantize},
      {"run", "generate text from a prompt (llama-cli): greedy or top-k/top-p/min-p/temp sampling", cmd_run},
      {"serve", "OpenAI-compatible HTTP server (llama-server) with continuous batching", cmd_serve},
      {"sweep", "quantize recipes and measure PPL / KLD against the base, with a table and plots", cmd_sweep},
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
  // A rank launched bound to one NUMA node (launch/expertmesh-mpirun) keeps its memory there too.
  // Nothing changes on 1-node machines or for unbound ranks; a failure only costs locality.
  if (auto machine = topology::discover(false); machine.ok()) {
    auto node = topology::bind_if_launched_bound(*machine);
    if (!node.ok()) rc.log.warn("NUMA binding: {}", node.status().to_string());
    if (node.ok() && *node >= 0) rc.log.debug("threads and memory bound to NUMA node {}", *node);
  }
  std::vector<std::string> cmd_args(args.begin() + static_cast<long>(i) + 1, args.end());
  Status local = cmd->run(rc, cmd_args);
  // All ranks agree on the outcome and rank 0 prints the one message: its own failure, or the
  // first failing rank and its cause ("rank 2 failed: ..."). Every rank exits non-zero.
  Status agreed = rc.agree(local);
  if (!agreed.ok()) {
    if (rc.is_root()) {
      const Status& shown = local.ok() ? agreed : local;
      std::fprintf(stderr, "expertmesh %s: error: %s\n", cmd->name, shown.message().c_str());
    }
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace expertmesh::cli

int main(int argc, char** argv) {
  // Freed activation buffers stay in the heap for the next op (15% of prompt-processing time
  // went to mmap/munmap and fresh-page faults before).
  expertmesh::worker::keep_freed_memory();
  return expertmesh::cli::run_main(argc, argv);
}
