// Continuous batching (coordinator/server/scheduler.h) on a real engine over a small synthetic
// MoE model: requests give the same tokens alone and batched with others (prompts chunked among
// decode rows, slots shared through a queue), with and without prompt-cache reuse; limits,
// cancellation (a client gone frees its slot), bad requests, a failing decode and shutdown.
// Also TextStream: stop strings and UTF-8 are never split across what is sent.
#include "coordinator/server/scheduler.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "coordinator/server/text_stream.h"
#include "model/model.h"
#include "tests/common/golden.h"
#include "tests/mpi/test_models.h"
#include "worker/engine.h"

namespace expertmesh::coordinator::server {
namespace {

// What one request received.
struct Outcome {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::string text;
  std::vector<int32_t> ids;  // from the logprobs entries (n_probs > 0)
  int n_token_events = 0;
  GenerationEvent last;
  int stop_after = -1;  // the sink reports the client gone after this many token events

  EventSink sink() {
    return [this](const GenerationEvent& e) {
      std::lock_guard<std::mutex> lk(mu);
      if (e.kind == GenerationEvent::Kind::kToken) {
        text += e.text;
        for (const auto& p : e.probs) ids.push_back(p.id);
        ++n_token_events;
        if (stop_after >= 0 && n_token_events >= stop_after) {
          done = true;
          cv.notify_all();
          return false;
        }
        return true;
      }
      last = e;
      done = true;
      cv.notify_all();
      return true;
    };
  }
  void wait() {
    std::unique_lock<std::mutex> lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(60), [&] { return done; })) << "request never finished";
  }
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = Model::load(testing::synth_model(testing::temp_dir("sched"), "qwen3moe", "m.gguf"));
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    model_ = std::move(*m);
    auto t = Tokenizer::from_gguf(model_->file());
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    tok_ = std::move(*t);
  }

  // A scheduler on a fresh engine with n_slots sequences; run() on its own thread.
  void start(SchedulerOptions o, DecodeFn wrap = nullptr) {
    worker::EngineOptions eo;
    eo.n_threads = 2;
    eo.n_ctx = o.n_ctx_slot;
    eo.n_seq = o.n_slots;
    auto e = worker::Engine::create(*model_, worker::full_plan(model_->hparams()), eo);
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    engine_ = std::move(*e);
    DecodeFn d = [this](auto tokens, auto pos, auto seq, auto rows, float* logits) {
      return engine_->decode_batch(tokens, pos, seq, rows, logits);
    };
    if (wrap) {
      inner_ = d;
      d = wrap;
    }
    sched_ = std::make_unique<Scheduler>(d, *tok_, engine_->n_vocab(), o);
    runner_ = std::thread([this] { run_status_ = sched_->run(); });
  }
  void stop() {
    if (!sched_) return;
    sched_->shutdown();
    if (runner_.joinable()) runner_.join();
  }
  void TearDown() override { stop(); }

  GenerationRequest request(const std::string& prompt, uint32_t seed, int32_t n_predict = 12) {
    GenerationRequest r;
    r.prompt = tok_->encode(prompt, true, false);
    r.n_predict = n_predict;
    r.sampling.temp = 0.9f;
    r.sampling.seed = seed;
    r.n_probs = 2;
    r.ignore_eos = true;  // a synthetic model may emit EOS early; keep lengths fixed
    return r;
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<worker::Engine> engine_;
  std::unique_ptr<Scheduler> sched_;
  DecodeFn inner_;
  std::thread runner_;
  Status run_status_;
};

const char* kPrompts[] = {
    "Once upon a time there was a little fox who lived in the forest near the river",
    "The quick brown fox jumps over the lazy dog",
    "In the beginning",
    "Lily and Ben went to the park to play with the big red ball and they laughed all day long",
};

