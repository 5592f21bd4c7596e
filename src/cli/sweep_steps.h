// The steps of `expertmesh sweep` (cmd_sweep.cpp), each collective over one group of ranks (a
// RankContext on the group's communicator): quantize a recipe, evaluate the base (PPL + the
// `_logits_` file every recipe is compared against), evaluate a recipe (PPL + KLD), and the small
// file helpers that make the sweep resumable. Everything a step computes is written by the
// group's rank 0 with a temporary name and renamed, so a crash never leaves a file that a rerun
// would mistake for a finished one.
//
// DIR layout:
//   DIR/sweep.json                 the evaluation settings; a rerun with other settings is refused
//   DIR/base.kld, DIR/base.json    the base's logits (the peer's --kl-divergence-base format) and row
//   DIR/models/NAME.gguf (+ .recipe holding the recipe hash once the file is complete)
//   DIR/results/NAME.json          one finished row; DIR/logs/NAME.log the perplexity/KLD printout
//   DIR/results.{json,csv,md}, DIR/ppl-vs-bpw.svg, DIR/kld-vs-bpw.svg   written at the end
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/rank_context.h"
#include "common/status.h"
#include "coordinator/placement/planner.h"
#include "coordinator/sweep/recipes.h"
#include "coordinator/sweep/results.h"
#include "model/gguf/gguf.h"

namespace expertmesh::cli {

struct SweepOptions {
  std::string base;          // --base
  std::string imatrix;       // --imatrix (may be empty)
  std::string recipes_file;  // --recipes
  std::string text_file;     // -f
  std::string out_dir;       // -o
  int64_t n_ctx = 512;       // -c
  int64_t n_chunks = -1;     // --chunks
  int64_t n_batch = 2048;    // -b
  int group_size = 1;        // --group-size
  int threads = 1;           // -t, per rank
  placement::PlacementFlags placement;
};

// Writes `text` to `path` through `path.tmp` + rename. Errors name the file.
Status write_file_atomic(const std::string& path, const std::string& text);
Result<std::string> read_file(const std::string& path);

// Cheap identity of a (possibly huge) file: size, mtime and the SHA-256 of its first MiB.
Result<std::string> file_identity(const std::string& path);

// Tensor bytes (GiB) and bits per weight of a GGUF, from its tensor infos only.
void model_size(const gguf::File& f, double* gib, double* bpw);

// Collective over g.comm. Quantizes `r` from the base with `expertmesh quantize`'s own flag
// parser and job (so a recipe's flags mean exactly what they mean there) into `out_path`;
// returns the wall seconds.
Result<double> quantize_recipe(RankContext& g, const SweepOptions& o, const coordinator::Recipe& r,
                               const std::string& out_path);

// Collective over g.comm. Evaluates the base on the text: PPL, writes `kld_path` (the peer's
// _logits_ format) through a temporary name. The row's KLD fields are 0 (the base is the
// reference); `log_path` receives the printout (group rank 0).
Result<coordinator::RecipeResult> evaluate_base(RankContext& g, const SweepOptions& o, const std::string& kld_path,
                                                const std::string& log_path);

// Collective over g.comm. PPL and KLD of `model_path` against `kld_path` (what `expertmesh
// perplexity -m MODEL --kl-divergence-base KLD --kl-divergence` prints); fills the figures and
// eval tokens/s of `row`.
Status evaluate_recipe(RankContext& g, const SweepOptions& o, const std::string& model_path,
                       const std::string& kld_path, const std::string& log_path, coordinator::RecipeResult* row);

}  // namespace expertmesh::cli
