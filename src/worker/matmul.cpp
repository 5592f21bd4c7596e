#include "worker/matmul.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>

#include "kernels/quant/fp16.h"
#include "kernels/quant/quant.h"

namespace expertmesh::worker {
namespace {

// Rows per generic tile: 16 dequantized F32 rows of a 4096-wide weight are 256 KiB (L2).
constexpr int64_t kGenericTileRows = 16;

int64_t interleave_of(GgmlType t) { return type_traits(t)->interleave; }

// Tiles of one matmul: rows in chunks of `rows` (a multiple of 8 unless the whole range is
// smaller), tokens in chunks of `toks`. The split only changes which thread computes what,
// never a value (kernel contract, gemm.h).
struct Split {
  int64_t rows = 0, toks = 0, n_row_tiles = 0, n_tok_tiles = 0;
  int64_t n_tasks() const { return n_row_tiles * n_tok_tiles; }
};

Split split_for(int64_t nrows, int64_t n_tok, int n_threads, int64_t max_rows) {
  Split s;
  // Enough tasks to balance (4 per thread) without tiles so small that the kernel's per-tile
  // setup (unpacking a weight tile for many tokens) dominates.
  const int64_t want = int64_t(n_threads) * 4;
  s.rows = max_rows;
  while (s.rows > 8 && (nrows + s.rows - 1) / s.rows < want) s.rows /= 2;
  s.rows = std::min(s.rows, nrows);
  s.n_row_tiles = (nrows + s.rows - 1) / s.rows;
  s.toks = n_tok;
  if (s.n_row_tiles < want && n_tok >= 64) {  // few rows, many tokens: split the tokens too
    const int64_t chunks = std::min<int64_t>((want + s.n_row_tiles - 1) / s.n_row_tiles, n_tok / 32);
    s.toks = (n_tok + chunks - 1) / chunks;
  }
  s.n_tok_tiles = (n_tok + s.toks - 1) / s.toks;
  return s;
}

}  // namespace

GenericRounding generic_rounding(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q6_0:
    case GgmlType::Q8_0:
    case GgmlType::IQ4_NL:
      return GenericRounding::kQ8_2;
    case GgmlType::F16:
      return GenericRounding::kF16;
    default:
      return GenericRounding::kNone;
  }
}

void round_activations_q8_2(const float* x, float* out, int64_t n) {
  for (int64_t b = 0; b < n; b += 32) {
    float amax = 0.0f;
    for (int64_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b + i]));
    const float d = quant::bf16_to_f32(quant::f32_to_bf16(amax / 127.f));
    const float id = d > 0 ? 1 / d : 0.f;
    for (int64_t i = 0; i < 32; ++i) out[b + i] = d * std::clamp(std::nearbyint(x[b + i] * id), -128.0f, 127.0f);
  }
}

Activations::Activations(const Activations& src, const std::vector<int64_t>& rows, ThreadPool& pool, bool with_floats)
    : x_(nullptr), ldx_(src.n_cols_), n_tok_(int64_t(rows.size())), n_cols_(src.n_cols_) {
  const size_t n = rows.size(), nc = size_t(n_cols_);
  if (with_floats) {
    own_.resize(n * nc);
    x_ = own_.data();
  }
  for (size_t f = 0; f < q_.size(); ++f)
    if (src.q_ready_[f]) {
      alloc_q(f);
      q_ready_[f] = true;
    }
  for (size_t f = 1; f < r_.size(); ++f)  // kNone is the floats themselves
    if (src.r_ready_[f]) {
      r_[f].resize(n * nc);
      r_ready_[f] = true;
    }
  pool.run(int64_t(n), [&](int64_t i, int) {
    const size_t row = size_t(rows[size_t(i)]);
    if (with_floats) std::memcpy(own_.data() + size_t(i) * nc, src.x_ + int64_t(row) * src.ldx_, nc * sizeof(float));
    for (size_t f = 0; f < q_.size(); ++f)
      if (q_ready_[f]) {
        const size_t stride = quantized_stride(cpu::ActType(f));
        std::memcpy(q_ptr_[f] + size_t(i) * stride, src.q_ptr_[f] + row * stride,
                    cpu::act_row_bytes(cpu::ActType(f), n_cols_));
      }
    for (size_t f = 1; f < r_.size(); ++f)
      if (r_ready_[f]) std::memcpy(r_[f].data() + size_t(i) * nc, src.r_[f].data() + row * nc, nc * sizeof(float));
  });
}

