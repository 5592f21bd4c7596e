// Load test of `expertmesh serve` (issue 7 acceptance): 8 concurrent clients x 20 requests against
// the tiny MoE model with --parallel 8. Every request succeeds, and every answer — text, finish
// reason and token counts — equals the answer the same request got alone (continuous batching
// must not change results: each row's logits depend only on its own sequence, each request
// samples with its own seeded RNG). Prints the throughput on a line starting `load_test:`.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/golden.h"
#include "tests/server/e2e/serve_process.h"

namespace expertmesh {
namespace {

using testing::Answer;
using testing::Json;

constexpr int kClients = 8;
constexpr int kRequestsPerClient = 20;
constexpr int kMaxTokens = 16;

// One distinct request: prompt x seed x endpoint. Sampled (temperature > 0) so the seed matters.
struct Case {
  std::string path;
  Json body;
};

std::vector<Case> make_cases() {
  const std::vector<std::string> prompts = {
      "Once upon a time there was a little dog",
      "The quick brown fox jumps over the lazy dog.",
      "Mixture of experts routes every token to two of six experts",
      "int main() { return 0; }",
  };
  const std::vector<int64_t> seeds = {7, 1234};
  std::vector<Case> cases;
  for (size_t p = 0; p < prompts.size(); ++p)
    for (int64_t seed : seeds) {
      Json common = {
          {"model", "tiny"}, {"max_tokens", kMaxTokens}, {"temperature", 0.9}, {"top_p", 0.95}, {"seed", seed}};
      Json completion = common;
      completion["prompt"] = prompts[p];
      cases.push_back({"/v1/completions", completion});
      Json chat = common;
      chat["messages"] = Json::array({{{"role", "user"}, {"content", prompts[p]}}});
      cases.push_back({"/v1/chat/completions", chat});
    }
  return cases;
}

Json streaming(Json body) {
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  return body;
}

std::string describe(const Answer& a) {
  return "status " + std::to_string(a.status) + ", finish '" + a.finish_reason + "', tokens " +
         std::to_string(a.completion_tokens) + ", text " + Json(a.text).dump() +
         (a.error.empty() ? "" : ", error: " + a.error);
}

TEST(ServerLoad, ConcurrentAnswersEqualSingleRequestAnswers) {
  const auto dir = testing::temp_dir("serve-load");
  const std::string model = testing::write_serve_model(dir);
  ASSERT_FALSE(model.empty());

  testing::ServeProcess srv;
  testing::ServeOptions opt;
  opt.model = model;
  opt.args = {"--parallel", std::to_string(kClients), "-c", "4096", "--alias", "tiny"};
  std::string error;
  ASSERT_TRUE(srv.start(opt, &error)) << error;

  // Reference answers: each case alone, one at a time, not streamed.
  const std::vector<Case> cases = make_cases();
  std::vector<Answer> ref;
  const auto t_ref = std::chrono::steady_clock::now();
  int64_t ref_tokens = 0;
  for (const Case& c : cases) {
    ref.push_back(testing::ask(srv.host(), srv.port(), c.path, c.body));
    const Answer& a = ref.back();
    ASSERT_EQ(a.status, 200) << c.path << " " << c.body.dump() << "\n" << a.raw;
    ASSERT_TRUE(a.error.empty()) << a.error << "\n" << a.raw;
    ASSERT_GT(a.completion_tokens, 0) << a.raw;
    ASSERT_LE(a.completion_tokens, kMaxTokens) << a.raw;
    ASSERT_GT(a.prompt_tokens, 0) << a.raw;
    ref_tokens += a.completion_tokens;
  }
  const double ref_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_ref).count();
  // Not degenerate: different seeds / prompts give different answers, or equality below would
  // not show that each request kept its own RNG and sequence.
  std::set<std::string> distinct;
  for (const Answer& a : ref) distinct.insert(a.text);
  EXPECT_GE(distinct.size(), cases.size() / 2) << "the reference answers are too alike to tell requests apart";

  // 8 clients x 20 requests, each a case chosen so every client mixes prompts, seeds, endpoints
  // and streaming; each client waits for its answer before sending the next request.
  const int n_total = kClients * kRequestsPerClient;
  std::vector<Answer> got(static_cast<size_t>(n_total));
  std::vector<size_t> which(static_cast<size_t>(n_total));
  std::vector<char> streamed(static_cast<size_t>(n_total));  // not vector<bool>: written by several threads
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  for (int t = 0; t < kClients; ++t)
    clients.emplace_back([&, t] {
      for (int j = 0; j < kRequestsPerClient; ++j) {
        const size_t k = static_cast<size_t>(t * kRequestsPerClient + j);
        which[k] = (k * 5 + static_cast<size_t>(t)) % cases.size();
        streamed[k] = (k % 3) == 0;
        const Case& c = cases[which[k]];
        got[k] = testing::ask(srv.host(), srv.port(), c.path, streamed[k] ? streaming(c.body) : c.body);
      }
    });
  for (std::thread& th : clients) th.join();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  int64_t tokens = 0;
  int n_ok = 0, n_streamed = 0;
  for (size_t k = 0; k < got.size(); ++k) {
    const Answer& a = got[k];
    const Answer& r = ref[which[k]];
    n_streamed += streamed[k] ? 1 : 0;
    const std::string what = "request " + std::to_string(k) + " (" + cases[which[k]].path +
                             (streamed[k] ? ", streamed" : "") + ", " + cases[which[k]].body.dump() + ")";
    EXPECT_EQ(a.status, 200) << what << "\n" << a.raw;
    EXPECT_TRUE(a.error.empty()) << what << ": " << a.error;
    EXPECT_EQ(a.text, r.text) << what << "\n got: " << describe(a) << "\n alone: " << describe(r);
    EXPECT_EQ(a.completion_tokens, r.completion_tokens) << what;
    EXPECT_EQ(a.prompt_tokens, r.prompt_tokens) << what;
    EXPECT_EQ(a.finish_reason, r.finish_reason) << what;
    if (a.status == 200 && a.error.empty() && a.text == r.text) ++n_ok;
    tokens += std::max<int64_t>(a.completion_tokens, 0);
  }
  EXPECT_EQ(n_ok, n_total);

  std::printf(
      "load_test: %d clients x %d requests = %d (%d streamed), %d ok, %lld generated tokens in %.2f s: %.1f "
      "requests/s, %.1f generated tokens/s (alone, one at a time: %zu requests, %.1f tokens/s)\n",
      kClients, kRequestsPerClient, n_total, n_streamed, n_ok, static_cast<long long>(tokens), wall, n_total / wall,
      static_cast<double>(tokens) / wall, cases.size(), static_cast<double>(ref_tokens) / ref_s);
  std::fflush(stdout);

  const int st = srv.stop(SIGTERM, 30);
  EXPECT_EQ(st, 0) << "serve must exit 0 on SIGTERM\n" << srv.output();
  EXPECT_EQ(srv.stragglers(), 0) << srv.straggler_list();
}

}  // namespace
}  // namespace expertmesh
