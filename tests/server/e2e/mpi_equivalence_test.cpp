// `mpirun -np 2 expertmesh serve` answers like one rank (issue 7 acceptance). The same requests —
// chat and completion, streamed and not, seeded sampling and greedy, log-probabilities, the
// peer's /completion, /tokenize, /detokenize and /v1/models — go to `serve` on one rank and on two
// ranks under --placement ep (experts and heads split) and pp (layers split); every response must
// have the same status and the same JSON content (ids, timestamps and timings aside; the engine
// is exact, so floats are compared to 1e-5 only against reduction-order noise), and so must the
// same generations sent all at once (batched decode steps across ranks). Also: SIGTERM to mpirun
// brings both ranks down with status 0, promptly.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/golden.h"
#include "tests/server/e2e/serve_process.h"

namespace expertmesh {
namespace {

namespace fs = std::filesystem;
using testing::Json;

struct Exchange {
  std::string path;  // POST unless body is null
  Json body;
};

std::vector<Exchange> exchanges() {
  const Json messages = Json::array({{{"role", "system"}, {"content", "You answer in one sentence."}},
                                     {{"role", "user"}, {"content", "What do experts in a MoE model do?"}}});
  const std::string prompt = "Once upon a time, in a land far away,";
  std::vector<Exchange> x;
  Json chat = {{"model", "tiny"}, {"messages", messages}, {"max_tokens", 12}};
  Json sampled = chat;
  sampled["temperature"] = 0.9;
  sampled["seed"] = 42;
  x.push_back({"/v1/chat/completions", sampled});
  Json greedy = chat;
  greedy["temperature"] = 0.0;
  greedy["seed"] = 1;  // a seed everywhere: a server may echo the (otherwise random) seed it used
  x.push_back({"/v1/chat/completions", greedy});
  Json stream = sampled;
  stream["stream"] = true;
  stream["stream_options"] = {{"include_usage", true}};
  x.push_back({"/v1/chat/completions", stream});
  Json chat_lp = greedy;
  chat_lp["logprobs"] = true;
  chat_lp["top_logprobs"] = 3;
  x.push_back({"/v1/chat/completions", chat_lp});

  Json comp = {{"model", "tiny"}, {"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0.7}, {"seed", 5}};
  x.push_back({"/v1/completions", comp});
  Json comp_lp = comp;
  comp_lp["logprobs"] = 3;
  x.push_back({"/v1/completions", comp_lp});
  Json comp_stream = comp;
  comp_stream["temperature"] = 0.0;
  comp_stream["stream"] = true;
  x.push_back({"/v1/completions", comp_stream});

  x.push_back({"/completion", {{"prompt", prompt}, {"n_predict", 10}, {"temperature", 0.8}, {"seed", 9}}});
  x.push_back(
      {"/completion", {{"prompt", prompt}, {"n_predict", 6}, {"temperature", 0.0}, {"seed", 3}, {"n_probs", 2}}});
  x.push_back({"/tokenize", {{"content", prompt}}});
  x.push_back({"/detokenize", {{"tokens", Json::array({300, 301, 400, 450})}}});
  x.push_back({"/v1/models", nullptr});
  x.push_back({"/health", nullptr});
  return x;
}

// Status and content of every exchange: a JSON body, or the array of a stream's events; then the
// non-streamed /v1 generations again, each twice and all at once (batched over the slots).
struct Transcript {
  std::vector<int> status;
  std::vector<Json> content;
  std::vector<size_t> batched_which;  // exchange index of each batched answer
  std::vector<testing::Answer> batched;
};

std::vector<size_t> batched_exchanges() {
  std::vector<size_t> idx;
  const std::vector<Exchange> x = exchanges();
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i].path.starts_with("/v1/") && x[i].body.is_object() && !x[i].body.value("stream", false)) idx.push_back(i);
  return idx;
}

void run_batched(const testing::ServeProcess& srv, Transcript* t) {
  const std::vector<Exchange> x = exchanges();
  for (int rep = 0; rep < 2; ++rep)
    for (size_t i : batched_exchanges()) t->batched_which.push_back(i);
  t->batched.resize(t->batched_which.size());
  std::vector<std::thread> clients;
  for (size_t k = 0; k < t->batched_which.size(); ++k)
    clients.emplace_back([&, k] {
      const Exchange& e = x[t->batched_which[k]];
      t->batched[k] = testing::ask(srv.host(), srv.port(), e.path, e.body);
    });
  for (std::thread& c : clients) c.join();
}

// The generated text of a non-streamed /v1 response.
std::string text_of(const Json& j) {
  if (!j.contains("choices") || j["choices"].empty()) return "<no choices>";
  const Json& c = j["choices"][0];
  if (c.contains("message")) return c["message"].value("content", "<no content>");
  return c.value("text", "<no text>");
}

Transcript run_all(const testing::ServeProcess& srv) {
  Transcript t;
  for (const Exchange& e : exchanges()) {
    testing::HttpReply r = e.body.is_null() ? testing::http_get(srv.host(), srv.port(), e.path)
                                            : testing::http_post(srv.host(), srv.port(), e.path, e.body);
    t.status.push_back(r.status);
    Json content;
    if (e.body.is_object() && e.body.value("stream", false)) {
      bool done = false;
      std::string err;
      content = Json::array();
      for (const Json& ev : testing::parse_sse(r.body, &done, &err)) content.push_back(ev);
      EXPECT_TRUE(err.empty()) << e.path << ": " << err;
      EXPECT_TRUE(done) << e.path << ": no data: [DONE]\n" << r.body;
    } else {
      content = Json::parse(r.body, nullptr, /*allow_exceptions=*/false);
      EXPECT_FALSE(content.is_discarded()) << e.path << " " << e.body.dump() << ": not JSON: " << r.body;
    }
    t.content.push_back(testing::without_volatile_fields(content));
  }
  return t;
}

class ServeMpi : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(testing::expertmesh_binary())) << testing::expertmesh_binary();
    dir_ = testing::temp_dir("serve-mpi");
    model_ = testing::write_serve_model(dir_);
    ASSERT_FALSE(model_.empty());
  }

  // Starts serve on `np` ranks (0: no mpirun), runs every exchange, stops it with SIGTERM.
  Transcript transcript(int np, const std::vector<std::string>& extra) {
    testing::ServeProcess srv;
    testing::ServeOptions opt;
    opt.model = model_;
    opt.np = np;
    opt.run_timeout_s = 120;
    opt.args = {"--parallel", "2", "-c", "1024", "--alias", "tiny"};
    opt.args.insert(opt.args.end(), extra.begin(), extra.end());
    std::string error;
    if (!srv.start(opt, &error)) {
      ADD_FAILURE() << error;
      return {};
    }
    Transcript t = run_all(srv);
    run_batched(srv, &t);
    const int st = srv.stop(SIGTERM, 30);
    EXPECT_NE(st, -1) << "serve did not exit within 30 s of SIGTERM\n" << srv.output();
    if (np == 0) {
      EXPECT_EQ(st, 0) << srv.output();
    }
    EXPECT_EQ(srv.stragglers(), 0) << "processes outlived the server:\n"
                                   << srv.straggler_list() << "output:\n"
                                   << srv.output();
    return t;
  }

  void expect_same(const Transcript& one, const Transcript& many, const std::string& what) {
    const std::vector<Exchange> x = exchanges();
    ASSERT_EQ(one.status.size(), x.size());
    ASSERT_EQ(many.status.size(), x.size()) << what;
    for (size_t i = 0; i < x.size(); ++i) {
      const std::string req = x[i].path + " " + x[i].body.dump();
      EXPECT_EQ(many.status[i], one.status[i]) << what << ": " << req << "\n" << many.content[i].dump();
      const std::string d = testing::json_diff(one.content[i], many.content[i], 1e-5);
      EXPECT_TRUE(d.empty()) << what << ": " << req << "\n first difference at " << d;
    }
    ASSERT_EQ(many.batched.size(), one.batched.size()) << what;
    for (size_t k = 0; k < one.batched.size(); ++k) {
      const testing::Answer &a = one.batched[k], &b = many.batched[k];
      const std::string req = x[one.batched_which[k]].path + " " + x[one.batched_which[k]].body.dump() + " (batched)";
      EXPECT_EQ(b.status, a.status) << what << ": " << req << "\n" << b.raw;
      EXPECT_EQ(b.text, a.text) << what << ": " << req;
      EXPECT_EQ(b.completion_tokens, a.completion_tokens) << what << ": " << req;
      EXPECT_EQ(b.finish_reason, a.finish_reason) << what << ": " << req;
    }
  }

  fs::path dir_;
  std::string model_;
};

