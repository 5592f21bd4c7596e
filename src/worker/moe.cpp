// Routed MoE FFN (blocks.h): router softmax, top-k, experts grouped by token, slot-ordered sum.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "worker/blocks.h"
#include "worker/matmul.h"

namespace expertmesh::worker {

namespace {

struct Routing {
  std::vector<int32_t> expert;  // [n_tok × k]
  std::vector<float> weight;    // [n_tok × k]
};

// softmax over all experts, top-k by probability (ties: lower id first), optional renormalisation.
Routing route(const StepContext& c, const Buf& logits) {
  const int64_t ne = c.hp.n_expert, kk = c.hp.n_expert_used;
  Routing r;
  r.expert.resize(size_t(c.n_tok * kk));
  r.weight.resize(size_t(c.n_tok * kk));
  std::vector<float> probs(static_cast<size_t>(ne));
  std::vector<int32_t> idx(static_cast<size_t>(ne));
  for (int64_t t = 0; t < c.n_tok; ++t) {
    std::copy(logits.begin() + t * ne, logits.begin() + (t + 1) * ne, probs.begin());
    c.k.softmax_f32(probs.data(), ne);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return probs[size_t(a)] > probs[size_t(b)]; });
    float sum = 0.0f;
    for (int64_t j = 0; j < kk; ++j) sum += probs[size_t(idx[size_t(j)])];
    for (int64_t j = 0; j < kk; ++j) {
      const float pj = probs[size_t(idx[size_t(j)])];
      r.expert[size_t(t * kk + j)] = idx[size_t(j)];
      r.weight[size_t(t * kk + j)] = c.hp.expert_weights_norm ? pj / sum : pj;
    }
  }
  return r;
}

// Rows per MoE task: the largest tile (up to the kernels' maximum) that still gives every
// thread several tasks, so one token's 8 experts keep 2 threads busy and a 512-token prompt's
// tiles are big enough to amortise unpacking.
int64_t moe_tile_rows(int64_t n_rows_per_expert, int64_t n_groups, int n_threads) {
  int64_t rows = cpu::kGemmMaxTileRows;
  while (rows > 8 && n_groups * ((n_rows_per_expert + rows - 1) / rows) < 4 * int64_t(n_threads)) rows /= 2;
  return std::min(rows, n_rows_per_expert);
}

// One expert's share of the gathered rows: rows [first, first + m) of the sorted slot list.
struct ExpertGroup {
  int32_t e = 0;
  int64_t first = 0, m = 0;
};

}  // namespace

