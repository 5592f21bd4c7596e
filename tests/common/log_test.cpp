// Logger: level names, filtering, the "[rank r/host] L message" line format, whole lines under
// concurrent writers.
#include "common/log.h"

#include <gtest/gtest.h>

#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace expertmesh {
namespace {

using ::testing::internal::CaptureStderr;
using ::testing::internal::GetCapturedStderr;

TEST(ParseLogLevel, AcceptsEveryNameCaseInsensitively) {
  struct Case {
    const char* s;
    LogLevel want;
  };
  const Case cases[] = {
      {"debug", LogLevel::kDebug}, {"DEBUG", LogLevel::kDebug}, {"info", LogLevel::kInfo},
      {"Info", LogLevel::kInfo},   {"warn", LogLevel::kWarn},   {"warning", LogLevel::kWarn},
      {"WARN", LogLevel::kWarn},   {"error", LogLevel::kError}, {"eRRoR", LogLevel::kError},
      {"quiet", LogLevel::kQuiet}, {"QUIET", LogLevel::kQuiet},
  };
  for (const auto& c : cases) {
    LogLevel got = LogLevel::kInfo;
    if (c.want == LogLevel::kInfo) got = LogLevel::kError;  // make sure the value is written
    EXPECT_TRUE(parse_log_level(c.s, &got)) << c.s;
    EXPECT_EQ(got, c.want) << c.s;
  }
}

TEST(ParseLogLevel, RejectsUnknownAndLeavesOutputUnchanged) {
  for (const char* s : {"", "verbose", "inf", "debug ", " info", "3"}) {
    LogLevel got = LogLevel::kWarn;
    EXPECT_FALSE(parse_log_level(s, &got)) << "'" << s << "'";
    EXPECT_EQ(got, LogLevel::kWarn) << "'" << s << "'";
  }
}

TEST(Logger, LinePrefixNamesRankAndHost) {
  Logger log(3, 8, "node-a", LogLevel::kDebug);
  CaptureStderr();
  log.info("loaded {} tensors", 42);
  log.debug("d");
  log.warn("w {}", "x");
  log.error("e");
  std::string out = GetCapturedStderr();
  EXPECT_EQ(out,
            "[rank 3/node-a] I loaded 42 tensors\n"
            "[rank 3/node-a] D d\n"
            "[rank 3/node-a] W w x\n"
            "[rank 3/node-a] E e\n");
}

TEST(Logger, DefaultIsRankZeroLocalhostAtInfo) {
  Logger log;
  EXPECT_EQ(log.level(), LogLevel::kInfo);
  CaptureStderr();
  log.debug("hidden");
  log.info("shown");
  EXPECT_EQ(GetCapturedStderr(), "[rank 0/localhost] I shown\n");
}

TEST(Logger, LevelFilters) {
  Logger log(0, 1, "h", LogLevel::kWarn);
  EXPECT_FALSE(log.enabled(LogLevel::kDebug));
  EXPECT_FALSE(log.enabled(LogLevel::kInfo));
  EXPECT_TRUE(log.enabled(LogLevel::kWarn));
  EXPECT_TRUE(log.enabled(LogLevel::kError));
  CaptureStderr();
  log.debug("no");
  log.info("no");
  log.warn("yes");
  EXPECT_EQ(GetCapturedStderr(), "[rank 0/h] W yes\n");

  log.set_level(LogLevel::kQuiet);
  EXPECT_EQ(log.level(), LogLevel::kQuiet);
  CaptureStderr();
  log.error("even errors are quiet");
  EXPECT_EQ(GetCapturedStderr(), "");
}

TEST(Logger, ConcurrentWritersProduceWholeLines) {
  Logger log(1, 2, "h", LogLevel::kInfo);
  constexpr int kThreads = 8, kLines = 200;
  CaptureStderr();
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&log, t] {
        for (int i = 0; i < kLines; ++i) log.info("thread {} line {} {}", t, i, std::string(100, 'x'));
      });
    for (auto& th : threads) th.join();
  }
  std::string out = GetCapturedStderr();
  std::istringstream in(out);
  std::string line;
  const std::regex re(R"(\[rank 1/h\] I thread [0-9]+ line [0-9]+ x{100})");
  int n = 0;
  while (std::getline(in, line)) {
    EXPECT_TRUE(std::regex_match(line, re)) << line;
    ++n;
  }
  EXPECT_EQ(n, kThreads * kLines);
}

}  // namespace
}  // namespace expertmesh