size_t Activations::quantized_stride(cpu::ActType a) const {
  const size_t rb = cpu::act_row_bytes(a, n_cols_);
  if (a != cpu::ActType::kF32 && a != cpu::ActType::kF16 && a != cpu::ActType::kBF16) return rb;
  const size_t lines = (rb + 63) / 64;
  return 64 * (lines % 2 == 0 ? lines + 1 : lines);
}

uint8_t* Activations::alloc_q(size_t f) {
  q_[f].resize(quantized_stride(cpu::ActType(f)) * size_t(n_tok_) + 64);
  const auto addr = reinterpret_cast<uintptr_t>(q_[f].data());
  q_ptr_[f] = q_[f].data() + (64 - addr % 64) % 64;
  return q_ptr_[f];
}

const uint8_t* Activations::quantized(cpu::ActType a, const cpu::Kernels& k, ThreadPool& pool) {
  const size_t i = size_t(a);
  if (!q_ready_[i]) {
    const size_t stride = quantized_stride(a);
    uint8_t* q = alloc_q(i);
    pool.run(n_tok_, [&](int64_t t, int) { k.quantize_act(a, x_ + t * ldx_, q + size_t(t) * stride, n_cols_); });
    q_ready_[i] = true;
  }
  return q_ptr_[i];
}

const float* Activations::rounded(GenericRounding r, ThreadPool& pool) {
  if (r == GenericRounding::kNone) return x_;
  const size_t i = size_t(r);
  if (!r_ready_[i]) {
    r_[i].resize(size_t(n_tok_ * n_cols_));
    pool.run(n_tok_, [&](int64_t t, int) {
      const float* src = x_ + t * ldx_;
      float* dst = r_[i].data() + t * n_cols_;
      if (r == GenericRounding::kQ8_2 && n_cols_ % 32 == 0) {
        round_activations_q8_2(src, dst, n_cols_);
      } else if (r == GenericRounding::kF16) {
        for (int64_t c = 0; c < n_cols_; ++c) dst[c] = quant::fp16_to_f32(quant::f32_to_fp16(src[c]));
      } else {
        std::memcpy(dst, src, size_t(n_cols_) * sizeof(float));
      }
    });
    r_ready_[i] = true;
  }
  return r_[i].data();
}

MatmulKernel matmul_kernel(GgmlType t, const cpu::Kernels& k) {
  MatmulKernel mk;
  if (t == GgmlType::BF16 && k.gemm_bf16_bf16act) {
    mk.fast = {cpu::ActType::kBF16, k.gemm_bf16_bf16act};
  } else if (k.gemm && size_t(t) < k.gemm->size()) {
    mk.fast = (*k.gemm)[size_t(t)];
  }
  mk.rounding = generic_rounding(t);
  return mk;
}

std::string generic_path_report(const ModelWeights& w, const cpu::Kernels& k) {
  struct Slow {
    int count = 0;
    std::vector<std::string> names;
  };
  std::map<std::string, Slow> slow;  // by type name: a stable order for the message
  int total = 0, n_slow = 0;
  auto visit = [&](const Weight& t) {
    if (!t.present()) return;
    ++total;
    if (matmul_kernel(t.type, k).fast.gemm) return;
    ++n_slow;
    Slow& s = slow[std::string(type_name(t.type))];
    if (++s.count <= 2) s.names.push_back(t.name);
  };
  for (const LayerWeights& l : w.layers) {
    for (const Weight* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_gate, &l.ffn_up, &l.ffn_down, &l.ffn_gate_inp,
                            &l.ffn_gate_exps, &l.ffn_up_exps, &l.ffn_down_exps})
      visit(*t);
  }
  visit(w.output);
  if (slow.empty()) return "";
  std::string types;
  for (const auto& [name, s] : slow) {
    types += fmt::format("{}{} ×{} ({}{})", types.empty() ? "" : ", ", name, s.count, fmt::join(s.names, ", "),
                         s.count > 2 ? ", ..." : "");
  }
  return fmt::format(
      "{} of {} matmul tensors have no fast {} kernel and take the generic path (a tile dequantized to F32, then "
      "F32 dot products; slower): {}",
      n_slow, total, k.name, types);
}

bool activations_quantized(GgmlType t, const cpu::Kernels& k) {
  const MatmulKernel mk = matmul_kernel(t, k);
  if (!mk.fast.gemm) return mk.rounding != GenericRounding::kNone;
  return mk.fast.act != cpu::ActType::kF32;
}

