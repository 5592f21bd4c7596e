// The chunk loop of `expertmesh imatrix` (the peer's compute_imatrix, inventory §3.4).
#include <fmt/format.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iterator>
#include <optional>
#include <utility>

#include "common/check.h"
#include "coordinator/imatrix/run.h"

namespace expertmesh::coordinator::imatrix {

double token_nll(const float* logits, int64_t n_vocab, int32_t tok) {
  float mx = logits[0];
  for (int64_t i = 1; i < n_vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n_vocab; ++i) sum += std::exp(logits[i] - mx);
  return -(double(logits[tok] - mx) - std::log(sum));
}

namespace {

Result<std::vector<int32_t>> tokenize_file(const std::string& path, const Tokenizer& tok) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(fmt::format("-f {}: cannot open", path));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!text.empty() && text.back() == '\n') text.pop_back();  // as the peer's -f does
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> tokens = tok.encode(text, true);
  const auto t1 = std::chrono::steady_clock::now();
  std::fprintf(stderr, "compute_imatrix: tokenization took %g ms\n",
               std::chrono::duration<double, std::milli>(t1 - t0).count());
  return tokens;
}

void print_eta(double seconds, int64_t n_chunk) {
  std::fprintf(stderr, "compute_imatrix: %.2f seconds per pass - ETA ", seconds);
  int64_t total = int64_t(seconds * double(n_chunk));
  if (total >= 3600) {
    std::fprintf(stderr, "%lld hours ", (long long)(total / 3600));
    total %= 3600;
  }
  std::fprintf(stderr, "%.2f minutes\n", double(total) / 60.0);
}

}  // namespace

std::vector<std::pair<int64_t, int64_t>> ImatrixRun::ubatches() const {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t b0 = 0; b0 < g_.n_ctx; b0 += g_.n_batch) {
    const int64_t b1 = std::min(g_.n_ctx, b0 + g_.n_batch);
    for (int64_t u0 = b0; u0 < b1; u0 += g_.n_ubatch) out.emplace_back(u0, std::min(b1 - u0, g_.n_ubatch));
  }
  return out;
}

Status ImatrixRun::eval_chunk(worker::Engine& e, std::vector<int32_t>& tokens, int64_t chunk, int32_t bos,
                              std::vector<float>& logits) {
  const int64_t n_ctx = g_.n_ctx, start = chunk * n_ctx;
  const int64_t n_vocab = e.model().weights().output.ne[1];
  std::vector<int32_t> window(tokens.begin() + start, tokens.begin() + start + n_ctx);
  if (bos >= 0) window[0] = bos;  // the first batch of each chunk starts with BOS
  e.clear();
  for (const auto& [u0, nu] : ubatches()) {
    std::vector<int64_t> rows;
    for (int64_t i = std::max<int64_t>(out_first_ - u0, 0); i < nu; ++i) rows.push_back(i);
    float* dst = rows.empty() ? nullptr : logits.data() + (u0 + rows[0] - out_first_) * n_vocab;
    stats_.begin_ubatch();
    chunk_calls_.add(nu, int64_t(rows.size()));
    ++calls_;
    EM_RETURN_IF_ERROR(e.decode(std::span<const int32_t>(window.data() + u0, size_t(nu)), rows, dst));
  }
  return Status::Ok();
}

Status ImatrixRun::run_chunk(worker::Engine& e, std::vector<int32_t>& tokens, int64_t chunk, int32_t bos,
                             std::vector<float>& logits) {
  stats_.begin_chunk();
  chunk_calls_ = CallCounts{};
  if (ctx_.is_root()) {
    EM_RETURN_IF_ERROR(eval_chunk(e, tokens, chunk, bos, logits));
    return e.finish();  // releases the followers for the chunk's agreement (no-op on one rank)
  }
  EM_RETURN_IF_ERROR(e.follow());
  calls_ += ubatches().size();
  return Status::Ok();
}

Status ImatrixRun::end_chunk(bool keep) {
  if (!keep) {
    stats_.rollback_chunk();
    feed_.clear();
    return Status::Ok();
  }
  stats_.commit_chunk();
  calls_done_.add(chunk_calls_);
  if (opt_.layer_similarity) return feed_.replay(ctx_, sim_);
  return Status::Ok();
}

void ImatrixRun::add_ppl(const std::vector<float>& logits, const std::vector<int32_t>& tokens, int64_t chunk,
                         int64_t n_vocab, FILE* out) {
  const int64_t n_ctx = g_.n_ctx, first = n_ctx / 2, start = chunk * n_ctx;
  for (int64_t j = 0; j < n_ctx - 1 - first; ++j) {
    const float* row = logits.data() + (first - out_first_ + j) * n_vocab;
    const double v = token_nll(row, n_vocab, tokens[size_t(start + first + j + 1)]);
    st_.nll += v;
    st_.nll2 += v * v;
  }
  st_.ppl_count += n_ctx - 1 - first;
  res_.running_ppl.push_back(std::exp(st_.nll / double(st_.ppl_count)));
  std::fprintf(out, "[%lld]%.4lf,", (long long)(chunk - st_.first_chunk + 1), res_.running_ppl.back());
  std::fflush(out);
}