TEST_F(SchedulerTest, BatchedRequestsGiveTheirAloneTokens) {
  SchedulerOptions o;
  o.n_slots = 3;
  o.n_ctx_slot = 96;
  o.n_batch = 7;  // prompts are chunked and share steps with decode rows
  o.cache_prompt = false;
  start(o);
  // Alone, one at a time.
  std::vector<std::vector<int32_t>> ref_ids;
  std::vector<std::string> ref_text;
  for (int i = 0; i < 4; ++i) {
    Outcome out;
    ASSERT_TRUE(sched_->submit(request(kPrompts[i], 100 + i), out.sink()).ok());
    out.wait();
    ASSERT_EQ(out.last.kind, GenerationEvent::Kind::kDone) << out.last.error.to_string();
    EXPECT_EQ(out.last.n_predicted, 12);
    EXPECT_TRUE(out.last.stopped_limit);
    EXPECT_EQ(out.last.finish, http::FinishReason::kLength);
    ASSERT_EQ(out.ids.size(), 12u);
    ref_ids.push_back(out.ids);
    ref_text.push_back(out.text);
  }
  EXPECT_NE(ref_ids[0], ref_ids[1]);
  // 8 at once over 3 slots: queued, chunked, interleaved.
  std::vector<std::unique_ptr<Outcome>> outs;
  for (int k = 0; k < 8; ++k) {
    outs.push_back(std::make_unique<Outcome>());
    ASSERT_TRUE(sched_->submit(request(kPrompts[k % 4], 100 + k % 4), outs.back()->sink()).ok());
  }
  for (int k = 0; k < 8; ++k) {
    outs[size_t(k)]->wait();
    EXPECT_EQ(outs[size_t(k)]->ids, ref_ids[size_t(k % 4)]) << "request " << k;
    EXPECT_EQ(outs[size_t(k)]->text, ref_text[size_t(k % 4)]) << "request " << k;
  }
  const SchedulerStats st = sched_->stats();
  EXPECT_EQ(st.requests_total, 12u);
  EXPECT_EQ(st.requests_failed, 0u);
  EXPECT_EQ(st.predicted_tokens_total, 12u * 12u);
  for (const SlotInfo& s : st.slots) EXPECT_FALSE(s.busy);
}

TEST_F(SchedulerTest, PromptCacheReuseKeepsTheAnswer) {
  SchedulerOptions o;
  o.n_slots = 1;
  o.n_ctx_slot = 96;
  start(o);
  Outcome a, b, c;
  ASSERT_TRUE(sched_->submit(request(kPrompts[0], 7), a.sink()).ok());
  a.wait();
  EXPECT_EQ(a.last.n_cached, 0);
  ASSERT_TRUE(sched_->submit(request(kPrompts[0], 7), b.sink()).ok());
  b.wait();
  // The whole prompt but its last token comes from the cache, and the answer is the same.
  EXPECT_EQ(b.last.n_cached, b.last.n_prompt - 1);
  EXPECT_EQ(b.ids, a.ids);
  // A different continuation of a shared prefix reuses the prefix only.
  GenerationRequest r = request(std::string(kPrompts[0]) + " and the moon", 7);
  ASSERT_TRUE(sched_->submit(r, c.sink()).ok());
  c.wait();
  EXPECT_GT(c.last.n_cached, 0);
  EXPECT_LT(c.last.n_cached, c.last.n_prompt - 1);
  // Published before the client hears "done": the slot is idle and holds what it evaluated.
  const SchedulerStats st = sched_->stats();
  EXPECT_FALSE(st.slots[0].busy);
  EXPECT_EQ(st.slots[0].n_cached_tokens, c.last.n_prompt + 11);
  EXPECT_EQ(st.cached_tokens_total, uint64_t(b.last.n_cached + c.last.n_cached));
}

