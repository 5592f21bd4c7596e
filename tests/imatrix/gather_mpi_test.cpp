// gather_stats across real ranks (mpirun -np 2 and -np 4): every rank computes only its share
// of a layer (replicated q input, its columns of attn_output, its experts dealt round-robin,
// over several forward calls in which some ranks' experts get no token), and the statistics
// rank 0 gathers — and the .dat bytes they give — equal one rank computing everything.
// Every rank runs the same collectives whatever its assertions (EXPECT_* only before them).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstring>
#include <random>

#include "common/rank_context.h"
#include "coordinator/imatrix/gather.h"
#include "coordinator/imatrix/stats.h"

namespace expertmesh::coordinator::imatrix {
namespace {

constexpr int64_t kCols = 16, kExperts = 8, kCalls = 3, kTok = 20;

Weight make_weight(const std::string& name, int64_t ne2 = 1) {
  Weight w;
  w.name = name;
  w.ne[0] = kCols;
  w.ne[1] = 4;
  w.ne[2] = ne2;
  return w;
}

// Feeds the share of rank `rank` of `world` (world 1: everything) into s.
void run_share(ImatrixStats& s, int rank, int world) {
  const Weight wq = make_weight("blk.0.attn_q.weight"), wo = make_weight("blk.0.attn_output.weight");
  const Weight ex = make_weight("blk.0.ffn_up_exps.weight", kExperts);
  std::mt19937 rng(42);  // the same activations on every rank
  std::normal_distribution<float> d(0.0f, 1.5f);
  const int64_t c0 = kCols * rank / world, c1 = kCols * (rank + 1) / world;
  for (int call = 0; call < kCalls; ++call) {
    s.begin_ubatch();
    std::vector<float> x(size_t(kTok * kCols));
    for (float& v : x) v = d(rng);
    EXPECT_TRUE(s.observe({&wq, -1, 0, x.data(), kTok, kCols, kCols, 0}).ok());
    EXPECT_TRUE(s.observe({&wo, -1, 0, x.data() + c0, kTok, c1 - c0, kCols, c0}).ok());
    // Token t goes to expert (t * 3 + call) % 5: experts 5..7 never get a token.
    for (int32_t e = 0; e < kExperts; ++e) {
      std::vector<float> rows;
      for (int64_t t = 0; t < kTok; ++t)
        if ((t * 3 + call) % 5 == e) rows.insert(rows.end(), x.begin() + t * kCols, x.begin() + (t + 1) * kCols);
      const int64_t m = int64_t(rows.size()) / kCols;
      if (m == 0 || e % world != rank) continue;
      EXPECT_TRUE(s.observe({&ex, e, 0, rows.data(), m, kCols, kCols, 0}).ok());
    }
  }
}

std::vector<char> dat_bytes(const Imatrix& d) {
  std::vector<char> b;
  for (const auto& e : d.entries) {
    b.insert(b.end(), e.name.begin(), e.name.end());
    b.insert(b.end(), reinterpret_cast<const char*>(&e.ncall), reinterpret_cast<const char*>(&e.ncall) + 4);
    b.insert(b.end(), reinterpret_cast<const char*>(e.values.data()),
             reinterpret_cast<const char*>(e.values.data() + e.values.size()));
  }
  return b;
}

TEST(ImatrixGatherMpi, EqualsOneRank) {
  auto ctx = RankContext::create(MPI_COMM_WORLD, LogLevel::kWarn);
  ASSERT_TRUE(ctx.ok());
  const RankContext& rc = **ctx;
  ImatrixStats local;
  run_share(local, rc.rank, rc.world);
  auto gathered = gather_stats(rc, local);
  ASSERT_TRUE(gathered.ok()) << gathered.status().to_string();
  if (!rc.is_root()) {
    EXPECT_FALSE(gathered->has_value());
    return;
  }
  ImatrixStats one;
  run_share(one, 0, 1);
  const ImatrixStats& got = rc.world > 1 ? **gathered : local;
  ASSERT_EQ(got.entries().size(), one.entries().size());
  for (const auto& [name, want] : one.entries()) {
    const StatsEntry& e = got.entries().at(name);
    EXPECT_EQ(e.ncall, want.ncall) << name;
    EXPECT_EQ(e.counts, want.counts) << name;
    EXPECT_EQ(e.sums, want.sums) << name;
  }
  // Experts 5..7 lack data: 3 of 8 > round(5%) -> the expert entry is skipped in both.
  const Imatrix a = got.to_dat("t", nullptr), b = one.to_dat("t", nullptr);
  EXPECT_EQ(a.entries.size(), 2u);
  EXPECT_EQ(dat_bytes(a), dat_bytes(b));
}

}  // namespace
}  // namespace expertmesh::coordinator::imatrix
