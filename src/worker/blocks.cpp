#include "worker/blocks.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "kernels/quant/fp16.h"
#include "worker/matmul.h"

namespace expertmesh::worker {

Buf rms_norm(const StepContext& c, const float* x, const Weight& w) {
  const int64_t n = w.ne[0];
  Buf y(size_t(c.n_tok * n));
  const float* wd = reinterpret_cast<const float*>(w.data);
  c.pool.run(c.n_tok, [&](int64_t t, int) { c.k.rmsnorm_f32(x + t * n, wd, y.data() + t * n, n, c.hp.rms_eps); });
  return y;
}

void add_in_place(float* x, const Buf& y) {
  for (size_t i = 0; i < y.size(); ++i) x[i] += y[i];
}

void attend_row(const cpu::Kernels& k, const float* q, const float* K, const float* V, int64_t n_kv, int64_t d,
                int64_t q_pos, float scale, float* scores, float* out) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n_kv; ++j) scores[j] = j <= q_pos ? k.dot_f32(q, K + j * d, d) * scale : neg_inf;
  k.softmax_f32(scores, n_kv);
  std::fill(out, out + d, 0.0f);
  for (int64_t j = 0; j < n_kv; ++j)
    if (scores[j] != 0.0f) k.axpy_f32(scores[j], V + j * d, out, d);
}

void attend_row_f16acc(const float* q, const float* K, const float* V, int64_t n_kv, int64_t d, int64_t q_pos,
                       float scale, uint16_t* acc16, float* out) {
  using quant::f32_to_fp16;
  using quant::fp16_to_f32;
  float S = 0.0f, M = -std::numeric_limits<float>::infinity();
  std::fill(acc16, acc16 + d, uint16_t{0});
  for (int64_t j = 0; j < n_kv && j <= q_pos; ++j) {
    double sum = 0.0;
    for (int64_t i = 0; i < d; ++i) sum += double(fp16_to_f32(f32_to_fp16(q[i])) * K[j * d + i]);
    const float s = float(sum) * scale;
    float ms = 1.0f, vs = 1.0f;
    if (s > M) {
      const float m_old = M;
      M = s;
      ms = std::exp(m_old - M);
      for (int64_t i = 0; i < d; ++i) acc16[i] = f32_to_fp16(fp16_to_f32(acc16[i]) * ms);
    } else {
      vs = std::exp(s - M);
    }
    for (int64_t i = 0; i < d; ++i) acc16[i] = f32_to_fp16(fp16_to_f32(acc16[i]) + V[j * d + i] * vs);
    S = S * ms + vs;
  }
  const float s_inv = S == 0.0f ? 0.0f : 1.0f / S;
  for (int64_t i = 0; i < d; ++i) out[i] = fp16_to_f32(acc16[i]) * s_inv;
}

