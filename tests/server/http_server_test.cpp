// The HTTP front-end of `serve` in-process (issue 7): a synthetic qwen3moe model (its built-in
// 512-token SentencePiece vocabulary, no chat template → the ChatML fallback), a real Engine with
// one KV-cache sequence per slot, the Scheduler's loop on a thread and HttpServer on an ephemeral
// loopback port, driven with httplib::Client. Every endpoint streaming and not, the error cases
// and limits, and a client that disconnects mid-stream freeing its slot.
#include "coordinator/server/http_server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "coordinator/server/auth.h"
#include "coordinator/server/chat_output.h"
#include "coordinator/server/chat_prompt.h"
#include "coordinator/server/scheduler.h"
#include "model/model.h"
#include "tests/common/golden.h"
#include "tests/mpi/test_models.h"
#include "worker/engine.h"

namespace expertmesh {
namespace {

using coordinator::server::HttpServer;
using coordinator::server::HttpServerOptions;
using coordinator::server::Scheduler;
using coordinator::server::SchedulerOptions;
using Json = nlohmann::json;

// The model, tokenizer and template shared by every test (built once).
struct Shared {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
  std::optional<chat::ChatTemplate> tmpl;
};

Shared& shared() {
  static Shared s = [] {
    Shared x;
    auto m = Model::load(testing::synth_model(testing::temp_dir("http_server"), "qwen3moe", "m.gguf"));
    EXPECT_TRUE(m.ok()) << m.status().to_string();
    if (!m.ok()) return x;
    x.model = std::move(*m);
    auto t = Tokenizer::from_gguf(x.model->file());
    EXPECT_TRUE(t.ok()) << t.status().to_string();
    if (t.ok()) x.tok = std::move(*t);
    auto tm = coordinator::server::resolve_chat_template("", "", "test");
    EXPECT_TRUE(tm.ok()) << tm.status().to_string();
    if (tm.ok()) x.tmpl = std::move(*tm);
    return x;
  }();
  return s;
}

// Engine + Scheduler (its run() loop on a thread) + HttpServer on 127.0.0.1:<ephemeral>.
class TestServer {
 public:
  // `tmpl`: the chat template (default: the shared ChatML one); not owned, outlives the server.
  explicit TestServer(int n_slots, int64_t n_ctx_slot = 256, HttpServerOptions ho = {},
                      const chat::ChatTemplate* tmpl = nullptr) {
    Shared& s = shared();
    worker::EngineOptions eo;
    eo.n_threads = 2;
    eo.n_ctx = n_ctx_slot;
    eo.n_seq = n_slots;
    auto e = worker::Engine::create(*s.model, worker::full_plan(s.model->hparams()), eo);
    EXPECT_TRUE(e.ok()) << e.status().to_string();
    engine_ = std::move(*e);
    SchedulerOptions so;
    so.n_slots = n_slots;
    so.n_ctx_slot = n_ctx_slot;
    so.n_batch = 64;
    worker::Engine* eng = engine_.get();
    sched_ = std::make_unique<Scheduler>(
        [eng](std::span<const int32_t> t, std::span<const int32_t> p, std::span<const int32_t> q,
              std::span<const int64_t> rows, float* logits) { return eng->decode_batch(t, p, q, rows, logits); },
        *s.tok, engine_->n_vocab(), so);
    loop_ = std::thread([this] { loop_status_ = sched_->run(); });
    ho.host = "127.0.0.1";
    ho.port = 0;
    if (ho.model_alias.empty()) ho.model_alias = "synth-moe";
    http_ = std::make_unique<HttpServer>(*sched_, *s.tok, tmpl ? *tmpl : *s.tmpl, ho);
    Status st = http_->start();
    EXPECT_TRUE(st.ok()) << st.to_string();
  }
  ~TestServer() {
    sched_->shutdown();
    loop_.join();
    http_->stop();
    EXPECT_TRUE(loop_status_.ok()) << loop_status_.to_string();
  }
  int port() const { return http_->port(); }
  std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port());
    c->set_read_timeout(30);
    return c;
  }
  // POST `body` (JSON text) and return status and parsed body (null when not JSON).
  std::pair<int, Json> post(const std::string& path, const std::string& body, httplib::Headers h = {}) const {
    auto r = client()->Post(path.c_str(), h, body, "application/json");
    if (!r) return {0, Json()};
    return {r->status, Json::parse(r->body, nullptr, false)};
  }
  std::pair<int, std::string> post_raw(const std::string& path, const std::string& body,
                                       httplib::Headers h = {}) const {
    auto r = client()->Post(path.c_str(), h, body, "application/json");
    if (!r) return {0, ""};
    return {r->status, r->body};
  }
  std::pair<int, std::string> get(const std::string& path, httplib::Headers h = {}) const {
    auto r = client()->Get(path.c_str(), h);
    if (!r) return {0, ""};
    return {r->status, r->body};
  }

