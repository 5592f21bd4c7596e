// Status / Result<T>, EM_RETURN_IF_ERROR / EM_ASSIGN_OR_RETURN, EM_CHECK_CALL and EM_ASSERT.
#include "common/status.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "common/check.h"

namespace expertmesh {
namespace {

TEST(Status, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.message(), "");
  EXPECT_EQ(s.to_string(), "OK");
  EXPECT_TRUE(Status::Ok().ok());
}

TEST(Status, FactoriesSetCodeAndMessage) {
  struct Case {
    Status s;
    StatusCode code;
    const char* name;
  };
  const std::vector<Case> cases = {
      {Status::InvalidArgument("m"), StatusCode::kInvalidArgument, "Invalid argument"},
      {Status::NotFound("m"), StatusCode::kNotFound, "Not found"},
      {Status::Corruption("m"), StatusCode::kCorruption, "Corruption"},
      {Status::IoError("m"), StatusCode::kIoError, "I/O error"},
      {Status::Unsupported("m"), StatusCode::kUnsupported, "Unsupported"},
      {Status::OutOfRange("m"), StatusCode::kOutOfRange, "Out of range"},
      {Status::Internal("m"), StatusCode::kInternal, "Internal error"},
      {Status::Aborted("m"), StatusCode::kAborted, "Aborted"},
  };
  for (const auto& c : cases) {
    EXPECT_FALSE(c.s.ok()) << c.name;
    EXPECT_EQ(c.s.code(), c.code) << c.name;
    EXPECT_EQ(c.s.message(), "m") << c.name;
    EXPECT_STREQ(status_code_name(c.code), c.name);
    EXPECT_EQ(c.s.to_string(), std::string(c.name) + ": m");
  }
  EXPECT_STREQ(status_code_name(StatusCode::kOk), "OK");
}

TEST(Status, ToStringNamesTheFile) {
  Status s = Status::Corruption("gguf: tensor 'x' data out of bounds (model.gguf)");
  EXPECT_EQ(s.to_string(), "Corruption: gguf: tensor 'x' data out of bounds (model.gguf)");
}

TEST(Status, WithContextPrefixesAndKeepsCode) {
  Status s = Status::NotFound("no such tensor 'output.weight'").with_context("model.gguf");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "model.gguf: no such tensor 'output.weight'");
  // Context on an ok Status is a no-op: success stays success with an empty message.
  Status ok = Status::Ok().with_context("model.gguf");
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.message(), "");
}

TEST(Result, HoldsValue) {
  Result<int> r(42);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r.status().ok());
  EXPECT_EQ(r.value(), 42);
  EXPECT_EQ(*r, 42);
  *r = 7;
  EXPECT_EQ(r.value(), 7);
}

