#include "worker/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <numeric>

#include "comm/topology.h"
#include "model/archs/arch.h"
#include "worker/heap_prime.h"
#include "worker/matmul.h"

namespace expertmesh::worker {

Result<std::unique_ptr<Engine>> Engine::create(const Model& model, RankPlan plan, const EngineOptions& opt) {
  const HParams& hp = model.hparams();
  if (opt.n_ctx <= 0) return Status::InvalidArgument(fmt::format("context size {} must be positive", opt.n_ctx));
  // The cache holds the union of the KV heads this rank uses in any of its layers.
  int64_t kvb = hp.n_head_kv, kve = 0;
  for (const LayerPlan& lp : plan.layers) {
    if (lp.layer < 0 || lp.layer >= hp.n_layer || lp.head_begin < 0 || lp.head_end > hp.n_head ||
        lp.head_begin > lp.head_end || lp.head_begin % hp.n_gqa() != 0 || lp.head_end % hp.n_gqa() != 0)
      return Status::InvalidArgument(fmt::format("plan: layer {} heads [{}, {}) do not cover whole GQA groups of {}",
                                                 lp.layer, lp.head_begin, lp.head_end, hp.n_gqa()));
    if (lp.ffn_begin < 0 || lp.ffn_begin > lp.ffn_end || (!hp.is_moe() && lp.ffn_end > hp.n_ff))
      return Status::InvalidArgument(
          fmt::format("plan: layer {} FFN rows [{}, {}) outside [0, {})", lp.layer, lp.ffn_begin, lp.ffn_end, hp.n_ff));
    if (lp.n_heads() == 0) continue;
    kvb = std::min(kvb, lp.kv_head_begin(hp.n_gqa()));
    kve = std::max(kve, lp.kv_head_end(hp.n_gqa()));
  }
  if (kve <= kvb) kvb = kve = 0;
  if (plan.vocab_begin < 0 || plan.vocab_begin > plan.vocab_end || plan.vocab_end > model.weights().output.ne[1])
    return Status::InvalidArgument(
        fmt::format("plan: vocabulary rows [{}, {}) outside the output head", plan.vocab_begin, plan.vocab_end));
  EM_ASSIGN_OR_RETURN(KvCache kv, KvCache::create(opt.type_k, opt.type_v, int64_t(plan.layers.size()), kve - kvb,
                                                  hp.head_dim, opt.n_ctx, opt.n_seq));
  std::unique_ptr<Engine> e(new Engine(model, std::move(plan), opt, std::move(kv)));
  e->kv_head0_ = kvb;
  e->seq_len_.assign(size_t(opt.n_seq), 0);
  // Weights: read on the engine's own threads, so the pages are first-touched (allocated) under
  // the memory policy those threads inherited (the rank's NUMA node when bound).
  e->w_ = &model.weights();
  if (opt.weights != WeightSource::kMap) {
    std::vector<TensorRows> needs = rows_needed(hp, model.weights(), e->plan_);
    if (opt.weights == WeightSource::kRead || !needs_whole_model(model.weights(), needs)) {
      EM_ASSIGN_OR_RETURN(e->store_, WeightStore::load(model, needs, e->pool_));
      e->w_ = &e->store_->weights();
    }
  }
  if (e->store_ == nullptr) {
    // Computing from the mapping of every shard's data section: its page tables are made
    // once here, in 64 MiB pieces over the pool, not fault by fault in the first forward.
    const gguf::File& f = model.file();
    constexpr size_t kPiece = size_t{64} << 20;
    for (int i = 0; i < f.n_splits(); ++i) {
      const size_t off = size_t(f.data_offset(i)), size = f.shard_size(i);
      if (off >= size) continue;
      const uint8_t* base = f.shard_data(i) + off;
      const size_t bytes = size - off;
      e->pool_.run(int64_t((bytes + kPiece - 1) / kPiece), [&](int64_t j, int) {
        const size_t b = size_t(j) * kPiece;
        populate_mapping(base + b, std::min(kPiece, bytes - b));
      });
    }
  }
  e->prime_for(opt.n_batch_max);
  return e;
}

namespace {

// One core per pool thread when this rank may use at least that many cores (the launcher's
// binding decides which); none when pinning is off or the rank is oversubscribed.
std::vector<std::vector<int>> thread_pins(const EngineOptions& opt) {
  if (!opt.pin_threads || opt.n_threads < 2) return {};
  auto cores = topology::allowed_cores();
  if (!cores.ok() || int(cores->size()) < opt.n_threads) return {};
  return std::move(*cores);
}

}  // namespace

Engine::Engine(const Model& m, RankPlan plan, const EngineOptions& opt, KvCache kv)
    : model_(m),
      plan_(std::move(plan)),
      opt_(opt),
      k_(cpu::select_kernels()),
      pool_(opt.n_threads, thread_pins(opt)),
      kv_(std::move(kv)) {
  if (opt.bf16_activations) k_.gemm_bf16_bf16act = cpu::bf16_activation_kernel(k_.isa);
}

// The first batch of a new size class makes its working memory resident (heap_prime.h): on a VM
// the page faults of fresh buffers cost more than the compute of a 512-token prompt. Batches
// below 32 tokens reuse what earlier ones left.
void Engine::prime_for(int64_t n_tok) {
  if (n_tok < 32) return;
  const std::thread::id me = std::this_thread::get_id();
  if (me == primed_thread_ && n_tok <= primed_tok_) return;
  primed_tok_ = int64_t(std::bit_ceil(uint64_t(n_tok)));
  primed_thread_ = me;
  prime_heap(forward_bytes_per_token(model_.hparams()) * size_t(primed_tok_));
}

void Engine::set_cluster(comm::Cluster* c) {
  cluster_ = c;
  if (!distributed()) return;
  if (c->stage_size() > 1) {
    reduce_ = [c](float* data, int64_t n) { return c->stage_sum(data, n); };
    gather_slots_ = [this](float* y, const std::vector<int32_t>& owner, int64_t width) {
      return gather_slots(y, owner, width);
    };
    gather_cols_ = [this](const float* local, int64_t n_tok, const std::vector<Span>& spans, int64_t width,
                          float* full) { return gather_cols(local, n_tok, spans, width, full); };
  }
}

Status Engine::gather_slots(float* y, const std::vector<int32_t>& owner, int64_t width) {
  const int n = cluster_->stage_size(), me = cluster_->stage_rank();
  std::vector<int64_t> counts(size_t(n), 0);
  for (int32_t o : owner) counts[size_t(o)] += width;
  Buf mine;
  mine.reserve(size_t(counts[size_t(me)]));
  for (size_t i = 0; i < owner.size(); ++i)
    if (owner[i] == me) mine.insert(mine.end(), y + int64_t(i) * width, y + int64_t(i + 1) * width);
  Buf all(size_t(std::accumulate(counts.begin(), counts.end(), int64_t{0})));
  EM_RETURN_IF_ERROR(cluster_->stage_allgatherv(mine.data(), all.data(), counts));
  // Rank r's block holds its slots in slot order.
  std::vector<int64_t> at(size_t(n), 0);
  for (int r = 1; r < n; ++r) at[size_t(r)] = at[size_t(r - 1)] + counts[size_t(r - 1)];
  for (size_t i = 0; i < owner.size(); ++i) {
    int64_t& a = at[size_t(owner[i])];
    std::copy_n(all.data() + a, width, y + int64_t(i) * width);
    a += width;
  }
  return Status::Ok();
}

Status Engine::gather_cols(const float* local, int64_t n_tok, const std::vector<Span>& spans, int64_t width,
                           float* full) {
  if (int(spans.size()) != cluster_->stage_size()) return Status::Internal("gather_cols: one span per stage rank");
  std::vector<int64_t> counts(spans.size());
  for (size_t i = 0; i < spans.size(); ++i) counts[i] = n_tok * spans[i].size();
  Buf all(size_t(std::accumulate(counts.begin(), counts.end(), int64_t{0})));
  EM_RETURN_IF_ERROR(cluster_->stage_allgatherv(local, all.data(), counts));
  int64_t at = 0;
  for (size_t i = 0; i < spans.size(); ++i) {
    const int64_t w = spans[i].size();
    for (int64_t t = 0; t < n_tok; ++t) std::copy_n(all.data() + at + t * w, w, full + t * width + spans[i].begin);
    at += counts[i];
  }
  return Status::Ok();
}

Status Engine::embed(std::span<const int32_t> tokens, float* x) {
  const Weight& te = weights().token_embd;
  const int64_t n_embd = model_.hparams().n_embd;
  for (size_t t = 0; t < tokens.size(); ++t) EM_RETURN_IF_ERROR(dequantize_row(te, tokens[t], x + int64_t(t) * n_embd));
  return Status::Ok();
}

Status Engine::hidden_in(std::span<const int32_t> tokens, float* x) {
  if (plan_.embed) return embed(tokens, x);
  const int64_t n = int64_t(tokens.size()) * model_.hparams().n_embd;
  if (cluster_->stage_rank() == 0) EM_RETURN_IF_ERROR(cluster_->recv(x, n, plan_.prev_stage_root));
  return cluster_->stage_bcast(x, n);
}

Status Engine::output(const Buf& x, int64_t n_tok, std::span<const int64_t> out_rows, float* logits) {
  const HParams& hp = model_.hparams();
  const ModelWeights& w = weights();
  const int64_t n_out = int64_t(out_rows.size()), n_vocab = w.output.ne[1];
  const int64_t v0 = plan_.vocab_begin, nv = plan_.vocab_end - plan_.vocab_begin;
  const bool whole = !distributed();  // one rank: every row straight into `logits`
  Buf mine;
  if (plan_.output && nv > 0) {
    Buf sel(size_t(n_out * hp.n_embd));
    for (int64_t i = 0; i < n_out; ++i)
      std::copy_n(x.data() + out_rows[size_t(i)] * hp.n_embd, hp.n_embd, sel.data() + i * hp.n_embd);
    StepContext c{hp, k_, pool_, kv_};
    c.n_tok = n_out;
    c.dump = &dump_;
    c.layer = -1;
    Buf normed = rms_norm(c, sel.data(), w.output_norm);
    c.trace("result_norm", normed, hp.n_embd);
    c.observe = &observe_;
    EM_RETURN_IF_ERROR(c.observe_input(w.output, -1, normed.data(), n_out, hp.n_embd));
    float* dst = logits;
    if (!whole) {
      mine.resize(size_t(n_out * nv));
      dst = mine.data();
    }
    EM_RETURN_IF_ERROR(matmul(w.output, v0, nv, normed.data(), hp.n_embd, n_out, dst, nv, pool_, k_));
    if (dump_ && whole) dump_("result_output", -1, logits, n_out, n_vocab);
  }
  if (whole) return Status::Ok();
  // Rank 0 gathers each share (n_out × its rows) and interleaves them into n_out × n_vocab.
  std::vector<int64_t> counts(size_t(cluster_->world()), 0);
  for (const VocabShare& s : plan_.vocab_shares) counts[size_t(s.rank)] = n_out * (s.end - s.begin);
  Buf all(cluster_->rank() == 0 ? size_t(n_out * n_vocab) : 0);
  EM_RETURN_IF_ERROR(cluster_->gather_to_root(mine.data(), all.data(), counts));
  if (cluster_->rank() != 0) return Status::Ok();
  int64_t at = 0;
  for (const VocabShare& s : plan_.vocab_shares) {
    const int64_t w_s = s.end - s.begin;
    for (int64_t i = 0; i < n_out; ++i) std::copy_n(all.data() + at + i * w_s, w_s, logits + i * n_vocab + s.begin);
    at += n_out * w_s;
  }
  return Status::Ok();
}

Status Engine::step(std::span<const int32_t> tokens, std::span<const int32_t> pos, std::span<const int32_t> seq,
                    std::span<const int64_t> out_rows, float* logits) {
  const HParams& hp = model_.hparams();
  const int64_t n_tok = int64_t(tokens.size());
  // Checked identically on every rank (same batch), so bad input fails everywhere at once.
  const int64_t n_vocab_in = weights().token_embd.ne[1];
  if (n_tok == 0 || pos.size() != tokens.size() || seq.size() != tokens.size())
    return Status::InvalidArgument("decode: a batch needs one position and one sequence per token");
  for (int32_t t : tokens)
    if (t < 0 || t >= n_vocab_in)
      return Status::OutOfRange(fmt::format("token id {} outside the vocabulary of {}", t, n_vocab_in));
  for (size_t i = 0; i < out_rows.size(); ++i)
    if (out_rows[i] < 0 || out_rows[i] >= n_tok || (i > 0 && out_rows[i] <= out_rows[i - 1]))
      return Status::Internal("decode: output rows must be ascending row indices of the batch");
  prime_for(n_tok);
  // Each sequence's rows: consecutive positions starting at most at its length (a rewind when
  // lower). Checked before anything is stored, so a bad batch leaves the cache as it was.
  std::vector<int64_t> len(seq_len_), last(seq_len_.size(), -1);
  for (int64_t i = 0; i < n_tok; ++i) {
    const int32_t s = seq[size_t(i)], p = pos[size_t(i)];
    if (s < 0 || s >= n_seq())
      return Status::InvalidArgument(fmt::format("decode: sequence {} outside the {} the cache holds", s, n_seq()));
    if (p < 0 || p >= kv_.n_ctx())
      return Status::OutOfRange(
          fmt::format("context full: position {} of sequence {} exceeds n_ctx {}", p, s, kv_.n_ctx()));
    const bool first = last[size_t(s)] < 0;
    if ((first && p > len[size_t(s)]) || (!first && p != last[size_t(s)] + 1))
      return Status::InvalidArgument(
          fmt::format("decode: sequence {} row at position {} does not continue it (length {})", s, p, len[size_t(s)]));
    last[size_t(s)] = p;
    len[size_t(s)] = p + 1;
  }
  seq_len_ = std::move(len);

  Buf x(size_t(n_tok * hp.n_embd));
  EM_RETURN_IF_ERROR(hidden_in(tokens, x.data()));
  StepContext c{hp, k_, pool_, kv_};
  c.pos = pos.data();
  c.seq = seq.data();
  c.n_tok = n_tok;
  c.kv_head0 = kv_head0_;
  c.reduce = &reduce_;
  c.dump = &dump_;
  c.observe = &observe_;
  c.gather_slots = &gather_slots_;
  c.gather_cols = &gather_cols_;
  const ArchSpec& arch = model_.arch();
  for (size_t i = 0; i < plan_.layers.size(); ++i) {
    const LayerPlan& lp = plan_.layers[i];
    c.kv_layer = int64_t(i);
    c.layer = lp.layer;
    if (dump_) dump_("inp", lp.layer, x.data(), n_tok, hp.n_embd);
    EM_RETURN_IF_ERROR(arch.layer(c, weights().layers[size_t(lp.layer)], lp, x.data()));
  }
  if (distributed() && plan_.next_stage_root >= 0 && cluster_->stage_rank() == 0)
    EM_RETURN_IF_ERROR(cluster_->send(x.data(), n_tok * hp.n_embd, plan_.next_stage_root));
  if (out_rows.empty()) return Status::Ok();
  return output(x, n_tok, out_rows, logits);
}

Status Engine::decode(std::span<const int32_t> tokens, std::span<const int64_t> out_rows, float* logits) {
  if (tokens.empty()) return Status::InvalidArgument("decode: empty batch");
  const int64_t pos0 = seq_len_[0];
  if (pos0 + int64_t(tokens.size()) > kv_.n_ctx())
    return Status::OutOfRange(
        fmt::format("context full: {} + {} tokens exceed n_ctx {}", pos0, tokens.size(), kv_.n_ctx()));
  std::vector<int32_t> pos(tokens.size()), seq(tokens.size(), 0);
  std::iota(pos.begin(), pos.end(), int32_t(pos0));
  return decode_batch(tokens, pos, seq, out_rows, logits);
}

Status Engine::decode_batch(std::span<const int32_t> tokens, std::span<const int32_t> pos, std::span<const int32_t> seq,
                            std::span<const int64_t> out_rows, float* logits) {
  if (tokens.empty()) return Status::InvalidArgument("decode: empty batch");
  if (distributed()) {
    if (cluster_->rank() != 0) return Status::Internal("decode: only rank 0 drives a distributed engine");
    if (pos.size() != tokens.size() || seq.size() != tokens.size())
      return Status::InvalidArgument("decode: a batch needs one position and one sequence per token");
    proto::TokenBatch b;
    for (size_t i = 0; i < tokens.size(); ++i) {
      b.add_token(tokens[i]);
      b.add_pos(pos[i]);
      b.add_seq_id(seq[i]);
      b.add_want_logits(std::binary_search(out_rows.begin(), out_rows.end(), int64_t(i)));
    }
    EM_RETURN_IF_ERROR(cluster_->bcast_batch(&b));
  }
  return step(tokens, pos, seq, out_rows, logits);
}

Status Engine::follow() {
  if (!distributed()) return Status::Ok();
  for (;;) {
    proto::TokenBatch b;
    EM_RETURN_IF_ERROR(cluster_->bcast_batch(&b));
    if (b.shutdown()) return Status::Ok();
    if (b.token_size() == 0 || b.pos_size() != b.token_size() || b.want_logits_size() != b.token_size() ||
        b.seq_id_size() != b.token_size())
      return Status::Corruption("TokenBatch from rank 0: token, pos, seq_id and want_logits differ in length");
    std::vector<int64_t> rows;
    for (int i = 0; i < b.want_logits_size(); ++i)
      if (b.want_logits(i)) rows.push_back(i);
    const auto span_of = [](const auto& f) { return std::span<const int32_t>(f.data(), size_t(f.size())); };
    EM_RETURN_IF_ERROR(step(span_of(b.token()), span_of(b.pos()), span_of(b.seq_id()), rows, nullptr));
  }
}

Status Engine::finish() {
  if (!distributed() || cluster_->rank() != 0) return Status::Ok();
  proto::TokenBatch b;
  b.set_shutdown(true);
  return cluster_->bcast_batch(&b);
}

}  // namespace expertmesh::worker