 private:
  std::unique_ptr<worker::Engine> engine_;
  std::unique_ptr<Scheduler> sched_;
  std::unique_ptr<HttpServer> http_;
  std::thread loop_;
  Status loop_status_;
};

// The JSON of every "data:" frame of an SSE body; `done` tells whether the last was [DONE].
std::vector<Json> sse_frames(const std::string& body, bool* done) {
  std::vector<Json> out;
  *done = false;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) end = body.size();
    const std::string frame = body.substr(pos, end - pos);
    pos = end + 2;
    if (frame.rfind("data: ", 0) != 0) continue;
    const std::string data = frame.substr(6);
    EXPECT_FALSE(*done) << "a frame after [DONE]";
    if (data == "[DONE]") {
      *done = true;
      continue;
    }
    out.push_back(Json::parse(data, nullptr, false));
    EXPECT_FALSE(out.back().is_discarded()) << data;
  }
  return out;
}

// Value of a Prometheus sample line "name value".
double metric(const std::string& text, const std::string& name) {
  const size_t p = text.find("\n" + name + " ");
  if (p == std::string::npos) return -1;
  return std::stod(text.substr(p + name.size() + 2));
}

std::string chat_body(const std::string& user, int max_tokens, bool stream, const std::string& extra = "") {
  Json b = {{"model", "x"},
            {"messages",
             Json::array({{{"role", "system"}, {"content", "You are terse."}}, {{"role", "user"}, {"content", user}}})},
            {"max_tokens", max_tokens},
            {"temperature", 0},
            {"stream", stream}};
  std::string s = b.dump();
  if (!extra.empty()) s = s.substr(0, s.size() - 1) + "," + extra + "}";
  return s;
}

