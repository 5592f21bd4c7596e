// worker::matmul's choice of kernel and its split over tiles and threads (issue 13): a row's
// result is the same alone or in any batch, with 1 or 2 threads; integer types give the same
// bits on every ISA; the fused MoE FFN (gate and up of different types, or of a type without a
// fast kernel) equals the plain per-expert matmul path bit for bit (the pool: thread_pool_test).
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/quant/quant.h"
#include "worker/blocks.h"
#include "worker/matmul.h"

namespace expertmesh {
namespace {

std::vector<float> random_vec(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = nd(rng);
  double var = 0;
  for (float x : v) var += double(x) * x;
  EXPECT_GT(var / double(n), 0.01 * scale * scale);  // not degenerate
  return v;
}

// A weight of `type` with ne = {ne0, nrows, n_mat}, quantized from seeded Gaussian values.
struct OwnedWeight {
  Weight w;
  std::vector<uint8_t> bytes;
};
OwnedWeight make_weight(GgmlType type, int64_t ne0, int64_t nrows, uint32_t seed, int64_t n_mat = 1) {
  OwnedWeight o;
  o.w.name = std::string("w.") + type_name(type);
  o.w.type = type;
  o.w.ne[0] = ne0;
  o.w.ne[1] = nrows;
  o.w.ne[2] = n_mat;
  o.w.row_bytes = row_size(type, ne0);
  const int64_t rows = nrows * n_mat;
  auto src = random_vec(rows * ne0, seed, 0.05f);
  o.bytes.resize(size_t(o.w.row_bytes * rows));
  if (type == GgmlType::F32) {
    std::memcpy(o.bytes.data(), src.data(), o.bytes.size());
  } else {
    EXPECT_TRUE(quant::quantize_rows(type, src.data(), o.bytes.data(), rows, ne0, nullptr, 1).ok()) << o.w.name;
  }
  o.w.data = o.bytes.data();
  return o;
}

std::vector<const cpu::Kernels*> isas() {
  std::vector<const cpu::Kernels*> v{&cpu::ref_kernels()};
  if (cpu::cpu_supports(cpu::Isa::kAvx2) && cpu::avx2_kernels()) v.push_back(cpu::avx2_kernels());
  if (cpu::cpu_supports(cpu::Isa::kAvx512) && cpu::avx512_kernels()) v.push_back(cpu::avx512_kernels());
  return v;
}

constexpr GgmlType kTypes[] = {GgmlType::Q8_0, GgmlType::Q4_0,   GgmlType::IQ4_NL, GgmlType::Q4_K,
                               GgmlType::Q6_K, GgmlType::IQ4_XS, GgmlType::IQ4_KS, GgmlType::BF16,
                               GgmlType::F16,  GgmlType::F32,    GgmlType::Q5_K,   GgmlType::IQ2_KL};

bool is_float(GgmlType t) { return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16; }

TEST(MatmulDispatch, EveryCoreTypeHasAFastKernelOnEveryIsa) {
  for (const cpu::Kernels* k : isas())
    for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::IQ4_KS,
                       GgmlType::IQ4_XS, GgmlType::BF16, GgmlType::F16, GgmlType::F32})
      EXPECT_NE(worker::matmul_kernel(t, *k).fast.gemm, nullptr) << k->name << " " << type_name(t);
}