TEST_F(SchedulerTest, ClientGoneFreesTheSlot) {
  SchedulerOptions o;
  o.n_slots = 1;
  o.n_ctx_slot = 200;
  start(o);
  Outcome gone;
  gone.stop_after = 2;
  ASSERT_TRUE(sched_->submit(request(kPrompts[1], 1, 150), gone.sink()).ok());
  gone.wait();
  // With one slot, the next request only runs once the abandoned one released it.
  Outcome next;
  ASSERT_TRUE(sched_->submit(request(kPrompts[2], 2, 4), next.sink()).ok());
  next.wait();
  EXPECT_EQ(next.last.kind, GenerationEvent::Kind::kDone);
  const SchedulerStats st = sched_->stats();
  EXPECT_EQ(st.requests_cancelled, 1u);
  EXPECT_LT(st.predicted_tokens_total, 20u) << "the abandoned request kept generating";
  // cancel() of a queued request: it never runs.
  Outcome slow, queued;
  ASSERT_TRUE(sched_->submit(request(kPrompts[3], 3, 60), slow.sink()).ok());
  auto id = sched_->submit(request(kPrompts[3], 4, 60), queued.sink());
  ASSERT_TRUE(id.ok());
  sched_->cancel(*id);
  slow.wait();
  EXPECT_EQ(queued.n_token_events, 0);
  EXPECT_EQ(sched_->stats().requests_cancelled, 2u);
}

TEST_F(SchedulerTest, BadRequestsAndLimits) {
  SchedulerOptions o;
  o.n_slots = 2;
  o.n_ctx_slot = 16;
  o.max_queued = 1;
  DecodeFn slow = [this](auto tokens, auto pos, auto seq, auto rows, float* logits) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return inner_(tokens, pos, seq, rows, logits);
  };
  start(o, slow);
  GenerationRequest empty;
  EXPECT_EQ(sched_->submit(empty, nullptr).status().code(), StatusCode::kInvalidArgument);
  GenerationRequest big = request(kPrompts[3], 1);
  big.prompt.resize(17, big.prompt[1]);
  auto r = sched_->submit(big, nullptr);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("context"), std::string::npos) << r.status().message();
  GenerationRequest bad_slot = request(kPrompts[2], 1);
  bad_slot.id_slot = 2;
  EXPECT_EQ(sched_->submit(bad_slot, nullptr).status().code(), StatusCode::kInvalidArgument);
  GenerationRequest bad_tok = request(kPrompts[2], 1);
  bad_tok.prompt[0] = -5;
  EXPECT_EQ(sched_->submit(bad_tok, nullptr).status().code(), StatusCode::kInvalidArgument);
  // A prompt that fills the slot: one token from the prompt's logits, then the context ends.
  Outcome full;
  GenerationRequest fit = request(kPrompts[0], 1, -1);
  fit.prompt.resize(16);
  ASSERT_TRUE(sched_->submit(fit, full.sink()).ok());
  full.wait();
  EXPECT_EQ(full.last.finish, http::FinishReason::kLength);
  EXPECT_EQ(full.last.n_predicted, 1);
  // Queue limit: two slots busy, one waiting, the next refused.
  std::vector<std::unique_ptr<Outcome>> outs;
  int refused = 0;
  for (int i = 0; i < 6; ++i) {
    outs.push_back(std::make_unique<Outcome>());
    auto s = sched_->submit(request(kPrompts[2], uint32_t(i), 8), outs.back()->sink());
    if (!s.ok()) {
      EXPECT_EQ(s.status().code(), StatusCode::kUnsupported);
      outs.pop_back();
      ++refused;
    }
  }
  EXPECT_GE(refused, 1);
  for (auto& x : outs) x->wait();
}

