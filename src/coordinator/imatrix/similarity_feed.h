// -lsim under MPI, and on one rank the same way. LayerSimilarity (similarity.h) needs, per
// forward call and in forward order, the input of each layer's first matmul, the input of its
// first FFN matmul and the output head's input. No rank of a distributed run reads all of them
// (pipeline stages run different layers; a rank may own no heads or no vocabulary rows), and
// ranks cannot talk to each other in the middle of a chunk (they are inside the engine's
// lockstep). So each rank records, per (call, layer), its first collected dense input and its
// first FFN input of another matmul; after a good chunk rank 0 gathers every rank's records,
// keeps one per ForwardKey (ranks that read the same input read identical values) and replays
// them in key order. LayerSimilarity then meets exactly the inputs it would meet on one rank, in
// the same order, so its sums are bit-identical for any placement.
//
// Contract: observe() only inputs the imatrix collects (ImatrixStats::wants) with the KV
// position of the read (ForwardKey); replay() after a chunk that is kept, clear() after one that
// is dropped (a bad chunk leaves no trace in the similarity either).
// Cost: per chunk, up to 2 x (layers of the rank) + 1 inputs of n_ctx x n_embd floats per rank,
// all sent to rank 0.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/rank_context.h"
#include "common/status.h"
#include "coordinator/imatrix/similarity.h"
#include "coordinator/imatrix/stats.h"
#include "worker/blocks.h"

namespace expertmesh::coordinator::imatrix {

class SimilarityFeed {
 public:
  void observe(const worker::MatmulInput& in, int64_t pos);
  void clear();
  // Collective over ctx.comm: rank 0 feeds the chunk's records of every rank into `sim`; then
  // every rank clears its records.
  Status replay(const RankContext& ctx, LayerSimilarity& sim);

 private:
  struct Record {
    ForwardKey key;
    std::string name;
    int64_t rows = 0, cols = 0;
    std::vector<float> x;
  };
  struct LayerSeen {
    int64_t first_op = -1;  // op of the first input recorded (-1: none yet)
    bool ffn = false;       // an FFN input of another op recorded
  };
  static std::vector<char> serialize(const std::vector<Record>& records);
  static Result<std::vector<Record>> deserialize(const std::vector<char>& b, int rank);

  std::map<std::pair<int64_t, int64_t>, LayerSeen> seen_;  // (pos, layer)
  std::vector<Record> records_;
};

}  // namespace expertmesh::coordinator::imatrix
