// Flash-attention kernels (kernels/cpu/flash_attn.h) on every ISA this machine runs:
//  - against the exact softmax in double over the dequantized cache rows (and against
//    worker::attend_row), for 1 and 128 query rows, several depths, head sizes and cache types;
//  - batch invariance, bit for bit: a query alone == the same query in a batch, whatever its
//    block, its head group, the rows around it, the key range cut into partial calls (split
//    mode) merged with the ISA's merge, or a larger kv_end;
//  - memory: a call allocates nothing (operator new is counted) and writes no scratch beyond
//    flash_attn_scratch_floats(head_dim), which depends on head_dim only. So by construction
//    nothing in a kernel grows with n_kv × n_q (nor with n_kv or n_q at all).
#include "kernels/cpu/flash_attn.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/quant/quant.h"
#include "worker/blocks.h"

// Heap allocations made by this thread while t_count_allocs is set.
namespace {
thread_local bool t_count_allocs = false;
std::atomic<int64_t> g_allocs{0};
}  // namespace

// Out of line, so GCC does not pair the inlined free() with operator new (-Wmismatched-new-delete).
[[gnu::noinline]] void* operator new(size_t n) {
  if (t_count_allocs) g_allocs.fetch_add(1);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace expertmesh {
namespace {

using cpu::FlashAttnArgs;
using cpu::FlashAttnKernels;

bool have_avx2() { return cpu::cpu_supports(cpu::Isa::kAvx2); }
bool have_avx512() { return cpu::cpu_supports(cpu::Isa::kAvx512); }

// Every variant this CPU runs (the table is built per ISA directly, not via select_kernels).
std::vector<const FlashAttnKernels*> variants() {
  std::vector<const FlashAttnKernels*> v{&cpu::flash_attn_ref()};
  if (have_avx2() && cpu::flash_attn_avx2()) v.push_back(cpu::flash_attn_avx2());
  if (have_avx512() && cpu::flash_attn_avx512()) v.push_back(cpu::flash_attn_avx512());
  return v;
}

constexpr GgmlType kTypes[] = {GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::F32};

// One kv head's cache rows (n_kv positions) in the cache type, and their dequantized values.
struct Cache {
  GgmlType type = GgmlType::F16;
  int64_t hd = 0, n_kv = 0, row = 0;
  std::vector<uint8_t> k, v;
  std::vector<float> kd, vd;
};

std::vector<float> normal(int64_t n, float sigma, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& e : x) e = d(rng);
  return x;
}

Cache make_cache(GgmlType t, int64_t hd, int64_t n_kv, uint32_t seed) {
  std::mt19937 rng(seed);
  Cache c;
  c.type = t;
  c.hd = hd;
  c.n_kv = n_kv;
  c.row = row_size(t, hd);
  const std::vector<float> k = normal(n_kv * hd, 1.0f, rng), v = normal(n_kv * hd, 1.0f, rng);
  c.k.resize(size_t(n_kv * c.row));
  c.v.resize(size_t(n_kv * c.row));
  EXPECT_TRUE(quant::quantize_rows(t, k.data(), c.k.data(), n_kv, hd, nullptr, 1).ok());
  EXPECT_TRUE(quant::quantize_rows(t, v.data(), c.v.data(), n_kv, hd, nullptr, 1).ok());
  c.kd.resize(k.size());
  c.vd.resize(v.size());
  EXPECT_TRUE(quant::dequantize_rows(t, c.k.data(), c.kd.data(), n_kv, hd, 1).ok());
  EXPECT_TRUE(quant::dequantize_rows(t, c.v.data(), c.vd.data(), n_kv, hd, 1).ok());
  return c;
}

// n_rows query rows of n_heads heads each (row-major, heads contiguous) and their positions.
struct Batch {
  int64_t n_rows = 0, n_heads = 0, hd = 0;
  std::vector<float> q;
  std::vector<int32_t> pos;
};

Batch make_batch(int64_t n_rows, int64_t n_heads, int64_t hd, int64_t first_pos, float sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  Batch b;
  b.n_rows = n_rows;
  b.n_heads = n_heads;
  b.hd = hd;
  b.q = normal(n_rows * n_heads * hd, sigma, rng);
  for (int64_t r = 0; r < n_rows; ++r) b.pos.push_back(int32_t(first_pos + r));
  return b;
}

float scale_of(int64_t hd) { return 1.0f / std::sqrt(float(hd)); }

// Runs the kernel over rows [r0, r1) and heads [h0, h1) of the batch for keys
// [kv_begin, kv_end); returns out (n_rows × n_heads × hd, the untouched entries NaN).
// Partial mode when m/l are given (indexed like out, one per query).
std::vector<float> run(const FlashAttnKernels& fk, const Cache& c, const Batch& b, int64_t r0, int64_t r1, int64_t h0,
                       int64_t h1, int64_t kv_begin, int64_t kv_end, std::vector<float>* m = nullptr,
                       std::vector<float>* l = nullptr) {
  const int64_t hd = c.hd;
  std::vector<float> out(b.q.size(), std::numeric_limits<float>::quiet_NaN());
  std::vector<const float*> q_rows;
  std::vector<float*> out_rows;
  for (int64_t r = r0; r < r1; ++r) {
    q_rows.push_back(b.q.data() + (r * b.n_heads + h0) * hd);
    out_rows.push_back(out.data() + (r * b.n_heads + h0) * hd);
  }
  std::vector<float> scratch(size_t(cpu::flash_attn_scratch_floats(hd)) + 16);
  std::vector<float> ms(size_t((r1 - r0) * (h1 - h0))), ls(ms.size());
  FlashAttnArgs a;
  a.head_dim = hd;
  a.scale = scale_of(hd);
  a.type_k = a.type_v = c.type;
  a.k = c.k.data();
  a.v = c.v.data();
  a.k_row = a.v_row = c.row;
  a.kv_begin = kv_begin;
  a.kv_end = kv_end;
  a.n_rows = r1 - r0;
  a.n_heads = h1 - h0;
  a.q_rows = q_rows.data();
  a.pos = b.pos.data() + r0;
  a.out_rows = out_rows.data();
  if (m) {
    a.m = ms.data();
    a.l = ls.data();
  }
  a.scratch = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) & ~uintptr_t(63));
  fk.attend(a);
  if (m) {
    m->assign(b.q.size() / size_t(hd), std::numeric_limits<float>::quiet_NaN());
    l->assign(m->size(), std::numeric_limits<float>::quiet_NaN());
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t h = h0; h < h1; ++h) {
        (*m)[size_t(r * b.n_heads + h)] = ms[size_t((r - r0) * (h1 - h0) + h - h0)];
        (*l)[size_t(r * b.n_heads + h)] = ls[size_t((r - r0) * (h1 - h0) + h - h0)];
      }
  }
  return out;
}

