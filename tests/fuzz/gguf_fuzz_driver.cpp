// Portable driver for the GGUF fuzz target (no libFuzzer needed, so CI can run it with g++):
// a deterministic, time-bounded mutation loop over built-in seeds (small GGUFs made with the
// Writer) and optionally the golden GGUFs, calling LLVMFuzzerTestOneInput on every mutant.
//
//   gguf_fuzz_driver [--seconds S] [--iterations N] [--seed K] [--golden] [--max-seed-bytes B]
//                    [--write-seeds DIR] [--replay] [PATH...]
//
//   --seconds S        stop after S seconds (default 30); --iterations N stops after N mutants
//                      instead (whichever comes first when both are given)
//   --seed K           RNG seed (default 1); the mutant sequence depends only on K and the seeds
//   --golden           add the .gguf files under $EXPERTMESH_SHARED_DIR/golden (skipped, with a
//                      note, when that folder is absent)
//   --max-seed-bytes B skip seed files larger than B (default 1 MiB)
//   --write-seeds DIR  write the seed corpus (built-in seeds, small seed files, and a shrunk copy
//                      of every seed file over 64 KiB) to DIR as files for libFuzzer, then exit
//   --replay           run each PATH once as an input (reproduce a crash) instead of fuzzing
//   PATH               seed files or folders (searched recursively for *.gguf)
//
// On a crash the current input is written to ./gguf_fuzz_crash.gguf (signal handler, and the
// sanitizer death callback under ASan); rerun with --replay to reproduce.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "model/gguf/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;
using namespace expertmesh;
using namespace expertmesh::gguf;

// ---- crash capture -------------------------------------------------------------------------------

const uint8_t* g_current = nullptr;
size_t g_current_size = 0;