TEST_F(ServeMpi, TwoRanksAnswerLikeOne) {
  const Transcript one = transcript(0, {});
  ASSERT_FALSE(one.status.empty());
  const std::vector<Exchange> x = exchanges();
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_EQ(one.status[i], 200) << x[i].path << " " << x[i].body.dump() << "\n" << one.content[i].dump();
  // Not degenerate: the sampled chat generated something for the comparison to be about.
  ASSERT_TRUE(one.content[0].contains("usage")) << one.content[0].dump();
  EXPECT_GT(one.content[0]["usage"].value("completion_tokens", 0), 0) << one.content[0].dump();
  // Batching does not change answers on one rank either (then the comparison below covers np = 2).
  ASSERT_EQ(one.batched.size(), 2 * batched_exchanges().size());
  for (size_t k = 0; k < one.batched.size(); ++k) {
    const size_t i = one.batched_which[k];
    EXPECT_EQ(one.batched[k].status, 200) << x[i].path << "\n" << one.batched[k].raw;
    EXPECT_EQ(one.batched[k].text, text_of(one.content[i])) << x[i].path << " " << x[i].body.dump();
  }

  expect_same(one, transcript(2, {"--placement", "ep"}), "mpirun -np 2 --placement ep");
  expect_same(one, transcript(2, {"--placement", "pp"}), "mpirun -np 2 --placement pp");
}