Result<std::string> ImatrixRun::agree_bad(int64_t chunk) {
  const std::optional<BadActivation>& b = stats_.bad();
  std::string msg;
  if (b) {
    msg = fmt::format("non-finite activation ({}) in the input of {} (layer {}{}) in chunk {}", b->value, b->tensor,
                      b->layer, b->expert >= 0 ? fmt::format(", expert {}", b->expert) : std::string(), chunk);
  }
  if (ctx_.world == 1) return msg;
  constexpr int kKey = 5;  // none?, pos, layer, expert, op
  const ForwardKey k = b ? forward_key(*b) : ForwardKey{};
  const int64_t mine[kKey] = {b ? 0 : 1, k.pos, k.layer, k.expert, k.op};
  std::vector<int64_t> all(size_t(kKey * ctx_.world));
  EM_MPI_CHECK(MPI_Allgather(mine, kKey, MPI_INT64_T, all.data(), kKey, MPI_INT64_T, ctx_.comm));
  int first = -1;
  for (int r = 0; r < ctx_.world; ++r) {
    const int64_t* kr = all.data() + r * kKey;
    if (kr[0] != 0) continue;
    if (first < 0 ||
        std::lexicographical_compare(kr, kr + kKey, all.data() + first * kKey, all.data() + (first + 1) * kKey))
      first = r;
  }
  if (first < 0) return std::string();
  EM_RETURN_IF_ERROR(broadcast_string(ctx_.comm, first, &msg));
  return msg;
}

Status ImatrixRun::after_chunk(uint64_t calls_before) {
  // The peer saves when its call counter reaches a multiple of -ofreq (and --save-frequency);
  // we save at the end of the chunk in which that happened.
  const uint64_t before = uint64_t(base_calls_) + calls_before, now = uint64_t(base_calls_) + calls_;
  const auto crossed = [&](int64_t f) { return f > 0 && now / uint64_t(f) > before / uint64_t(f); };
  if (crossed(opt_.out_freq)) EM_RETURN_IF_ERROR(save(opt_.out_file));
  if (crossed(opt_.save_freq)) EM_RETURN_IF_ERROR(save(fmt::format("{}.at_{}", opt_.out_file, now)));
  return Status::Ok();
}

Result<std::pair<int64_t, int64_t>> ImatrixRun::plan_chunks(const Tokenizer& tok, std::vector<int32_t>* tokens) {
  EM_ASSIGN_OR_RETURN(*tokens, tokenize_file(opt_.text_file, tok));
  const int64_t n_ctx = g_.n_ctx, n_tokens = int64_t(tokens->size()), origin = st_.first_chunk;
  if (!opt_.resume && origin > 0) {
    if ((origin + 2) * n_ctx >= n_tokens)
      return Status::InvalidArgument(
          fmt::format("--from-chunk {}: there will be not enough tokens left after removing {} chunks of {}", origin,
                      origin, n_ctx));
    std::fprintf(stderr, "compute_imatrix: removing initial %lld chunks (%lld tokens)\n", (long long)origin,
                 (long long)(origin * n_ctx));
  }
  const int64_t avail = n_tokens - origin * n_ctx;
  if (!opt_.resume && avail < 2 * n_ctx)
    return Status::InvalidArgument(
        fmt::format("{} tokenizes to only {} tokens; at least {} are needed for a context "
                    "of {} tokens",
                    opt_.text_file, avail, 2 * n_ctx, n_ctx));
  const int64_t n_chunk_max = std::max<int64_t>(avail, 0) / n_ctx;
  const int64_t n_chunk = opt_.n_chunks < 0 ? n_chunk_max : std::min(opt_.n_chunks, n_chunk_max);
  const int64_t begin = origin + st_.chunks_done, end = origin + n_chunk;
  std::fprintf(stderr, "compute_imatrix: computing over %lld chunks with batch_size %lld\n",
               (long long)std::max<int64_t>(end - begin, 0), (long long)g_.n_batch);
  return std::make_pair(begin, end);
}

void ImatrixRun::report_share() const {
  int64_t entries = 0, slices = 0;
  for (const auto& [name, e] : stats_.entries()) {
    ++entries;
    for (int64_t sg = 0; sg < e.n_seg && e.expert; ++sg)
      if (std::any_of(e.counts.begin() + sg * e.n_cols, e.counts.begin() + (sg + 1) * e.n_cols,
                      [](int64_t c) { return c > 0; }))
        ++slices;
  }
  std::fprintf(stderr, "imatrix: rank %d/%d accumulated %lld entries, %lld expert slices\n", ctx_.rank, ctx_.world,
               (long long)entries, (long long)slices);
}

