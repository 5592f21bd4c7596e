#include "coordinator/imatrix/similarity_feed.h"

#include <fmt/format.h>

#include <cstring>

#include "coordinator/imatrix/gather.h"

namespace expertmesh::coordinator::imatrix {

void SimilarityFeed::observe(const worker::MatmulInput& in, int64_t pos) {
  if (in.expert >= 0) return;  // LayerSimilarity reads dense inputs only
  const ForwardKey key = forward_key(in, pos);
  LayerSeen& s = seen_[{pos, in.layer}];
  const bool ffn = in.w->name.find(".ffn_") != std::string::npos;
  // This rank reads its inputs in increasing op order, so these are its first input of the
  // layer and its first FFN input after it: the union over ranks holds the global firsts.
  if (s.first_op >= 0 && (s.ffn || !ffn || key.op == s.first_op)) return;
  if (s.first_op < 0) {
    s.first_op = key.op;
  } else {
    s.ffn = true;
  }
  Record r{key, in.w->name, in.n_rows, in.n_cols, std::vector<float>(size_t(in.n_rows * in.n_cols))};
  for (int64_t i = 0; i < in.n_rows; ++i) std::copy_n(in.x + i * in.ldx, in.n_cols, r.x.data() + i * in.n_cols);
  records_.push_back(std::move(r));
}

void SimilarityFeed::clear() {
  seen_.clear();
  records_.clear();
}

std::vector<char> SimilarityFeed::serialize(const std::vector<Record>& records) {
  std::vector<char> b;
  auto put = [&](const void* p, size_t n) {
    const size_t o = b.size();
    b.resize(o + n);
    if (n) std::memcpy(b.data() + o, p, n);
  };
  const int64_t n = int64_t(records.size());
  put(&n, sizeof n);
  for (const Record& r : records) {
    const int64_t head[7] = {r.key.pos, r.key.layer, r.key.expert, r.key.op, int64_t(r.name.size()), r.rows, r.cols};
    put(head, sizeof head);
    put(r.name.data(), r.name.size());
    put(r.x.data(), r.x.size() * sizeof(float));
  }
  return b;
}

Result<std::vector<SimilarityFeed::Record>> SimilarityFeed::deserialize(const std::vector<char>& b, int rank) {
  size_t o = 0;
  auto get = [&](void* p, size_t n) {
    if (b.size() - o < n) return false;
    if (n) std::memcpy(p, b.data() + o, n);
    o += n;
    return true;
  };
  const Status bad = Status::Internal(fmt::format("imatrix -lsim: malformed layer inputs from rank {}", rank));
  int64_t n = 0;
  if (!get(&n, sizeof n) || n < 0) return bad;
  std::vector<Record> out;
  for (int64_t i = 0; i < n; ++i) {
    int64_t h[7];
    if (!get(h, sizeof h) || h[4] < 0 || h[5] < 0 || h[6] < 0 || size_t(h[4]) > b.size() - o ||
        (h[6] > 0 && size_t(h[5]) > (b.size() - o) / sizeof(float) / size_t(h[6])))
      return bad;
    Record r{ForwardKey{h[0], h[1], h[2], h[3]}, std::string(size_t(h[4]), '\0'), h[5], h[6],
             std::vector<float>(size_t(h[5] * h[6]))};
    if (!get(r.name.data(), r.name.size()) || !get(r.x.data(), r.x.size() * sizeof(float))) return bad;
    out.push_back(std::move(r));
  }
  if (o != b.size()) return bad;
  return out;
}

Status SimilarityFeed::replay(const RankContext& ctx, LayerSimilarity& sim) {
  std::vector<std::vector<Record>> others;
  if (ctx.world > 1) {
    EM_ASSIGN_OR_RETURN(auto bytes, gather_bytes(ctx, ctx.is_root() ? std::vector<char>() : serialize(records_)));
    for (size_t r = 1; r < bytes.size(); ++r) {
      EM_ASSIGN_OR_RETURN(auto recs, deserialize(bytes[r], int(r)));
      others.push_back(std::move(recs));
    }
  }
  if (ctx.is_root()) {
    // One record per key, the lowest rank's (rank 0's own first).
    std::map<ForwardKey, const Record*> order;
    for (const Record& r : records_) order.emplace(r.key, &r);
    for (const auto& recs : others)
      for (const Record& r : recs) order.emplace(r.key, &r);
    for (const auto& [key, r] : order) sim.observe(r->name, r->x.data(), r->rows, r->cols, r->cols);
  }
  clear();
  return Status::Ok();
}

}  // namespace expertmesh::coordinator::imatrix
