#include "coordinator/imatrix/gather.h"

#include <fmt/format.h>
#include <mpi.h>

#include <algorithm>
#include <cstring>

#include "common/check.h"

namespace expertmesh::coordinator::imatrix {

namespace {

constexpr int kTagSize = 7101;
constexpr int kTagData = 7102;
constexpr int64_t kPiece = int64_t(1) << 30;  // MPI counts are int: send in pieces

template <typename T>
void put(std::vector<char>& b, const T* v, size_t n) {
  const size_t o = b.size();
  b.resize(o + n * sizeof(T));
  if (n) std::memcpy(b.data() + o, v, n * sizeof(T));
}

std::vector<char> serialize(const std::map<std::string, StatsEntry>& entries) {
  std::vector<char> b;
  const int64_t n = int64_t(entries.size());
  put(b, &n, 1);
  for (const auto& [name, e] : entries) {
    const int64_t len = int64_t(name.size()), flags = (e.shape_known ? 1 : 0) | (e.expert ? 2 : 0);
    put(b, &len, 1);
    put(b, name.data(), name.size());
    put(b, &e.n_cols, 1);
    put(b, &e.n_seg, 1);
    put(b, &flags, 1);
    put(b, &e.ncall, 1);
    put(b, e.sums.data(), e.sums.size());
    put(b, e.counts.data(), e.counts.size());
  }
  return b;
}

Result<std::map<std::string, StatsEntry>> deserialize(const std::vector<char>& b, int rank) {
  size_t o = 0;
  bool ok = true;
  auto get = [&](auto* v, size_t n) {
    using T = std::remove_pointer_t<decltype(v)>;
    if (!ok || b.size() - o < n * sizeof(T)) {
      ok = false;
      return;
    }
    if (n) std::memcpy(v, b.data() + o, n * sizeof(T));
    o += n * sizeof(T);
  };
  std::map<std::string, StatsEntry> out;
  int64_t n = 0;
  get(&n, 1);
  for (int64_t i = 0; ok && i < n; ++i) {
    int64_t len = 0, flags = 0;
    get(&len, 1);
    if (!ok || len < 0 || size_t(len) > b.size() - o) break;
    std::string name(size_t(len), '\0');
    get(name.data(), size_t(len));
    StatsEntry e;
    get(&e.n_cols, 1);
    get(&e.n_seg, 1);
    get(&flags, 1);
    get(&e.ncall, 1);
    if (!ok || e.n_cols < 0 || e.n_seg < 0 || size_t(e.n_cols * e.n_seg) > (b.size() - o) / 16) {
      ok = false;
      break;
    }
    e.shape_known = (flags & 1) != 0;
    e.expert = (flags & 2) != 0;
    e.sums.resize(size_t(e.n_cols * e.n_seg));
    e.counts.resize(e.sums.size());
    get(e.sums.data(), e.sums.size());
    get(e.counts.data(), e.counts.size());
    out.emplace(std::move(name), std::move(e));
  }
  if (!ok || o != b.size())
    return Status::Internal(fmt::format("imatrix gather: malformed statistics from rank {}", rank));
  return out;
}

}  // namespace

Status merge_rank(ImatrixStats& into, const std::map<std::string, StatsEntry>& from) {
  auto& entries = into.mutable_entries();
  for (const auto& [name, in] : from) {
    auto it = entries.find(name);
    if (it == entries.end()) {
      entries.emplace(name, in);
      continue;
    }
    StatsEntry& e = it->second;
    if (e.sums.size() != in.sums.size())
      return Status::Internal(fmt::format("imatrix gather: ranks disagree on the size of '{}' ({} vs {})", name,
                                          e.sums.size(), in.sums.size()));
    if (!e.shape_known && in.shape_known) {
      e.n_cols = in.n_cols;
      e.n_seg = in.n_seg;
      e.shape_known = true;
    }
    for (size_t i = 0; i < e.sums.size(); ++i)
      if (e.counts[i] == 0 && in.counts[i] != 0) {
        e.sums[i] = in.sums[i];
        e.counts[i] = in.counts[i];
      }
    e.expert = e.expert || in.expert;
    e.ncall = std::max(e.ncall, in.ncall);
  }
  return Status::Ok();
}

Result<std::vector<std::vector<char>>> gather_bytes(const RankContext& ctx, const std::vector<char>& mine) {
  std::vector<std::vector<char>> all;
  if (!ctx.is_root()) {
    const int64_t size = int64_t(mine.size());
    EM_MPI_CHECK(MPI_Send(&size, 1, MPI_INT64_T, 0, kTagSize, ctx.comm));
    for (int64_t o = 0; o < size; o += kPiece)
      EM_MPI_CHECK(MPI_Send(mine.data() + o, int(std::min(kPiece, size - o)), MPI_BYTE, 0, kTagData, ctx.comm));
    return all;
  }
  all.push_back(mine);
  for (int r = 1; r < ctx.world; ++r) {
    int64_t size = 0;
    EM_MPI_CHECK(MPI_Recv(&size, 1, MPI_INT64_T, r, kTagSize, ctx.comm, MPI_STATUS_IGNORE));
    std::vector<char>& b = all.emplace_back(size_t(std::max<int64_t>(size, 0)));
    for (int64_t o = 0; o < size; o += kPiece)
      EM_MPI_CHECK(
          MPI_Recv(b.data() + o, int(std::min(kPiece, size - o)), MPI_BYTE, r, kTagData, ctx.comm, MPI_STATUS_IGNORE));
  }
  return all;
}

Result<std::optional<ImatrixStats>> gather_stats(const RankContext& ctx, const ImatrixStats& local) {
  if (ctx.world == 1) return std::optional<ImatrixStats>();
  EM_ASSIGN_OR_RETURN(auto all, gather_bytes(ctx, ctx.is_root() ? std::vector<char>() : serialize(local.entries())));
  if (!ctx.is_root()) return std::optional<ImatrixStats>();
  // Rank 0 starts from its own statistics and merges ranks 1, 2, ... in order.
  ImatrixStats merged(local.rules());
  merged.mutable_entries() = local.entries();
  for (int r = 1; r < ctx.world; ++r) {
    EM_ASSIGN_OR_RETURN(auto entries, deserialize(all[size_t(r)], r));
    EM_RETURN_IF_ERROR(merge_rank(merged, entries));
  }
  return std::optional<ImatrixStats>(std::move(merged));
}

}  // namespace expertmesh::coordinator::imatrix