void dump_current() {
  if (g_current == nullptr) return;
  const int fd = ::open("gguf_fuzz_crash.gguf", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  size_t off = 0;
  while (off < g_current_size) {
    const ssize_t w = ::write(fd, g_current + off, g_current_size - off);
    if (w <= 0) break;
    off += static_cast<size_t>(w);
  }
  ::close(fd);
  static const char kMsg[] = "gguf_fuzz_driver: crashing input written to ./gguf_fuzz_crash.gguf\n";
  (void)!::write(2, kMsg, sizeof(kMsg) - 1);
  g_current = nullptr;
}

void on_signal(int sig) {
  dump_current();
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void run_one(const Bytes& b) {
  g_current = b.data();
  g_current_size = b.size();
  LLVMFuzzerTestOneInput(b.data(), b.size());
  g_current = nullptr;
}

// ---- seeds ---------------------------------------------------------------------------------------

struct Seed {
  std::string name;
  Bytes bytes;
  size_t header_size = 0;  // where mutations concentrate (the parsed header; whole file if unparsable)
};

size_t header_size_of(const Bytes& b) {
  auto f = File::parse(b.data(), b.size(), "seed");
  if (!f.ok()) return b.size();
  return std::min<size_t>(b.size(), (*f)->vocab_only() ? b.size() : (*f)->data_offset(0));
}

void add_tensor(Writer* w, std::vector<std::unique_ptr<Bytes>>* store, const std::string& name, GgmlType type,
                std::vector<int64_t> shape, uint8_t fill) {
  WriteTensor t;
  t.name = name;
  t.n_dims = static_cast<uint32_t>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) t.ne[i] = shape[i];
  t.type = type;
  auto nb = tensor_nbytes(type, t.ne);
  if (!nb.ok()) return;
  store->push_back(std::make_unique<Bytes>(static_cast<size_t>(nb.value()), fill));
  t.data = store->back()->data();
  t.nbytes = nb.value();
  (void)w->add_tensor(t);
}

std::vector<Seed> builtin_seeds() {
  std::vector<Seed> out;
  std::vector<std::unique_ptr<Bytes>> store;
  auto emit = [&](const std::string& name, const Writer& w) {
    auto b = w.to_bytes();
    if (b.ok()) out.push_back(Seed{name, b.value(), 0});
  };
  {
    Writer w;
    w.set("general.architecture", Value::string("llama"));
    w.set("a.u8", Value::u8(1));
    w.set("a.i8", Value::i8(-1));
    w.set("a.u16", Value::u16(2));
    w.set("a.i16", Value::i16(-2));
    w.set("a.u32", Value::u32(3));
    w.set("a.i32", Value::i32(-3));
    w.set("a.f32", Value::f32(0.5f));
    w.set("a.bool", Value::boolean(true));
    w.set("a.u64", Value::u64(4));
    w.set("a.i64", Value::i64(-4));
    w.set("a.f64", Value::f64(0.25));
    w.set("a.str", Value::string("hello"));
    w.set("a.strs", Value::string_array({"<unk>", "<s>", "a", "bc"}));
    w.set("a.i32s", Value::array_of(ValueType::INT32, {Value::i32(1), Value::i32(2)}));
    w.set("a.nested", Value::array_of(ValueType::ARRAY, {Value::array_of(ValueType::UINT8, {Value::u8(7)}),
                                                         Value::array_of(ValueType::STRING, {Value::string("x")})}));
    add_tensor(&w, &store, "f32", GgmlType::F32, {5, 3}, 1);
    add_tensor(&w, &store, "q8_0", GgmlType::Q8_0, {64, 2}, 2);
    add_tensor(&w, &store, "iq4_ks", GgmlType::IQ4_KS, {256, 1}, 3);
    add_tensor(&w, &store, "q4_0_r8", GgmlType::Q4_0_R8, {32, 8}, 4);
    add_tensor(&w, &store, "bf16", GgmlType::BF16, {4, 2, 2, 1}, 5);
    emit("builtin-all-types.gguf", w);
    w.set("general.alignment", Value::u32(64));
    emit("builtin-align64.gguf", w);
    w.set_vocab_only(true);
    emit("builtin-infos-no-data.gguf", w);
  }
  {
    Writer w;
    w.set("tokenizer.ggml.model", Value::string("gpt2"));
    w.set("tokenizer.ggml.tokens", Value::string_array({"a", "b", "ab", "<|endoftext|>"}));
    w.set("tokenizer.ggml.merges", Value::string_array({"a b"}));
    w.set_vocab_only(true);
    emit("builtin-vocab.gguf", w);
  }
  {
    Writer w(2);
    w.set("x", Value::u32(1));
    add_tensor(&w, &store, "i2_s", GgmlType::I2_S, {128, 2}, 6);
    emit("builtin-v2.gguf", w);
  }
  for (auto& s : out) s.header_size = header_size_of(s.bytes);
  return out;
}

void add_seed_files(const fs::path& p, size_t max_bytes, std::vector<Seed>* out) {
  std::error_code ec;
  std::vector<fs::path> files;
  if (fs::is_directory(p, ec)) {
    for (const auto& e : fs::recursive_directory_iterator(p, ec))
      if (e.is_regular_file() && e.path().extension() == ".gguf") files.push_back(e.path());
  } else if (fs::is_regular_file(p, ec)) {
    files.push_back(p);
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    if (fs::file_size(f, ec) > max_bytes) continue;
    std::ifstream in(f, std::ios::binary);
    Bytes b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Seed s{f.filename().string(), std::move(b), 0};
    s.header_size = header_size_of(s.bytes);
    out->push_back(std::move(s));
  }
}

// A small stand-in for a big seed: arrays cut to 16 elements and tensor data dropped (tensor infos
// kept, vocab-only layout), so a golden model's header becomes a ~10 KiB input. Empty on failure.
Seed shrink(const Seed& s) {
  auto f = File::parse(s.bytes.data(), s.bytes.size(), s.name);
  if (!f.ok()) return {};
  auto w = Writer::from_file(**f);
  if (!w.ok()) return {};
  const std::vector<KeyValue> kvs = w->kvs();
  for (const auto& kv : kvs) {
    if (kv.value.type != ValueType::ARRAY || kv.value.array.size() <= 16) continue;
    Value v = kv.value;
    v.array.resize(16);
    w->set(kv.key, std::move(v));
  }
  w->set_vocab_only(true);
  auto b = w->to_bytes();
  if (!b.ok()) return {};
  Seed out{"shrunk-" + s.name, std::move(b).value(), 0};
  out.header_size = out.bytes.size();
  return out;
}

// ---- mutation ------------------------------------------------------------------------------------

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  Bytes mutate(const Seed& s, const Seed& other) {
    Bytes b = s.bytes;
    const int n_ops = 1 + static_cast<int>(rng_() % 6);
    for (int i = 0; i < n_ops && !b.empty(); ++i) apply(&b, s.header_size, other);
    return b;
  }

 private:
  // An offset, 90% of the time inside the header region.
  size_t pick(const Bytes& b, size_t header) {
    const size_t lim = (rng_() % 10 != 0 && header > 0) ? std::min(header, b.size()) : b.size();
    return rng_() % lim;
  }

  uint64_t interesting(size_t file_size) {
    static const uint64_t kVals[] = {0,
                                     1,
                                     2,
                                     3,
                                     4,
                                     5,
                                     8,
                                     9,
                                     12,
                                     13,
                                     31,
                                     32,
                                     33,
                                     64,
                                     255,
                                     256,
                                     4096,
                                     0x7f,
                                     0x80,
                                     0xff,
                                     0x7fff,
                                     0x8000,
                                     0xffff,
                                     0x7fffffff,
                                     0x80000000,
                                     0xffffffff,
                                     0x100000000ull,
                                     0x7fffffffffffffffull,
                                     0x8000000000000000ull,
                                     ~0ull};
    switch (rng_() % 4) {
      case 0:
        return file_size + (rng_() % 3) - 1;
      case 1:
        return rng_() % 64;
      default:
        return kVals[rng_() % (sizeof(kVals) / sizeof(kVals[0]))];
    }
  }

  void apply(Bytes* b, size_t header, const Seed& other) {
    const size_t off = pick(*b, header);
    switch (rng_() % 9) {
      case 0:
        (*b)[off] ^= static_cast<uint8_t>(1u << (rng_() % 8));
        break;
      case 1:
        (*b)[off] = static_cast<uint8_t>(rng_());
        break;
      case 2: {  // u32 field
        const uint32_t v = static_cast<uint32_t>(interesting(b->size()));
        if (off + 4 <= b->size()) std::memcpy(b->data() + off, &v, 4);
        break;
      }
      case 3: {  // u64 field
        const uint64_t v = interesting(b->size());
        if (off + 8 <= b->size()) std::memcpy(b->data() + off, &v, 8);
        break;
      }
      case 4:
        b->resize(off);
        break;   // truncate
      case 5: {  // delete a chunk
        const size_t n = std::min(b->size() - off, static_cast<size_t>(1 + rng_() % 32));
        b->erase(b->begin() + static_cast<std::ptrdiff_t>(off), b->begin() + static_cast<std::ptrdiff_t>(off + n));
        break;
      }
      case 6: {  // duplicate a chunk
        const size_t n = std::min(b->size() - off, static_cast<size_t>(1 + rng_() % 32));
        Bytes chunk(b->begin() + static_cast<std::ptrdiff_t>(off), b->begin() + static_cast<std::ptrdiff_t>(off + n));
        b->insert(b->begin() + static_cast<std::ptrdiff_t>(off), chunk.begin(), chunk.end());
        break;
      }
      case 7: {  // splice: our prefix + the other seed's suffix
        if (other.bytes.empty()) break;
        const size_t from = rng_() % other.bytes.size();
        b->resize(off);
        b->insert(b->end(), other.bytes.begin() + static_cast<std::ptrdiff_t>(from), other.bytes.end());
        break;
      }
      case 8: {  // small arithmetic on an aligned u64 (counts, lengths, offsets)
        const size_t a = off & ~size_t{7};
        if (a + 8 <= b->size()) {
          uint64_t v;
          std::memcpy(&v, b->data() + a, 8);
          v += static_cast<uint64_t>(static_cast<int64_t>(rng_() % 65) - 32);
          std::memcpy(b->data() + a, &v, 8);
        }
        break;
      }
    }
  }

  std::mt19937_64 rng_;
};

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--seconds S] [--iterations N] [--seed K] [--golden] [--max-seed-bytes B] "
               "[--write-seeds DIR] [--replay] [PATH...]\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 30;
  uint64_t iterations = 0, seed = 1;
  size_t max_seed_bytes = size_t{1} << 20;
  bool golden = false, replay = false;
  std::string write_seeds;
  std::vector<fs::path> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* v = nullptr;
    if (a == "--seconds" && (v = next())) {
      seconds = std::atof(v);
    } else if (a == "--iterations" && (v = next())) {
      iterations = std::strtoull(v, nullptr, 10);
    } else if (a == "--seed" && (v = next())) {
      seed = std::strtoull(v, nullptr, 10);
    } else if (a == "--max-seed-bytes" && (v = next())) {
      max_seed_bytes = std::strtoull(v, nullptr, 10);
    } else if (a == "--write-seeds" && (v = next())) {
      write_seeds = v;
    } else if (a == "--golden") {
      golden = true;
    } else if (a == "--replay") {
      replay = true;
    } else if (!a.empty() && a[0] != '-') {
      paths.emplace_back(a);
    } else {
      return usage(argv[0]);
    }
  }
  std::signal(SIGSEGV, on_signal);
  std::signal(SIGBUS, on_signal);
  std::signal(SIGABRT, on_signal);
  std::signal(SIGILL, on_signal);
  std::signal(SIGFPE, on_signal);
  if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(dump_current);

  if (replay) {
    for (const auto& p : paths) {
      std::ifstream in(p, std::ios::binary);
      Bytes b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      run_one(b);
      std::printf("replayed %s (%zu bytes): ok\n", p.c_str(), b.size());
    }
    return 0;
  }

  std::vector<Seed> seeds = builtin_seeds();
  for (const auto& p : paths) add_seed_files(p, max_seed_bytes, &seeds);
  if (golden) {
    const char* shared = std::getenv("EXPERTMESH_SHARED_DIR");
    const fs::path g = shared ? fs::path(shared) / "golden" : fs::path();
    std::error_code ec;
    if (!g.empty() && fs::is_directory(g, ec)) {
      add_seed_files(g, max_seed_bytes, &seeds);
    } else {
      std::printf("note: --golden given but $EXPERTMESH_SHARED_DIR/golden not found; built-in seeds only\n");
    }
  }

  // Seed files larger than 64 KiB also contribute a shrunk copy (their header, short arrays).
  const size_t n_files = seeds.size();
  for (size_t i = 0; i < n_files; ++i) {
    if (seeds[i].bytes.size() <= (size_t{64} << 10)) continue;
    Seed small = shrink(seeds[i]);
    if (!small.bytes.empty()) seeds.push_back(std::move(small));
  }

  if (!write_seeds.empty()) {
    // libFuzzer works best on small inputs: write only seeds up to 64 KiB (the shrunk copies stand
    // in for the big ones).
    std::error_code ec;
    fs::create_directories(write_seeds, ec);
    size_t n = 0;
    for (const auto& s : seeds) {
      if (s.bytes.size() > (size_t{64} << 10)) continue;
      std::ofstream out(fs::path(write_seeds) / s.name, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(s.bytes.data()), static_cast<std::streamsize>(s.bytes.size()));
      ++n;
    }
    std::printf("wrote %zu seeds to %s\n", n, write_seeds.c_str());
    return 0;
  }

  std::printf("gguf_fuzz_driver: seed %llu, %zu seed inputs, %.0f s%s\n", static_cast<unsigned long long>(seed),
              seeds.size(), seconds,
              iterations ? (", at most " + std::to_string(iterations) + " iterations").c_str() : "");
  std::fflush(stdout);
  for (const auto& s : seeds) run_one(s.bytes);  // every seed as is first

  Mutator m(seed);
  std::mt19937_64 pick(seed ^ 0x9e3779b97f4a7c15ull);
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t n = 0;
  for (;; ++n) {
    if (iterations > 0 && n >= iterations) break;
    if ((n & 63) == 0 && std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() >= seconds) break;
    const Seed& s = seeds[pick() % seeds.size()];
    const Seed& other = seeds[pick() % seeds.size()];
    run_one(m.mutate(s, other));
  }
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("gguf_fuzz_driver: %llu mutants in %.1f s, no crash\n", static_cast<unsigned long long>(n), el);
  return 0;
}
