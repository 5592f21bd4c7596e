// `expertmesh inspect FILE`: what gguf-dump prints (header, numbered KVs with long arrays
// abbreviated, tensors), followed by a size summary: tensors per type, parameters, bytes, bits
// per weight and, for MoE models, the routed experts' share (tensors named *_exps.*).
//
//   --json        one JSON object {"metadata": {...}, "tensors": [...], "summary": {...}}
//   --no-tensors  leave out the tensor listing (the summary still counts them)
//   --hash        sha256 of each tensor's exact bytes (text column / "sha256" field)
//   --max-array N JSON: arrays longer than N become {"array_length": L, "head": [first N]}
//
// Every rank opens the file (a cheap mmap), so a bad file fails on all ranks alike; only rank 0
// hashes and prints. Errors are the reader's Status, which names the file.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/flags.h"
#include "common/sha256.h"
#include "model/gguf/gguf.h"

namespace expertmesh::cli {
namespace {

using gguf::Value;
using gguf::ValueType;
using json = nlohmann::ordered_json;  // metadata keys in file order, as gguf-dump

struct InspectOptions {
  std::string path;
  bool json = false;
  bool no_tensors = false;
  bool hash = false;
  int64_t max_array = -1;  // -1: no limit
  int threads = 1;
};

// Text rendering limits, as gguf-dump: strings cut at 60 characters; arrays show a few elements.
constexpr size_t kMaxTextString = 60;
constexpr size_t kMaxTextArray = 8;

// ---------------------------------------------------------------- statistics

struct Totals {
  int64_t tensors = 0;
  int64_t params = 0;
  int64_t bytes = 0;
  void add(const gguf::TensorInfo& t) {
    tensors += 1;
    params += t.n_elements();
    bytes += t.nbytes;
  }
};

struct Stats {
  Totals all;
  std::map<int32_t, Totals> by_type;  // keyed by ggml type id: id order
  Totals experts;                     // routed experts: names containing "_exps."
  std::vector<Totals> by_shard;
};

bool is_routed_expert(const std::string& name) { return name.find("_exps.") != std::string::npos; }

Stats compute_stats(const gguf::File& f) {
  Stats s;
  s.by_shard.resize(static_cast<size_t>(std::max(1, f.n_splits())));
  for (const auto& t : f.tensors()) {
    s.all.add(t);
    s.by_type[static_cast<int32_t>(t.type)].add(t);
    if (is_routed_expert(t.name)) s.experts.add(t);
    if (t.split_index >= 0 && static_cast<size_t>(t.split_index) < s.by_shard.size()) s.by_shard[t.split_index].add(t);
  }
  return s;
}

double bits_per_weight(const Totals& t) { return t.params > 0 ? 8.0 * static_cast<double>(t.bytes) / t.params : 0.0; }
double share(int64_t part, int64_t whole) { return whole > 0 ? static_cast<double>(part) / whole : 0.0; }

// sha256 of every tensor's bytes ("" where the file holds no data), hashed on `threads` threads.
std::vector<std::string> hash_tensors(const gguf::File& f, int threads) {
  const auto& ts = f.tensors();
  std::vector<std::string> out(ts.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < ts.size(); i = next++)
      if (ts[i].data) out[i] = sha256_hex(ts[i].data, static_cast<size_t>(ts[i].nbytes));
  };
  const int n = std::max(1, std::min<int>(threads, static_cast<int>(ts.size())));
  std::vector<std::thread> pool;
  for (int i = 1; i < n; ++i) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
  return out;
}

// ---------------------------------------------------------------- value rendering

const char* kv_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8: return "UINT8";
    case ValueType::INT8: return "INT8";
    case ValueType::UINT16: return "UINT16";
    case ValueType::INT16: return "INT16";
    case ValueType::UINT32: return "UINT32";
    case ValueType::INT32: return "INT32";
    case ValueType::FLOAT32: return "FLOAT32";
    case ValueType::BOOL: return "BOOL";
    case ValueType::STRING: return "STRING";
    case ValueType::ARRAY: return "ARRAY";
    case ValueType::UINT64: return "UINT64";
    case ValueType::INT64: return "INT64";
    case ValueType::FLOAT64: return "FLOAT64";
  }
  return "?";
}

bool is_unsigned(ValueType t) {
  return t == ValueType::UINT8 || t == ValueType::UINT16 || t == ValueType::UINT32 || t == ValueType::UINT64;
}

// gguf-dump's type column: "[" per nesting level around the innermost element type.
std::string pretty_type(const Value& v) {
  if (v.type != ValueType::ARRAY) return kv_type_name(v.type);
  if (v.elem_type == ValueType::ARRAY) {
    if (v.array.empty()) return "[[?]]";
    return "[" + pretty_type(v.array.front()) + "]";
  }
  return std::string("[") + kv_type_name(v.elem_type) + "]";
}