// The load-time report of tensors without a fast kernel: empty for a model of fast types; else
// every slow type with its count and first names, and no fast tensor named. (The types picked
// as slow here must stay without a fast kernel on every ISA: checked first.)
TEST(MatmulDispatch, GenericPathReportNamesTheSlowTensors) {
  static const uint8_t kByte = 0;  // present() needs a data pointer; the report never reads it
  auto weight = [](const std::string& name, GgmlType t) {
    Weight w;
    w.name = name;
    w.type = t;
    w.data = &kByte;
    return w;
  };
  for (const cpu::Kernels* k : isas()) {
    ASSERT_EQ(worker::matmul_kernel(GgmlType::IQ3_K, *k).fast.gemm, nullptr) << k->name;
    ASSERT_EQ(worker::matmul_kernel(GgmlType::Q5_0, *k).fast.gemm, nullptr) << k->name;
    ModelWeights m;
    m.token_embd = weight("token_embd.weight", GgmlType::Q5_0);  // a row lookup, not a matmul
    m.output = weight("output.weight", GgmlType::Q8_0);
    for (int i = 0; i < 3; ++i) {
      LayerWeights l;
      const std::string b = "blk." + std::to_string(i) + ".";
      l.attn_norm = weight(b + "attn_norm.weight", GgmlType::F32);
      l.wq = weight(b + "attn_q.weight", GgmlType::Q8_0);
      l.wk = weight(b + "attn_k.weight", GgmlType::Q4_K);
      l.ffn_gate_inp = weight(b + "ffn_gate_inp.weight", GgmlType::F32);
      l.ffn_up_exps = weight(b + "ffn_up_exps.weight", GgmlType::IQ4_KS);
      m.layers.push_back(l);
    }
    EXPECT_EQ(worker::generic_path_report(m, *k), "") << k->name;
    m.layers[1].ffn_down_exps = weight("blk.1.ffn_down_exps.weight", GgmlType::IQ3_K);
    for (int i = 0; i < 3; ++i)
      m.layers[size_t(i)].wv = weight("blk." + std::to_string(i) + ".attn_v.weight", GgmlType::Q5_0);
    const std::string r = worker::generic_path_report(m, *k);
    EXPECT_NE(r.find("4 of 17 matmul tensors"), std::string::npos) << r;
    EXPECT_NE(r.find("iq3_k ×1 (blk.1.ffn_down_exps.weight)"), std::string::npos) << r;
    EXPECT_NE(r.find("q5_0 ×3 (blk.0.attn_v.weight, blk.1.attn_v.weight, ...)"), std::string::npos) << r;
    EXPECT_EQ(r.find("blk.2.attn_v"), std::string::npos) << r;  // two names per type
    EXPECT_EQ(r.find("token_embd"), std::string::npos) << r;
    EXPECT_EQ(r.find("attn_q"), std::string::npos) << r;
  }
}

TEST(MatmulDispatch, RowsDoNotDependOnBatchOrThreads) {
  const int64_t ne0 = 512, nrows = 77, n_tok = 37;  // rows not a multiple of any tile
  auto x = random_vec(n_tok * ne0, 5);
  worker::ThreadPool one(1), two(2);
  for (const cpu::Kernels* k : isas())
    for (GgmlType t : kTypes) {
      SCOPED_TRACE(std::string(k->name) + " " + type_name(t));
      OwnedWeight w = make_weight(t, ne0, nrows, 9);
      std::vector<float> batch(size_t(n_tok * nrows)), alone(static_cast<size_t>(nrows)), single_thread(batch.size());
      ASSERT_TRUE(worker::matmul(w.w, 0, nrows, x.data(), ne0, n_tok, batch.data(), nrows, two, *k).ok());
      ASSERT_TRUE(worker::matmul(w.w, 0, nrows, x.data(), ne0, n_tok, single_thread.data(), nrows, one, *k).ok());
      EXPECT_EQ(std::memcmp(batch.data(), single_thread.data(), batch.size() * sizeof(float)), 0);
      for (int64_t tt : {int64_t{0}, int64_t{1}, int64_t{17}, n_tok - 1}) {
        ASSERT_TRUE(worker::matmul(w.w, 0, nrows, x.data() + tt * ne0, ne0, 1, alone.data(), nrows, two, *k).ok());
        EXPECT_EQ(std::memcmp(alone.data(), batch.data() + tt * nrows, alone.size() * sizeof(float)), 0)
            << "token " << tt;
      }
      // A sub-range of rows equals the same rows of the whole.
      std::vector<float> part(size_t(n_tok * 13));
      ASSERT_TRUE(worker::matmul(w.w, 24, 13, x.data(), ne0, n_tok, part.data(), 13, two, *k).ok());
      for (int64_t tt = 0; tt < n_tok; ++tt)
        EXPECT_EQ(std::memcmp(part.data() + tt * 13, batch.data() + tt * nrows + 24, 13 * sizeof(float)), 0);
    }
}