TEST(HttpServer, ChatNonStreamingAndStreamingAgree) {
  TestServer srv(2);
  auto [st, j] = srv.post("/v1/chat/completions", chat_body("Tell me a story.", 12, false));
  ASSERT_EQ(st, 200) << j.dump();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  const std::string content = j["choices"][0]["message"]["content"];
  const Json usage = j["usage"];
  EXPECT_EQ(usage["completion_tokens"].get<int>() <= 12, true);
  EXPECT_EQ(usage["total_tokens"], usage["prompt_tokens"].get<int>() + usage["completion_tokens"].get<int>());
  if (j["choices"][0]["finish_reason"] == "length") {
    EXPECT_EQ(usage["completion_tokens"], 12);
  }

  // Prompt tokens = the ChatML rendering tokenized (BOS as the vocabulary says).
  const std::string rendered =
      "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nTell me a story.<|im_end|>\n"
      "<|im_start|>assistant\n";
  auto [tst, tj] = srv.post("/tokenize", Json{{"content", rendered}, {"add_special", true}}.dump());
  ASSERT_EQ(tst, 200);
  EXPECT_EQ(usage["prompt_tokens"], tj["tokens"].size());

  auto [sst, body] = srv.post_raw(
      "/v1/chat/completions", chat_body("Tell me a story.", 12, true, R"("stream_options":{"include_usage":true})"));
  ASSERT_EQ(sst, 200);
  bool done = false;
  std::vector<Json> frames = sse_frames(body, &done);
  EXPECT_TRUE(done) << "stream must end with data: [DONE]";
  ASSERT_GE(frames.size(), 3u);
  EXPECT_EQ(frames.front()["choices"][0]["delta"]["role"], "assistant");
  std::string streamed;
  std::string finish;
  Json stream_usage;
  for (const Json& f : frames) {
    EXPECT_EQ(f["object"], "chat.completion.chunk");
    if (f.contains("usage") && !f["usage"].is_null()) stream_usage = f["usage"];
    if (f["choices"].empty()) continue;
    const Json& d = f["choices"][0]["delta"];
    if (d.contains("content") && d["content"].is_string()) streamed += d["content"].get<std::string>();
    if (!f["choices"][0]["finish_reason"].is_null()) finish = f["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(streamed, content);
  EXPECT_EQ(finish, j["choices"][0]["finish_reason"]);
  EXPECT_EQ(stream_usage["prompt_tokens"], usage["prompt_tokens"]);
  EXPECT_EQ(stream_usage["completion_tokens"], usage["completion_tokens"]);
}

// A template whose generation prompt opens <think> (as Qwen3's and DeepSeek-R1's do): the
// output starts inside the reasoning. With --reasoning-format deepseek the chat route must put
// it in reasoning_content (non-streaming and streaming alike); with none it stays content.
TEST(HttpServer, ChatReasoningWithThinkingForcedOpen) {
  auto tmpl = coordinator::server::resolve_chat_template(
      "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
      "<|im_start|>assistant\n<think>\n",
      "", "test");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status().to_string();
  const std::string body = chat_body("Think first.", 10, false, R"("seed":7)");
  HttpServerOptions none_opt;
  none_opt.reasoning_format = coordinator::server::ReasoningFormat::kNone;
  std::string raw;
  {
    TestServer srv(1, 256, none_opt, &*tmpl);
    auto [st, j] = srv.post("/v1/chat/completions", body);
    ASSERT_EQ(st, 200) << j.dump();
    EXPECT_FALSE(j["choices"][0]["message"].contains("reasoning_content"));
    raw = j["choices"][0]["message"]["content"];
  }
  ASSERT_FALSE(raw.empty());
  coordinator::server::ChatOutputOptions forced;
  forced.thinking_forced_open = true;
  const coordinator::server::ChatDelta want = coordinator::server::ChatOutputParser::parse(raw, forced);
  if (raw.find("</think>") == std::string::npos) {
    EXPECT_TRUE(want.content.empty());  // all of it is reasoning
  }

  TestServer srv(1, 256, {}, &*tmpl);
  auto [st, j] = srv.post("/v1/chat/completions", body);
  ASSERT_EQ(st, 200) << j.dump();
  const Json& msg = j["choices"][0]["message"];
  EXPECT_EQ(msg["content"], want.content);
  if (want.reasoning.empty()) {
    EXPECT_FALSE(msg.contains("reasoning_content"));
  } else {
    EXPECT_EQ(msg["reasoning_content"], want.reasoning);
  }

  auto [sst, sbody] = srv.post_raw("/v1/chat/completions", chat_body("Think first.", 10, true, R"("seed":7)"));
  ASSERT_EQ(sst, 200);
  bool done = false;
  std::string content, reasoning;
  for (const Json& f : sse_frames(sbody, &done)) {
    if (f["choices"].empty()) continue;
    const Json& d = f["choices"][0]["delta"];
    if (d.contains("content") && d["content"].is_string()) content += d["content"].get<std::string>();
    if (d.contains("reasoning_content")) reasoning += d["reasoning_content"].get<std::string>();
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(content, want.content);
  EXPECT_EQ(reasoning, want.reasoning);
}

// A request with tools answers 200 with a valid chat.completion shape, streaming or not,
// whatever the (random) model writes: tool calls, if any, are well-formed and the finish
// reason agrees with them.
TEST(HttpServer, ChatWithToolsKeepsTheSchema) {
  TestServer srv(1);
  const std::string tools =
      R"("tools":[{"type":"function","function":{"name":"get_weather","description":"Weather of a city",)"
      R"("parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}])";
  auto [st, j] = srv.post("/v1/chat/completions", chat_body("Weather in Paris?", 12, false, tools));
  ASSERT_EQ(st, 200) << j.dump();
  const Json& choice = j["choices"][0];
  const Json& msg = choice["message"];
  EXPECT_EQ(msg["role"], "assistant");
  EXPECT_TRUE(msg["content"].is_string() || msg["content"].is_null());
  const std::string finish = choice["finish_reason"];
  if (msg.contains("tool_calls")) {
    for (const Json& c : msg["tool_calls"]) {
      EXPECT_EQ(c["type"], "function");
      EXPECT_TRUE(c["id"].is_string());
      EXPECT_TRUE(c["function"]["arguments"].is_string());
    }
    EXPECT_TRUE(finish == "tool_calls" || finish == "length");
  } else {
    EXPECT_TRUE(finish == "stop" || finish == "length") << finish;
    EXPECT_TRUE(msg["content"].is_string());
  }
  auto [sst, sbody] = srv.post_raw("/v1/chat/completions", chat_body("Weather in Paris?", 12, true, tools));
  ASSERT_EQ(sst, 200);
  bool done = false;
  std::string streamed;
  for (const Json& f : sse_frames(sbody, &done)) {
    if (f["choices"].empty()) continue;
    const Json& d = f["choices"][0]["delta"];
    if (d.contains("content") && d["content"].is_string()) streamed += d["content"].get<std::string>();
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(streamed, msg["content"].is_string() ? msg["content"].get<std::string>() : std::string());
}

TEST(HttpServer, CompletionsMaxTokensUsageAndStream) {
  TestServer srv(2);
  const std::string prompt = "Once upon a time";
  auto [st, j] =
      srv.post("/v1/completions", Json{{"prompt", prompt}, {"max_tokens", 5}, {"temperature", 0}, {"seed", 1}}.dump());
  ASSERT_EQ(st, 200) << j.dump();
  EXPECT_EQ(j["object"], "text_completion");
  auto [tst, tj] = srv.post("/tokenize", Json{{"content", prompt}, {"add_special", true}}.dump());
  ASSERT_EQ(tst, 200);
  EXPECT_EQ(j["usage"]["prompt_tokens"], tj["tokens"].size());
  const int n = j["usage"]["completion_tokens"];
  EXPECT_LE(n, 5);
  if (j["choices"][0]["finish_reason"] == "length") {
    EXPECT_EQ(n, 5);
  }
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length") << "the synthetic model should not stop within 5 tokens";

  auto [sst, body] = srv.post_raw(
      "/v1/completions", Json{{"prompt", prompt}, {"max_tokens", 5}, {"temperature", 0}, {"stream", true}}.dump());
  ASSERT_EQ(sst, 200);
  bool done = false;
  std::string text;
  std::string finish;
  for (const Json& f : sse_frames(body, &done)) {
    text += f["choices"][0]["text"].get<std::string>();
    if (!f["choices"][0]["finish_reason"].is_null()) finish = f["choices"][0]["finish_reason"];
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(text, j["choices"][0]["text"]);
  EXPECT_EQ(finish, "length");
}

TEST(HttpServer, NativeCompletionStreamingAndStop) {
  TestServer srv(1);
  Json req = {{"prompt", "The little dog"}, {"n_predict", 16}, {"temperature", 0}};
  auto [st, j] = srv.post("/completion", req.dump());
  ASSERT_EQ(st, 200) << j.dump();
  const std::string content = j["content"];
  EXPECT_EQ(j["stop"], true);
  EXPECT_EQ(j["tokens_predicted"].get<int>() <= 16, true);
  ASSERT_GE(content.size(), 4u) << "need some text to pick a stop string from";

  req["stream"] = true;
  auto [sst, body] = srv.post_raw("/completion", req.dump());
  ASSERT_EQ(sst, 200);
  bool done = false;
  std::vector<Json> frames = sse_frames(body, &done);
  EXPECT_FALSE(done) << "the native stream has no [DONE]";
  ASSERT_FALSE(frames.empty());
  std::string streamed;
  for (size_t i = 0; i < frames.size(); ++i) {
    streamed += frames[i]["content"].get<std::string>();
    EXPECT_EQ(frames[i]["stop"], i + 1 == frames.size());
  }
  EXPECT_EQ(streamed, content);

  // A stop string taken from the middle of the greedy text: the answer ends right before its
  // first occurrence, with finish "stop" and the word reported.
  const size_t k = content.size() / 2;
  const std::string stop = content.substr(k, 2);
  const size_t first = content.find(stop);
  req["stream"] = false;
  req["stop"] = Json::array({stop});
  auto [st2, j2] = srv.post("/completion", req.dump());
  ASSERT_EQ(st2, 200) << j2.dump();
  EXPECT_EQ(j2["content"], content.substr(0, first));
  EXPECT_EQ(j2["stopped_word"], true);
  EXPECT_EQ(j2["stopping_word"], stop);

  auto [st3, j3] =
      srv.post("/v1/completions",
               Json{{"prompt", "The little dog"}, {"max_tokens", 16}, {"temperature", 0}, {"stop", stop}}.dump());
  ASSERT_EQ(st3, 200) << j3.dump();
  EXPECT_EQ(j3["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j3["choices"][0]["text"], content.substr(0, first));
}

TEST(HttpServer, SeedReproducibilityAndLogprobs) {
  TestServer srv(2);
  auto sampled = [&](int seed) {
    auto [st, j] = srv.post("/v1/completions", Json{{"prompt", "Once"},
                                                    {"max_tokens", 12},
                                                    {"temperature", 1.5},
                                                    {"top_k", 0},
                                                    {"top_p", 1.0},
                                                    {"min_p", 0.0},
                                                    {"seed", seed}}
                                                   .dump());
    EXPECT_EQ(st, 200) << j.dump();
    return st == 200 ? j["choices"][0]["text"].get<std::string>() : std::string();
  };
  const std::string a = sampled(42);
  EXPECT_EQ(a, sampled(42));
  bool any_differs = false;
  for (int s = 43; s < 47; ++s) any_differs |= sampled(s) != a;
  EXPECT_TRUE(any_differs) << "different seeds at temperature 1.5 should give different texts";

  auto [st, j] = srv.post("/v1/chat/completions", chat_body("Hi", 4, false, R"("logprobs":true,"top_logprobs":3)"));
  ASSERT_EQ(st, 200) << j.dump();
  const Json& lp = j["choices"][0]["logprobs"]["content"];
  ASSERT_TRUE(lp.is_array()) << j.dump();
  EXPECT_EQ(lp.size(), j["usage"]["completion_tokens"].get<size_t>());
  for (const Json& t : lp) {
    EXPECT_LE(t["logprob"].get<double>(), 1e-6);
    ASSERT_EQ(t["top_logprobs"].size(), 3u);
    double prev = 1;
    for (const Json& alt : t["top_logprobs"]) {
      EXPECT_LE(alt["logprob"].get<double>(), prev);
      prev = alt["logprob"];
    }
    // Greedy: the chosen token is the most likely one.
    EXPECT_EQ(t["token"], t["top_logprobs"][0]["token"]);
  }
}

// The penalties and logit_bias reach the request's sampler: greedy ids change exactly as they
// must, and bad entries are 400s naming the entry.
TEST(HttpServer, PenaltiesAndLogitBiasReachTheSampler) {
  TestServer srv(1);
  const std::string prompt = "The little dog";
  auto ids_of = [&](const Json& extra) {
    Json req = {{"prompt", prompt}, {"n_predict", 24}, {"temperature", 0}, {"n_probs", 1}, {"ignore_eos", true}};
    req.update(extra);
    auto [st, j] = srv.post("/completion", req.dump());
    EXPECT_EQ(st, 200) << j.dump();
    std::vector<int> ids;
    if (st == 200)
      for (const Json& t : j["completion_probabilities"]) ids.push_back(t["id"].get<int>());
    return ids;
  };
  const std::vector<int> plain = ids_of(Json::object());
  ASSERT_EQ(plain.size(), 24u);

  // A ban (the peer's `false`) removes the token everywhere; a large bias forces one.
  const std::vector<int> banned = ids_of({{"logit_bias", Json::array({Json::array({plain[0], false})})}});
  ASSERT_EQ(banned.size(), 24u);
  for (int id : banned) EXPECT_NE(id, plain[0]);
  int unused = 0;
  while (std::find(plain.begin(), plain.end(), unused) != plain.end() || shared().tok->is_eog(unused)) ++unused;
  for (int id : ids_of({{"logit_bias", {{std::to_string(unused), 100}}}})) EXPECT_EQ(id, unused);

  // Strong penalties over the whole context: no token of the prompt or of the answer comes back.
  auto [tst, tj] = srv.post("/tokenize", Json{{"content", prompt}, {"add_special", true}}.dump());
  ASSERT_EQ(tst, 200);
  std::set<int> seen;
  for (const Json& t : tj["tokens"]) seen.insert(t.get<int>());
  const Json strong = {{"repeat_penalty", 100}, {"presence_penalty", 2}, {"repeat_last_n", -1}, {"penalize_nl", true}};
  const std::vector<int> penalised = ids_of(strong);
  ASSERT_EQ(penalised.size(), 24u);
  const std::set<int> prompt_ids = seen;
  for (int id : penalised) EXPECT_TRUE(seen.insert(id).second) << "token " << id << " came back";
  // Bias first, then penalties: a boosted token that is new is chosen once, then penalised away;
  // a boosted token of the prompt is penalised from the start (the prompt is in the window).
  auto boosted = [&](int id) {
    Json req = strong;
    req["logit_bias"] = Json::array({Json::array({id, 50})});
    return ids_of(req);
  };
  const std::vector<int> fresh = boosted(unused);
  ASSERT_EQ(fresh.size(), 24u);
  EXPECT_EQ(fresh[0], unused);
  EXPECT_NE(fresh[1], unused);
  const int from_prompt = *prompt_ids.rbegin();
  EXPECT_NE(boosted(from_prompt)[0], from_prompt);
  EXPECT_EQ(ids_of({{"logit_bias", Json::array({Json::array({from_prompt, 50})})}})[0], from_prompt);
  // Neutral values change nothing.
  EXPECT_EQ(ids_of({{"repeat_penalty", 1},
                    {"frequency_penalty", 0},
                    {"presence_penalty", 0},
                    {"typical_p", 1},
                    {"mirostat", 0},
                    {"response_format", {{"type", "text"}}}}),
            plain);

  auto error = [&](const Json& extra) {
    Json req = {{"prompt", prompt}, {"n_predict", 2}};
    req.update(extra);
    auto [st, j] = srv.post("/completion", req.dump());
    EXPECT_EQ(st, 400) << j.dump();
    return j["error"]["message"].get<std::string>();
  };
  EXPECT_NE(error({{"logit_bias", {{"100000", 1}}}}).find("logit_bias[\"100000\"]"), std::string::npos);
  EXPECT_NE(error({{"logit_bias", Json::array({Json::array({"dog", true})})}}).find("logit_bias[0][1]"),
            std::string::npos);
  Json all = Json::array();
  for (int i = 0; i < shared().tok->n_vocab(); ++i) all.push_back(Json::array({i, false}));
  EXPECT_NE(error({{"logit_bias", all}}).find("bans every token"), std::string::npos);
  EXPECT_NE(error({{"response_format", {{"type", "json_object"}}}}).find("grammar-constrained"), std::string::npos);
  EXPECT_NE(error({{"mirostat", 2}}).find("\"mirostat\""), std::string::npos);
  EXPECT_NE(error({{"repeat_penalty", 0}}).find("\"repeat_penalty\""), std::string::npos);
}

TEST(HttpServer, TokenizeDetokenizeRoundTrip) {
  TestServer srv(1);
  const std::string text = "Hello world, once upon a time there was a dog.";
  auto [st, j] = srv.post("/tokenize", Json{{"content", text}}.dump());
  ASSERT_EQ(st, 200);
  ASSERT_GT(j["tokens"].size(), 3u);
  EXPECT_EQ(j["tokens"], Json(shared().tok->encode(text, false, true)));
  auto [st2, j2] = srv.post("/detokenize", Json{{"tokens", j["tokens"]}}.dump());
  ASSERT_EQ(st2, 200);
  EXPECT_EQ(j2["content"], text);
  auto [st3, j3] = srv.post("/tokenize", Json{{"content", text}, {"with_pieces", true}}.dump());
  ASSERT_EQ(st3, 200);
  std::string joined;
  for (const Json& p : j3["tokens"]) joined += p["piece"].get<std::string>();
  EXPECT_EQ(joined.substr(joined.find_first_not_of(' ')), text);
  auto [st4, j4] = srv.post("/detokenize", Json{{"tokens", {1, 99999}}}.dump());
  EXPECT_EQ(st4, 400);
}

TEST(HttpServer, InfoEndpointsAndMetrics) {
  TestServer srv(2, 128);
  auto [hs, hb] = srv.get("/health");
  ASSERT_EQ(hs, 200);
  Json h = Json::parse(hb);
  EXPECT_EQ(h["status"], "ok");
  EXPECT_EQ(h["slots_idle"], 2);
  EXPECT_EQ(h["slots_processing"], 0);

  auto [ms, mb] = srv.get("/v1/models");
  ASSERT_EQ(ms, 200);
  Json m = Json::parse(mb);
  EXPECT_EQ(m["object"], "list");
  EXPECT_EQ(m["data"][0]["id"], "synth-moe");
  EXPECT_EQ(m["data"][0]["owned_by"], "llamacpp");
  EXPECT_EQ(srv.get("/models").first, 200);

  auto [ps, pb] = srv.get("/props");
  ASSERT_EQ(ps, 200);
  Json p = Json::parse(pb);
  EXPECT_EQ(p["total_slots"], 2);
  EXPECT_EQ(p["n_ctx"], 256);
  EXPECT_EQ(p["default_generation_settings"]["n_ctx"], 128);
  EXPECT_EQ(p["default_generation_settings"]["repeat_penalty"], 1.0);
  EXPECT_EQ(p["default_generation_settings"]["repeat_last_n"], 64);
  EXPECT_NE(p["chat_template"].get<std::string>().find("im_start"), std::string::npos);

  auto [ss, sb] = srv.get("/slots");
  ASSERT_EQ(ss, 200);
  Json sl = Json::parse(sb);
  ASSERT_EQ(sl.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(sl[i]["id"], i);
    EXPECT_EQ(sl[i]["is_processing"], false);
    EXPECT_EQ(sl[i]["n_ctx"], 128);
  }

  auto [s0, before] = srv.get("/metrics");
  ASSERT_EQ(s0, 200);
  EXPECT_NE(before.find("# TYPE llamacpp:prompt_tokens_total counter"), std::string::npos);
  const double pred0 = metric(before, "llamacpp:tokens_predicted_total");
  const double prompt0 = metric(before, "llamacpp:prompt_tokens_total");
  const double req0 = metric(before, "expertmesh:requests_total");
  EXPECT_EQ(metric(before, "expertmesh:slots_total"), 2);
  auto [st, j] =
      srv.post("/v1/completions", Json{{"prompt", "Once upon"}, {"max_tokens", 6}, {"temperature", 0}}.dump());
  ASSERT_EQ(st, 200);
  auto [s1, after] = srv.get("/metrics");
  EXPECT_EQ(metric(after, "llamacpp:tokens_predicted_total") - pred0, j["usage"]["completion_tokens"].get<double>());
  EXPECT_EQ(metric(after, "llamacpp:prompt_tokens_total") - prompt0, j["usage"]["prompt_tokens"].get<double>());
  EXPECT_EQ(metric(after, "expertmesh:requests_total") - req0, 1);
  EXPECT_GT(metric(after, "llamacpp:predicted_tokens_seconds"), 0);
  EXPECT_GT(metric(after, "expertmesh:http_requests_total"), metric(before, "expertmesh:http_requests_total"));
}

TEST(HttpServer, ApiKeyRequired) {
  HttpServerOptions ho;
  ho.api_keys = {"first-key", "s3cret-key"};
  TestServer srv(1, 128, ho);
  const std::string body = Json{{"prompt", "Once"}, {"max_tokens", 2}, {"temperature", 0}}.dump();
  auto [s1, j1] = srv.post("/v1/completions", body);
  EXPECT_EQ(s1, 401);
  EXPECT_EQ(j1["error"]["type"], "authentication_error");
  auto [s2, j2] = srv.post("/v1/completions", body, {{"Authorization", "Bearer s3cret-kez"}});
  EXPECT_EQ(s2, 401);
  auto [s3, j3] = srv.post("/v1/completions", body, {{"Authorization", "Bearer s3cret-key-longer"}});
  EXPECT_EQ(s3, 401);
  auto [s4, j4] = srv.post("/v1/completions", body, {{"Authorization", "Bearer s3cret-key"}});
  EXPECT_EQ(s4, 200) << j4.dump();
  auto [s5, j5] = srv.post("/tokenize", R"({"content":"a"})", {{"X-Api-Key", "first-key"}});
  EXPECT_EQ(s5, 200);
  EXPECT_EQ(srv.get("/metrics").first, 401);
  EXPECT_EQ(srv.get("/health").first, 200);  // open, as in the peer
  EXPECT_EQ(srv.get("/v1/models").first, 200);
}

TEST(HttpServer, ErrorsAreJsonNamingTheField) {
  HttpServerOptions ho;
  ho.limits.max_body_bytes = 4096;
  TestServer srv(1, 64, ho);
  auto is_error = [](int code, const Json& j) {
    return j.is_object() && j.contains("error") && j["error"]["code"] == code && j["error"]["message"].is_string();
  };
  auto [s1, j1] = srv.post("/v1/chat/completions", "{\"messages\": [");
  EXPECT_EQ(s1, 400);
  EXPECT_TRUE(is_error(400, j1)) << j1.dump();
  auto [s2, j2] =
      srv.post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}],"temperature":"hot"})");
  EXPECT_EQ(s2, 400);
  EXPECT_NE(j2["error"]["message"].get<std::string>().find("temperature"), std::string::npos) << j2.dump();
  auto [s3, j3] = srv.post("/v1/completions", R"({"prompt": 12})");
  EXPECT_EQ(s3, 400);
  EXPECT_NE(j3["error"]["message"].get<std::string>().find("prompt"), std::string::npos) << j3.dump();

  // Over the body limit: 413 JSON (httplib's own limit, before any parsing).
  const std::string big = Json{{"prompt", std::string(10000, 'a')}}.dump();
  auto [s4, j4] = srv.post("/v1/completions", big);
  EXPECT_EQ(s4, 413);
  EXPECT_TRUE(is_error(413, j4)) << j4.dump();

  // A prompt longer than the slot context (64): 400 naming the prompt.
  std::string words;
  for (int i = 0; i < 200; ++i) words += "dog ";
  auto [s5, j5] = srv.post("/v1/completions", Json{{"prompt", words}, {"max_tokens", 2}}.dump());
  EXPECT_EQ(s5, 400);
  EXPECT_NE(j5["error"]["message"].get<std::string>().find("\"prompt\""), std::string::npos) << j5.dump();
  auto [s6, j6] = srv.post("/v1/completions", Json{{"prompt", Json::array({1, 2, 100000})}}.dump());
  EXPECT_EQ(s6, 400);
  EXPECT_NE(j6["error"]["message"].get<std::string>().find("prompt[2]"), std::string::npos) << j6.dump();

  auto [s7, b7] = srv.get("/no/such/route");
  EXPECT_EQ(s7, 404);
  EXPECT_TRUE(is_error(404, Json::parse(b7, nullptr, false))) << b7;
  // The server still works after all that.
  auto [s8, j8] = srv.post("/v1/completions", Json{{"prompt", "Once"}, {"max_tokens", 2}}.dump());
  EXPECT_EQ(s8, 200) << j8.dump();
}

