#include "coordinator/perplexity.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "coordinator/kld.h"

namespace expertmesh::coordinator {

Result<std::vector<float>> eval_window(worker::Engine& e, std::span<const int32_t> window, int32_t bos, int64_t n_batch,
                                       int64_t first) {
  const int64_t n_ctx = int64_t(window.size());
  const int64_t n_vocab = e.model().weights().output.ne[1];
  std::vector<int32_t> toks(window.begin(), window.end());
  if (bos >= 0) toks[0] = bos;
  std::vector<float> logits(size_t((n_ctx - first) * n_vocab));
  e.clear();
  for (int64_t b0 = 0; b0 < n_ctx; b0 += n_batch) {
    const int64_t nb = std::min(n_batch, n_ctx - b0);
    std::vector<int64_t> rows;
    for (int64_t i = 0; i < nb; ++i)
      if (b0 + i >= first) rows.push_back(i);
    float* dst = logits.data() + (rows.empty() ? 0 : (b0 + rows[0] - first) * n_vocab);
    EM_RETURN_IF_ERROR(e.decode(std::span<const int32_t>(toks.data() + b0, size_t(nb)), rows, dst));
  }
  return logits;
}

namespace {

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(fmt::format("{}: cannot open", path));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// -log p(tok) with the peer's arithmetic: float max, double sum of expf(l - max).
double nll_of(const float* logits, int64_t n_vocab, int32_t tok) {
  float mx = logits[0];
  for (int64_t i = 1; i < n_vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n_vocab; ++i) sum += std::exp(logits[i] - mx);
  return -(double(logits[tok] - mx) - std::log(sum));
}

}  // namespace

Result<PerplexityResult> perplexity(worker::Engine& e, const Tokenizer& tok, const PerplexityOptions& opt, FILE* out) {
  const int64_t n_ctx = opt.n_ctx;
  if (n_ctx < 4 || n_ctx > e.n_ctx()) return Status::InvalidArgument(fmt::format("-c {}: invalid context size", n_ctx));
  if (opt.n_batch <= 0)
    return Status::InvalidArgument(fmt::format("-b {}: invalid batch size", opt.n_batch));
  EM_ASSIGN_OR_RETURN(std::string text, read_file(opt.text_file));
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> tokens = tok.encode(text, true);
  const auto t1 = std::chrono::steady_clock::now();
  std::fprintf(stderr, "perplexity: tokenization took %g ms\n", std::chrono::duration<double, std::milli>(t1 - t0).count());
  if (int64_t(tokens.size()) < 2 * n_ctx)
    return Status::InvalidArgument(fmt::format("{} tokenizes to only {} tokens; at least {} are needed for -c {}",
                                               opt.text_file, tokens.size(), 2 * n_ctx, n_ctx));
  const int64_t n_chunk_max = int64_t(tokens.size()) / n_ctx;
  const int64_t n_chunk = opt.n_chunks < 0 ? n_chunk_max : std::min(opt.n_chunks, n_chunk_max);
  const int64_t n_vocab = e.model().weights().output.ne[1];
  const int64_t first = n_ctx / 2;
  const int32_t bos = tok.add_bos() ? tok.bos() : -1;
  std::fprintf(stderr, "perplexity: calculating perplexity over %lld chunks, n_ctx=%lld, batch_size=%lld\n",
               (long long)n_chunk, (long long)n_ctx, (long long)opt.n_batch);

  std::unique_ptr<LogitsWriter> writer;
  if (!opt.kld_base_file.empty()) {
    EM_ASSIGN_OR_RETURN(writer, LogitsWriter::create(opt.kld_base_file, n_ctx, n_vocab, n_chunk, tokens));
    std::fprintf(stderr, "perplexity: saving all logits to %s\n", opt.kld_base_file.c_str());
  }
  PerplexityResult res;
  res.n_chunk = n_chunk;
  res.n_ctx = n_ctx;
  double nll = 0, nll2 = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < n_chunk; ++i) {
    const auto c0 = std::chrono::steady_clock::now();
    std::span<const int32_t> window(tokens.data() + i * n_ctx, size_t(n_ctx));
    EM_ASSIGN_OR_RETURN(std::vector<float> logits, eval_window(e, window, bos, std::min(opt.n_batch, n_ctx), first));
    for (int64_t j = 0; j < n_ctx - 1 - first; ++j) {
      const double v = nll_of(logits.data() + j * n_vocab, n_vocab, window[size_t(first + j + 1)]);
      nll += v;
      nll2 += v * v;
    }
    if (writer) EM_RETURN_IF_ERROR(writer->write_chunk(logits.data(), window.data() + first, n_ctx - 1 - first));
    count += n_ctx - 1 - first;
    if (i == 0) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
      std::fprintf(stderr, "perplexity: %.2f seconds per pass - ETA %.2f minutes\n", s, s * double(n_chunk) / 60.0);
    }
    res.running_ppl.push_back(std::exp(nll / double(count)));
    std::fprintf(out, "[%lld]%.4lf,", (long long)(i + 1), res.running_ppl.back());
    std::fflush(out);
  }
  std::fprintf(out, "\n");
  if (writer) EM_RETURN_IF_ERROR(writer->close());
  nll /= double(count);
  nll2 = nll2 / double(count) - nll * nll;
  res.ppl = std::exp(nll);
  if (nll2 <= 0) return Status::Internal("unexpected negative standard deviation of log(prob)");
  res.ppl_err = std::sqrt(nll2 / double(count - 1)) * res.ppl;
  std::fprintf(out, "Final estimate: PPL over %lld chunks for n_ctx=%lld = %.4lf +/- %.5lf\n", (long long)n_chunk,
               (long long)n_ctx, res.ppl, res.ppl_err);
  return res;
}

}  // namespace expertmesh::coordinator
