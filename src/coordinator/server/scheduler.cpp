#include "coordinator/server/scheduler.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <unordered_set>

#include "coordinator/server/text_stream.h"

namespace expertmesh::coordinator::server {

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

struct Pending {
  uint64_t id = 0;
  GenerationRequest req;
  EventSink sink;
};

// A slot: one engine sequence (seq id = slot id) and the request it serves.
struct Slot {
  int32_t id = 0;
  bool busy = false;
  Pending p;
  std::vector<int32_t> cache;  // tokens whose K/V are valid at positions [0, cache.size())
  int64_t n_prompt_done = 0;   // prompt tokens evaluated (cached ones included)
  int64_t n_cached = 0;
  int64_t n_predicted = 0;
  int32_t pending_token = -1;  // sampled, not yet evaluated
  std::unique_ptr<Sampler> sampler;
  TextStream text;
  std::vector<http::TokenLogprob> probs;
  Clock::time_point t_start, t_first;

  bool prompting() const { return busy && n_prompt_done < int64_t(p.req.prompt.size()); }
};

}  // namespace

struct Scheduler::Impl {
  DecodeFn decode;
  const Tokenizer& tok;
  int64_t n_vocab;
  SchedulerOptions opt;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<Pending> queue;
  std::unordered_set<uint64_t> cancelled;  // ids cancel()ed while running
  std::vector<Slot> slots;
  std::vector<SlotInfo> info;  // published view of `slots` (under mu)
  uint64_t next_id = 1;
  bool stopping = false;
  SchedulerStats counters;

  Impl(DecodeFn d, const Tokenizer& t, int64_t nv, SchedulerOptions o)
      : decode(std::move(d)), tok(t), n_vocab(nv), opt(o) {
    slots.resize(size_t(std::max(o.n_slots, 1)));
    info.resize(slots.size());
    for (size_t i = 0; i < slots.size(); ++i) slots[i].id = info[i].id = int32_t(i);
  }

  // --- run-thread helpers (no lock held unless noted) ---

  // A queued request given a free slot, with the prefix it shares with the slot's cache.
  struct Assignment {
    Pending p;
    int32_t slot = 0;
    size_t lcp = 0;
  };

  // Assigns queued requests to free slots: a request naming a slot waits for it; others take the
  // free slot whose cache shares the longest prefix with the prompt (lowest id on ties).
  std::vector<Assignment> assign() {
    std::vector<Assignment> out;
    std::vector<bool> taken(slots.size());
    std::lock_guard<std::mutex> lk(mu);
    for (auto it = queue.begin(); it != queue.end();) {
      int32_t best = -1;
      size_t best_lcp = 0;
      for (const Slot& s : slots) {
        if (s.busy || taken[size_t(s.id)]) continue;
        if (it->req.id_slot >= 0 && it->req.id_slot != s.id) continue;
        size_t l = 0;
        if (opt.cache_prompt)
          while (l < s.cache.size() && l < it->req.prompt.size() && s.cache[l] == it->req.prompt[l]) ++l;
        if (best < 0 || l > best_lcp) best = s.id, best_lcp = l;
      }
      if (best < 0) {
        ++it;
        continue;
      }
      taken[size_t(best)] = true;
      out.push_back(Assignment{std::move(*it), best, best_lcp});
      it = queue.erase(it);
    }
    return out;
  }

  void start(Assignment a) {
    Slot& s = slots[size_t(a.slot)];
    // The last prompt token is evaluated even when cached: its logits give the first token.
    const size_t keep = std::min(a.lcp, a.p.req.prompt.size() - 1);
    s.cache.resize(keep);
    s.busy = true;
    s.n_prompt_done = int64_t(keep);
    s.n_cached = int64_t(keep);
    s.n_predicted = 0;
    s.pending_token = -1;
    s.sampler = std::make_unique<Sampler>(a.p.req.sampling);
    // The penalties see the prompt, as llama-server's do (the sampler keeps only its window).
    for (int32_t t : a.p.req.prompt) s.sampler->accept(t);
    s.text = TextStream(a.p.req.stop);
    s.probs.clear();
    s.t_start = Clock::now();
    s.p = std::move(a.p);
    std::lock_guard<std::mutex> lk(mu);
    counters.cached_tokens_total += keep;
  }