// Polls /slots until slot 0 is not processing (true) or 20 s pass (false).
bool slot0_goes_idle(const TestServer& srv) {
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20)) {
    auto [st, body] = srv.get("/slots");
    if (st != 200) return false;
    if (Json::parse(body)[0]["is_processing"] == false) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

TEST(HttpServer, ClientDisconnectFreesTheSlot) {
  TestServer srv(1, 2048);
  auto cli = srv.client();
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.set_header("Content-Type", "application/json");
  req.body =
      Json{{"prompt", "Once upon a time"}, {"max_tokens", 2000}, {"temperature", 1.0}, {"seed", 3}, {"stream", true}}
          .dump();
  int chunks = 0;
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };
  auto r = cli->send(req);
  EXPECT_FALSE(r) << "the client aborted the stream";
  cli.reset();  // the socket is closed

  // The slot goes idle well before 2000 tokens could have been generated, by cancellation.
  EXPECT_TRUE(slot0_goes_idle(srv));
  auto [ms, metrics] = srv.get("/metrics");
  EXPECT_EQ(metric(metrics, "expertmesh:requests_cancelled_total"), 1);
  EXPECT_LT(metric(metrics, "llamacpp:tokens_predicted_total"), 2000);

  // The one slot serves the next request.
  auto [st, j] = srv.post("/v1/completions", Json{{"prompt", "Once"}, {"max_tokens", 4}, {"temperature", 0}}.dump());
  EXPECT_EQ(st, 200) << j.dump();
  EXPECT_EQ(j["usage"]["completion_tokens"].get<int>() <= 4, true);
}