Result<Buf> moe_ffn(const StepContext& c, const LayerWeights& w, const LayerPlan& p, const Buf& h) {
  const int64_t n_embd = c.hp.n_embd, n_ff = c.hp.n_ff_exp, kk = c.hp.n_expert_used, ne = c.hp.n_expert;
  Activations hin(h.data(), n_embd, c.n_tok, n_embd);
  Buf logits(size_t(c.n_tok * ne));
  EM_RETURN_IF_ERROR(c.observe_input(w.ffn_gate_inp, -1, h.data(), c.n_tok, n_embd));
  EM_RETURN_IF_ERROR(matmul(w.ffn_gate_inp, 0, ne, hin, logits.data(), ne, c.pool, c.k));
  c.trace("ffn_moe_logits", logits, ne);
  const Routing r = route(c, logits);

  // The slots routed to this rank's experts, grouped by expert (p.experts order), slot order
  // within a group: row i of the gathered input is the token of slots[i].
  std::vector<int64_t> slots, tok;
  std::vector<ExpertGroup> groups;
  for (int32_t e : p.experts) {
    const int64_t first = int64_t(slots.size());
    for (int64_t i = 0; i < c.n_tok * kk; ++i)
      if (r.expert[size_t(i)] == e) {
        slots.push_back(i);
        tok.push_back(i / kk);
      }
    if (int64_t(slots.size()) > first) groups.push_back({e, first, int64_t(slots.size()) - first});
  }
  const int64_t m_all = int64_t(slots.size());
  // Row of the gathered outputs that holds each slot, -1 for slots computed elsewhere.
  std::vector<int64_t> row_of_slot(size_t(c.n_tok * kk), -1);
  for (int64_t i = 0; i < m_all; ++i) row_of_slot[size_t(slots[size_t(i)])] = i;
  Buf ys(size_t(m_all * n_embd));
  if (m_all > 0) {
    const Weight &wg = w.ffn_gate_exps, &wu = w.ffn_up_exps, &wd = w.ffn_down_exps;
    for (const ExpertGroup& g : groups) {
      EM_RETURN_IF_ERROR(check_rows(wg, g.e * n_ff, n_ff));
      EM_RETURN_IF_ERROR(check_rows(wu, g.e * n_ff, n_ff));
      EM_RETURN_IF_ERROR(check_rows(wd, g.e * n_embd, n_embd));
    }
    // gate and up may be of different types (or one without a fast kernel): each gets its own
    // input format, made once from the layer input and then gathered by bytes.
    const MatmulKernel kg = matmul_kernel(wg.type, c.k), ku = matmul_kernel(wu.type, c.k),
                       kd = matmul_kernel(wd.type, c.k);
    EM_RETURN_IF_ERROR(prepare_input(wg, kg, hin, c.pool, c.k));
    EM_RETURN_IF_ERROR(prepare_input(wu, ku, hin, c.pool, c.k));
    // The gathered floats are needed by an observer or by a generic path that reads them as is.
    const bool observed = c.observe && *c.observe;
    const bool floats = observed || reads_floats(wg, kg) || reads_floats(wu, ku);
    Activations xs(hin, tok, c.pool, floats);
    if (observed)
      for (const ExpertGroup& g : groups) {
        const float* xe = xs.data() + g.first * n_embd;
        EM_RETURN_IF_ERROR(c.observe_input(wg, g.e, xe, g.m, n_embd));
        EM_RETURN_IF_ERROR(c.observe_input(wu, g.e, xe, g.m, n_embd));
      }
    // gate and up of one tile in one task, SwiGLU fused while the tile is in cache:
    // act[i][f] = silu(gate_e x_i)[f] * (up_e x_i)[f].
    Buf gate(size_t(m_all * n_ff)), up(size_t(m_all * n_ff)), act(size_t(m_all * n_ff));
    const int64_t rt = moe_tile_rows(n_ff, int64_t(groups.size()), c.pool.size());
    const int64_t ff_tiles = (n_ff + rt - 1) / rt;
    c.pool.run(int64_t(groups.size()) * ff_tiles, [&](int64_t task, int thread) {
      const ExpertGroup& g = groups[size_t(task / ff_tiles)];
      const int64_t f0 = task % ff_tiles * rt, nf = std::min(rt, n_ff - f0);
      matmul_tile(wg, kg, xs, g.e * n_ff + f0, nf, g.first, g.m, gate.data() + f0, n_ff, c.pool, c.k, thread);
      matmul_tile(wu, ku, xs, g.e * n_ff + f0, nf, g.first, g.m, up.data() + f0, n_ff, c.pool, c.k, thread);
      for (int64_t i = g.first; i < g.first + g.m; ++i)
        c.k.swiglu_f32(gate.data() + i * n_ff + f0, up.data() + i * n_ff + f0, act.data() + i * n_ff + f0, nf);
    });
    Activations xa(act.data(), n_ff, m_all, n_ff);
    EM_RETURN_IF_ERROR(prepare_input(wd, kd, xa, c.pool, c.k));
    for (const ExpertGroup& g : groups)
      EM_RETURN_IF_ERROR(c.observe_input(wd, g.e, act.data() + g.first * n_ff, g.m, n_ff));
    const int64_t rd = moe_tile_rows(n_embd, int64_t(groups.size()), c.pool.size());
    const int64_t d_tiles = (n_embd + rd - 1) / rd;
    c.pool.run(int64_t(groups.size()) * d_tiles, [&](int64_t task, int thread) {
      const ExpertGroup& g = groups[size_t(task / d_tiles)];
      const int64_t r0 = task % d_tiles * rd, nr = std::min(rd, n_embd - r0);
      matmul_tile(wd, kd, xa, g.e * n_embd + r0, nr, g.first, g.m, ys.data() + r0, n_embd, c.pool, c.k, thread);
    });
  }
  // Per-slot outputs: ys rows on one rank; over a stage, every slot's row completed from the
  // rank that computed it. Exchanging per-slot outputs instead of reducing weighted partial
  // sums costs k times the traffic of one reduce but keeps the sum below in the one-rank order,
  // so MoE results are bit-identical under any expert placement.
  const Buf zero(size_t(n_embd), 0.0f);  // slots of experts no rank here computed
  Buf y;
  auto slot_row = [&](int64_t slot) -> const float* {
    if (!y.empty()) return y.data() + slot * n_embd;
    const int64_t i = row_of_slot[size_t(slot)];
    return i < 0 ? zero.data() : ys.data() + i * n_embd;
  };
  if (c.gather_slots && *c.gather_slots && !p.expert_owner.empty()) {
    y.assign(size_t(c.n_tok * kk * n_embd), 0.0f);
    for (int64_t i = 0; i < m_all; ++i)
      std::copy_n(ys.data() + i * n_embd, n_embd, y.data() + slots[size_t(i)] * n_embd);
    std::vector<int32_t> owner(r.expert.size());
    for (size_t i = 0; i < owner.size(); ++i) owner[i] = p.expert_owner[size_t(r.expert[i])];
    EM_RETURN_IF_ERROR((*c.gather_slots)(y.data(), owner, n_embd));
  }
  // Weighted sum in slot order (the peer's order: w_0 y_0 + w_1 y_1 + ...), token rows in parallel.
  Buf out(size_t(c.n_tok * n_embd), 0.0f);
  c.pool.run(c.n_tok, [&](int64_t t, int) {
    for (int64_t j = 0; j < kk; ++j)
      c.k.axpy_f32(r.weight[size_t(t * kk + j)], slot_row(t * kk + j), out.data() + t * n_embd, n_embd);
  });
  c.trace("ffn_moe_out", out, n_embd);
  return out;
}

}  // namespace expertmesh::worker