namespace {

// True when the peer runs this attention through ggml's generic flash-attention kernel (F16
// Q·K, F16 V accumulator) rather than an iqk kernel: F16 cache and a head size without an iqk
// kernel (e.g. stories260K's 8).
bool peer_uses_generic_fa(const KvCache& kv, int64_t d) {
  const bool iqk_size = d == 64 || d == 96 || d == 128 || d == 192 || d == 256;
  return kv.type_k() == GgmlType::F16 && kv.type_v() == GgmlType::F16 && !iqk_size;
}

// Per-head RMSNorm (q/k norm) and RoPE of n_heads heads in each token row of `x`.
void norm_and_rope(const StepContext& c, Buf& x, int64_t n_heads, const Weight* head_norm) {
  const int64_t hd = c.hp.head_dim, width = n_heads * hd;
  const float* nw = head_norm ? reinterpret_cast<const float*>(head_norm->data) : nullptr;
  c.pool.run(c.n_tok, [&](int64_t t, int) {
    float* row = x.data() + t * width;
    if (nw)
      for (int64_t h = 0; h < n_heads; ++h) c.k.rmsnorm_f32(row + h * hd, nw, row + h * hd, hd, c.hp.rms_eps);
    std::vector<float> cs(size_t(c.hp.n_rot));
    cpu::rope_cache(c.pos[t], c.hp.n_rot, c.hp.rope_freq_base, c.hp.rope_freq_scale, cs.data());
    c.k.rope_f32(row, n_heads, hd, c.hp.n_rot, cs.data(), c.hp.rope_mode);
  });
}

// The exact tensor-parallel output projection: gathers every rank's activation columns
// (`local`: n_tok × its span of `in_spans`, in units of `unit` columns) into n_tok × in_width,
// computes this rank's output rows `mine` of `w` with whole dot products, and gathers every
// rank's rows (`out_spans`, by stage index) into n_tok × n_embd on every rank of the stage.
Result<Buf> project_out(const StepContext& c, const Weight& w, const Buf& local, int64_t in_width,
                        const std::vector<Span>& in_spans, int64_t unit, const std::vector<Span>& out_spans, Span mine,
                        const char* trace_name) {
  const int64_t n_embd = c.hp.n_embd;
  if (!c.gather_cols || !*c.gather_cols) return Status::Internal("split layer plan without a stage to gather over");
  std::vector<Span> spans(in_spans);
  for (Span& s : spans) s = {s.begin * unit, s.end * unit};
  Buf in(size_t(c.n_tok * in_width));
  EM_RETURN_IF_ERROR((*c.gather_cols)(local.data(), c.n_tok, spans, in_width, in.data()));
  const int64_t nr = mine.size();
  Buf rows(size_t(c.n_tok * nr));
  if (nr > 0) {
    EM_RETURN_IF_ERROR(c.observe_input(w, -1, in.data(), c.n_tok, in_width));
    EM_RETURN_IF_ERROR(matmul(w, mine.begin, nr, in.data(), in_width, c.n_tok, rows.data(), nr, c.pool, c.k));
  }
  Buf out(size_t(c.n_tok * n_embd));
  EM_RETURN_IF_ERROR((*c.gather_cols)(rows.data(), c.n_tok, out_spans, n_embd, out.data()));
  c.trace(trace_name, out, n_embd);
  return out;
}

}  // namespace

