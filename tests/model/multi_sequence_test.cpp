// Engine::decode_batch over several KV-cache sequences (serve's slots): a row's logits depend
// only on its own sequence, so any interleaving of sequences in batches gives every row the
// logits of its sequence evaluated alone with decode() — bit for bit, which is what lets the
// server batch requests without changing answers. Also the batch contract: sequences out of
// range, gaps and non-consecutive rows are errors that leave the cache untouched, and a batch
// that starts a sequence lower rewinds it.
#include <gtest/gtest.h>

#include <random>

#include "model/model.h"
#include "tests/common/golden.h"
#include "tests/mpi/test_models.h"
#include "worker/engine.h"

namespace expertmesh {
namespace {

constexpr int kSeqs = 3;
constexpr int64_t kLen = 24;

struct Fixture {
  std::unique_ptr<Model> model;
  std::vector<std::vector<int32_t>> toks;  // kSeqs sequences of kLen tokens
};

Fixture make(const std::string& arch) {
  Fixture f;
  auto m = Model::load(testing::synth_model(testing::temp_dir("multiseq"), arch, "m.gguf"));
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  if (!m.ok()) return f;
  f.model = std::move(*m);
  std::mt19937 rng(77);
  f.toks.assign(kSeqs, std::vector<int32_t>(kLen));
  for (auto& s : f.toks)
    for (auto& t : s) t = int32_t(rng() % uint32_t(f.model->hparams().n_vocab));
  return f;
}

std::unique_ptr<worker::Engine> engine(const Model& m, int64_t n_seq) {
  worker::EngineOptions eo;
  eo.n_threads = 2;
  eo.n_ctx = kLen;
  eo.n_seq = n_seq;
  auto e = worker::Engine::create(m, worker::full_plan(m.hparams()), eo);
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return e.ok() ? std::move(*e) : nullptr;
}

// Every row's logits of one sequence alone: the first 10 tokens in one batch, then one by one.
std::vector<float> alone(worker::Engine& e, const std::vector<int32_t>& t) {
  const int64_t nv = e.n_vocab();
  std::vector<float> out(size_t(kLen * nv));
  e.clear();
  std::vector<int64_t> rows(10);
  for (int64_t i = 0; i < 10; ++i) rows[size_t(i)] = i;
  EXPECT_TRUE(e.decode(std::span(t.data(), 10), rows, out.data()).ok());
  for (int64_t i = 10; i < kLen; ++i) {
    const int64_t r0[1] = {0};
    Status s = e.decode(std::span(t.data() + i, 1), r0, out.data() + i * nv);
    EXPECT_TRUE(s.ok()) << s.to_string();
  }
  return out;
}

class MultiSequence : public ::testing::TestWithParam<const char*> {};

TEST_P(MultiSequence, InterleavedBatchesGiveEachSequenceItsAloneLogits) {
  Fixture f = make(GetParam());
  ASSERT_TRUE(f.model);
  auto one = engine(*f.model, 1);
  ASSERT_TRUE(one);
  std::vector<std::vector<float>> ref;
  for (const auto& t : f.toks) ref.push_back(alone(*one, t));
  const int64_t nv = one->n_vocab();

  // Sequence s advances by a different chunk size each step (1..7 rows), all sequences in one
  // batch, like the scheduler's mix of prompt chunks and decode rows; sequence 2 starts late.
  auto multi = engine(*f.model, kSeqs);
  ASSERT_TRUE(multi);
  std::vector<int64_t> done(kSeqs, 0);
  std::vector<std::vector<float>> got(kSeqs, std::vector<float>(size_t(kLen * nv), 0.0f));
  std::mt19937 rng(5);
  for (int step = 0; step < 200; ++step) {
    std::vector<int32_t> tok, pos, seq;
    std::vector<std::pair<int, int64_t>> who;  // (sequence, position) of each row
    for (int s = 0; s < kSeqs; ++s) {
      if (s == 2 && step < 3) continue;
      const int64_t n = std::min<int64_t>(1 + int64_t(rng() % 7), kLen - done[size_t(s)]);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t p = done[size_t(s)] + i;
        tok.push_back(f.toks[size_t(s)][size_t(p)]);
        pos.push_back(int32_t(p));
        seq.push_back(s);
        who.emplace_back(s, p);
      }
      done[size_t(s)] += n;
    }
    if (tok.empty()) break;
    std::vector<int64_t> rows(tok.size());
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = int64_t(i);
    std::vector<float> logits(rows.size() * size_t(nv));
    Status st = multi->decode_batch(tok, pos, seq, rows, logits.data());
    ASSERT_TRUE(st.ok()) << st.to_string();
    for (size_t i = 0; i < who.size(); ++i)
      std::copy_n(logits.data() + i * size_t(nv), nv, got[size_t(who[i].first)].data() + who[i].second * nv);
  }
  for (int s = 0; s < kSeqs; ++s) {
    ASSERT_EQ(done[size_t(s)], kLen);
    size_t diff = 0;
    for (size_t i = 0; i < ref[size_t(s)].size(); ++i) diff += got[size_t(s)][i] != ref[size_t(s)][i];
    EXPECT_EQ(diff, 0u) << "sequence " << s << ": batching with other sequences changed its logits";
  }
  // Not vacuous: different sequences give different logits.
  EXPECT_NE(ref[0][size_t(5 * nv)], ref[1][size_t(5 * nv)]);
}

TEST_P(MultiSequence, RewindAndInvalidBatches) {
  Fixture f = make(GetParam());
  ASSERT_TRUE(f.model);
  auto one = engine(*f.model, 1);
  ASSERT_TRUE(one);
  const std::vector<float> ref0 = alone(*one, f.toks[0]);
  const int64_t nv = one->n_vocab();
  auto e = engine(*f.model, 2);
  ASSERT_TRUE(e);
  const std::vector<int32_t>& t = f.toks[0];
  // Sequence 1 holds 8 tokens of sequence 1's text ...
  std::vector<int32_t> pos8(8), seq1(8, 1);
  for (int i = 0; i < 8; ++i) pos8[size_t(i)] = i;
  ASSERT_TRUE(e->decode_batch(std::span(f.toks[1].data(), 8), pos8, seq1, {}, nullptr).ok());
  // ... bad batches are refused and change nothing:
  const int32_t tk[2] = {t[0], t[1]};
  const int32_t bad_seq[2] = {2, 2}, gap_pos[2] = {9, 10}, skip_pos[2] = {0, 2}, ok_pos[2] = {0, 1};
  const int32_t s1[2] = {1, 1};
  EXPECT_EQ(e->decode_batch(tk, ok_pos, bad_seq, {}, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->decode_batch(tk, gap_pos, s1, {}, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->decode_batch(tk, skip_pos, s1, {}, nullptr).code(), StatusCode::kInvalidArgument);
  const int32_t far_pos[2] = {int32_t(kLen) - 1, int32_t(kLen)};
  EXPECT_FALSE(e->decode_batch(tk, far_pos, s1, {}, nullptr).ok());
  const int32_t bad_tok[2] = {-1, 3};
  EXPECT_EQ(e->decode_batch(bad_tok, ok_pos, s1, {}, nullptr).code(), StatusCode::kOutOfRange);
  // Rewind sequence 1 to position 0 with sequence 0's text: it must forget the old 8 tokens.
  std::vector<int64_t> rows(kLen);
  for (int64_t i = 0; i < kLen; ++i) rows[size_t(i)] = i;
  std::vector<int32_t> pos(kLen), seq(kLen, 1);
  for (int64_t i = 0; i < kLen; ++i) pos[size_t(i)] = int32_t(i);
  std::vector<float> got(size_t(kLen * nv));
  Status s = e->decode_batch(t, pos, seq, rows, got.data());
  ASSERT_TRUE(s.ok()) << s.to_string();
  // One batch of 24 vs 10 + single steps: still bit-identical (rows are independent).
  size_t diff = 0;
  for (size_t i = 0; i < got.size(); ++i) diff += got[i] != ref0[i];
  EXPECT_EQ(diff, 0u);
}

INSTANTIATE_TEST_SUITE_P(Archs, MultiSequence, ::testing::Values("qwen3moe", "llama"));

}  // namespace
}  // namespace expertmesh