TEST(MatmulDispatch, IntegerTypesGiveTheSameBitsOnEveryIsa) {
  const int64_t ne0 = 1024, nrows = 40, n_tok = 9;
  auto x = random_vec(n_tok * ne0, 6);
  worker::ThreadPool pool(2);
  for (GgmlType t : kTypes) {
    if (is_float(t) || !worker::matmul_kernel(t, cpu::ref_kernels()).fast.gemm) continue;
    SCOPED_TRACE(type_name(t));
    OwnedWeight w = make_weight(t, ne0, nrows, 10);
    std::vector<float> want(size_t(n_tok * nrows)), got(want.size());
    ASSERT_TRUE(worker::matmul(w.w, 0, nrows, x.data(), ne0, n_tok, want.data(), nrows, pool, cpu::ref_kernels()).ok());
    for (const cpu::Kernels* k : isas()) {
      ASSERT_TRUE(worker::matmul(w.w, 0, nrows, x.data(), ne0, n_tok, got.data(), nrows, pool, *k).ok());
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << k->name;
    }
  }
}

TEST(MatmulDispatch, FastPathAgreesWithDequantizedWeights) {
  const int64_t ne0 = 768, nrows = 19, n_tok = 4;
  auto x = random_vec(n_tok * ne0, 7);
  worker::ThreadPool pool(2);
  for (const cpu::Kernels* k : isas())
    for (GgmlType t : kTypes) {
      SCOPED_TRACE(std::string(k->name) + " " + type_name(t));
      OwnedWeight w = make_weight(t, ne0, nrows, 11);
      std::vector<float> deq(size_t(nrows * ne0)), y(size_t(n_tok * nrows));
      ASSERT_TRUE(quant::dequantize_rows(t, w.bytes.data(), deq.data(), nrows, ne0, 1).ok());
      ASSERT_TRUE(worker::matmul(w.w, 0, nrows, x.data(), ne0, n_tok, y.data(), nrows, pool, *k).ok());
      for (int64_t tt = 0; tt < n_tok; ++tt)
        for (int64_t r = 0; r < nrows; ++r) {
          double want = 0, mag = 0;
          for (int64_t i = 0; i < ne0; ++i) {
            const double p = double(deq[size_t(r * ne0 + i)]) * x[size_t(tt * ne0 + i)];
            want += p;
            mag += std::fabs(p);
          }
          // 8-bit activations: error ~ 1/254 of each |w·x| term, averaging out over the row.
          const double tol = worker::activations_quantized(t, *k) ? 2e-2 : 1e-5;
          ASSERT_NEAR(y[size_t(tt * nrows + r)], want, tol * mag) << "row " << r << " token " << tt;
        }
    }
}

// The MoE FFN of one layer against the plain path: per expert, matmul of its tokens through
// gate and up, SwiGLU, down, then the weighted slot-order sum.
struct MoeCase {
  GgmlType gate, up, down;
};