Result<Buf> attention(const StepContext& c, const LayerWeights& w, const LayerPlan& p, const Buf& h,
                      AttentionOptions opt) {
  const HParams& hp = c.hp;
  const int64_t hd = hp.head_dim, n_gqa = hp.n_gqa();
  const int64_t hb = p.head_begin, he = p.head_end;
  const int64_t kvb = p.kv_head_begin(n_gqa), kve = p.kv_head_end(n_gqa);
  const int64_t nq = he - hb, nkv = kve - kvb;
  if (nq == 0)
    return project_out(c, w.wo, Buf(), hp.n_head * hd, p.stage_heads, hd, p.stage_attn_out, p.attn_out, "attn_out");
  // Projections of this rank's heads: Qcur [n_tok × nq*hd], Kcur/Vcur [n_tok × nkv*hd].
  Buf q(size_t(c.n_tok * nq * hd)), k(size_t(c.n_tok * nkv * hd)), v(size_t(c.n_tok * nkv * hd));
  EM_RETURN_IF_ERROR(c.observe_input(w.wq, -1, h.data(), c.n_tok, hp.n_embd));
  EM_RETURN_IF_ERROR(c.observe_input(w.wk, -1, h.data(), c.n_tok, hp.n_embd));
  EM_RETURN_IF_ERROR(c.observe_input(w.wv, -1, h.data(), c.n_tok, hp.n_embd));
  EM_RETURN_IF_ERROR(matmul(w.wq, hb * hd, nq * hd, h.data(), hp.n_embd, c.n_tok, q.data(), nq * hd, c.pool, c.k));
  EM_RETURN_IF_ERROR(matmul(w.wk, kvb * hd, nkv * hd, h.data(), hp.n_embd, c.n_tok, k.data(), nkv * hd, c.pool, c.k));
  EM_RETURN_IF_ERROR(matmul(w.wv, kvb * hd, nkv * hd, h.data(), hp.n_embd, c.n_tok, v.data(), nkv * hd, c.pool, c.k));
  norm_and_rope(c, q, nq, opt.qk_norm ? &w.attn_q_norm : nullptr);
  norm_and_rope(c, k, nkv, opt.qk_norm ? &w.attn_k_norm : nullptr);
  c.trace("Qcur", q, nq * hd);
  c.trace("Kcur", k, nkv * hd);
  c.trace("Vcur", v, nkv * hd);

  // Store this batch's K/V, then attend over each sequence's cached keys. Rows are grouped by
  // sequence; a group loads positions [0, max pos + 1) of its sequence once per head.
  auto seq_of = [&](int64_t t) { return c.seq ? int64_t(c.seq[t]) : int64_t{0}; };
  struct Group {
    int64_t seq = 0, n_kv = 0;
    std::vector<int64_t> rows;
  };
  std::vector<Group> groups;
  for (int64_t t = 0; t < c.n_tok; ++t) {
    const int64_t s = seq_of(t);
    EM_RETURN_IF_ERROR(
        c.kv.store(s, c.kv_layer, c.pos[t], kvb - c.kv_head0, nkv, k.data() + t * nkv * hd, v.data() + t * nkv * hd));
    auto g = std::find_if(groups.begin(), groups.end(), [&](const Group& x) { return x.seq == s; });
    if (g == groups.end()) g = groups.insert(groups.end(), Group{s, 0, {}});
    g->rows.push_back(t);
    g->n_kv = std::max<int64_t>(g->n_kv, c.pos[t] + 1);
  }
  const float scale = 1.0f / std::sqrt(float(hd));
  Buf kqv(size_t(c.n_tok * nq * hd));
  const bool generic_fa = peer_uses_generic_fa(c.kv, hd);
  const int64_t n_tasks = nq * int64_t(groups.size());
  std::vector<Status> errors(static_cast<size_t>(n_tasks));
  c.pool.run(n_tasks, [&](int64_t task, int) {
    const int64_t hi = task % nq;
    const Group& g = groups[size_t(task / nq)];
    const int64_t kvh = (hb + hi) / n_gqa - c.kv_head0, n_kv = g.n_kv;
    Buf K(size_t(n_kv * hd)), V(size_t(n_kv * hd)), scores(static_cast<size_t>(n_kv));
    Status s = c.kv.load_k(g.seq, c.kv_layer, kvh, n_kv, K.data());
    if (s.ok()) s = c.kv.load_v(g.seq, c.kv_layer, kvh, n_kv, V.data());
    if (!s.ok()) {
      errors[size_t(task)] = s;
      return;
    }
    std::vector<uint16_t> acc16(static_cast<size_t>(hd));
    for (int64_t t : g.rows)
      if (generic_fa)
        attend_row_f16acc(q.data() + (t * nq + hi) * hd, K.data(), V.data(), n_kv, hd, c.pos[t], scale, acc16.data(),
                          kqv.data() + (t * nq + hi) * hd);
      else
        attend_row(c.k, q.data() + (t * nq + hi) * hd, K.data(), V.data(), n_kv, hd, c.pos[t], scale, scores.data(),
                   kqv.data() + (t * nq + hi) * hd);
  });
  for (const Status& s : errors) EM_RETURN_IF_ERROR(s);
  c.trace("kqv_out", kqv, nq * hd);
  if (!p.stage_heads.empty())
    return project_out(c, w.wo, kqv, hp.n_head * hd, p.stage_heads, hd, p.stage_attn_out, p.attn_out, "attn_out");

  // Output projection over this rank's head columns (all of them on one rank).
  Buf out(size_t(c.n_tok * hp.n_embd));
  EM_RETURN_IF_ERROR(c.observe_input(w.wo, -1, kqv.data(), c.n_tok, nq * hd, hb * hd));
  EM_RETURN_IF_ERROR(matmul(w.wo, 0, hp.n_embd, kqv.data(), nq * hd, c.n_tok, out.data(), hp.n_embd, c.pool, c.k,
                            ColRange{hb * hd, he * hd}));
  EM_RETURN_IF_ERROR(c.combine(out));
  c.trace("attn_out", out, hp.n_embd);
  return out;
}