std::vector<float> run_all(const FlashAttnKernels& fk, const Cache& c, const Batch& b) {
  return run(fk, c, b, 0, b.n_rows, 0, b.n_heads, 0, c.n_kv);
}

// softmax(q·K_jᵀ·scale, j <= pos) · V in double over the dequantized rows.
std::vector<double> exact(const Cache& c, const float* q, int64_t pos) {
  const int64_t hd = c.hd;
  std::vector<double> s(size_t(pos + 1)), out(size_t(hd), 0.0);
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j <= pos; ++j) {
    double acc = 0.0;
    for (int64_t d = 0; d < hd; ++d) acc += double(q[d]) * double(c.kd[size_t(j * hd + d)]);
    s[size_t(j)] = acc * double(scale_of(hd));
    mx = std::max(mx, s[size_t(j)]);
  }
  double sum = 0.0;
  for (int64_t j = 0; j <= pos; ++j) {
    const double w = std::exp(s[size_t(j)] - mx);
    sum += w;
    for (int64_t d = 0; d < hd; ++d) out[size_t(d)] += w * double(c.vd[size_t(j * hd + d)]);
  }
  for (double& o : out) o /= sum;
  return out;
}

// Max |got - want| over all queries of the batch, against the double reference.
double max_error(const Cache& c, const Batch& b, const std::vector<float>& got,
                 const std::vector<std::vector<double>>& want) {
  double err = 0.0;
  for (size_t i = 0; i < want.size(); ++i)
    for (int64_t d = 0; d < c.hd; ++d) {
      const double e = std::fabs(double(got[i * size_t(c.hd) + size_t(d)]) - want[i][size_t(d)]);
      err = std::isnan(e) ? std::numeric_limits<double>::infinity() : std::max(err, e);
    }
  return err;
}