// Element count column: 1 for scalars, the array length for arrays.
size_t value_count(const Value& v) { return v.type == ValueType::ARRAY ? v.array.size() : 1; }

// Python-repr-like quoting with control characters escaped; cut after max_chars bytes
// (never inside a UTF-8 sequence).
std::string quote(const std::string& s, size_t max_chars) {
  size_t n = std::min(s.size(), max_chars);
  while (n < s.size() && n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  std::string out = "'";
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\\': out += "\\\\"; break;
      case '\'': out += "\\'"; break;
      default:
        if (c < 0x20 || c == 0x7F) out += fmt::format("\\x{:02x}", c);
        else out += static_cast<char>(c);
    }
  }
  out += "'";
  if (n < s.size()) out += "...";
  return out;
}

// Shortest round-trip form, with ".0" added to integral values as Python prints floats.
template <typename F>
std::string float_string(F x) {
  std::string s = fmt::format("{}", x);
  if (s.find_first_of(".eEni") == std::string::npos) s += ".0";
  return s;
}

std::string render(const Value& v) {
  switch (v.type) {
    case ValueType::STRING: return quote(v.str, kMaxTextString);
    case ValueType::BOOL: return v.as_bool() ? "True" : "False";
    case ValueType::FLOAT32: return float_string(static_cast<float>(v.as_double()));
    case ValueType::FLOAT64: return float_string(v.as_double());
    case ValueType::ARRAY: {
      std::string s = "[";
      const size_t n = std::min(v.array.size(), kMaxTextArray);
      for (size_t i = 0; i < n; ++i) {
        if (i) s += ", ";
        s += v.array[i].type == ValueType::STRING ? quote(v.array[i].str, 24) : render(v.array[i]);
      }
      if (v.array.size() > n) s += n ? ", ..." : "...";
      return s + "]";
    }
    default:
      return is_unsigned(v.type) ? fmt::format("{}", v.as_uint()) : fmt::format("{}", v.as_int());
  }
}

json value_json(const Value& v, int64_t max_array) {
  switch (v.type) {
    case ValueType::STRING: return v.str;
    case ValueType::BOOL: return v.as_bool();
    case ValueType::FLOAT32:
    case ValueType::FLOAT64: return v.as_double();
    case ValueType::ARRAY: {
      const bool cut = max_array >= 0 && v.array.size() > static_cast<size_t>(max_array);
      const size_t n = cut ? static_cast<size_t>(max_array) : v.array.size();
      json a = json::array();
      for (size_t i = 0; i < n; ++i) a.push_back(value_json(v.array[i], max_array));
      if (!cut) return a;
      return json{{"array_length", v.array.size()}, {"head", std::move(a)}};
    }
    default:
      if (is_unsigned(v.type)) return v.as_uint();
      return v.as_int();
  }
}

// ---------------------------------------------------------------- number formatting