TEST_F(ServeMpi, SigtermToMpirunStopsEveryRankCleanly) {
  const fs::path exits = dir_ / "exits";
  fs::create_directories(exits);
  testing::ServeProcess srv;
  testing::ServeOptions opt;
  opt.model = model_;
  opt.np = 2;
  opt.run_timeout_s = 120;
  opt.rank_exit_dir = exits;
  opt.args = {"--parallel", "2", "-c", "1024", "--alias", "tiny"};
  std::string error;
  ASSERT_TRUE(srv.start(opt, &error)) << error;
  // Busy first, so the ranks are inside their compute loop, not only waiting.
  testing::Answer a = testing::ask(srv.host(), srv.port(), "/v1/completions",
                                   {{"prompt", "Hello"}, {"max_tokens", 4}, {"temperature", 0.0}});
  EXPECT_EQ(a.status, 200) << a.raw;

  const auto t0 = std::chrono::steady_clock::now();
  const int st = srv.stop(SIGTERM, 30);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_NE(st, -1) << "mpirun did not exit within 30 s of SIGTERM\n" << srv.output();
  EXPECT_NE(st, 124) << "timed out\n" << srv.output();
  EXPECT_LT(s, 15.0) << "mpirun took too long to stop\n" << srv.output();
  // mpirun exits 1 whenever it forwarded a signal; the ranks' own statuses are the contract.
  const std::vector<int> codes = testing::wait_rank_exits(exits, 2, 20);
  const double ranks_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("sigterm: mpirun exited %d after %.2f s, ranks %d %d after %.2f s\n", st, s, codes[0], codes[1], ranks_s);
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(codes[static_cast<size_t>(r)], 0)
        << "rank " << r << " exit status (-1: did not exit within 20 s of mpirun)\n"
        << srv.output();
}

}  // namespace
}  // namespace expertmesh