Status dequantize_row(const Weight& w, int64_t r, float* out) {
  const int64_t il = interleave_of(w.type);
  if (!w.holds(r / il * il, il)) return Status::Internal(fmt::format("{}: row {} is not held by this rank", w.name, r));
  if (il == 1) return quant::dequantize_rows(w.type, w.row(r), out, 1, w.ne[0], 1);
  std::vector<float> group(size_t(il * w.ne[0]));
  const int64_t g0 = r / il * il;
  EM_RETURN_IF_ERROR(quant::dequantize_rows(w.type, w.row(g0), group.data(), il, w.ne[0], 1));
  std::memcpy(out, group.data() + (r - g0) * w.ne[0], size_t(w.ne[0]) * sizeof(float));
  return Status::Ok();
}

Status check_rows(const Weight& w, int64_t row0, int64_t nrows) {
  if (row0 < 0 || nrows < 0 || row0 + nrows > w.n_rows())
    return Status::Internal(fmt::format("matmul {}: rows out of range", w.name));
  if (nrows > 0 && !w.holds(row0, nrows))  // a plan/store mismatch, never user input
    return Status::Internal(
        fmt::format("matmul {}: rows [{}, {}) are not held by this rank", w.name, row0, row0 + nrows));
  if (w.type != GgmlType::F32 && !quant::quant_fns(w.type).to_float)
    return Status::Unsupported(fmt::format("{}: no dequantizer for type {}", w.name, type_name(w.type)));
  const int64_t il = interleave_of(w.type);
  if (row0 % il != 0 || nrows % il != 0)
    return Status::Internal(fmt::format("matmul {}: rows not aligned to the interleave of {}", w.name, il));
  return Status::Ok();
}

namespace {

bool fast_usable(const Weight& w, const MatmulKernel& mk, int64_t c0, int64_t c1) {
  return mk.fast.gemm && c0 == 0 && c1 == w.ne[0] && w.ne[0] % cpu::act_block(mk.fast.act) == 0 &&
         interleave_of(w.type) == 1;
}

// Generic tile: rows [r0, r0+nr) dequantized into the thread's scratch, F32 dots of their
// columns [c0, c1) against the rounded activation rows (xr: column c0 of the weight at xr[0]). Returns false when the
// dequantizer failed.
bool generic_tile(const Weight& w, const float* xr, int64_t ldx, int64_t r0, int64_t nr, int64_t t0, int64_t nt,
                  int64_t c0, int64_t c1, float* y, int64_t ldy, ThreadPool& pool, const cpu::Kernels& k, int thread) {
  const int64_t ne0 = w.ne[0];
  const float* rows;
  int64_t ld = ne0;
  if (w.type == GgmlType::F32) {
    rows = reinterpret_cast<const float*>(w.row(r0));
    ld = w.row_bytes / int64_t(sizeof(float));
  } else {
    auto* buf = reinterpret_cast<float*>(pool.scratch(thread, size_t(nr * ne0) * sizeof(float)));
    if (!quant::dequantize_rows(w.type, w.row(r0), buf, nr, ne0, 1).ok()) return false;
    rows = buf;
  }
  for (int64_t t = t0; t < t0 + nt; ++t) {
    const float* xt = xr + t * ldx;
    float* yt = y + t * ldy;
    for (int64_t r = 0; r < nr; ++r) yt[r] = k.dot_f32(rows + r * ld + c0, xt, c1 - c0);
  }
  return true;
}

}  // namespace

bool reads_floats(const Weight& w, const MatmulKernel& mk) {
  return !fast_usable(w, mk, 0, w.ne[0]) && mk.rounding == GenericRounding::kNone;
}

Status prepare_input(const Weight& w, const MatmulKernel& mk, Activations& x, ThreadPool& pool, const cpu::Kernels& k) {
  if (x.n_cols() != w.ne[0]) return Status::Internal(fmt::format("matmul {}: input is not ne0 wide", w.name));
  if (fast_usable(w, mk, 0, w.ne[0])) {
    x.quantized(mk.fast.act, k, pool);
  } else {
    x.rounded(mk.rounding, pool);
  }
  return Status::Ok();
}

