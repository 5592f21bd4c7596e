// RankContext::create and RankContext::agree across real ranks (run with mpirun -np 2 and -np 3).
// Every test executes the same collectives on every rank regardless of assertion outcomes.
#include "common/rank_context.h"

#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <string>

#include "common/check.h"

namespace expertmesh {
namespace {

std::unique_ptr<RankContext> make_ctx(MPI_Comm comm = MPI_COMM_WORLD) {
  auto r = RankContext::create(comm, LogLevel::kWarn);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? std::move(r).value() : nullptr;
}

// A distinct, recognisable failure for rank r.
Status failure_of(int r) {
  return Status::Corruption("model-" + std::to_string(r) + ".gguf: tensor 'blk.0.attn_q.weight' data out of bounds");
}

TEST(RankContextCreate, MatchesMpiWorld) {
  auto ctx = make_ctx();
  ASSERT_NE(ctx, nullptr);
  int rank = -1, world = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  EXPECT_EQ(ctx->rank, rank);
  EXPECT_EQ(ctx->world, world);
  EXPECT_GE(ctx->world, 2) << "this test is meant to run under mpirun -np >= 2";
  EXPECT_EQ(ctx->comm, MPI_COMM_WORLD);
  EXPECT_EQ(ctx->is_root(), rank == 0);
  EXPECT_GE(ctx->n_threads, 1);
  EXPECT_EQ(ctx->log.level(), LogLevel::kWarn);
  char host[256] = {0};
  ASSERT_EQ(gethostname(host, sizeof(host) - 1), 0);
  EXPECT_EQ(ctx->host, host);
}

TEST(RankContextCreate, SetsErrorsReturn) {
  auto ctx = make_ctx();
  ASSERT_NE(ctx, nullptr);
  MPI_Errhandler eh;
  ASSERT_EQ(MPI_Comm_get_errhandler(ctx->comm, &eh), MPI_SUCCESS);
  EXPECT_TRUE(eh == MPI_ERRORS_RETURN);
  MPI_Errhandler_free(&eh);
}

TEST(RankContextCreate, LoggerPrefixNamesRankAndHost) {
  auto ctx = make_ctx();
  ASSERT_NE(ctx, nullptr);
  ::testing::internal::CaptureStderr();
  ctx->log.warn("hello from {}", ctx->rank);
  std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(out, "[rank " + std::to_string(ctx->rank) + "/" + ctx->host + "] W hello from " +
                     std::to_string(ctx->rank) + "\n");
}

TEST(RankContextCreate, SingletonCommunicator) {
  auto ctx = make_ctx(MPI_COMM_SELF);
  ASSERT_NE(ctx, nullptr);
  EXPECT_EQ(ctx->rank, 0);
  EXPECT_EQ(ctx->world, 1);
  EXPECT_TRUE(ctx->is_root());
  // world == 1: agree is the identity, no communication.
  EXPECT_TRUE(ctx->agree(Status::Ok()).ok());
  Status s = ctx->agree(failure_of(0));
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_EQ(s.message(), failure_of(0).message());
}

TEST(RankContextAgree, AllOkIsOkOnEveryRank) {
  auto ctx = make_ctx();
  ASSERT_NE(ctx, nullptr);
  Status s = ctx->agree(Status::Ok());
  EXPECT_TRUE(s.ok()) << s.to_string();
}

TEST(RankContextAgree, OneFailingRankIsNamedEverywhere) {
  auto ctx = make_ctx();
  ASSERT_NE(ctx, nullptr);
  const int bad = 1;
  Status local = ctx->rank == bad ? failure_of(bad) : Status::Ok();
  Status s = ctx->agree(local);
  ASSERT_FALSE(s.ok());
  if (ctx->rank == bad) {
    // The failing rank keeps its own status (code and message) to print it itself.
    EXPECT_EQ(s.code(), StatusCode::kCorruption);
    EXPECT_EQ(s.message(), local.message());
  } else {
    EXPECT_EQ(s.code(), StatusCode::kAborted);
    EXPECT_NE(s.message().find("rank 1"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(failure_of(bad).to_string()), std::string::npos) << s.message();
  }
}

TEST(RankContextAgree, LastRankFailing) {
  auto ctx = make_ctx();
  ASSERT_NE(ctx, nullptr);
  const int bad = ctx->world - 1;
  Status s = ctx->agree(ctx->rank == bad ? failure_of(bad) : Status::Ok());
  ASSERT_FALSE(s.ok());
  if (ctx->rank != bad) {
    EXPECT_EQ(s.code(), StatusCode::kAborted);
    EXPECT_NE(s.message().find("rank " + std::to_string(bad)), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("model-" + std::to_string(bad) + ".gguf"), std::string::npos) << s.message();
  }
}

TEST(RankContextAgree, LowestFailingRankWins) {
  auto ctx = make_ctx();
  ASSERT_NE(ctx, nullptr);
  // The two highest ranks fail: ranks {0, 1} with -np 2, {1, 2} with -np 3.
  const int low = ctx->world - 2, high = ctx->world - 1;
  const bool fails = ctx->rank == low || ctx->rank == high;
  Status s = ctx->agree(fails ? failure_of(ctx->rank) : Status::Ok());
  ASSERT_FALSE(s.ok());
  if (ctx->rank == low) {
    EXPECT_EQ(s.code(), StatusCode::kCorruption);
    EXPECT_EQ(s.message(), failure_of(low).message());
  } else {
    // Every other rank, the other failing one included, reports the lowest failing rank.
    EXPECT_EQ(s.code(), StatusCode::kAborted);
    EXPECT_NE(s.message().find("rank " + std::to_string(low) + " failed"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("model-" + std::to_string(low) + ".gguf"), std::string::npos) << s.message();
    EXPECT_EQ(s.message().find("model-" + std::to_string(high) + ".gguf"), std::string::npos) << s.message();
  }
}

TEST(RankContextAgree, EveryRankFailingReportsRankZero) {
  auto ctx = make_ctx();
  ASSERT_NE(ctx, nullptr);
  Status s = ctx->agree(failure_of(ctx->rank));
  ASSERT_FALSE(s.ok());
  if (ctx->rank != 0) {
    EXPECT_EQ(s.code(), StatusCode::kAborted);
    EXPECT_NE(s.message().find("model-0.gguf"), std::string::npos) << s.message();
  }
}

TEST(RankContextAgree, LongAndEmptyMessages) {
  auto ctx = make_ctx();
  ASSERT_NE(ctx, nullptr);
  const std::string long_msg(1 << 20, 'z');
  Status s = ctx->agree(ctx->rank == 1 ? Status::IoError(long_msg) : Status::Ok());
  EXPECT_FALSE(s.ok());  // not ASSERT: every rank must reach the second agree
  EXPECT_NE(s.message().find(long_msg), std::string::npos) << "a 1 MiB message arrives whole";

  Status e = ctx->agree(ctx->rank == 1 ? Status::Internal("") : Status::Ok());
  ASSERT_FALSE(e.ok());
  if (ctx->rank != 1) {
    EXPECT_NE(e.message().find("rank 1 failed"), std::string::npos) << e.message();
  }
}

TEST(RankContextAgree, ManyRoundsStayInStep) {
  auto ctx = make_ctx();
  ASSERT_NE(ctx, nullptr);
  for (int round = 0; round < 50; ++round) {
    const int bad = round % (ctx->world + 1);  // == world: nobody fails this round
    Status s = ctx->agree(ctx->rank == bad ? failure_of(bad) : Status::Ok());
    if (bad == ctx->world) {
      EXPECT_TRUE(s.ok()) << "round " << round;
    } else {
      EXPECT_FALSE(s.ok()) << "round " << round;
      if (ctx->rank != bad) {
        EXPECT_NE(s.message().find("rank " + std::to_string(bad) + " failed"), std::string::npos) << s.message();
      }
    }
  }
}

TEST(RankContextAgree, SubCommunicators) {
  auto world_ctx = make_ctx();
  ASSERT_NE(world_ctx, nullptr);
  MPI_Comm half = MPI_COMM_NULL;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, world_ctx->rank % 2, world_ctx->rank, &half), MPI_SUCCESS);
  auto ctx = make_ctx(half);
  if (ctx != nullptr) {
    EXPECT_EQ(ctx->rank, world_ctx->rank / 2);
    EXPECT_EQ(ctx->world, (world_ctx->world + 1 - world_ctx->rank % 2) / 2);
    // Only the odd group sees a failure (from its first member, world rank 1).
    const bool odd = world_ctx->rank % 2 == 1;
    Status s = ctx->agree(odd && ctx->rank == 0 ? failure_of(world_ctx->rank) : Status::Ok());
    EXPECT_EQ(s.ok(), !odd) << s.to_string();
  }
  MPI_Comm_free(&half);
}

// A failing MPI call inside EM_MPI_CHECK comes back as a Status (MPI_ERRORS_RETURN), not an abort.
Status bcast_from_invalid_root(const RankContext& ctx) {
  int x = 0;
  EM_MPI_CHECK(MPI_Bcast(&x, 1, MPI_INT, ctx.world + 5, ctx.comm));
  return Status::Ok();
}

TEST(CheckedMpiCall, ErrorBecomesStatusNamingCallAndRank) {
  auto ctx = make_ctx();
  ASSERT_NE(ctx, nullptr);
  Status s = bcast_from_invalid_root(*ctx);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_NE(s.message().find("MPI_Bcast"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("rank " + std::to_string(ctx->rank)), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("MPI_ERR_ROOT"), std::string::npos) << s.message();
  // Every rank failed the same way: agreement names rank 0.
  Status a = ctx->agree(s);
  EXPECT_FALSE(a.ok());
}

}  // namespace
}  // namespace expertmesh