TEST(MoeFfn, FusedPathEqualsPerExpertMatmulsForMixedAndSlowTypes) {
  HParams hp;
  hp.n_embd = 256;
  hp.n_ff_exp = 256;  // ffn_down rows are n_ff_exp wide: whole 256-blocks
  hp.n_expert = 6;
  hp.n_expert_used = 2;
  hp.expert_weights_norm = true;
  const int64_t n_tok = 11;
  auto kv = worker::KvCache::create(GgmlType::F16, GgmlType::F16, 1, 1, 64, 16);
  ASSERT_TRUE(kv.ok());
  const MoeCase cases[] = {{GgmlType::Q4_K, GgmlType::IQ4_KS, GgmlType::Q6_K},
                           {GgmlType::IQ2_KL, GgmlType::Q8_0, GgmlType::IQ4_XS},
                           {GgmlType::Q5_K, GgmlType::Q5_K, GgmlType::BF16}};
  auto h = random_vec(n_tok * hp.n_embd, 21);
  worker::ThreadPool pool(2);
  for (const cpu::Kernels* k : isas())
    for (const MoeCase& mc : cases) {
      SCOPED_TRACE(std::string(k->name) + " " + type_name(mc.gate) + "/" + type_name(mc.up) + "/" + type_name(mc.down));
      LayerWeights lw;
      OwnedWeight router = make_weight(GgmlType::F32, hp.n_embd, hp.n_expert, 30);
      OwnedWeight g = make_weight(mc.gate, hp.n_embd, hp.n_ff_exp, 31, hp.n_expert);
      OwnedWeight u = make_weight(mc.up, hp.n_embd, hp.n_ff_exp, 32, hp.n_expert);
      OwnedWeight d = make_weight(mc.down, hp.n_ff_exp, hp.n_embd, 33, hp.n_expert);
      lw.ffn_gate_inp = router.w;
      lw.ffn_gate_exps = g.w;
      lw.ffn_up_exps = u.w;
      lw.ffn_down_exps = d.w;
      worker::LayerPlan p;
      for (int32_t e = 0; e < hp.n_expert; ++e)
        if (e != 4) p.experts.push_back(e);  // expert 4 lives elsewhere: its slots stay zero
      worker::StepContext c{hp, *k, pool, *kv};
      c.n_tok = n_tok;
      auto got = worker::moe_ffn(c, lw, p, h);
      ASSERT_TRUE(got.ok()) << got.status().to_string();

      // Reference: the router and each expert through worker::matmul, one expert at a time.
      const int64_t ne = hp.n_expert, kk = hp.n_expert_used, nf = hp.n_ff_exp, nd = hp.n_embd;
      std::vector<float> logits(size_t(n_tok * ne));
      ASSERT_TRUE(worker::matmul(router.w, 0, ne, h.data(), nd, n_tok, logits.data(), ne, pool, *k).ok());
      std::vector<float> want(size_t(n_tok * nd), 0.0f);
      int64_t n_routed_here = 0;
      for (int64_t t = 0; t < n_tok; ++t) {
        std::vector<float> pr(logits.begin() + t * ne, logits.begin() + (t + 1) * ne);
        k->softmax_f32(pr.data(), ne);
        std::vector<int32_t> idx(static_cast<size_t>(ne));
        for (int32_t i = 0; i < ne; ++i) idx[size_t(i)] = i;
        std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return pr[size_t(a)] > pr[size_t(b)]; });
        float sum = 0;
        for (int64_t j = 0; j < kk; ++j) sum += pr[size_t(idx[size_t(j)])];
        for (int64_t j = 0; j < kk; ++j) {
          const int32_t e = idx[size_t(j)];
          std::vector<float> ye(static_cast<size_t>(nd), 0.0f);
          if (e != 4) {
            ++n_routed_here;
            std::vector<float> gg(static_cast<size_t>(nf)), uu(gg.size()), aa(gg.size());
            ASSERT_TRUE(worker::matmul(g.w, e * nf, nf, h.data() + t * nd, nd, 1, gg.data(), nf, pool, *k).ok());
            ASSERT_TRUE(worker::matmul(u.w, e * nf, nf, h.data() + t * nd, nd, 1, uu.data(), nf, pool, *k).ok());
            k->swiglu_f32(gg.data(), uu.data(), aa.data(), nf);
            ASSERT_TRUE(worker::matmul(d.w, e * nd, nd, aa.data(), nf, 1, ye.data(), nd, pool, *k).ok());
          }
          k->axpy_f32(pr[size_t(e)] / sum, ye.data(), want.data() + t * nd, nd);
        }
      }
      EXPECT_GT(n_routed_here, n_tok);  // several experts really ran
      ASSERT_EQ(got->size(), want.size());
      EXPECT_EQ(std::memcmp(got->data(), want.data(), want.size() * sizeof(float)), 0);
    }
}

}  // namespace
}  // namespace expertmesh
