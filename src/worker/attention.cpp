// Self-attention (blocks.h): projections, q/k norm, RoPE, KV store, causal attention per
// sequence, output projection.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>

#include "kernels/cpu/flash_attn.h"
#include "kernels/quant/fp16.h"
#include "worker/blocks.h"
#include "worker/matmul.h"

namespace expertmesh::worker {

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

// The rows of one KV-cache sequence in the batch: positions [0, n_kv) are attended over.
struct SeqGroup {
  int64_t seq = 0, n_kv = 0;
  std::vector<int64_t> rows;
};

// The peer's generic flash-attention path (peer_uses_generic_fa): per (query head, sequence),
// the cached K/V dequantized to F32 and attend_row_f16acc per row.
Status attend_generic_fa(const StepContext& c, const std::vector<SeqGroup>& groups, const Buf& q, int64_t nq,
                         int64_t hb, float scale, Buf& kqv) {
  const int64_t hd = c.hp.head_dim, n_gqa = c.hp.n_gqa();
  const int64_t n_tasks = nq * int64_t(groups.size());
  std::vector<Status> errors(static_cast<size_t>(n_tasks));
  c.pool.run(n_tasks, [&](int64_t task, int) {
    const int64_t hi = task % nq;
    const SeqGroup& g = groups[size_t(task / nq)];
    const int64_t kvh = (hb + hi) / n_gqa - c.kv_head0, n_kv = g.n_kv;
    Buf K(size_t(n_kv * hd)), V(size_t(n_kv * hd));
    Status s = c.kv.load_k(g.seq, c.kv_layer, kvh, n_kv, K.data());
    if (s.ok()) s = c.kv.load_v(g.seq, c.kv_layer, kvh, n_kv, V.data());
    if (!s.ok()) {
      errors[size_t(task)] = s;
      return;
    }
    std::vector<uint16_t> acc16(static_cast<size_t>(hd));
    for (int64_t t : g.rows)
      attend_row_f16acc(q.data() + (t * nq + hi) * hd, K.data(), V.data(), n_kv, hd, c.pos[t], scale, acc16.data(),
                        kqv.data() + (t * nq + hi) * hd);
  });
  for (const Status& s : errors) EM_RETURN_IF_ERROR(s);
  return Status::Ok();
}

// One flash-attention job: the query heads [h0, h0 + nh) (local indices) that share cache kv
// head `kvh`, for rows [r0, r1) of group `g`; its rows see keys [0, n_kv).
struct FlashJob {
  int64_t kvh = 0, h0 = 0, nh = 0, r0 = 0, r1 = 0, n_kv = 0;
  size_t g = 0;
  size_t rows0 = 0;  // its rows' entries in the flat q/out/pos arrays
  int64_t n_splits = 1, task0 = 0;
  size_t part0 = 0;  // split mode: its partial states (n_splits × its queries) in the part arrays
};

// Causal attention of this rank's heads with the flash kernels (flash_attn.h), reading K/V from
// the cache in its type. Work is split into jobs of (kv head × sequence × up to
// kFlashMaxBlock queries); when there are few jobs (token generation) each job's key range is
// further split at kFlashSplit boundaries into tasks whose partial states are merged in split
// order. Both ways give the same bits, so the result depends neither on the thread count nor on
// the batch.
void attend_flash(const StepContext& c, const std::vector<SeqGroup>& groups, const Buf& q, int64_t nq, int64_t hb,
                  int64_t he, float scale, Buf& kqv) {
  const int64_t hd = c.hp.head_dim, n_gqa = c.hp.n_gqa();
  const cpu::FlashAttnKernels& fa = cpu::flash_attn_kernels(c.k.isa);
  std::vector<FlashJob> jobs;
  std::vector<const float*> q_rows;
  std::vector<float*> out_rows;
  std::vector<int32_t> pos;
  for (int64_t kv = hb / n_gqa; kv * n_gqa < he; ++kv) {
    const int64_t h0 = std::max(hb, kv * n_gqa) - hb, nh = std::min(he, (kv + 1) * n_gqa) - hb - h0;
    const int64_t chunk = std::max<int64_t>(1, cpu::kFlashMaxBlock / nh);
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      const SeqGroup& g = groups[gi];
      for (int64_t r0 = 0; r0 < int64_t(g.rows.size()); r0 += chunk) {
        FlashJob j;
        j.kvh = kv - c.kv_head0;
        j.h0 = h0;
        j.nh = nh;
        j.g = gi;
        j.r0 = r0;
        j.r1 = std::min<int64_t>(r0 + chunk, int64_t(g.rows.size()));
        j.rows0 = q_rows.size();
        for (int64_t r = j.r0; r < j.r1; ++r) {
          const int64_t t = g.rows[size_t(r)];
          q_rows.push_back(q.data() + (t * nq + h0) * hd);
          out_rows.push_back(kqv.data() + (t * nq + h0) * hd);
          pos.push_back(c.pos[t]);
          j.n_kv = std::max<int64_t>(j.n_kv, int64_t(c.pos[t]) + 1);
        }
        jobs.push_back(j);
      }
    }
  }
  const bool split = c.pool.size() > 1 && int64_t(jobs.size()) < 4 * c.pool.size();
  int64_t n_tasks = 0;
  size_t n_parts = 0;
  for (FlashJob& j : jobs) {
    j.task0 = n_tasks;
    j.n_splits = split ? (j.n_kv + cpu::kFlashSplit - 1) / cpu::kFlashSplit : 1;
    j.part0 = n_parts;
    n_tasks += j.n_splits;
    if (split) n_parts += size_t(j.n_splits * (j.r1 - j.r0) * j.nh);
  }
  // Split mode: partial states [split][query] per job (every entry is written by its task
  // before the merge reads it), and each task's output row pointers.
  const auto part_o = std::make_unique_for_overwrite<float[]>(n_parts * size_t(hd));
  const auto part_m = std::make_unique_for_overwrite<float[]>(n_parts);
  const auto part_l = std::make_unique_for_overwrite<float[]>(n_parts);
  std::vector<float*> part_rows(n_parts);
  const size_t scratch_bytes = size_t(cpu::flash_attn_scratch_floats(hd)) * sizeof(float);
  std::vector<int64_t> task_job(static_cast<size_t>(n_tasks));
  for (size_t ji = 0; ji < jobs.size(); ++ji)
    for (int64_t s = 0; s < jobs[ji].n_splits; ++s) task_job[size_t(jobs[ji].task0 + s)] = int64_t(ji);
  c.pool.run(n_tasks, [&](int64_t task, int thread) {
    const FlashJob& j = jobs[size_t(task_job[size_t(task)])];
    const SeqGroup& g = groups[j.g];
    const int64_t s = task - j.task0, n_rows = j.r1 - j.r0, nqj = n_rows * j.nh;
    cpu::FlashAttnArgs a;
    a.head_dim = hd;
    a.scale = scale;
    a.type_k = c.kv.type_k();
    a.type_v = c.kv.type_v();
    a.k = c.kv.k_rows(g.seq, c.kv_layer, j.kvh);
    a.v = c.kv.v_rows(g.seq, c.kv_layer, j.kvh);
    a.k_row = c.kv.k_row_bytes();
    a.v_row = c.kv.v_row_bytes();
    a.kv_begin = split ? s * cpu::kFlashSplit : 0;
    a.kv_end = split ? std::min(j.n_kv, (s + 1) * cpu::kFlashSplit) : j.n_kv;
    a.n_rows = n_rows;
    a.n_heads = j.nh;
    a.q_rows = q_rows.data() + j.rows0;
    a.pos = pos.data() + j.rows0;
    a.out_rows = out_rows.data() + j.rows0;
    if (split) {
      const size_t p0 = j.part0 + size_t(s * nqj);
      float** rows = part_rows.data() + p0;  // one pointer per query; the kernel reads n_rows of them
      for (int64_t r = 0; r < n_rows; ++r) rows[r] = part_o.get() + (p0 + size_t(r * j.nh)) * size_t(hd);
      a.out_rows = rows;
      a.m = part_m.get() + p0;
      a.l = part_l.get() + p0;
    }
    a.scratch = reinterpret_cast<float*>(c.pool.scratch(thread, scratch_bytes));
    fa.attend(a);
  });
  if (!split) return;
  c.pool.run(int64_t(jobs.size()), [&](int64_t ji, int) {
    const FlashJob& j = jobs[size_t(ji)];
    const int64_t nqj = (j.r1 - j.r0) * j.nh;
    for (int64_t i = 0; i < nqj; ++i) {
      const size_t p = j.part0 + size_t(i);
      fa.merge(j.n_splits, part_m.get() + p, part_l.get() + p, nqj, part_o.get() + p * size_t(hd), nqj * hd, hd,
               out_rows[j.rows0 + size_t(i / j.nh)] + (i % j.nh) * hd);
    }
  });
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
  Activations hin(h.data(), hp.n_embd, c.n_tok, hp.n_embd);  // quantized once for q, k and v
  EM_RETURN_IF_ERROR(matmul(w.wq, hb * hd, nq * hd, hin, q.data(), nq * hd, c.pool, c.k));
  EM_RETURN_IF_ERROR(matmul(w.wk, kvb * hd, nkv * hd, hin, k.data(), nkv * hd, c.pool, c.k));
  EM_RETURN_IF_ERROR(matmul(w.wv, kvb * hd, nkv * hd, hin, v.data(), nkv * hd, c.pool, c.k));
  norm_and_rope(c, q, nq, opt.qk_norm ? &w.attn_q_norm : nullptr);
  norm_and_rope(c, k, nkv, opt.qk_norm ? &w.attn_k_norm : nullptr);
  c.trace("Qcur", q, nq * hd);
  c.trace("Kcur", k, nkv * hd);
  c.trace("Vcur", v, nkv * hd);

