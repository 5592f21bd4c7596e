#include "worker/blocks.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

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

Result<Buf> ffn_swiglu(const StepContext& c, const LayerWeights& w, const LayerPlan& p, const Buf& h) {
  const int64_t n_embd = c.hp.n_embd, f0 = p.ffn_begin, n_ff = p.ffn_end - p.ffn_begin;
  if (n_ff == 0 && !p.stage_ffn.empty())
    return project_out(c, w.ffn_down, Buf(), w.ffn_down.ne[0], p.stage_ffn, 1, p.stage_ffn_out, p.ffn_out, "ffn_out");
  Buf out(size_t(c.n_tok * n_embd), 0.0f);
  if (n_ff > 0) {
    Buf gate(size_t(c.n_tok * n_ff)), up(size_t(c.n_tok * n_ff)), act(size_t(c.n_tok * n_ff));
    EM_RETURN_IF_ERROR(c.observe_input(w.ffn_gate, -1, h.data(), c.n_tok, n_embd));
    EM_RETURN_IF_ERROR(c.observe_input(w.ffn_up, -1, h.data(), c.n_tok, n_embd));
    Activations hin(h.data(), n_embd, c.n_tok, n_embd);  // quantized once for gate and up
    EM_RETURN_IF_ERROR(matmul(w.ffn_gate, f0, n_ff, hin, gate.data(), n_ff, c.pool, c.k));
    EM_RETURN_IF_ERROR(matmul(w.ffn_up, f0, n_ff, hin, up.data(), n_ff, c.pool, c.k));
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