  GenerationEvent base_event(const Slot& s, GenerationEvent::Kind k) const {
    GenerationEvent e;
    e.kind = k;
    e.slot = s.id;
    e.n_prompt = int64_t(s.p.req.prompt.size());
    e.n_cached = s.n_cached;
    e.n_predicted = s.n_predicted;
    const Clock::time_point now = Clock::now();
    const bool generating = s.n_predicted > 0;
    e.timings.prompt_n = int64_t(s.p.req.prompt.size()) - s.n_cached;
    e.timings.prompt_ms = ms_between(s.t_start, generating ? s.t_first : now);
    e.timings.predicted_n = s.n_predicted;
    e.timings.predicted_ms = generating ? ms_between(s.t_first, now) : 0.0;
    return e;
  }

  // Delivers an event; false when the client is gone.
  static bool deliver(Slot& s, const GenerationEvent& e) { return s.p.sink && s.p.sink(e); }

  void release(Slot& s, bool failed, bool cancel) {
    std::lock_guard<std::mutex> lk(mu);
    s.busy = false;
    s.p.sink = nullptr;
    s.sampler.reset();
    cancelled.erase(s.p.id);
    if (failed) ++counters.requests_failed;
    if (cancel) ++counters.requests_cancelled;
  }

  void finish(Slot& s, http::FinishReason why, bool eos, bool word, bool limit, const std::string& stop_word) {
    std::string rest = s.text.flush();
    bool alive = true;
    if (!rest.empty() || !s.probs.empty()) {
      GenerationEvent t = base_event(s, GenerationEvent::Kind::kToken);
      t.text = std::move(rest);
      t.probs = std::move(s.probs);
      alive = deliver(s, t);
    }
    // The slot is released (and /slots shows it idle) before the client hears it is done.
    GenerationEvent d = base_event(s, GenerationEvent::Kind::kDone);
    d.finish = why;
    d.stopped_eos = eos;
    d.stopped_word = word;
    d.stopped_limit = limit;
    d.stopping_word = stop_word;
    EventSink sink = std::move(s.p.sink);
    release(s, false, !alive);
    publish();
    if (alive && sink) sink(d);
  }

  void fail(Slot& s, const Status& st) {
    GenerationEvent e = base_event(s, GenerationEvent::Kind::kError);
    e.error = st;
    EventSink sink = std::move(s.p.sink);
    release(s, true, false);
    publish();
    if (sink) sink(e);
  }

  http::TokenLogprob logprobs(const float* row, int32_t chosen, int32_t n_top) const {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n_vocab; ++i) mx = std::max(mx, row[i]);
    double sum = 0;
    for (int64_t i = 0; i < n_vocab; ++i) sum += std::exp(double(row[i]) - mx);
    const double lse = double(mx) + std::log(sum);
    auto entry = [&](int32_t id) {
      http::TokenLogprob t;
      t.id = id;
      t.token = tok.token_to_piece(id, /*special=*/true);
      t.logprob = double(row[id]) - lse;
      return t;
    };
    http::TokenLogprob out = entry(chosen);
    std::vector<int32_t> ids(static_cast<size_t>(n_vocab));
    for (int64_t i = 0; i < n_vocab; ++i) ids[size_t(i)] = int32_t(i);
    const size_t k = std::min<size_t>(size_t(n_top), ids.size());
    std::partial_sort(ids.begin(), ids.begin() + ptrdiff_t(k), ids.end(),
                      [&](int32_t a, int32_t b) { return row[a] != row[b] ? row[a] > row[b] : a < b; });
    for (size_t i = 0; i < k; ++i) out.top.push_back(entry(ids[i]));
    return out;
  }

  // Samples the slot's next token from its logits row and reports it; may finish the request.
  void on_logits(Slot& s, const float* row) {
    const GenerationRequest& r = s.p.req;
    const int32_t id = s.sampler->sample(std::span<const float>(row, size_t(n_vocab)));
    s.sampler->accept(id);
    if (s.n_predicted == 0) s.t_first = Clock::now();
    ++s.n_predicted;
    if (r.n_probs > 0) s.probs.push_back(logprobs(row, id, r.n_probs));
    if (!r.ignore_eos && tok.is_eog(id)) return finish(s, http::FinishReason::kStop, true, false, false, "");
    std::string stop_word;
    const bool hit = s.text.push(tok.token_to_piece(id, /*special=*/false), &stop_word);
    if (hit) return finish(s, http::FinishReason::kStop, false, true, false, stop_word);
    if (r.n_predict >= 0 && s.n_predicted >= r.n_predict)
      return finish(s, http::FinishReason::kLength, false, false, true, "");
    // The token is evaluated next step at position cache.size(); the context ends there.
    if (int64_t(s.cache.size()) >= opt.n_ctx_slot)
      return finish(s, http::FinishReason::kLength, false, false, true, "");
    GenerationEvent e = base_event(s, GenerationEvent::Kind::kToken);
    e.text = s.text.take();
    e.probs = std::move(s.probs);
    s.probs.clear();
    if (!deliver(s, e)) return release(s, false, true);
    s.pending_token = id;
  }

  // Drops the requests cancel()ed since the last step (ids already finished are forgotten).
  void apply_cancels() {
    std::vector<int32_t> drop;
    {
      std::lock_guard<std::mutex> lk(mu);
      if (cancelled.empty()) return;
      for (auto it = queue.begin(); it != queue.end();)
        if (cancelled.count(it->id)) {
          ++counters.requests_cancelled;
          it = queue.erase(it);
        } else {
          ++it;
        }
      for (Slot& s : slots)
        if (s.busy && cancelled.count(s.p.id)) drop.push_back(s.id);
      cancelled.clear();
    }
    for (int32_t id : drop) release(slots[size_t(id)], false, true);
  }

  void publish() {
    std::lock_guard<std::mutex> lk(mu);
    for (const Slot& s : slots) {
      SlotInfo& i = info[size_t(s.id)];
      i.busy = s.busy;
      i.request = s.busy ? s.p.id : 0;
      i.n_prompt = s.busy ? int64_t(s.p.req.prompt.size()) : 0;
      i.n_past = int64_t(s.cache.size());
      i.n_predicted = s.busy ? s.n_predicted : 0;
      i.n_cached_tokens = int64_t(s.cache.size());
    }
  }

  Status step();
  void abort_all(const Status& why);
};

