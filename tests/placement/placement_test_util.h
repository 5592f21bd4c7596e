// Synthetic model shapes for the planner tests (no GGUF file needed).
#pragma once

#include <string>
#include <vector>

#include "coordinator/placement/planner.h"

namespace expertmesh::placement::testing {

struct ShapeSpec {
  int64_t n_layer = 3, n_embd = 256, n_head = 4, n_head_kv = 2, head_dim = 64;
  int64_t n_vocab = 512, n_ff = 0, n_expert = 0, n_ff_exp = 256;
  GgmlType type = GgmlType::F32;  // weight matrices; norms stay F32
  bool tied = false;
};

ModelShape make_shape(const ShapeSpec& s);

// `world` ranks, `per_host` of them on each host "h0", "h1", ...; memory per rank (0 = unknown).
std::vector<RankResources> make_ranks(int world, int per_host, int64_t memory = 0);

}  // namespace expertmesh::placement::testing