std::vector<std::vector<double>> exact_all(const Cache& c, const Batch& b) {
  std::vector<std::vector<double>> want;
  for (int64_t r = 0; r < b.n_rows; ++r)
    for (int64_t h = 0; h < b.n_heads; ++h) want.push_back(exact(c, b.q.data() + (r * b.n_heads + h) * c.hd, b.pos[r]));
  return want;
}

// The inputs are not degenerate: the softmax is neither one-hot nor flat, outputs vary.
void check_not_degenerate(const Cache& c, const Batch& b, const std::vector<std::vector<double>>& want) {
  double lo = 1e30, hi = -1e30;
  for (const auto& w : want)
    for (double x : w) {
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
  if (b.pos.back() >= 8) {
    EXPECT_GT(hi - lo, 0.05) << "outputs barely vary";
  }
  std::vector<float> k0(c.kd.begin(), c.kd.begin() + c.hd);
  EXPECT_GT(*std::max_element(k0.begin(), k0.end()), 0.5f);
}

// |error| bound for F32 accumulation against the exact result (output values are O(1)).
constexpr double kTol = 2e-5;

TEST(FlashAttn, MatchesExactSoftmax) {
  const auto ks = variants();
  for (GgmlType t : kTypes)
    for (int64_t hd : {64, 128})
      for (int64_t depth : {1, 7, 64, 65, 300, 2048})
        for (int64_t rows : {1, 128}) {
          SCOPED_TRACE(std::string(type_name(t)) + " hd " + std::to_string(hd) + " depth " + std::to_string(depth) +
                       " rows " + std::to_string(rows));
          const int64_t heads = rows == 1 ? 8 : 2;
          const Cache c = make_cache(t, hd, depth + rows, uint32_t(1000 + depth + hd));
          const Batch b = make_batch(rows, heads, hd, depth, 2.5f, uint32_t(7 + depth + rows));
          const auto want = exact_all(c, b);
          check_not_degenerate(c, b, want);
          for (const FlashAttnKernels* k : ks) {
            const double err = max_error(c, b, run_all(*k, c, b), want);
            EXPECT_LT(err, kTol) << k->name;
          }
        }
}

// Odd head sizes (vector tails) and a large score range (the max subtraction matters).
TEST(FlashAttn, OddHeadSizesAndLargeScores) {
  for (GgmlType t : kTypes)
    for (int64_t hd : {32, 40, 72, 96}) {
      if (t == GgmlType::Q8_0 && hd % 32 != 0) continue;
      for (float sigma : {1.0f, 40.0f}) {
        SCOPED_TRACE(std::string(type_name(t)) + " hd " + std::to_string(hd) + " sigma " + std::to_string(sigma));
        const Cache c = make_cache(t, hd, 700, uint32_t(hd));
        const Batch b = make_batch(37, 3, hd, 700 - 37, sigma, uint32_t(hd + 1));
        const auto want = exact_all(c, b);
        for (const FlashAttnKernels* k : variants()) {
          const double err = max_error(c, b, run_all(*k, c, b), want);
          // Scores of ~±500 carry proportionally larger float rounding.
          EXPECT_LT(err, sigma > 1.0f ? 3e-4 : kTol) << k->name;
        }
      }
    }
}

// The kernels agree with worker::attend_row (the exact softmax the engine used before) on the
// dequantized rows.
TEST(FlashAttn, MatchesAttendRow) {
  const cpu::Kernels& rk = cpu::ref_kernels();
  for (GgmlType t : kTypes) {
    const int64_t hd = 128;
    const Cache c = make_cache(t, hd, 333, 5);
    const Batch b = make_batch(5, 4, hd, 328, 2.5f, 6);
    std::vector<float> want(b.q.size()), scores(size_t(c.n_kv));
    for (int64_t r = 0; r < b.n_rows; ++r)
      for (int64_t h = 0; h < b.n_heads; ++h) {
        const int64_t i = r * b.n_heads + h;
        worker::attend_row(rk, b.q.data() + i * hd, c.kd.data(), c.vd.data(), c.n_kv, hd, b.pos[r], scale_of(hd),
                           scores.data(), want.data() + i * hd);
      }
    for (const FlashAttnKernels* k : variants()) {
      const std::vector<float> got = run_all(*k, c, b);
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], want[i], kTol) << type_name(t) << " " << k->name << " at " << i;
    }
  }
}