Result<Buf> ffn_swiglu(const StepContext& c, const LayerWeights& w, const LayerPlan& p, const Buf& h) {
  const int64_t n_embd = c.hp.n_embd, f0 = p.ffn_begin, n_ff = p.ffn_end - p.ffn_begin;
  if (n_ff == 0 && !p.stage_ffn.empty())
    return project_out(c, w.ffn_down, Buf(), w.ffn_down.ne[0], p.stage_ffn, 1, p.stage_ffn_out, p.ffn_out, "ffn_out");
  Buf out(size_t(c.n_tok * n_embd), 0.0f);
  if (n_ff > 0) {
    Buf gate(size_t(c.n_tok * n_ff)), up(size_t(c.n_tok * n_ff)), act(size_t(c.n_tok * n_ff));
    EM_RETURN_IF_ERROR(c.observe_input(w.ffn_gate, -1, h.data(), c.n_tok, n_embd));
    EM_RETURN_IF_ERROR(c.observe_input(w.ffn_up, -1, h.data(), c.n_tok, n_embd));
    EM_RETURN_IF_ERROR(matmul(w.ffn_gate, f0, n_ff, h.data(), n_embd, c.n_tok, gate.data(), n_ff, c.pool, c.k));
    EM_RETURN_IF_ERROR(matmul(w.ffn_up, f0, n_ff, h.data(), n_embd, c.n_tok, up.data(), n_ff, c.pool, c.k));
    c.k.swiglu_f32(gate.data(), up.data(), act.data(), c.n_tok * n_ff);
    c.trace("ffn_act", act, n_ff);
    if (!p.stage_ffn.empty())
      return project_out(c, w.ffn_down, act, w.ffn_down.ne[0], p.stage_ffn, 1, p.stage_ffn_out, p.ffn_out, "ffn_out");
    EM_RETURN_IF_ERROR(c.observe_input(w.ffn_down, -1, act.data(), c.n_tok, n_ff, f0));
    EM_RETURN_IF_ERROR(matmul(w.ffn_down, 0, n_embd, act.data(), n_ff, c.n_tok, out.data(), n_embd, c.pool, c.k,
                              ColRange{f0, f0 + n_ff}));
  }
  EM_RETURN_IF_ERROR(c.combine(out));
  c.trace("ffn_out", out, n_embd);
  return out;
}

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

}  // namespace

