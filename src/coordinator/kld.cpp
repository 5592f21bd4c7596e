#include "coordinator/kld.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

namespace expertmesh::coordinator {
namespace {

int64_t words_per_row(int64_t n_vocab) { return 2 * ((n_vocab + 1) / 2) + 4; }

int nearest_int(float fval) {
  float val = fval + 12582912.f;
  int i;
  std::memcpy(&i, &val, sizeof(int));
  return (i & 0x007fffff) - 0x00400000;
}

}  // namespace

double encode_log_probs(const float* logits, int64_t n_vocab, int32_t tok, uint16_t* out) {
  float mx = logits[0], mn = logits[0];
  for (int64_t i = 1; i < n_vocab; ++i) {
    mx = std::max(mx, logits[i]);
    mn = std::min(mn, logits[i]);
  }
  mn = std::max(mn, mx - 24);
  double sum_exp = 0.0;
  for (int64_t i = 0; i < n_vocab; ++i) sum_exp += std::exp(logits[i] - mx);
  const float log_sum_exp = float(std::log(sum_exp));
  const float min_log_prob = mn - mx - log_sum_exp;
  const float scale = (mx - mn) / 65535.f;
  std::memcpy(out, &scale, 4);
  std::memcpy(out + 2, &min_log_prob, 4);
  uint16_t* q = out + 4;
  if (scale != 0.0f) {
    const float inv = 1 / scale;
    for (int64_t i = 0; i < n_vocab; ++i) q[i] = logits[i] > mn ? uint16_t(nearest_int(inv * (logits[i] - mn))) : 0;
  } else {
    std::memset(q, 0, size_t(n_vocab) * 2);
  }
  return double(mx) + double(log_sum_exp) - double(logits[tok]);
}

Result<std::unique_ptr<LogitsWriter>> LogitsWriter::create(const std::string& path, int64_t n_ctx, int64_t n_vocab,
                                                           int64_t n_chunk, const std::vector<int32_t>& tokens) {
  auto w = std::make_unique<LogitsWriter>();
  w->path_ = path;
  w->n_vocab_ = n_vocab;
  w->out_.open(path, std::ios::binary);
  if (!w->out_) return Status::IoError(fmt::format("{}: cannot open for writing", path));
  const uint32_t c = uint32_t(n_ctx);
  const int32_t v = int32_t(n_vocab), nc = int32_t(n_chunk);
  w->out_.write("_logits_", 8);
  w->out_.write(reinterpret_cast<const char*>(&c), 4);
  w->out_.write(reinterpret_cast<const char*>(&v), 4);
  w->out_.write(reinterpret_cast<const char*>(&nc), 4);
  w->out_.write(reinterpret_cast<const char*>(tokens.data()), std::streamsize(n_chunk * n_ctx * 4));
  return w;
}

Status LogitsWriter::write_chunk(const float* logits, const int32_t* cur, int64_t n_token) {
  const int64_t nv = words_per_row(n_vocab_);
  std::vector<uint16_t> rows(size_t(n_token * nv), 0);
  for (int64_t i = 0; i < n_token; ++i) encode_log_probs(logits + i * n_vocab_, n_vocab_, cur[i + 1], rows.data() + i * nv);
  out_.write(reinterpret_cast<const char*>(rows.data()), std::streamsize(rows.size() * 2));
  if (!out_) return Status::IoError(fmt::format("{}: write failed", path_));
  return Status::Ok();
}

Status LogitsWriter::close() {
  out_.close();
  if (!out_) return Status::IoError(fmt::format("{}: write failed", path_));
  return Status::Ok();
}

}  // namespace expertmesh::coordinator