void expect_same_bits(const std::vector<float>& got, const std::vector<float>& want, int64_t begin, int64_t end,
                      const std::string& what) {
  ASSERT_EQ(0, std::memcmp(got.data() + begin, want.data() + begin, size_t(end - begin) * sizeof(float))) << what;
}

// A query's bits do not depend on the batch: rows alone, heads alone, odd row chunks, the
// token-generation shape (one row, 8 heads) vs the same row at the end of a 128-row batch,
// a larger kv_end, and the key range cut at every split boundary (partial calls + merge).
TEST(FlashAttn, BatchInvariantBitForBit) {
  for (GgmlType t : kTypes)
    for (int64_t hd : {64, 128})
      for (const FlashAttnKernels* k : variants()) {
        SCOPED_TRACE(std::string(type_name(t)) + " hd " + std::to_string(hd) + " " + k->name);
        const int64_t rows = 48, heads = 8, depth = 1000;
        const Cache c = make_cache(t, hd, depth + rows + 50, uint32_t(hd + 11));
        Batch b = make_batch(rows, heads, hd, depth, 2.5f, 3);
        std::mt19937 rng(9);
        for (int64_t r = 0; r < rows; r += 7) b.pos[size_t(r)] = int32_t(rng() % uint32_t(depth + rows));  // scattered
        const int64_t n_kv = depth + rows;
        const std::vector<float> full = run(*k, c, b, 0, rows, 0, heads, 0, n_kv);
        const int64_t row_floats = heads * hd;
        for (int64_t r : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{30}, int64_t{47}}) {
          const std::vector<float> alone = run(*k, c, b, r, r + 1, 0, heads, 0, n_kv);
          expect_same_bits(alone, full, r * row_floats, (r + 1) * row_floats, "row alone " + std::to_string(r));
          for (int64_t h : {int64_t{0}, int64_t{5}}) {
            const std::vector<float> one = run(*k, c, b, r, r + 1, h, h + 1, 0, n_kv);
            expect_same_bits(one, full, r * row_floats + h * hd, r * row_floats + (h + 1) * hd, "head alone");
          }
        }
        std::vector<float> chunks(full.size());
        for (int64_t r0 = 0, step = 1; r0 < rows; r0 += step, step = step % 13 + 2) {
          const int64_t r1 = std::min(rows, r0 + step);
          const std::vector<float> part = run(*k, c, b, r0, r1, 0, heads, 0, n_kv);
          std::copy(part.begin() + r0 * row_floats, part.begin() + r1 * row_floats, chunks.begin() + r0 * row_floats);
        }
        expect_same_bits(chunks, full, 0, rows * row_floats, "odd row chunks");
        const std::vector<float> longer = run(*k, c, b, 0, rows, 0, heads, 0, c.n_kv);
        expect_same_bits(longer, full, 0, rows * row_floats, "larger kv_end");

        // Split mode: one partial call per split, merged in split order.
        const int64_t n_splits = (n_kv + cpu::kFlashSplit - 1) / cpu::kFlashSplit;
        ASSERT_GE(n_splits, 3);
        std::vector<float> pm, pl, po;
        const int64_t nq = rows * heads;
        for (int64_t s = 0; s < n_splits; ++s) {
          std::vector<float> m, l;
          const std::vector<float> o = run(*k, c, b, 0, rows, 0, heads, s * cpu::kFlashSplit,
                                           std::min(n_kv, (s + 1) * cpu::kFlashSplit), &m, &l);
          pm.insert(pm.end(), m.begin(), m.end());
          pl.insert(pl.end(), l.begin(), l.end());
          po.insert(po.end(), o.begin(), o.end());
        }
        std::vector<float> merged(full.size());
        for (int64_t i = 0; i < nq; ++i)
          k->merge(n_splits, pm.data() + i, pl.data() + i, nq, po.data() + i * hd, nq * hd, hd, merged.data() + i * hd);
        expect_same_bits(merged, full, 0, rows * row_floats, "split partials merged");
      }
}

