// The e2e helpers themselves (no server): SSE parsing, the volatile-field filter and the JSON
// comparison the np = 1 vs np = 2 test relies on — a comparison that silently passed everything
// would make that test worthless.
#include "tests/server/e2e/serve_process.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>

#include "tests/common/golden.h"

namespace expertmesh {
namespace {

using testing::Json;

TEST(ServeE2eHelpers, ParseSseReadsEventsUntilDone) {
  const std::string body =
      "data: {\"a\":1}\n\n"
      ": keep-alive comment\n\n"
      "event: message\r\ndata:{\"a\":2}\r\n\r\n"
      "data: [DONE]\n\n";
  bool done = false;
  std::string err;
  std::vector<Json> ev = testing::parse_sse(body, &done, &err);
  EXPECT_TRUE(err.empty()) << err;
  EXPECT_TRUE(done);
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0]["a"], 1);
  EXPECT_EQ(ev[1]["a"], 2);
}

TEST(ServeE2eHelpers, ParseSseRejectsBadStreams) {
  bool done = true;
  std::string err;
  testing::parse_sse("data: {\"a\":1}\n\n", &done, &err);
  EXPECT_FALSE(done) << "no [DONE]";
  testing::parse_sse("data: {\"a\":\n\ndata: [DONE]\n\n", &done, &err);
  EXPECT_NE(err.find("not JSON"), std::string::npos) << err;
  testing::parse_sse("data: [DONE]\n\ndata: {\"a\":1}\n\n", &done, &err);
  EXPECT_NE(err.find("after data: [DONE]"), std::string::npos) << err;
}

TEST(ServeE2eHelpers, JsonDiffFindsEveryKindOfDifference) {
  const Json a = Json::parse(R"({"text":"hi","n":3,"lp":[-0.5,-1.25],"o":{"k":true}})");
  EXPECT_EQ(testing::json_diff(a, a, 1e-5), "");
  // Key order does not matter; float noise below the tolerance does not either.
  EXPECT_EQ(testing::json_diff(a, Json::parse(R"({"o":{"k":true},"lp":[-0.5000001,-1.25],"n":3,"text":"hi"})"), 1e-5),
            "");
  EXPECT_NE(testing::json_diff(a, Json::parse(R"({"text":"ho","n":3,"lp":[-0.5,-1.25],"o":{"k":true}})"), 1e-5)
                .find("$.text"),
            std::string::npos);
  EXPECT_NE(testing::json_diff(a, Json::parse(R"({"text":"hi","n":4,"lp":[-0.5,-1.25],"o":{"k":true}})"), 1e-5), "");
  EXPECT_NE(testing::json_diff(a, Json::parse(R"({"text":"hi","n":3,"lp":[-0.5,-1.3],"o":{"k":true}})"), 1e-5)
                .find("$.lp[1]"),
            std::string::npos);
  EXPECT_NE(testing::json_diff(a, Json::parse(R"({"text":"hi","n":3,"lp":[-0.5],"o":{"k":true}})"), 1e-5), "");
  EXPECT_NE(testing::json_diff(a, Json::parse(R"({"text":"hi","n":3,"lp":[-0.5,-1.25],"o":{"k":false}})"), 1e-5), "");
  EXPECT_NE(testing::json_diff(a, Json::parse(R"({"text":"hi","n":3,"lp":[-0.5,-1.25],"o":{}})"), 1e-5)
                .find("only in the first"),
            std::string::npos);
  EXPECT_NE(testing::json_diff(a, Json::parse(R"({"text":"hi","n":3,"lp":[-0.5,-1.25],"o":{"k":true},"x":1})"), 1e-5)
                .find("only in the second"),
            std::string::npos);
}

TEST(ServeE2eHelpers, VolatileFieldsAreDroppedAtEveryDepth) {
  const Json j = Json::parse(
      R"({"id":"c1","created":5,"model":"m","choices":[{"index":0,"timings":{"t":1}}],"timings":{},"usage":{"id":2}})");
  const Json k = testing::without_volatile_fields(j);
  EXPECT_EQ(k.dump(), R"({"model":"m","choices":[{"index":0}],"usage":{}})");
}

// A start that cannot succeed reports the server's own output instead of hanging.
TEST(ServeE2eHelpers, StartFailsWithTheServersMessage) {
  const auto bin = testing::expertmesh_binary();
  ASSERT_TRUE(std::filesystem::exists(bin)) << bin;
  testing::ServeProcess srv;
  testing::ServeOptions opt;
  opt.model = "/nonexistent/expertmesh-e2e-no-such-model.gguf";
  opt.start_timeout_s = 60;
  std::string error;
  EXPECT_FALSE(srv.start(opt, &error));
  EXPECT_FALSE(srv.running());
  EXPECT_NE(error.find("exited with status"), std::string::npos) << error;
  EXPECT_NE(error.find("expertmesh-e2e-no-such-model.gguf"), std::string::npos) << error;
}

}  // namespace
}  // namespace expertmesh