  // Store this batch's K/V, then attend over each sequence's cached keys. Rows are grouped by
  // sequence; a group attends over positions [0, max pos + 1) of its sequence.
  auto seq_of = [&](int64_t t) { return c.seq ? int64_t(c.seq[t]) : int64_t{0}; };
  std::vector<SeqGroup> groups;
  for (int64_t t = 0; t < c.n_tok; ++t) {
    const int64_t s = seq_of(t);
    EM_RETURN_IF_ERROR(
        c.kv.store(s, c.kv_layer, c.pos[t], kvb - c.kv_head0, nkv, k.data() + t * nkv * hd, v.data() + t * nkv * hd));
    auto g = std::find_if(groups.begin(), groups.end(), [&](const SeqGroup& x) { return x.seq == s; });
    if (g == groups.end()) g = groups.insert(groups.end(), SeqGroup{s, 0, {}});
    g->rows.push_back(t);
    g->n_kv = std::max<int64_t>(g->n_kv, c.pos[t] + 1);
  }
  const float scale = 1.0f / std::sqrt(float(hd));
  Buf kqv(size_t(c.n_tok * nq * hd));
  if (peer_uses_generic_fa(c.kv, hd))
    EM_RETURN_IF_ERROR(attend_generic_fa(c, groups, q, nq, hb, scale, kqv));
  else
    attend_flash(c, groups, q, nq, hb, he, scale, kqv);
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

}  // namespace expertmesh::worker