// Non-streaming requests that outlast plain_wait go out as chunked JSON with heartbeat spaces:
// the answer equals the plain one (JSON allows the leading whitespace), and a client that gives
// up is noticed at the next heartbeat, which frees its slot.
TEST(HttpServer, SlowNonStreamingAnswersAndDisconnects) {
  HttpServerOptions ho;
  ho.plain_wait = std::chrono::milliseconds(0);
  ho.heartbeat = std::chrono::milliseconds(2);
  TestServer srv(1, 2048, ho);
  const Json body{{"prompt", "Once upon a time"}, {"max_tokens", 48}, {"temperature", 0.8}, {"seed", 9}};
  auto [st, j] = srv.post("/v1/completions", body.dump());
  ASSERT_EQ(st, 200) << j.dump();
  EXPECT_EQ(j["usage"]["completion_tokens"], 48);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  TestServer quick(1, 2048);  // the same request answered in one plain body
  auto [st2, j2] = quick.post("/v1/completions", body.dump());
  ASSERT_EQ(st2, 200);
  EXPECT_EQ(j["choices"][0]["text"], j2["choices"][0]["text"]);

  // A client that leaves after the first heartbeat bytes: the slot frees long before 2000 tokens.
  {
    auto cli = srv.client();
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.set_header("Content-Type", "application/json");
    req.body = Json{{"prompt", "Once upon a time"}, {"max_tokens", 2000}, {"temperature", 1.0}, {"seed", 3}}.dump();
    int chunks = 0;
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 2; };
    EXPECT_FALSE(cli->send(req)) << "the client aborted the response";
  }
  EXPECT_TRUE(slot0_goes_idle(srv));
  auto [ms, metrics] = srv.get("/metrics");
  EXPECT_EQ(metric(metrics, "expertmesh:requests_cancelled_total"), 1) << metrics;
  EXPECT_LT(metric(metrics, "llamacpp:tokens_predicted_total"), 48 + 2000) << metrics;
}

