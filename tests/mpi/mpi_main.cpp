// gtest main for multi-rank tests: initialises MPI once (MpiSession), runs every test on every
// rank, and exits non-zero on a rank whose tests failed (so mpirun exits non-zero).
//
// Output: rank 0 prints gtest's usual report; other ranks print only their failures, each line
// prefixed "[rank r]", so a failure on any rank is visible without N copies of the report.
//
// Contract for tests run under this main: every rank must execute the same collectives in the same
// order whatever the outcome of its assertions, so use EXPECT_* (not ASSERT_*) before a collective.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

#include "common/rank_context.h"

namespace {

class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                 r.line_number(), r.summary());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed())
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, info.test_suite_name(), info.name());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  auto session = expertmesh::MpiSession::init(&argc, &argv);
  if (!session.ok()) {
    std::fprintf(stderr, "mpi test main: %s\n", session.status().to_string().c_str());
    return 1;
  }
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(rank));
  }
  int rc = RUN_ALL_TESTS();
  // The MpiSession destructor finalises MPI after every test has finished on this rank.
  return rc;
}
