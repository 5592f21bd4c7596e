// kl_divergence(): the compare half of kld.h, statistics exactly as the peer's kl_divergence().
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "coordinator/kld.h"

namespace expertmesh::coordinator {
namespace {

struct Acc {
  double sum_nll = 0, sum_nll2 = 0, sum_nll_base = 0, sum_nll_base2 = 0, sum_nll_nll_base = 0;
  double sum_kld = 0, sum_kld2 = 0, sum_p_diff = 0, sum_p_diff2 = 0, sum_p_diff4 = 0;
  float max_p_diff = 0;
  int64_t n_same_top = 0, count = 0;
};

std::pair<double, double> mean_unc(double sum, double sum2, int64_t count) {
  if (count < 1) return {0., 0.};
  const double f = sum / double(count);
  double df = sum2 / double(count) - f * f;
  df = df > 0 && count > 10 ? std::sqrt(df / double(count - 1)) : 0.;
  return {f, df};
}

double covariance(double a, double b, double ab, int64_t count) {
  if (count < 10) return 0.0;
  return (ab / double(count) - (a / double(count)) * (b / double(count))) / double(count - 1);
}

// One scored position: the peer's log_softmax(n_vocab, logits, base_log_prob, tok, kld).
std::pair<double, float> score(const float* logits, int64_t n_vocab, const uint16_t* base, int32_t tok, Acc& a) {
  float mx = logits[0];
  int64_t imax = 0;
  for (int64_t i = 1; i < n_vocab; ++i)
    if (logits[i] > mx) mx = logits[i], imax = i;
  double sum_exp = 0.0;
  for (int64_t i = 0; i < n_vocab; ++i) sum_exp += std::exp(logits[i] - mx);
  const float log_sum_exp = float(std::log(sum_exp));
  float scale, min_log_prob;
  std::memcpy(&scale, base, 4);
  std::memcpy(&min_log_prob, base + 2, 4);
  const uint16_t* q = base + 4;
  const float nll = mx + log_sum_exp - logits[tok];
  a.sum_nll += nll;
  a.sum_nll2 += nll * nll;
  const float nll_base = -(scale * q[tok] + min_log_prob);
  a.sum_nll_base += nll_base;
  a.sum_nll_base2 += nll_base * nll_base;
  a.sum_nll_nll_base += nll * nll_base;
  mx += log_sum_exp;
  double sum = 0;
  int64_t imax_base = -1;
  float p_log_base_max = 0;
  for (int64_t i = 0; i < n_vocab; ++i) {
    const float p_log_base = scale * q[i] + min_log_prob;
    if (i == 0 || p_log_base > p_log_base_max) p_log_base_max = p_log_base, imax_base = i;
    if (p_log_base > -16.f) sum += std::exp(p_log_base) * (p_log_base - logits[i] + mx);
  }
  a.sum_kld += sum;
  a.sum_kld2 += sum * sum;
  ++a.count;
  if (imax == imax_base) ++a.n_same_top;
  const float p_diff = std::exp(-nll) - std::exp(-nll_base);
  a.sum_p_diff += p_diff;
  const double p_diff2 = double(p_diff) * p_diff;
  a.sum_p_diff2 += p_diff2;
  a.sum_p_diff4 += p_diff2 * p_diff2;
  a.max_p_diff = std::max(a.max_p_diff, std::fabs(p_diff));
  return {sum, p_diff};
}

float percentile(const std::vector<float>& v, float fraction) {
  if (fraction <= 0) return v.front();
  if (fraction >= 1) return v.back();
  float p = fraction * float(v.size() - 1);
  const size_t ip = size_t(p);
  p -= float(ip);
  return (1 - p) * v[ip] + p * v[std::min(ip + 1, v.size() - 1)];
}

float median(const std::vector<float>& v) {
  return v.size() % 2 == 0 ? 0.5f * (v[v.size() / 2] + v[v.size() / 2 - 1]) : v[v.size() / 2];
}

void print_chunk_line(FILE* out, int64_t i, const Acc& a) {
  const auto lp = mean_unc(a.sum_nll, a.sum_nll2, a.count);
  const auto lb = mean_unc(a.sum_nll_base, a.sum_nll_base2, a.count);
  const double cov = covariance(a.sum_nll, a.sum_nll_base, a.sum_nll_nll_base, a.count);
  const auto kl = mean_unc(a.sum_kld, a.sum_kld2, a.count);
  const auto mse = mean_unc(a.sum_p_diff2, a.sum_p_diff4, a.count);
  const double rms = std::sqrt(mse.first), top = double(a.n_same_top) / double(a.count);
  std::fprintf(out, "%4lld", (long long)(i + 1));
  std::fprintf(out, "    %9.4lf ± %9.4lf", std::exp(lp.first), std::exp(lp.first) * lp.second);
  std::fprintf(out, "    %10.5lf ± %10.5lf", lp.first - lb.first,
               std::sqrt(lp.second * lp.second + lb.second * lb.second - 2.0 * cov));
  std::fprintf(out, "    %10.5lf ± %10.5lf", kl.first, kl.second);
  std::fprintf(out, "    %6.3lf ± %6.3lf %%", 100.0 * rms, 100.0 * 0.5 / rms * mse.second);
  std::fprintf(out, "    %6.3lf ± %6.3lf %%\n", 100.0 * top, 100.0 * std::sqrt(top * (1 - top) / double(a.count - 1)));
}

void print_summary(FILE* out, const Acc& a, std::vector<float>& kv, std::vector<float>& pd, KldSummary* s) {
  std::sort(kv.begin(), kv.end());
  std::sort(pd.begin(), pd.end());
  const auto lp = mean_unc(a.sum_nll, a.sum_nll2, a.count);
  const auto lb = mean_unc(a.sum_nll_base, a.sum_nll_base2, a.count);
  const double ppl = std::exp(lp.first), ppl_unc = ppl * lp.second;
  const double pb = std::exp(lb.first), pb_unc = pb * lb.second;
  const double cov = covariance(a.sum_nll, a.sum_nll_base, a.sum_nll_nll_base, a.count);
  const double r = lp.first - lb.first, r_unc = std::sqrt(lp.second * lp.second + lb.second * lb.second - 2.0 * cov);
  std::fprintf(out, "====== Perplexity statistics ======\n");
  std::fprintf(out, "Mean PPL(Q)                   : %10.6lf ± %10.6lf\n", ppl, ppl_unc);
  std::fprintf(out, "Mean PPL(base)                : %10.6lf ± %10.6lf\n", pb, pb_unc);
  std::fprintf(out, "Cor(ln(PPL(Q)), ln(PPL(base))): %6.2lf%%\n", 100.0 * cov / (lp.second * lb.second));
  std::fprintf(out, "Mean ln(PPL(Q)/PPL(base))     : %10.6lf ± %10.6lf\n", r, r_unc);
  std::fprintf(out, "Mean PPL(Q)/PPL(base)         : %10.6lf ± %10.6lf\n", std::exp(r), std::exp(r) * r_unc);
  std::fprintf(out, "Mean PPL(Q)-PPL(base)         : %10.6lf ± %10.6lf\n\n", ppl - pb,
               std::sqrt(ppl_unc * ppl_unc + pb_unc * pb_unc - 2.0 * ppl * pb * cov));
  const auto kl = mean_unc(a.sum_kld, a.sum_kld2, a.count);
  std::fprintf(out, "====== KL divergence statistics ======\n");
  std::fprintf(out, "Mean    KLD: %10.6lf ± %10.6lf\n", kl.first, kl.second);
  std::fprintf(out, "Maximum KLD: %10.6f\n", kv.back());
  const std::pair<const char*, float> kq[] = {{"99.9%", .999f}, {"99.0%", .99f}, {"95.0%", .95f}, {"90.0%", .9f}};
  for (auto [n, f] : kq) std::fprintf(out, "%s   KLD: %10.6f\n", n, percentile(kv, f));
  std::fprintf(out, "Median  KLD: %10.6f\n", median(kv));
  const std::pair<const char*, float> kq2[] = {{"10.0%", .1f}, {" 5.0%", .05f}, {" 1.0%", .01f}, {" 0.1%", .001f}};
  for (auto [n, f] : kq2) std::fprintf(out, "%s   KLD: %10.6f\n", n, percentile(kv, f));
  std::fprintf(out, "Minimum KLD: %10.6f\n\n", kv.front());
  const auto dp = mean_unc(a.sum_p_diff, a.sum_p_diff2, a.count);
  std::fprintf(out, "====== Token probability statistics ======\n");
  std::fprintf(out, "Mean    Δp: %6.3lf ± %5.3lf %%\n", 100.0 * dp.first, 100.0 * dp.second);
  std::fprintf(out, "Maximum Δp: %6.3lf%%\n", 100.0 * pd.back());
  const std::pair<const char*, float> pq[] = {{"99.9%", .999f}, {"99.0%", .99f}, {"95.0%", .95f}, {"90.0%", .9f}, {"75.0%", .75f}};
  for (auto [n, f] : pq) std::fprintf(out, "%s   Δp: %6.3lf%%\n", n, 100.0 * percentile(pd, f));
  std::fprintf(out, "Median  Δp: %6.3lf%%\n", 100.0 * median(pd));
  const std::pair<const char*, float> pq2[] = {{"25.0%", .25f}, {"10.0%", .1f}, {" 5.0%", .05f}, {" 1.0%", .01f}, {" 0.1%", .001f}};
  for (auto [n, f] : pq2) std::fprintf(out, "%s   Δp: %6.3lf%%\n", n, 100.0 * percentile(pd, f));
  std::fprintf(out, "Minimum Δp: %6.3lf%%\n", 100.0 * pd.front());
  const auto mse = mean_unc(a.sum_p_diff2, a.sum_p_diff4, a.count);
  const double rms = std::sqrt(mse.first);
  std::fprintf(out, "RMS Δp    : %6.3lf ± %5.3lf %%\n", 100.0 * rms, 100.0 * 0.5 / rms * mse.second);
  const double top = double(a.n_same_top) / double(a.count);
  std::fprintf(out, "Same top p: %6.3lf ± %5.3lf %%\n", 100.0 * top, 100.0 * std::sqrt(top * (1.0 - top) / double(a.count - 1)));
  *s = KldSummary{};
  s->ppl = ppl;
  s->ppl_base = pb;
  s->ppl_err = ppl_unc;
  s->ppl_base_err = pb_unc;
  s->kld_mean = kl.first;
  s->kld_median = median(kv);
  s->kld_p99 = percentile(kv, .99f);
  s->kld_max = kv.back();
  s->same_top_p = 100.0 * top;
  s->rms_dp = 100.0 * rms;
  s->count = a.count;
}

}  // namespace

Result<KldSummary> kl_divergence(worker::Engine& e, const Tokenizer& tok, const PerplexityOptions& opt, FILE* out) {
  std::ifstream in(opt.kld_base_file, std::ios::binary);
  if (!in) return Status::NotFound(fmt::format("{}: cannot open", opt.kld_base_file));
  char magic[8];
  uint32_t n_ctx = 0;
  int32_t n_vocab = 0, n_chunk = 0;
  in.read(magic, 8);
  if (!in || std::memcmp(magic, "_logits_", 8) != 0)
    return Status::Corruption(fmt::format("{}: does not look like a file containing log-probabilities", opt.kld_base_file));
  in.read(reinterpret_cast<char*>(&n_ctx), 4).read(reinterpret_cast<char*>(&n_vocab), 4).read(reinterpret_cast<char*>(&n_chunk), 4);
  if (!in || n_ctx < 4 || n_chunk <= 0 || n_vocab <= 0)
    return Status::Corruption(fmt::format("{}: bad header", opt.kld_base_file));
  if (int64_t(n_ctx) > e.n_ctx())
    return Status::InvalidArgument(fmt::format("{} was computed with n_ctx {}; increase -c", opt.kld_base_file, n_ctx));
  if (n_vocab != e.model().weights().output.ne[1])
    return Status::InvalidArgument(fmt::format("{}: inconsistent vocabulary ({} vs {})", opt.kld_base_file, n_vocab,
                                               e.model().weights().output.ne[1]));
  std::vector<int32_t> tokens(size_t(n_ctx) * size_t(n_chunk));
  if (!in.read(reinterpret_cast<char*>(tokens.data()), std::streamsize(tokens.size() * 4)))
    return Status::Corruption(fmt::format("{}: failed reading evaluation tokens", opt.kld_base_file));
  const int64_t first = n_ctx / 2, n_score = int64_t(n_ctx) - 1 - first, nv = 2 * ((n_vocab + 1) / 2) + 4;
  const int32_t bos = tok.add_bos() ? tok.bos() : -1;
  std::vector<uint16_t> base(size_t(n_score * nv));
  std::vector<float> kld_values, p_diff_values;
  Acc acc;
  for (int64_t i = 0; i < n_chunk; ++i) {
    if (!in.read(reinterpret_cast<char*>(base.data()), std::streamsize(base.size() * 2)))
      return Status::Corruption(fmt::format("{}: failed reading log-probs for chunk {}", opt.kld_base_file, i));
    std::span<const int32_t> window(tokens.data() + i * n_ctx, n_ctx);
    EM_ASSIGN_OR_RETURN(std::vector<float> logits, eval_window(e, window, bos, std::min<int64_t>(opt.n_batch, n_ctx), first));
    if (i == 0)
      std::fprintf(out, "\nchunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p\n");
    for (int64_t j = 0; j < n_score; ++j) {
      auto [k, dp] = score(logits.data() + j * n_vocab, n_vocab, base.data() + j * nv, window[size_t(first + j + 1)], acc);
      kld_values.push_back(float(k));
      p_diff_values.push_back(dp);
    }
    print_chunk_line(out, i, acc);
    std::fflush(out);
  }
  std::fprintf(out, "\n");
  KldSummary s;
  if (acc.count < 100) return Status::InvalidArgument("kl-divergence: fewer than 100 scored tokens; no statistics");
  print_summary(out, acc, kld_values, p_diff_values, &s);
  return s;
}

}  // namespace expertmesh::coordinator
