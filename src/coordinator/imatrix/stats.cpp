#include "coordinator/imatrix/stats.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iterator>

namespace expertmesh::coordinator::imatrix {

int64_t block_index(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  int64_t v = 0;
  size_t i = 4;
  if (i >= name.size() || name[i] < '0' || name[i] > '9') return -1;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9'; ++i) v = v * 10 + (name[i] - '0');
  return i < name.size() && name[i] == '.' ? v : -1;
}

bool ImatrixStats::wants(const worker::MatmulInput& in) const {
  const std::string& name = in.w->name;
  const bool named = name.rfind("blk.", 0) == 0 ||
                     ((rules_.process_output || rules_.layer_similarity) && name == rules_.output_tensor_name);
  if (!named) return false;
  // The peer asks for every indirect (expert) matmul, but for a plain one only with >= 16 rows.
  return in.expert >= 0 || in.n_rows >= kMinRows;
}

int64_t op_order(const std::string& weight_name) {
  // Block order of blocks.cpp: attention, then the dense FFN or the router and the experts.
  static constexpr const char* kOps[] = {".attn_q.",        ".attn_k.",      ".attn_v.",       ".attn_output.",
                                         ".ffn_gate_inp.",  ".ffn_gate.",    ".ffn_up.",       ".ffn_down.",
                                         ".ffn_gate_exps.", ".ffn_up_exps.", ".ffn_down_exps."};
  for (size_t i = 0; i < std::size(kOps); ++i)
    if (weight_name.find(kOps[i]) != std::string::npos) return int64_t(i);
  return int64_t(std::size(kOps));
}

ForwardKey forward_key(const worker::MatmulInput& in, int64_t pos) {
  return ForwardKey{pos, in.layer, in.expert, op_order(in.w->name)};
}

ForwardKey forward_key(const BadActivation& b) { return ForwardKey{b.pos, b.layer, b.expert, op_order(b.tensor)}; }

void CallCounts::add(int64_t n_tok, int64_t n_out) {
  if (n_tok <= 0) return;
  ++all;
  if (n_tok >= kMinRows) ++dense;
  if (n_out >= kMinRows) ++output;
}

void CallCounts::add(const CallCounts& c) {
  all += c.all;
  dense += c.dense;
  output += c.output;
}

void ImatrixStats::set_ncalls(const CallCounts& calls) {
  for (auto& [name, e] : entries_) {
    if (e.expert) {
      e.ncall = calls.all;
    } else if (block_index(name) >= 0) {
      e.ncall = calls.dense;
    } else {
      e.ncall = calls.output;  // the output head, the only weight collected outside the blocks
    }
  }
}

Result<StatsEntry*> ImatrixStats::entry_for(const worker::MatmulInput& in) {
  const Weight& w = *in.w;
  if (in.expert < 0 && w.ne[2] > 1)
    return Status::Unsupported(fmt::format("imatrix: 3-D dense weight {} is not supported", w.name));
  const int64_t n_cols = w.ne[0];
  const int64_t n_seg = in.expert >= 0 ? w.ne[2] : 1;
  if (in.expert >= n_seg || in.col_begin < 0 || in.col_begin + in.n_cols > n_cols)
    return Status::Internal(fmt::format("imatrix: input of {} (expert {}, columns {}+{}) outside its shape", w.name,
                                        in.expert, in.col_begin, in.n_cols));
  auto it = entries_.find(w.name);
  if (it == entries_.end()) {
    back_up(w.name, nullptr);
    StatsEntry e;
    e.n_cols = n_cols;
    e.n_seg = n_seg;
    e.expert = in.expert >= 0;
    e.sums.assign(size_t(n_cols * n_seg), 0.0);
    e.counts.assign(size_t(n_cols * n_seg), 0);
    e.last_chunk = chunk_;
    it = entries_.emplace(w.name, std::move(e)).first;
    return &it->second;
  }
  StatsEntry& e = it->second;
  if (int64_t(e.sums.size()) != n_cols * n_seg)
    return Status::InvalidArgument(
        fmt::format("imatrix: entry '{}' has {} values but the model's tensor needs {} "
                    "(an --in-file from another model?)",
                    w.name, e.sums.size(), n_cols * n_seg));
  if (!e.shape_known) {  // loaded from a peer file: now we know the expert count
    e.n_cols = n_cols;
    e.n_seg = n_seg;
    e.shape_known = true;
  }
  back_up(w.name, &e);
  return &e;
}

void ImatrixStats::back_up(const std::string& name, StatsEntry* e) {
  if (e == nullptr) {
    backup_.emplace(name, std::nullopt);
    return;
  }
  if (e->last_chunk == chunk_) return;  // already saved (or created) in this chunk
  backup_.emplace(name, *e);
  e->last_chunk = chunk_;
}

Status ImatrixStats::observe(const worker::MatmulInput& in, int64_t pos) {
  if (bad_) return Status::Ok();  // this chunk is lost already
  for (int64_t r = 0; r < in.n_rows; ++r) {
    const float* x = in.x + r * in.ldx;
    for (int64_t j = 0; j < in.n_cols; ++j) {
      if (std::isfinite(x[j])) continue;
      bad_ = BadActivation{in.w->name, in.layer, in.expert, x[j], pos};
      return Status::Ok();
    }
  }
  if (!wants(in)) return Status::Ok();
  EM_ASSIGN_OR_RETURN(StatsEntry * e, entry_for(in));
  if (e->last_ubatch != ubatch_) {
    e->last_ubatch = ubatch_;
    ++e->ncall;
  }
  const size_t base = size_t((in.expert >= 0 ? in.expert : 0) * e->n_cols + in.col_begin);
  double* sums = e->sums.data() + base;
  int64_t* counts = e->counts.data() + base;
  for (int64_t r = 0; r < in.n_rows; ++r) {
    const float* x = in.x + r * in.ldx;
    for (int64_t j = 0; j < in.n_cols; ++j) sums[j] += double(x[j]) * double(x[j]);
  }
  for (int64_t j = 0; j < in.n_cols; ++j) counts[j] += in.n_rows;
  return Status::Ok();
}

void ImatrixStats::begin_chunk() {
  ++chunk_;
  backup_.clear();
  bad_.reset();
}

void ImatrixStats::commit_chunk() { backup_.clear(); }

void ImatrixStats::rollback_chunk() {
  for (auto& [name, old] : backup_) {
    if (old) {
      entries_[name] = std::move(*old);
    } else {
      entries_.erase(name);
    }
  }
  backup_.clear();
  bad_.reset();
}

Status ImatrixStats::merge(const Imatrix& dat, const SegmentCounts* seg_counts, const std::string& path) {
  for (const ImatrixEntry& in : dat.entries) {
    if (in.ncall <= 0) return Status::Corruption(fmt::format("{}: entry '{}' has ncall {}", path, in.name, in.ncall));
    const std::vector<int64_t>* sc = nullptr;
    if (seg_counts) {
      auto it = seg_counts->find(in.name);
      if (it == seg_counts->end() || it->second.empty() || in.values.size() % it->second.size() != 0)
        return Status::Corruption(fmt::format("{}: its state file does not describe entry '{}'", path, in.name));
      sc = &it->second;
    }
    const int64_t n_seg = sc ? int64_t(sc->size()) : 1;
    const int64_t n_cols = int64_t(in.values.size()) / n_seg;
    auto it = entries_.find(in.name);
    if (it == entries_.end()) {
      StatsEntry e;
      e.n_cols = n_cols;
      e.n_seg = n_seg;
      e.shape_known = sc != nullptr;
      e.sums.assign(in.values.size(), 0.0);
      e.counts.assign(in.values.size(), 0);
      it = entries_.emplace(in.name, std::move(e)).first;
    }
    StatsEntry& e = it->second;
    if (e.sums.size() != in.values.size())
      return Status::InvalidArgument(fmt::format("{}: entry '{}' has {} values, but {} were loaded before", path,
                                                 in.name, in.values.size(), e.sums.size()));
    if (sc && !e.shape_known) {
      e.n_cols = n_cols;
      e.n_seg = n_seg;
      e.shape_known = true;
    }
    for (int64_t s = 0; s < n_seg; ++s) {
      const int64_t c = sc ? (*sc)[size_t(s)] : -1;
      if (c == 0) continue;  // an expert without data, stored with placeholder values
      for (int64_t j = 0; j < n_cols; ++j) {
        const size_t i = size_t(s * n_cols + j);
        if (c > 0) {  // exact: value = sum / count * ncall
          e.sums[i] += double(in.values[i]) / double(in.ncall) * double(c);
          e.counts[i] += c;
        } else {  // the peer's load_imatrix
          e.sums[i] += double(in.values[i]);
          e.counts[i] += in.ncall;
        }
      }
    }
    e.ncall += in.ncall;
  }
  return Status::Ok();
}

namespace {

// Layer order, then name; tensors outside blocks last.
bool entry_order(const std::string& a, const std::string& b) {
  const int64_t la = block_index(a), lb = block_index(b);
  const int64_t ka = la < 0 ? INT64_MAX : la, kb = lb < 0 ? INT64_MAX : lb;
  return ka != kb ? ka < kb : a < b;
}

// Experts (segments) of `e` with at least one column without data.
std::vector<int64_t> experts_missing_data(const StatsEntry& e) {
  std::vector<int64_t> bad;
  for (int64_t s = 0; s < e.n_seg; ++s)
    for (int64_t j = 0; j < e.n_cols; ++j)
      if (e.counts[size_t(s * e.n_cols + j)] == 0) {
        bad.push_back(s);
        break;
      }
  return bad;
}

// Whether the peer's save_imatrix stores `e`; fills `placeholder` with the experts it stores
// with mean 1. Prints the peer's warnings.
bool storable(const std::string& name, const StatsEntry& e, std::vector<int64_t>* placeholder, FILE* log,
              bool* first_warning) {
  const int64_t n_all = int64_t(e.counts.size());
  const int64_t n_zeros = std::count(e.counts.begin(), e.counts.end(), int64_t{0});
  if (n_all == 0) return false;
  if (n_zeros == 0) return true;
  if (log && *first_warning) std::fprintf(log, "\n");
  *first_warning = false;
  if (n_zeros == n_all) {
    if (log) std::fprintf(log, "save_imatrix: entry '%40s' has no data - skipping\n", name.c_str());
    return false;
  }
  if (log)
    std::fprintf(log, "save_imatrix: entry '%40s' has partial data (%.2f%%)", name.c_str(),
                 100.0 * double(n_all - n_zeros) / double(n_all));
  bool store = false;
  if (e.n_seg > 1) {
    *placeholder = experts_missing_data(e);
    if (log) std::fprintf(log, " %d out of %d experts are missing data", int(placeholder->size()), int(e.n_seg));
    store = double(placeholder->size()) < std::round(double(e.n_seg) * 0.05);
    if (store && log) std::fprintf(log, " Storing **but be aware**\n");
  }
  if (!store && log) std::fprintf(log, " - skipping\n");
  return store;
}

}  // namespace

Imatrix ImatrixStats::to_dat(const std::string& dataset, FILE* log) const {
  std::vector<std::string> names;
  for (const auto& [name, e] : entries_) names.push_back(name);
  std::sort(names.begin(), names.end(), entry_order);
  Imatrix out;
  bool first_warning = true;
  for (const std::string& name : names) {
    const StatsEntry& e = entries_.at(name);
    std::vector<int64_t> placeholder;
    if (!storable(name, e, &placeholder, log, &first_warning)) continue;
    ImatrixEntry d;
    d.name = name;
    d.ncall = e.ncall;
    d.values.resize(e.sums.size());
    const float ncall = float(e.ncall);
    for (size_t i = 0; i < e.sums.size(); ++i)
      d.values[i] = e.counts[i] > 0 ? float(e.sums[i] / double(e.counts[i])) * ncall : 0.0f;
    for (int64_t s : placeholder)
      std::fill_n(d.values.begin() + s * e.n_cols, e.n_cols, ncall);  // the peer's counts = values = 1
    out.entries.push_back(std::move(d));
  }
  if (log && out.entries.size() < entries_.size())
    std::fprintf(log, "save_imatrix: warning: storing only %zu out of %zu entries\n", out.entries.size(),
                 entries_.size());
  out.last_call = last_call();
  out.dataset = dataset;
  return out;
}

SegmentCounts ImatrixStats::segment_counts() const {
  SegmentCounts out;
  for (const auto& [name, e] : entries_) {
    std::vector<int64_t> c(size_t(e.n_seg), -1);
    for (int64_t s = 0; s < e.n_seg; ++s) {
      const auto b = e.counts.begin() + s * e.n_cols, en = b + e.n_cols;
      if (std::all_of(b, en, [&](int64_t v) { return v == *b; })) c[size_t(s)] = *b;
    }
    out.emplace(name, std::move(c));
  }
  return out;
}

Status add_stats(ImatrixStats& into, const ImatrixStats& from) {
  auto& entries = into.mutable_entries();
  for (const auto& [name, in] : from.entries()) {
    auto it = entries.find(name);
    if (it == entries.end()) {
      entries.emplace(name, in);
      continue;
    }
    StatsEntry& e = it->second;
    if (e.sums.size() != in.sums.size())
      return Status::InvalidArgument(
          fmt::format("imatrix: entry '{}' has {} values in the loaded data but {} here "
                      "(an --in-file from another model?)",
                      name, e.sums.size(), in.sums.size()));
    if (!e.shape_known && in.shape_known) {
      e.n_cols = in.n_cols;
      e.n_seg = in.n_seg;
      e.shape_known = true;
    }
    e.expert = e.expert || in.expert;
    for (size_t i = 0; i < e.sums.size(); ++i) {
      e.sums[i] += in.sums[i];
      e.counts[i] += in.counts[i];
    }
    e.ncall += in.ncall;
  }
  return Status::Ok();
}

int32_t ImatrixStats::last_call() const {
  int32_t m = 0;
  for (const auto& [name, e] : entries_) m = std::max(m, e.ncall);
  return m;
}

}  // namespace expertmesh::coordinator::imatrix