std::string grouped(int64_t v) {
  std::string d = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < d.size(); ++i) {
    if (i && (d.size() - i) % 3 == 0) out += ',';
    out += d[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string human_count(int64_t v) {
  const double x = static_cast<double>(v);
  if (x >= 1e12) return fmt::format("{:.2f} T", x / 1e12);
  if (x >= 1e9) return fmt::format("{:.2f} B", x / 1e9);
  if (x >= 1e6) return fmt::format("{:.2f} M", x / 1e6);
  if (x >= 1e3) return fmt::format("{:.2f} K", x / 1e3);
  return fmt::format("{}", v);
}

std::string human_bytes(int64_t v) {
  const double x = static_cast<double>(v);
  if (x >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", x / (1024.0 * 1024 * 1024));
  if (x >= 1024.0 * 1024) return fmt::format("{:.2f} MiB", x / (1024.0 * 1024));
  if (x >= 1024.0) return fmt::format("{:.2f} KiB", x / 1024.0);
  return fmt::format("{} B", v);
}

std::string shape_string(const gguf::TensorInfo& t) {
  // gguf-dump pads every shape to 4 dims.
  std::string s;
  for (int d = 0; d < 4; ++d) s += fmt::format("{}{:5}", d ? ", " : "", d < static_cast<int>(t.n_dims) ? t.ne[d] : 1);
  return s;
}

// ---------------------------------------------------------------- text output

void print_text(const gguf::File& f, const Stats& st, const std::vector<std::string>& hashes, const InspectOptions& o,
                std::string& out) {
  const size_t n_kv = f.kvs().size(), n_t = f.tensors().size();
  out += fmt::format("* File {} (GGUF v{}, little endian, alignment {}{})\n", f.path(), f.version(), f.alignment(),
                     f.vocab_only() ? ", vocab only: no tensor data" : "");
  if (f.n_splits() > 1) {
    out += fmt::format("* Split model: {} shards\n", f.n_splits());
    for (int i = 0; i < f.n_splits(); ++i)
      out += fmt::format("  {:5}: {} ({} tensors, {} bytes)\n", i + 1, f.shard_paths()[i],
                         st.by_shard[static_cast<size_t>(i)].tensors, grouped(static_cast<int64_t>(f.shard_size(i))));
  }
  // Like gguf-dump, the header fields are listed as the first three pseudo key/values.
  out += fmt::format("* Dumping {} key/value pair(s)\n", n_kv + 3);
  out += fmt::format("  {:5}: {:10} | {:8} | GGUF.version = {}\n", 1, "UINT32", 1, f.version());
  out += fmt::format("  {:5}: {:10} | {:8} | GGUF.tensor_count = {}\n", 2, "UINT64", 1, n_t);
  out += fmt::format("  {:5}: {:10} | {:8} | GGUF.kv_count = {}\n", 3, "UINT64", 1, n_kv);
  size_t n = 4;
  for (const auto& kv : f.kvs())
    out += fmt::format("  {:5}: {:10} | {:8} | {} = {}\n", n++, pretty_type(kv.value), value_count(kv.value), kv.key,
                       render(kv.value));
  if (!o.no_tensors) {
    const bool shards = f.n_splits() > 1;
    out += fmt::format("* Dumping {} tensor(s)\n", n_t);
    out += fmt::format("  {:>5}  {:>10} | {:26} | {:8} | {:>12} | {:>12} | {}{}name\n", "#", "elements",
                       "ne0, ne1, ne2, ne3", "type", "bytes", "offset", shards ? "shard | " : "",
                       o.hash ? fmt::format("{:64} | ", "sha256") : "");
    for (size_t i = 0; i < n_t; ++i) {
      const auto& t = f.tensors()[i];
      std::string extra;
      if (shards) extra += fmt::format("{:5} | ", t.split_index + 1);
      if (o.hash) extra += fmt::format("{:64} | ", hashes[i].empty() ? "(no data)" : hashes[i]);
      out += fmt::format("  {:5}: {:10} | {} | {:8} | {:12} | {:12} | {}{}\n", i + 1, t.n_elements(), shape_string(t),
                         type_upper_name(t.type), t.nbytes, t.offset, extra, t.name);
    }
  }
  out += "* Summary\n";
  if (const Value* a = f.find("general.architecture"); a && a->type == ValueType::STRING)
    out += fmt::format("  architecture:    {}\n", a->str);
  out += fmt::format("  tensors:         {}\n", st.all.tensors);
  for (const auto& [id, t] : st.by_type)
    out += fmt::format("    {:10} {:6} tensors {:>16} params {:>12} {:8.3f} bpw\n",
                       type_upper_name(static_cast<GgmlType>(id)), t.tensors, grouped(t.params), human_bytes(t.bytes),
                       bits_per_weight(t));
  out += fmt::format("  parameters:      {} ({})\n", grouped(st.all.params), human_count(st.all.params));
  out += fmt::format("  bytes:           {} ({})\n", grouped(st.all.bytes), human_bytes(st.all.bytes));
  if (st.all.params > 0)
    out += fmt::format("  bits per weight: {:.4f}\n", bits_per_weight(st.all));
  else
    out += "  bits per weight: n/a (no tensors)\n";
  if (st.experts.tensors > 0)
    out += fmt::format(
        "  routed experts:  {} tensors, {} params ({:.2f}% of params), {} bytes ({:.2f}% of bytes), {:.4f} bpw\n",
        st.experts.tensors, grouped(st.experts.params), 100.0 * share(st.experts.params, st.all.params),
        grouped(st.experts.bytes), 100.0 * share(st.experts.bytes, st.all.bytes), bits_per_weight(st.experts));
}

// ---------------------------------------------------------------- JSON output

json totals_json(const Totals& t) {
  json j = {{"tensors", t.tensors}, {"params", t.params}, {"bytes", t.bytes}};
  j["bits_per_weight"] = t.params > 0 ? json(bits_per_weight(t)) : json(nullptr);
  return j;
}

json summary_json(const gguf::File& f, const Stats& st) {
  json s;
  s["file"] = f.path();
  s["version"] = f.version();
  s["alignment"] = f.alignment();
  s["n_kv"] = f.kvs().size();
  s["n_tensors"] = f.tensors().size();
  s["vocab_only"] = f.vocab_only();
  const Value* a = f.find("general.architecture");
  s["architecture"] = a && a->type == ValueType::STRING ? json(a->str) : json(nullptr);
  s["n_splits"] = f.n_splits();
  json shards = json::array();
  for (int i = 0; i < f.n_splits(); ++i) {
    const Totals& t = st.by_shard[static_cast<size_t>(i)];
    shards.push_back({{"path", f.shard_paths()[i]}, {"file_bytes", f.shard_size(i)}, {"tensors", t.tensors},
                      {"tensor_bytes", t.bytes}});
  }
  s["shards"] = std::move(shards);
  s["params"] = st.all.params;
  s["bytes"] = st.all.bytes;
  s["bits_per_weight"] = st.all.params > 0 ? json(bits_per_weight(st.all)) : json(nullptr);
  json types = json::object();
  for (const auto& [id, t] : st.by_type) types[type_upper_name(static_cast<GgmlType>(id))] = totals_json(t);
  s["types"] = std::move(types);
  if (st.experts.tensors > 0) {
    json e = totals_json(st.experts);
    e["param_share"] = share(st.experts.params, st.all.params);
    e["byte_share"] = share(st.experts.bytes, st.all.bytes);
    s["routed_experts"] = std::move(e);
  } else {
    s["routed_experts"] = nullptr;
  }
  return s;
}

std::string to_json(const gguf::File& f, const Stats& st, const std::vector<std::string>& hashes,
                    const InspectOptions& o) {
  json j;
  json md = json::object();
  for (const auto& kv : f.kvs()) md[kv.key] = value_json(kv.value, o.max_array);
  j["metadata"] = std::move(md);
  if (!o.no_tensors) {
    const bool shards = f.n_splits() > 1;
    json ts = json::array();
    for (size_t i = 0; i < f.tensors().size(); ++i) {
      const auto& t = f.tensors()[i];
      json ne = json::array();
      for (uint32_t d = 0; d < t.n_dims; ++d) ne.push_back(t.ne[d]);
      json e = {{"name", t.name}, {"type", type_upper_name(t.type)}, {"ne", std::move(ne)}, {"offset", t.offset},
                {"bytes", t.nbytes}};
      if (shards) e["shard"] = t.split_index + 1;
      if (o.hash) e["sha256"] = hashes[i].empty() ? json(nullptr) : json(hashes[i]);
      ts.push_back(std::move(e));
    }
    j["tensors"] = std::move(ts);
  }
  j["summary"] = summary_json(f, st);
  // Keys and strings come from the file and need not be valid UTF-8: replace bad bytes with U+FFFD.
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace

Status cmd_inspect(RankContext& ctx, const std::vector<std::string>& args) {
  InspectOptions o;
  o.threads = ctx.n_threads;
  FlagSet fs("inspect", "print a GGUF file's metadata, tensors and a size summary (like gguf-dump)");
  fs.positional("FILE", &o.path, "a .gguf file, or any shard of a split model (all shards are read)");
  fs.add_bool({"--json"}, &o.json, "print one JSON object {metadata, tensors, summary}");
  fs.add_bool({"--no-tensors"}, &o.no_tensors, "do not list tensors (the summary still counts them)");
  fs.add_bool({"--hash"}, &o.hash, "add the sha256 of each tensor's bytes");
  fs.add_int({"--max-array"}, &o.max_array, "N",
             "JSON: arrays longer than N become {array_length, head: first N} (default: no limit)");
  fs.add_int({"-t", "--threads"}, &o.threads, "N", "threads for --hash (default: all cores)");
  EM_RETURN_IF_ERROR(fs.parse(args));
  if (fs.help_requested()) {
    if (ctx.is_root()) std::fputs(fs.usage().c_str(), stdout);
    return Status::Ok();
  }
  if (o.max_array < -1)
    return Status::InvalidArgument(fmt::format("--max-array: must be >= 0, got {}", o.max_array));
  if (o.threads <= 0) return Status::InvalidArgument(fmt::format("--threads: must be > 0, got {}", o.threads));

  EM_ASSIGN_OR_RETURN(auto file, gguf::File::open(o.path));
  if (!ctx.is_root()) return Status::Ok();

  const Stats st = compute_stats(*file);
  std::vector<std::string> hashes;
  if (o.hash) hashes = hash_tensors(*file, o.threads);
  std::string out;
  if (o.json)
    out = to_json(*file, st, hashes, o);
  else
    print_text(*file, st, hashes, o, out);
  if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size() || std::fflush(stdout) != 0)
    return Status::IoError("inspect: writing to stdout failed");
  return Status::Ok();
}

}  // namespace expertmesh::cli