void matmul_tile(const Weight& w, const MatmulKernel& mk, Activations& x, int64_t r0, int64_t nr, int64_t t0,
                 int64_t nt, float* y, int64_t ldy, ThreadPool& pool, const cpu::Kernels& k, int thread) {
  const int64_t n = w.ne[0];
  if (fast_usable(w, mk, 0, n)) {
    const size_t rb = x.quantized_stride(mk.fast.act);
    cpu::GemmArgs g;
    g.n = n;
    g.w = w.row(r0);
    g.w_stride = size_t(w.row_bytes);
    g.nr = nr;
    g.a = x.quantized(mk.fast.act, k, pool) + size_t(t0) * rb;  // made by prepare_input: no work here
    g.a_stride = rb;
    g.nt = nt;
    g.y = y + t0 * ldy;
    g.ldy = ldy;
    g.scratch = pool.scratch(thread, cpu::gemm_scratch_bytes(n));
    mk.fast.gemm(g);
    return;
  }
  const float* xr = x.rounded(mk.rounding, pool);
  const int64_t ldx = mk.rounding == GenericRounding::kNone ? x.ldx() : x.n_cols();
  for (int64_t i = 0; i < nr; i += kGenericTileRows) {
    const int64_t m = std::min(kGenericTileRows, nr - i);
    generic_tile(w, xr, ldx, r0 + i, m, t0, nt, 0, n, y + i, ldy, pool, k, thread);
  }
}

Status matmul(const Weight& w, int64_t row0, int64_t nrows, Activations& x, float* y, int64_t ldy, ThreadPool& pool,
              const cpu::Kernels& k, ColRange cols) {
  const int64_t ne0 = w.ne[0];
  const int64_t c0 = cols.begin, c1 = cols.end < 0 ? ne0 : cols.end;
  if (c0 < 0 || c1 > ne0 || c0 >= c1 || x.n_cols() != c1 - c0)
    return Status::Internal(fmt::format("matmul {}: bad column range", w.name));
  EM_RETURN_IF_ERROR(check_rows(w, row0, nrows));
  const int64_t n_tok = x.n_tok();
  if (nrows == 0 || n_tok == 0) return Status::Ok();
  const MatmulKernel mk = matmul_kernel(w.type, k);
  if (fast_usable(w, mk, c0, c1)) {
    x.quantized(mk.fast.act, k, pool);  // once, on the pool, before the tiles read it
    const Split s = split_for(nrows, n_tok, pool.size(), cpu::kGemmMaxTileRows);
    pool.run(s.n_tasks(), [&](int64_t task, int thread) {
      const int64_t r0 = task % s.n_row_tiles * s.rows, t0 = task / s.n_row_tiles * s.toks;
      matmul_tile(w, mk, x, row0 + r0, std::min(s.rows, nrows - r0), t0, std::min(s.toks, n_tok - t0), y + r0, ldy,
                  pool, k, thread);
    });
    return Status::Ok();
  }
  // Generic path. Q8_2 rounding needs whole blocks of the column slice; otherwise F32 as is.
  GenericRounding rounding = mk.rounding;
  if (rounding == GenericRounding::kQ8_2 && (c0 % 32 != 0 || (c1 - c0) % 32 != 0)) rounding = GenericRounding::kNone;
  const float* xr = x.rounded(rounding, pool);
  const int64_t ldx = rounding == GenericRounding::kNone ? x.ldx() : x.n_cols();
  const int64_t il = interleave_of(w.type);
  const int64_t tile = std::max<int64_t>(kGenericTileRows / il, 1) * il;
  const int64_t n_tiles = (nrows + tile - 1) / tile;
  std::vector<uint8_t> failed(size_t(n_tiles), 0);
  pool.run(n_tiles, [&](int64_t ti, int thread) {
    const int64_t r0 = ti * tile, nr = std::min(tile, nrows - r0);
    if (!generic_tile(w, xr, ldx, row0 + r0, nr, 0, n_tok, c0, c1, y + r0, ldy, pool, k, thread))
      failed[size_t(ti)] = 1;
  });
  for (uint8_t f : failed)
    if (f) return Status::Internal(fmt::format("{}: dequantization failed", w.name));
  return Status::Ok();
}

Status matmul(const Weight& w, int64_t row0, int64_t nrows, const float* x, int64_t ldx, int64_t n_tok, float* y,
              int64_t ldy, ThreadPool& pool, const cpu::Kernels& k, ColRange cols) {
  const int64_t c1 = cols.end < 0 ? w.ne[0] : cols.end;
  Activations in(x, ldx, n_tok, c1 - cols.begin);
  return matmul(w, row0, nrows, in, y, ldy, pool, k, cols);
}

}  // namespace expertmesh::worker