// One batch: a decode row for every generating slot, then prompt chunks (oldest slot first)
// up to n_batch rows in all.
Status Scheduler::Impl::step() {
  std::vector<int32_t> tok, pos, seq;
  std::vector<int64_t> rows;
  std::vector<int32_t> row_slot;  // slot of each logits row
  int64_t n_prompt_rows = 0;
  for (Slot& s : slots) {
    if (!s.busy || s.pending_token < 0) continue;
    rows.push_back(int64_t(tok.size()));
    row_slot.push_back(s.id);
    tok.push_back(s.pending_token);
    pos.push_back(int32_t(s.cache.size()));
    seq.push_back(s.id);
  }
  std::vector<Slot*> prompting;
  for (Slot& s : slots)
    if (s.prompting()) prompting.push_back(&s);
  std::sort(prompting.begin(), prompting.end(), [](const Slot* a, const Slot* b) { return a->p.id < b->p.id; });
  std::vector<std::pair<Slot*, int64_t>> chunks;
  for (Slot* s : prompting) {
    const int64_t budget = opt.n_batch - int64_t(tok.size());
    if (budget <= 0) break;
    const std::vector<int32_t>& pr = s->p.req.prompt;
    const int64_t n = std::min<int64_t>(budget, int64_t(pr.size()) - s->n_prompt_done);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = s->n_prompt_done + i;
      tok.push_back(pr[size_t(p)]);
      pos.push_back(int32_t(p));
      seq.push_back(s->id);
    }
    n_prompt_rows += n;
    if (s->n_prompt_done + n == int64_t(pr.size())) {
      rows.push_back(int64_t(tok.size()) - 1);
      row_slot.push_back(s->id);
    }
    chunks.emplace_back(s, n);
  }
  if (tok.empty()) return Status::Ok();
  // Rows must be ascending: decode rows come first, prompt-final rows after, both in order.
  std::vector<float> logits(rows.size() * size_t(n_vocab));
  const Clock::time_point t0 = Clock::now();
  EM_RETURN_IF_ERROR(decode(tok, pos, seq, rows, logits.data()));
  const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
  for (Slot& s : slots)
    if (s.busy && s.pending_token >= 0) {
      s.cache.push_back(s.pending_token);
      s.pending_token = -1;
    }
  for (auto& [s, n] : chunks) {
    const std::vector<int32_t>& pr = s->p.req.prompt;
    s->cache.insert(s->cache.end(), pr.begin() + s->n_prompt_done, pr.begin() + s->n_prompt_done + n);
    s->n_prompt_done += n;
  }
  {
    std::lock_guard<std::mutex> lk(mu);
    ++counters.decode_steps;
    const double frac = double(n_prompt_rows) / double(tok.size());
    counters.prompt_seconds_total += sec * frac;
    counters.predicted_seconds_total += sec * (1 - frac);
    counters.prompt_tokens_total += uint64_t(n_prompt_rows);
    counters.predicted_tokens_total += uint64_t(rows.size());
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    Slot& s = slots[size_t(row_slot[i])];
    if (s.busy) on_logits(s, logits.data() + i * size_t(n_vocab));
  }
  return Status::Ok();
}

