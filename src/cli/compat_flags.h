// The peer's runtime flags that change nothing here, accepted so that a user's llama-server /
// llama-cli / llama-perplexity / llama-imatrix / llama-bench command line runs unchanged
// (`-ngl 99 -fa on -fmoe -rtr -mla 3 -amb 512 --no-mmap ...`). Each is checked like the peer
// checks it (a bad value is an error naming the flag), then named on one stderr note that says
// why it has no effect, so nobody believes a flag did something it did not.
//
// --no-mmap is the exception with an effect: the engine reads its weights into private memory
// (worker::WeightSource::kRead) instead of computing from the file mapping.
#pragma once

#include <string>
#include <vector>

#include "cli/flags.h"
#include "common/rank_context.h"

namespace expertmesh::cli {

struct PeerCompatFlags {
  bool no_mmap = false;            // --no-mmap: read weights into private memory
  std::vector<std::string> inert;  // "flag value: why" of each accepted flag without effect
};

// What a command accepts beyond the common set.
struct CompatScope {
  bool ubatch = true;   // -ub (commands that do not define their own)
  bool server = false;  // -cb/--cont-batching, --jinja (serve)
};

void add_peer_compat_flags(FlagSet& fs, PeerCompatFlags* c, CompatScope scope = {});
// Rank 0: one line "CMD: accepted for compatibility, no effect here: ..." when any was given.
void note_peer_compat_flags(const RankContext& ctx, const char* cmd, const PeerCompatFlags& c);

}  // namespace expertmesh::cli