TEST_F(SchedulerTest, DecodeFailureReachesEveryRequestAndStopsRun) {
  SchedulerOptions o;
  o.n_slots = 2;
  o.n_ctx_slot = 64;
  int calls = 0;
  DecodeFn failing = [&](auto tokens, auto pos, auto seq, auto rows, float* logits) {
    if (++calls == 4) return Status::Aborted("rank 1 failed: out of memory");
    return inner_(tokens, pos, seq, rows, logits);
  };
  start(o, failing);
  std::vector<std::unique_ptr<Outcome>> outs;
  for (int i = 0; i < 3; ++i) {
    outs.push_back(std::make_unique<Outcome>());
    ASSERT_TRUE(sched_->submit(request(kPrompts[i], 1, 30), outs.back()->sink()).ok());
  }
  for (auto& x : outs) {
    x->wait();
    EXPECT_EQ(x->last.kind, GenerationEvent::Kind::kError);
    EXPECT_NE(x->last.error.message().find("rank 1 failed"), std::string::npos);
  }
  runner_.join();
  EXPECT_EQ(run_status_.code(), StatusCode::kAborted);
  sched_.reset();
}

TEST_F(SchedulerTest, ShutdownEndsPendingRequests) {
  SchedulerOptions o;
  o.n_slots = 1;
  o.n_ctx_slot = 400;
  start(o);
  Outcome a, b;
  ASSERT_TRUE(sched_->submit(request(kPrompts[0], 1, 300), a.sink()).ok());
  ASSERT_TRUE(sched_->submit(request(kPrompts[1], 1, 300), b.sink()).ok());
  stop();
  a.wait();
  b.wait();
  EXPECT_EQ(a.last.kind, GenerationEvent::Kind::kError);
  EXPECT_EQ(b.last.error.code(), StatusCode::kAborted);
  EXPECT_TRUE(run_status_.ok());
  EXPECT_EQ(sched_->submit(request(kPrompts[0], 1), nullptr).status().code(), StatusCode::kAborted);
}

// --- TextStream ---

TEST(TextStream, StopStringsAreNeverSentAcrossPieceBoundaries) {
  std::mt19937 rng(3);
  const std::string alphabet = "ab<|>";
  for (int trial = 0; trial < 2000; ++trial) {
    std::string text;
    for (int i = 0; i < 30; ++i) text += alphabet[rng() % alphabet.size()];
    const std::vector<std::string> stop = {"<|a", "bb>", "|||"};
    TextStream ts(stop);
    std::string sent, word;
    bool hit = false;
    for (size_t i = 0; i < text.size() && !hit;) {
      const size_t n = 1 + rng() % 4;
      hit = ts.push(text.substr(i, n), &word);
      i += n;
      if (!hit) {
        sent += ts.take();
        // What was sent must not end in a prefix of a stop string that the rest could complete.
        for (const auto& s : stop) EXPECT_EQ(sent.find(s), std::string::npos);
      }
    }
    sent += ts.flush();
    size_t first = std::string::npos;
    std::string first_word;
    for (const auto& s : stop) {
      if (text.find(s) < first) {
        first = text.find(s);
        first_word = s;
      }
    }
    EXPECT_EQ(hit, first != std::string::npos);
    EXPECT_EQ(sent, text.substr(0, first)) << text;
    if (hit) {
      EXPECT_EQ(word, first_word);
    }
  }
}

TEST(TextStream, HoldsBackAnUnfinishedUtf8Character) {
  TextStream ts(std::vector<std::string>{});
  std::string w;
  const std::string euro = "\xE2\x82\xAC";  // U+20AC, 3 bytes
  EXPECT_FALSE(ts.push("a" + euro.substr(0, 1), &w));
  EXPECT_EQ(ts.take(), "a");
  EXPECT_FALSE(ts.push(euro.substr(1, 1), &w));
  EXPECT_EQ(ts.take(), "");
  EXPECT_FALSE(ts.push(euro.substr(2) + "b", &w));
  EXPECT_EQ(ts.take(), euro + "b");
  EXPECT_FALSE(ts.push("\xF0\x9F", &w));  // half an emoji, then the request ends
  EXPECT_EQ(ts.take(), "");
  EXPECT_EQ(ts.flush(), "\xF0\x9F");
}

}  // namespace
}  // namespace expertmesh::coordinator::server