// Token generation (one row, 8 heads: the 8-lane path on AVX512) against the same row as the
// last of a prompt batch (16-lane blocks), at a depth of several splits.
TEST(FlashAttn, TokenGenerationMatchesPromptRow) {
  for (GgmlType t : kTypes)
    for (const FlashAttnKernels* k : variants()) {
      SCOPED_TRACE(std::string(type_name(t)) + " " + k->name);
      const int64_t hd = 128, rows = 64, depth = 2000;
      const Cache c = make_cache(t, hd, depth + rows, 21);
      const Batch b = make_batch(rows, 8, hd, depth, 2.5f, 22);
      const std::vector<float> full = run_all(*k, c, b);
      const std::vector<float> tg = run(*k, c, b, rows - 1, rows, 0, 8, 0, c.n_kv);
      expect_same_bits(tg, full, (rows - 1) * 8 * hd, rows * 8 * hd, "last row alone");
    }
}

// A partial call over a split the query does not reach leaves the empty state.
TEST(FlashAttn, PartialStateOfUnseenSplitIsEmpty) {
  for (const FlashAttnKernels* k : variants()) {
    const Cache c = make_cache(GgmlType::F16, 64, 2 * cpu::kFlashSplit, 31);
    Batch b = make_batch(2, 2, 64, 0, 1.0f, 32);
    b.pos = {10, int32_t(2 * cpu::kFlashSplit - 1)};
    std::vector<float> m, l;
    const std::vector<float> o = run(*k, c, b, 0, 2, 0, 2, cpu::kFlashSplit, 2 * cpu::kFlashSplit, &m, &l);
    for (int h = 0; h < 2; ++h) {
      EXPECT_EQ(m[size_t(h)], -std::numeric_limits<float>::infinity()) << k->name;
      EXPECT_EQ(l[size_t(h)], 0.0f) << k->name;
      for (int64_t d = 0; d < 64; ++d) EXPECT_EQ(o[size_t(h * 64 + d)], 0.0f) << k->name;
      EXPECT_TRUE(std::isfinite(m[size_t(2 + h)]) && l[size_t(2 + h)] > 0.0f) << k->name;
    }
  }
}

// No heap allocation in a call, no scratch written past flash_attn_scratch_floats(head_dim)
// (which is independent of n_kv and n_q: the kernels keep tiles only).
TEST(FlashAttn, ScratchOnlyNoAllocation) {
  // Tiles only: for head_dim 128 the whole scratch is well under a megabyte.
  EXPECT_LT(cpu::flash_attn_scratch_floats(128) * int64_t(sizeof(float)), int64_t{1} << 20);
  for (const FlashAttnKernels* k : variants()) {
    const int64_t hd = 128, rows = 64, depth = 3000;
    const Cache c = make_cache(GgmlType::F16, hd, depth + rows, 41);
    const Batch b = make_batch(rows, 8, hd, depth, 2.5f, 42);
    std::vector<float> out(b.q.size());
    std::vector<const float*> q_rows;
    std::vector<float*> out_rows;
    for (int64_t r = 0; r < rows; ++r) {
      q_rows.push_back(b.q.data() + r * 8 * hd);
      out_rows.push_back(out.data() + r * 8 * hd);
    }
    const int64_t n_scratch = cpu::flash_attn_scratch_floats(hd), guard = 4096;
    std::vector<float> scratch(size_t(n_scratch + guard + 16), 12345.0f);
    float* s = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) & ~uintptr_t(63));
    const size_t s0 = size_t(s - scratch.data());
    FlashAttnArgs a;
    a.head_dim = hd;
    a.scale = scale_of(hd);
    a.k = c.k.data();
    a.v = c.v.data();
    a.k_row = a.v_row = c.row;
    a.kv_end = c.n_kv;
    a.n_rows = rows;
    a.n_heads = 8;
    a.q_rows = q_rows.data();
    a.pos = b.pos.data();
    a.out_rows = out_rows.data();
    a.scratch = s;
    g_allocs = 0;
    t_count_allocs = true;
    k->attend(a);
    t_count_allocs = false;
    EXPECT_EQ(g_allocs.load(), 0) << k->name;
    for (int64_t i = 0; i < guard; ++i)
      ASSERT_EQ(scratch[s0 + size_t(n_scratch + i)], 12345.0f) << k->name << " wrote scratch float " << n_scratch + i;
  }
}

}  // namespace
}  // namespace expertmesh