Result<Buf> moe_ffn(const StepContext& c, const LayerWeights& w, const LayerPlan& p, const Buf& h) {
  const int64_t n_embd = c.hp.n_embd, n_ff = c.hp.n_ff_exp, kk = c.hp.n_expert_used, ne = c.hp.n_expert;
  Buf logits(size_t(c.n_tok * ne));
  EM_RETURN_IF_ERROR(c.observe_input(w.ffn_gate_inp, -1, h.data(), c.n_tok, n_embd));
  EM_RETURN_IF_ERROR(matmul(w.ffn_gate_inp, 0, ne, h.data(), n_embd, c.n_tok, logits.data(), ne, c.pool, c.k));
  c.trace("ffn_moe_logits", logits, ne);
  const Routing r = route(c, logits);

  // y[t][slot] = down_e(silu(gate_e h_t) * up_e h_t) for the experts this rank owns.
  Buf y(size_t(c.n_tok * kk * n_embd), 0.0f);
  for (int32_t e : p.experts) {
    std::vector<int64_t> slots;  // t*kk + slot routed to e
    for (int64_t i = 0; i < c.n_tok * kk; ++i)
      if (r.expert[size_t(i)] == e) slots.push_back(i);
    if (slots.empty()) continue;
    const int64_t m = int64_t(slots.size());
    Buf xe(size_t(m * n_embd)), gate(size_t(m * n_ff)), up(size_t(m * n_ff)), act(size_t(m * n_ff)),
        ye(size_t(m * n_embd));
    for (int64_t i = 0; i < m; ++i)
      std::copy_n(h.data() + slots[size_t(i)] / kk * n_embd, n_embd, xe.data() + i * n_embd);
    EM_RETURN_IF_ERROR(c.observe_input(w.ffn_gate_exps, e, xe.data(), m, n_embd));
    EM_RETURN_IF_ERROR(c.observe_input(w.ffn_up_exps, e, xe.data(), m, n_embd));
    EM_RETURN_IF_ERROR(matmul(w.ffn_gate_exps, e * n_ff, n_ff, xe.data(), n_embd, m, gate.data(), n_ff, c.pool, c.k));
    EM_RETURN_IF_ERROR(matmul(w.ffn_up_exps, e * n_ff, n_ff, xe.data(), n_embd, m, up.data(), n_ff, c.pool, c.k));
    c.k.swiglu_f32(gate.data(), up.data(), act.data(), m * n_ff);
    EM_RETURN_IF_ERROR(c.observe_input(w.ffn_down_exps, e, act.data(), m, n_ff));
    EM_RETURN_IF_ERROR(
        matmul(w.ffn_down_exps, e * n_embd, n_embd, act.data(), n_ff, m, ye.data(), n_embd, c.pool, c.k));
    for (int64_t i = 0; i < m; ++i) std::copy_n(ye.data() + i * n_embd, n_embd, y.data() + slots[size_t(i)] * n_embd);
  }
  // Complete the slots computed elsewhere in the stage. Exchanging per-slot outputs instead of
  // reducing weighted partial sums costs k times the traffic of one reduce but keeps the sum
  // below in the one-rank order, so MoE results are bit-identical under any expert placement.
  if (c.gather_slots && *c.gather_slots && !p.expert_owner.empty()) {
    std::vector<int32_t> owner(r.expert.size());
    for (size_t i = 0; i < owner.size(); ++i) owner[i] = p.expert_owner[size_t(r.expert[i])];
    EM_RETURN_IF_ERROR((*c.gather_slots)(y.data(), owner, n_embd));
  }
  // Weighted sum in slot order (the peer's order: w_0 y_0 + w_1 y_1 + ...).
  Buf out(size_t(c.n_tok * n_embd), 0.0f);
  for (int64_t t = 0; t < c.n_tok; ++t)
    for (int64_t j = 0; j < kk; ++j)
      c.k.axpy_f32(r.weight[size_t(t * kk + j)], y.data() + (t * kk + j) * n_embd, out.data() + t * n_embd, n_embd);
  c.trace("ffn_moe_out", out, n_embd);
  return out;
}

Status residual_block(const StepContext& c, const LayerWeights& w, const LayerPlan& p, float* x, AttentionOptions attn,
                      FfnKind ffn) {
  Buf attn_in = rms_norm(c, x, w.attn_norm);
  c.trace("attn_norm", attn_in, c.hp.n_embd);
  EM_ASSIGN_OR_RETURN(Buf attn_out, attention(c, w, p, attn_in, attn));
  add_in_place(x, attn_out);  // ffn_inp
  if (c.dump && *c.dump) (*c.dump)("ffn_inp", c.layer, x, c.n_tok, c.hp.n_embd);
  Buf ffn_in = rms_norm(c, x, w.ffn_norm);
  c.trace("ffn_norm", ffn_in, c.hp.n_embd);
  EM_ASSIGN_OR_RETURN(Buf ffn_out, ffn == FfnKind::kMoe ? moe_ffn(c, w, p, ffn_in) : ffn_swiglu(c, w, p, ffn_in));
  add_in_place(x, ffn_out);  // l_out
  if (c.dump && *c.dump) (*c.dump)("l_out", c.layer, x, c.n_tok, c.hp.n_embd);
  return Status::Ok();
}

}  // namespace expertmesh::worker