TEST(HttpServerAuth, ConstantTimeCompareIsExact) {
  using coordinator::server::api_key_accepted;
  using coordinator::server::constant_time_equal;
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_TRUE(constant_time_equal("", ""));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "ab"));
  EXPECT_FALSE(constant_time_equal("ab", "abc"));
  EXPECT_FALSE(constant_time_equal(std::string_view("a\0", 2), "a"));
  std::mt19937 rng(5);
  for (int i = 0; i < 200; ++i) {
    std::string a(rng() % 8, 'x'), b(rng() % 8, 'x');
    for (char& c : a) c = static_cast<char>('a' + rng() % 3);
    for (char& c : b) c = static_cast<char>('a' + rng() % 3);
    EXPECT_EQ(constant_time_equal(a, b), a == b) << a << " " << b;
  }
  EXPECT_TRUE(api_key_accepted({}, "", ""));
  EXPECT_TRUE(api_key_accepted({"k1", "k2"}, "Bearer k2", ""));
  EXPECT_FALSE(api_key_accepted({"k1"}, "Bearer k2", ""));
  EXPECT_FALSE(api_key_accepted({"k1"}, "k1", ""));  // no "Bearer "
  EXPECT_TRUE(api_key_accepted({"k1"}, "", "k1"));
}

}  // namespace
}  // namespace expertmesh
