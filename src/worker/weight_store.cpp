#include "worker/weight_store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "model/types.h"

namespace expertmesh::worker {
namespace {

// Largest read one task issues: big enough that a read is not dominated by the syscall, small
// enough that a few threads share the work of one large tensor.
constexpr int64_t kChunkBytes = int64_t{4} << 20;
constexpr int64_t kBlockAlign = 64;  // start of every held run of rows (SIMD loads of F32 rows)

std::array<const Weight*, 15> members(const LayerWeights& L) {
  return {&L.attn_norm,     &L.wq,          &L.wk,           &L.wv,     &L.wo,       &L.attn_q_norm,
          &L.attn_k_norm,   &L.ffn_norm,    &L.ffn_gate,     &L.ffn_up, &L.ffn_down, &L.ffn_gate_inp,
          &L.ffn_gate_exps, &L.ffn_up_exps, &L.ffn_down_exps};
}

std::array<Weight*, 15> members(LayerWeights& L) {
  return {&L.attn_norm,     &L.wq,          &L.wk,           &L.wv,     &L.wo,       &L.attn_q_norm,
          &L.attn_k_norm,   &L.ffn_norm,    &L.ffn_gate,     &L.ffn_up, &L.ffn_down, &L.ffn_gate_inp,
          &L.ffn_gate_exps, &L.ffn_up_exps, &L.ffn_down_exps};
}

// Sorts and merges overlapping or adjacent spans; drops empty ones.
std::vector<Span> merged(std::vector<Span> s) {
  std::erase_if(s, [](const Span& x) { return x.size() <= 0; });
  std::sort(s.begin(), s.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  std::vector<Span> out;
  for (const Span& x : s) {
    if (!out.empty() && x.begin <= out.back().end)
      out.back().end = std::max(out.back().end, x.end);
    else
      out.push_back(x);
  }
  return out;
}

// Collects the spans of each tensor, then widens them to whole interleave groups and merges.
class Needs {
 public:
  void add(const Weight& w, Span rows) {
    if (!w.present() || rows.size() <= 0) return;
    auto [at, inserted] = index_.emplace(w.name, out_.size());
    if (inserted) out_.push_back(TensorRows{&w, {}});
    TensorRows& t = out_[at->second];
    const int64_t il = type_traits(w.type)->interleave;
    t.rows.push_back({rows.begin / il * il, std::min((rows.end + il - 1) / il * il, w.n_rows())});
  }
  void whole(const Weight& w) { add(w, {0, w.n_rows()}); }
  std::vector<TensorRows> finish() && {
    for (TensorRows& t : out_) t.rows = merged(std::move(t.rows));
    return std::move(out_);
  }

 private:
  std::vector<TensorRows> out_;
  std::map<std::string, size_t> index_;  // name -> entry of out_ (a tied head shares one)
};

void layer_needs(const HParams& hp, const LayerWeights& L, const LayerPlan& p, Needs& n) {
  const int64_t hd = hp.head_dim, n_gqa = hp.n_gqa();
  for (const Weight* w : {&L.attn_norm, &L.attn_q_norm, &L.attn_k_norm, &L.ffn_norm, &L.ffn_gate_inp}) n.whole(*w);
  if (p.n_heads() > 0) {
    n.add(L.wq, {p.head_begin * hd, p.head_end * hd});
    n.add(L.wk, {p.kv_head_begin(n_gqa) * hd, p.kv_head_end(n_gqa) * hd});
    n.add(L.wv, {p.kv_head_begin(n_gqa) * hd, p.kv_head_end(n_gqa) * hd});
  }
  // attention(): a stage of several ranks projects its output rows; one rank all of them.
  if (!p.stage_heads.empty())
    n.add(L.wo, p.attn_out);
  else if (p.n_heads() > 0)
    n.whole(L.wo);
  if (!hp.is_moe()) {
    n.add(L.ffn_gate, {p.ffn_begin, p.ffn_end});
    n.add(L.ffn_up, {p.ffn_begin, p.ffn_end});
    if (!p.stage_ffn.empty())
      n.add(L.ffn_down, p.ffn_out);
    else if (p.ffn_end > p.ffn_begin)
      n.whole(L.ffn_down);
  }
  for (int32_t e : p.experts)
    for (const Weight* w : {&L.ffn_gate_exps, &L.ffn_up_exps, &L.ffn_down_exps})
      if (w->present()) n.add(*w, {int64_t(e) * w->ne[1], int64_t(e + 1) * w->ne[1]});
}

// One pread task: `bytes` bytes at `offset` of shard `shard` into `dst`, for tensor `t` rows.
struct ReadTask {
  int shard = 0;
  uint64_t offset = 0;
  int64_t bytes = 0;
  uint8_t* dst = nullptr;
  const Weight* w = nullptr;
  Span rows;
};

// Reads a task fully; errors name the file, the tensor and the rows.
Status read_task(int fd, const std::string& path, const ReadTask& t) {
  int64_t done = 0;
  while (done < t.bytes) {
    const ssize_t r = ::pread(fd, t.dst + done, size_t(t.bytes - done), off_t(t.offset + uint64_t(done)));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0)
      return Status::IoError(fmt::format("{}: tensor '{}': reading rows [{}, {}) at byte {}: {}", path, t.w->name,
                                         t.rows.begin, t.rows.end, t.offset + uint64_t(done), std::strerror(errno)));
    if (r == 0)
      return Status::Corruption(fmt::format(
          "{}: tensor '{}': the file ends at byte {}, inside rows [{}, {}) (bytes [{}, {})): truncated file", path,
          t.w->name, t.offset + uint64_t(done), t.rows.begin, t.rows.end, t.offset, t.offset + uint64_t(t.bytes)));
    done += r;
  }
  return Status::Ok();
}

// Open descriptors of the model's shards, closed on scope exit.
struct Shards {
  std::vector<int> fds;
  ~Shards() {
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
  }
};

}  // namespace

int64_t TensorRows::bytes() const {
  int64_t n = 0;
  for (const Span& s : rows) n += s.size() * w->row_bytes;
  return n;
}

std::vector<TensorRows> rows_needed(const HParams& hp, const ModelWeights& w, const RankPlan& plan) {
  Needs n;
  const bool tied = w.output.name == w.token_embd.name;
  if (plan.embed) n.whole(w.token_embd);
  if (plan.output) {
    n.whole(w.output_norm);
    n.add(tied ? w.token_embd : w.output, {plan.vocab_begin, plan.vocab_end});
  }
  for (const LayerPlan& lp : plan.layers)
    if (lp.layer >= 0 && lp.layer < int64_t(w.layers.size())) layer_needs(hp, w.layers[size_t(lp.layer)], lp, n);
  return std::move(n).finish();
}

bool needs_whole_model(const ModelWeights& w, const std::vector<TensorRows>& needs) {
  std::set<std::string> whole;
  for (const TensorRows& t : needs)
    if (t.rows.size() == 1 && t.rows[0] == Span{0, t.w->n_rows()}) whole.insert(t.w->name);
  auto held = [&](const Weight& x) { return !x.present() || whole.count(x.name) > 0; };
  if (!held(w.token_embd) || !held(w.output_norm) || !held(w.output)) return false;
  for (const LayerWeights& L : w.layers)
    for (const Weight* x : members(L))
      if (!held(*x)) return false;
  return true;
}

Result<std::unique_ptr<WeightStore>> WeightStore::load(const Model& model, const std::vector<TensorRows>& needs,
                                                       ThreadPool& pool) {
  const gguf::File& file = model.file();
  std::unique_ptr<WeightStore> s(new WeightStore());
  // Lay out every held run of rows in one region; remember where each tensor's runs go.
  std::vector<std::vector<int64_t>> at(needs.size());
  int64_t size = 0;
  for (size_t i = 0; i < needs.size(); ++i)
    for (const Span& r : needs[i].rows) {
      size = (size + kBlockAlign - 1) / kBlockAlign * kBlockAlign;
      at[i].push_back(size);
      size += r.size() * needs[i].w->row_bytes;
      s->bytes_ += r.size() * needs[i].w->row_bytes;
    }
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  s->region_size_ = std::max<size_t>((size_t(size) + page - 1) / page * page, page);
  void* region = ::mmap(nullptr, s->region_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) {
    s->region_size_ = 0;
    return Status::OutOfRange(fmt::format("{}: cannot allocate {} bytes for this rank's weights: {}", file.path(), size,
                                          std::strerror(errno)));
  }
  s->region_ = region;
  // Large models: transparent huge pages cut TLB misses in the matmuls (advice only).
  if (s->region_size_ >= (size_t{2} << 20)) ::madvise(region, s->region_size_, MADV_HUGEPAGE);
  uint8_t* base = static_cast<uint8_t*>(region);

  // The read tasks, in file order per tensor, each at most kChunkBytes.
  std::vector<ReadTask> tasks;
  for (size_t i = 0; i < needs.size(); ++i) {
    const Weight& w = *needs[i].w;
    const gguf::TensorInfo* ti = file.find_tensor(w.name);
    if (!ti) return Status::Internal(fmt::format("{}: tensor '{}' is not in the file", file.path(), w.name));
    for (size_t j = 0; j < needs[i].rows.size(); ++j) {
      const Span r = needs[i].rows[j];
      const uint64_t off0 = file.data_offset(ti->split_index) + ti->offset + uint64_t(r.begin * w.row_bytes);
      const int64_t n = r.size() * w.row_bytes;
      for (int64_t b = 0; b < n; b += kChunkBytes)
        tasks.push_back(
            ReadTask{ti->split_index, off0 + uint64_t(b), std::min(kChunkBytes, n - b), base + at[i][j] + b, &w, r});
    }
  }
  Shards shards;
  for (const std::string& path : file.shard_paths()) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::IoError(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    shards.fds.push_back(fd);
  }
  std::vector<Status> errors(tasks.size());
  pool.run(int64_t(tasks.size()), [&](int64_t k, int) {
    const ReadTask& t = tasks[size_t(k)];
    errors[size_t(k)] = read_task(shards.fds[size_t(t.shard)], file.shard_paths()[size_t(t.shard)], t);
  });
  // Report the failing read nearest the start of the file: with a truncated file, that is the
  // tensor the file ends in (reads of later tensors fail too).
  const ReadTask* first = nullptr;
  const Status* first_error = nullptr;
  for (size_t k = 0; k < tasks.size(); ++k)
    if (!errors[k].ok() &&
        (!first || std::pair(tasks[k].shard, tasks[k].offset) < std::pair(first->shard, first->offset))) {
      first = &tasks[k];
      first_error = &errors[k];
    }
  if (first_error) return *first_error;

  // Views: the model's tensors with no rows, then the held runs (whole tensors as `data`).
  s->w_ = model.weights();
  std::map<std::string, Weight*> views;  // a tied output head is token_embd's view
  for (Weight* w : {&s->w_.token_embd, &s->w_.output_norm, &s->w_.output}) views.emplace(w->name, w);
  for (LayerWeights& L : s->w_.layers)
    for (Weight* w : members(L)) views.emplace(w->name, w);
  for (auto& [name, w] : views) {  // absent optional tensors (no name) hold nothing already
    w->data = nullptr;
    w->blocks.clear();
  }
  s->w_.output.data = nullptr;  // also when tied (a second copy of token_embd, not in `views`)
  auto view_of = [&](const std::string& name) -> Weight* {
    auto it = views.find(name);
    return it == views.end() ? nullptr : it->second;
  };
  for (size_t i = 0; i < needs.size(); ++i) {
    Weight* w = view_of(needs[i].w->name);
    if (!w) return Status::Internal(fmt::format("weight store: no view for tensor '{}'", needs[i].w->name));
    const auto& rows = needs[i].rows;
    if (rows.size() == 1 && rows[0] == Span{0, w->n_rows()}) {
      w->data = base + at[i][0];
      continue;
    }
    for (size_t j = 0; j < rows.size(); ++j) w->blocks.push_back(RowBlock{rows[j].begin, rows[j].end, base + at[i][j]});
  }
  if (model.weights().output.name == model.weights().token_embd.name) s->w_.output = s->w_.token_embd;  // tied
  // The store is read-only from here on; a stray write is a crash, not silent corruption.
  ::mprotect(region, s->region_size_, PROT_READ);
  return s;
}

WeightStore::~WeightStore() {
  if (region_) ::munmap(region_, region_size_);
}

int64_t WeightStore::resident_bytes() const {
  if (!region_) return 0;
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  constexpr size_t kPagesPerCall = size_t{1} << 18;  // bounds the vector for very large stores
  std::vector<unsigned char> vec;
  int64_t resident = 0;
  for (size_t p0 = 0; p0 * page < region_size_; p0 += kPagesPerCall) {
    const size_t n = std::min(kPagesPerCall, region_size_ / page - p0);
    vec.resize(n);
    if (::mincore(static_cast<uint8_t*>(region_) + p0 * page, n * page, vec.data()) != 0) return -1;
    for (unsigned char v : vec) resident += (v & 1) ? int64_t(page) : 0;
  }
  return resident;
}

}  // namespace expertmesh::worker