void Scheduler::Impl::abort_all(const Status& why) {
  std::deque<Pending> q;
  {
    std::lock_guard<std::mutex> lk(mu);
    q.swap(queue);
    counters.requests_failed += q.size();
  }
  for (Pending& p : q) {
    GenerationEvent e;
    e.kind = GenerationEvent::Kind::kError;
    e.n_prompt = int64_t(p.req.prompt.size());
    e.error = why;
    if (p.sink) p.sink(e);
  }
  for (Slot& s : slots)
    if (s.busy) fail(s, why);
  publish();
}

Scheduler::Scheduler(DecodeFn decode, const Tokenizer& tok, int64_t n_vocab, SchedulerOptions opt)
    : impl_(std::make_unique<Impl>(std::move(decode), tok, n_vocab, opt)) {
  impl_->counters.n_ctx_slot = opt.n_ctx_slot;
  impl_->counters.n_batch = opt.n_batch;
}

Scheduler::~Scheduler() = default;

Result<uint64_t> Scheduler::submit(GenerationRequest req, EventSink sink) {
  Impl& m = *impl_;
  if (req.prompt.empty()) return Status::InvalidArgument("prompt: empty (no tokens to evaluate)");
  if (int64_t(req.prompt.size()) > m.opt.n_ctx_slot)
    return Status::InvalidArgument(
        fmt::format("prompt: {} tokens exceed the context of a slot ({} tokens)", req.prompt.size(), m.opt.n_ctx_slot));
  if (req.id_slot >= int32_t(m.slots.size()) || req.id_slot < -1)
    return Status::InvalidArgument(
        fmt::format("id_slot: {} is not a slot (the server has {})", req.id_slot, m.slots.size()));
  for (int32_t t : req.prompt)
    if (t < 0 || t >= m.n_vocab)
      return Status::InvalidArgument(fmt::format("prompt: token id {} outside the vocabulary of {}", t, m.n_vocab));
  std::lock_guard<std::mutex> lk(m.mu);
  if (m.stopping) return Status::Aborted("the server is shutting down");
  if (m.queue.size() >= m.opt.max_queued)
    return Status::Unsupported(fmt::format("the server is busy: {} requests are waiting", m.queue.size()));
  const uint64_t id = m.next_id++;
  ++m.counters.requests_total;
  m.queue.push_back(Pending{id, std::move(req), std::move(sink)});
  m.cv.notify_all();
  return id;
}

void Scheduler::cancel(uint64_t id) {
  std::lock_guard<std::mutex> lk(impl_->mu);
  if (id == 0 || id >= impl_->next_id) return;
  impl_->cancelled.insert(id);
  impl_->cv.notify_all();
}

void Scheduler::shutdown() {
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->stopping = true;
  impl_->cv.notify_all();
}

Status Scheduler::run() {
  Impl& m = *impl_;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(m.mu);
      m.cv.wait(lk, [&] {
        return m.stopping || !m.queue.empty() || !m.cancelled.empty() ||
               std::any_of(m.slots.begin(), m.slots.end(), [](const Slot& s) { return s.busy; });
      });
      if (m.stopping) break;
    }
    m.apply_cancels();
    for (Impl::Assignment& a : m.assign()) m.start(std::move(a));
    m.publish();
    Status s = m.step();
    if (!s.ok()) {
      m.abort_all(s);
      return s;
    }
    m.publish();
  }
  m.abort_all(Status::Aborted("the server is shutting down"));
  return Status::Ok();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  SchedulerStats s = impl_->counters;
  s.slots = impl_->info;
  s.queued = impl_->queue.size();
  return s;
}

}  // namespace expertmesh::coordinator::server
