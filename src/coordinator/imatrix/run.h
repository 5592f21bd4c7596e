// Internal to src/coordinator/imatrix: the state of one `expertmesh imatrix` run, shared by
// imatrix.cpp (inputs, saving, orchestration) and compute.cpp (the chunk loop).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "common/rank_context.h"
#include "common/status.h"
#include "coordinator/imatrix/imatrix.h"
#include "coordinator/imatrix/similarity.h"
#include "coordinator/imatrix/similarity_feed.h"
#include "coordinator/imatrix/state_file.h"
#include "coordinator/imatrix/stats.h"

namespace expertmesh::coordinator::imatrix {

class ImatrixRun {
 public:
  ImatrixRun(const RankContext& ctx, const ImatrixOptions& opt, ChunkGeometry g);

  // Rank 0: --in-file list or --resume state into base_ (and the run position for --resume).
  Status load_inputs();
  // Collective: gathers the computed statistics, adds base_, writes `path` and its state (rank 0).
  Status save(const std::string& path);
  // Collective: the chunk loop (compute.cpp). Rank 0 drives the engine (tokenizes, decodes,
  // scores, saves); the other ranks run each chunk in Engine::follow() until rank 0's finish(),
  // then every rank joins the chunk's agreement (bad activations, -lsim inputs, saves). A
  // failure inside a chunk returns without those collectives: the caller must tell the other
  // ranks (comm::Cluster::notify_failure) so that none is left waiting in the engine.
  Status compute(worker::Engine& e, const Tokenizer& tok, FILE* out);

  const ImatrixResult& result() const { return res_; }
  const ImatrixState& state() const { return st_; }
  LayerSimilarity& similarity() { return sim_; }

 private:
  // Rank 0: tokenizes the text and returns the chunks [begin, end) this run evaluates.
  Result<std::pair<int64_t, int64_t>> plan_chunks(const Tokenizer& tok, std::vector<int32_t>* tokens);
  // The forward calls of one chunk: (first token, tokens) in the chunk, in order.
  std::vector<std::pair<int64_t, int64_t>> ubatches() const;
  // Every rank: evaluates one chunk (rank 0 decodes it, the others follow).
  Status run_chunk(worker::Engine& e, std::vector<int32_t>& tokens, int64_t chunk, int32_t bos,
                   std::vector<float>& logits);
  // Collective: keeps (bad empty) or drops the chunk's statistics, similarity inputs and calls.
  Status end_chunk(bool keep);
  void print_final_ppl(FILE* out);
  // --verbosity 2: what this rank accumulated (stderr, every rank).
  void report_share() const;
  Status load_resume();
  Status load_in_file(const std::string& path);
  // Collective: whether any rank saw a non-finite activation in the chunk; the message of the
  // one the one-rank forward meets first (smallest ForwardKey, then lowest rank).
  Result<std::string> agree_bad(int64_t chunk);
  Status eval_chunk(worker::Engine& e, std::vector<int32_t>& tokens, int64_t chunk, int32_t bos,
                    std::vector<float>& logits);
  void add_ppl(const std::vector<float>& logits, const std::vector<int32_t>& tokens, int64_t chunk, int64_t n_vocab,
               FILE* out);
  // Periodic saves due after a chunk that ran forward calls calls_before .. calls_.
  Status after_chunk(uint64_t calls_before);

  const RankContext& ctx_;
  ImatrixOptions opt_;
  ChunkGeometry g_;
  ImatrixStats stats_;                   // what this rank computes in this run (ncall: see CallCounts)
  SimilarityFeed feed_;                  // -lsim inputs of the current chunk
  CallCounts calls_done_, chunk_calls_;  // rank 0: calls of the kept chunks, of the current one
  ImatrixStats base_;                    // loaded data (rank 0)
  LayerSimilarity sim_;
  ImatrixState st_;         // the run position and PPL sums, written beside every save
  int32_t base_calls_ = 0;  // base_.last_call(), known on every rank
  uint64_t calls_ = 0;      // forward calls run so far in this run (every rank counts them)
  int64_t out_first_ = 0;   // first position of a chunk whose logits are needed
  ImatrixResult res_;
};

// -log p(tok) from one row of logits, the peer's arithmetic (float max, double sum of expf).
double token_nll(const float* logits, int64_t n_vocab, int32_t tok);

}  // namespace expertmesh::coordinator::imatrix