void ImatrixRun::print_final_ppl(FILE* out) {
  if (st_.ppl_count <= 1) return;
  const double nll = st_.nll / double(st_.ppl_count);
  const double var = st_.nll2 / double(st_.ppl_count) - nll * nll;
  res_.ppl = std::exp(nll);
  if (var > 0) {
    res_.ppl_err = std::sqrt(var / double(st_.ppl_count - 1)) * res_.ppl;
    std::fprintf(out, "Final estimate: PPL = %.4lf +/- %.5lf\n", res_.ppl, res_.ppl_err);
  } else {
    std::fprintf(out, "Unexpected negative standard deviation of log(prob)\n");
  }
}

Status ImatrixRun::compute(worker::Engine& e, const Tokenizer& tok, FILE* out) {
  if (g_.n_ctx > e.n_ctx())
    return Status::Internal(fmt::format("imatrix: engine context {} < chunk size {}", e.n_ctx(), g_.n_ctx));
  std::vector<int32_t> tokens;
  int64_t range[2] = {0, 0};
  Status planned = Status::Ok();
  if (ctx_.is_root()) {
    auto r = plan_chunks(tok, &tokens);
    if (r.ok()) {
      range[0] = r->first;
      range[1] = r->second;
    }
    planned = r.status();
  }
  EM_RETURN_IF_ERROR(ctx_.agree(planned));
  if (ctx_.world > 1) EM_MPI_CHECK(MPI_Bcast(range, 2, MPI_INT64_T, 0, ctx_.comm));
  const int64_t begin = range[0], end = range[1], n_ctx = g_.n_ctx;

  const int64_t n_vocab = e.model().weights().output.ne[1];
  const bool ppl = opt_.compute_ppl && ctx_.is_root();
  // Logits from out_first_ on: every row when the output head is collected (the peer computes
  // all logits), the scored half for the PPL, none otherwise.
  out_first_ = (opt_.process_output || opt_.layer_similarity) ? 0 : (opt_.compute_ppl ? n_ctx / 2 : n_ctx);
  std::vector<float> logits(ctx_.is_root() ? size_t((n_ctx - out_first_) * n_vocab) : 0);
  const int32_t bos = tok.add_bos() ? tok.bos() : -1;
  // The KV position during a read orders reads across ranks (ForwardKey): the engine sets it to
  // the call's first position before its layers and to its end before the output head.
  e.set_observer([this, &e](const worker::MatmulInput& in) -> Status {
    const int64_t pos = e.n_past();
    EM_RETURN_IF_ERROR(stats_.observe(in, pos));
    if (opt_.layer_similarity && stats_.wants(in)) feed_.observe(in, pos);
    return Status::Ok();
  });
  Status s = Status::Ok();
  for (int64_t chunk = begin; chunk < end && s.ok(); ++chunk) {
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t calls_before = calls_;
    s = run_chunk(e, tokens, chunk, bos, logits);
    if (!s.ok()) break;  // no collectives: the caller notifies the other ranks
    EM_ASSIGN_OR_RETURN(std::string bad, agree_bad(chunk));
    EM_RETURN_IF_ERROR(end_chunk(bad.empty()));
    if (!bad.empty()) {
      if (!opt_.skip_bad_chunks) {
        s = save(opt_.out_file);  // everything up to the last good chunk
        if (s.ok())
          s = Status::Aborted(
              fmt::format("{} (tokens {}..{} of {}); saved the {} chunks before it to {} (rerun with "
                          "--resume --skip-bad-chunks to drop such chunks and continue)",
                          bad, chunk * n_ctx, (chunk + 1) * n_ctx - 1, opt_.text_file, st_.chunks_done, opt_.out_file));
        break;
      }
      ++st_.chunks_done;
      ++st_.bad_chunks;
      ++res_.chunks_done;
      ++res_.bad_chunks;
      if (ctx_.is_root()) std::fprintf(stderr, "\nimatrix: skipping chunk %lld: %s\n", (long long)chunk, bad.c_str());
      s = after_chunk(calls_before);
      continue;
    }
    ++st_.chunks_done;
    ++res_.chunks_done;
    if (chunk == begin && ctx_.is_root())
      print_eta(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), end - begin);
    if (ppl) add_ppl(logits, tokens, chunk, n_vocab, out);
    s = after_chunk(calls_before);
  }
  e.set_observer(nullptr);
  if (!s.ok()) return s;
  if (opt_.verbosity > 1) report_share();
  if (ctx_.is_root()) std::fprintf(out, "\n");
  if (ppl) print_final_ppl(out);
  return Status::Ok();
}

}  // namespace expertmesh::coordinator::imatrix
