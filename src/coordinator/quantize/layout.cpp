#include "coordinator/quantize/layout.h"

#include <fmt/format.h>

#include <limits>

namespace expertmesh {
namespace {

uint64_t padded(uint64_t n, uint64_t align) { return (n + align - 1) / align * align; }

std::string strip_gguf(const std::string& path) {
  if (path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0) return path.substr(0, path.size() - 5);
  return path;
}

gguf::WriteTensor write_tensor(const gguf::TensorInfo& t, const TensorPlan& tp) {
  gguf::WriteTensor wt;
  wt.name = t.name;
  wt.n_dims = t.n_dims;
  for (int d = 0; d < 4; ++d) wt.ne[d] = t.ne[d];
  wt.type = tp.dst_type;
  wt.nbytes = tp.dst_bytes;
  return wt;
}

// gguf-split's rule (gguf::Writer::write): a new shard when the count reaches max_tensors or the
// padded bytes would exceed max_bytes; at least one tensor per shard.
std::vector<std::vector<size_t>> split_by_limits(const QuantPlan& plan, const gguf::SplitOptions& split,
                                                 uint64_t align) {
  std::vector<std::vector<size_t>> shards(1);
  uint64_t cur_bytes = 0;
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const uint64_t nb = padded(static_cast<uint64_t>(plan.tensors[i].dst_bytes), align);
    const auto cur_n = static_cast<int64_t>(shards.back().size());
    const bool by_count = split.max_tensors > 0 && cur_n >= split.max_tensors;
    const bool by_size = split.max_bytes > 0 && cur_bytes + nb > static_cast<uint64_t>(split.max_bytes);
    if (cur_n > 0 && (by_count || by_size)) {
      shards.emplace_back();
      cur_bytes = 0;
    }
    shards.back().push_back(i);
    cur_bytes += nb;
  }
  return shards;
}

}  // namespace

std::string split_file_name(const std::string& prefix, int index1, int count) {
  return fmt::format("{}-{:05d}-of-{:05d}.gguf", prefix, index1, count);
}

Result<OutputLayout> make_output_layout(const gguf::Writer& meta, const gguf::File& in, const QuantPlan& plan,
                                        const std::string& path, const LayoutOptions& opt) {
  if (opt.keep_split && opt.split.enabled())
    return Status::InvalidArgument("--keep-split cannot be combined with --split-max-size / --split-max-tensors");
  if (opt.split.max_tensors < 0 || opt.split.max_bytes < 0)
    return Status::InvalidArgument("--split-max-size / --split-max-tensors must be positive");
  const auto& tensors = in.tensors();
  // Which tensors go to which file, and the file names.
  std::vector<std::vector<size_t>> groups;
  std::vector<std::string> names;
  if (opt.keep_split) {
    int n_split = 1;
    for (const auto& t : tensors) n_split = std::max(n_split, t.split_index + 1);
    groups.resize(static_cast<size_t>(n_split));
    for (size_t i = 0; i < tensors.size(); ++i) groups[static_cast<size_t>(tensors[i].split_index)].push_back(i);
    for (int s = 0; s < n_split; ++s) names.push_back(split_file_name(strip_gguf(path), s + 1, n_split));
  } else if (opt.split.enabled()) {
    groups = split_by_limits(plan, opt.split, meta.alignment());
    if (groups.size() > std::numeric_limits<uint16_t>::max())
      return Status::InvalidArgument(fmt::format("{}: {} shards exceed split.count's u16 range", path, groups.size()));
    for (size_t s = 0; s < groups.size(); ++s)
      names.push_back(split_file_name(strip_gguf(path), static_cast<int>(s + 1), static_cast<int>(groups.size())));
  } else {
    groups.emplace_back();
    for (size_t i = 0; i < tensors.size(); ++i) groups[0].push_back(i);
    names.push_back(path);
  }
  // split.* keys: in every file of a gguf-split style output; with --keep-split only when the
  // input had more than one shard (the peer's rule), and then later files hold nothing else.
  const bool split_keys = opt.split.enabled() || groups.size() > 1;
  OutputLayout layout;
  layout.slots.resize(tensors.size());
  for (size_t s = 0; s < groups.size(); ++s) {
    gguf::Writer w(meta.version());
    if (s == 0) {
      for (const auto& kv : meta.kvs()) w.set(kv.key, kv.value);
    } else if (opt.split.enabled() && meta.alignment() != 32) {
      w.set(std::string(gguf::kKeyAlignment), gguf::Value::u32(static_cast<uint32_t>(meta.alignment())));
    }
    if (split_keys) {
      w.set(std::string(gguf::kKeySplitNo), gguf::Value::u16(static_cast<uint16_t>(s)));
      w.set(std::string(gguf::kKeySplitCount), gguf::Value::u16(static_cast<uint16_t>(groups.size())));
      w.set(std::string(gguf::kKeySplitTensorsCount), gguf::Value::i32(static_cast<int32_t>(tensors.size())));
    }
    for (size_t i : groups[s]) EM_RETURN_IF_ERROR(w.add_tensor(write_tensor(tensors[i], plan.tensors[i])));
    Status valid = w.validate();
    if (!valid.ok()) return valid.with_context(names[s]);
    OutputFile f;
    f.path = names[s];
    f.header = w.header_bytes();
    const uint64_t align = w.alignment();
    uint64_t off = f.header.size();
    for (size_t i : groups[s]) {
      layout.slots[i] = TensorSlot{static_cast<int>(s), off, plan.tensors[i].dst_bytes};
      off += padded(static_cast<uint64_t>(plan.tensors[i].dst_bytes), align);
    }
    f.size = off;
    layout.files.push_back(std::move(f));
  }
  return layout;
}

}  // namespace expertmesh