TEST(Result, HoldsError) {
  Result<int> r(Status::IoError("read failed"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIoError);
  EXPECT_EQ(r.status().message(), "read failed");
}

TEST(Result, OkStatusWithoutValueBecomesInternalError) {
  Result<int> r(Status::Ok());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
}

TEST(Result, MoveOnlyValue) {
  Result<std::unique_ptr<std::string>> r(std::make_unique<std::string>("abc"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->get()->size(), 3u);
  std::unique_ptr<std::string> p = std::move(r).value();
  EXPECT_EQ(*p, "abc");
}

TEST(Result, ArrowAccessesMembers) {
  Result<std::string> r(std::string("hello"));
  EXPECT_EQ(r->size(), 5u);
  const Result<std::string>& cr = r;
  EXPECT_EQ(cr->front(), 'h');
  EXPECT_EQ(*cr, "hello");
}

// --- macros -----------------------------------------------------------------------------------

Status fail_if(bool fail) { return fail ? Status::OutOfRange("value out of range") : Status::Ok(); }

Status chain(bool fail, int* reached) {
  *reached = 0;
  EM_RETURN_IF_ERROR(fail_if(false));
  *reached = 1;
  EM_RETURN_IF_ERROR(fail_if(fail));
  *reached = 2;
  return Status::Ok();
}

TEST(Macros, ReturnIfErrorPassesThroughOk) {
  int reached = -1;
  EXPECT_TRUE(chain(false, &reached).ok());
  EXPECT_EQ(reached, 2);
}

TEST(Macros, ReturnIfErrorReturnsEarly) {
  int reached = -1;
  Status s = chain(true, &reached);
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  EXPECT_EQ(s.message(), "value out of range");
  EXPECT_EQ(reached, 1);
}

Result<int> parse_positive(int x) {
  if (x <= 0) return Status::InvalidArgument("not positive");
  return x;
}

Result<std::unique_ptr<int>> make_box(int x) {
  if (x < 0) return Status::InvalidArgument("negative");
  return std::make_unique<int>(x);
}

Result<int> sum_two(int a, int b) {
  EM_ASSIGN_OR_RETURN(int x, parse_positive(a));
  EM_ASSIGN_OR_RETURN(int y, parse_positive(b));  // two on consecutive lines: unique temporaries
  return x + y;
}

Status unbox(int x, int* out) {
  EM_ASSIGN_OR_RETURN(std::unique_ptr<int> box, make_box(x));  // move-only values are moved out
  *out = *box;
  return Status::Ok();
}

TEST(Macros, AssignOrReturn) {
  auto ok = sum_two(2, 3);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 5);
  auto bad = sum_two(2, -1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "not positive");
  int v = 0;
  EXPECT_TRUE(unbox(9, &v).ok());
  EXPECT_EQ(v, 9);
  EXPECT_EQ(unbox(-1, &v).code(), StatusCode::kInvalidArgument);
}

TEST(Macros, AssignOrReturnIntoExistingVariable) {
  auto f = [](int a) -> Status {
    int x = 0;
    EM_ASSIGN_OR_RETURN(x, parse_positive(a));
    return x == a ? Status::Ok() : Status::Internal("wrong value");
  };
  EXPECT_TRUE(f(4).ok());
  EXPECT_EQ(f(0).code(), StatusCode::kInvalidArgument);
}

// EM_CHECK_CALL against a fake foreign API with integer return codes.
int fake_api(int rc, int* calls) {
  ++*calls;
  return rc;
}
std::string fake_error_string(int rc) { return "fake error " + std::to_string(rc); }

Status call_fake(int rc, int* calls) {
  EM_CHECK_CALL(fake_api(rc, calls), 0, fake_error_string);
  return Status::Ok();
}

Result<int> call_fake_result(int rc, int* calls) {
  EM_CHECK_CALL(fake_api(rc, calls), 0, fake_error_string);
  return 1;
}

TEST(CheckCall, OkValuePasses) {
  int calls = 0;
  EXPECT_TRUE(call_fake(0, &calls).ok());
  EXPECT_EQ(calls, 1);
}

TEST(CheckCall, FailureReturnsInternalWithContext) {
  int calls = 0;
  Status s = call_fake(3, &calls);
  EXPECT_EQ(calls, 1) << "the expression must be evaluated exactly once";
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  const std::string& m = s.message();
  EXPECT_NE(m.find("fake_api(rc, calls)"), std::string::npos) << m;   // the expression text
  EXPECT_NE(m.find("fake error 3"), std::string::npos) << m;          // to_string(rc)
  EXPECT_NE(m.find("call_fake"), std::string::npos) << m;             // __func__
  EXPECT_NE(m.find("status_test.cpp:"), std::string::npos) << m;     // file:line
  EXPECT_NE(m.find("rank 0"), std::string::npos) << m;                // rank (0 before MPI_Init)
  EXPECT_NE(m.find("host '"), std::string::npos) << m;                // host
}

TEST(CheckCall, WorksInFunctionsReturningResult) {
  int calls = 0;
  EXPECT_TRUE(call_fake_result(0, &calls).ok());
  auto r = call_fake_result(5, &calls);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("fake error 5"), std::string::npos);
}

TEST(CallSiteIdentity, NamesHostAndRank) {
  std::string id = call_site_identity();
  EXPECT_EQ(id.rfind("host '", 0), 0u) << id;
  EXPECT_NE(id.find("' rank 0"), std::string::npos) << id;
}

TEST(AssertDeathTest, AbortsWithConditionAndMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  int x = 5;
  EXPECT_DEATH(EM_ASSERT(x == 6, "x is {}", x), "assertion `x == 6` failed.*x is 5");
  EXPECT_DEATH(EM_ASSERT(x < 0), "internal error: assertion `x < 0` failed");
}

TEST(Assert, PassingAssertHasNoEffect) {
  int evaluations = 0;
  EM_ASSERT(++evaluations == 1, "evaluated once");
  EXPECT_EQ(evaluations, 1);
}

}  // namespace
}  // namespace expertmesh
