// Throughput of the reference dequantizers (quant::dequantize_rows) over a 4096 x 256 tensor.
//
// Reported: bytes_per_second = bytes of the *source* (quantized) tensor read per second, the
// figure that matters when a memory-bound kernel streams weights; items_per_second = weights
// produced per second. Benchmarks are named BM_dequantize/<TYPE>/threads:<n>.
//
// A type whose to_float is not registered (yet) reports an error instead of a figure, so the table
// shows which types still lack a reference dequantizer.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/quant/quant.h"
#include "model/types.h"

namespace expertmesh {
namespace {

constexpr int64_t kNe0 = 4096;  // elements per row (a multiple of every block size we bench)
constexpr int64_t kRows = 256;  // a multiple of every interleave (16)

// Builds a source tensor of `type`: quantized from seeded Gaussian weights when the type has a
// quantizer, else seeded random bytes (enough to measure throughput; values are irrelevant).
// Returns an empty vector if the type's row size is invalid for kNe0.
std::vector<uint8_t> make_source(GgmlType type) {
  auto rs = row_size_checked(type, kNe0);
  if (!rs.ok()) return {};
  std::vector<uint8_t> src(static_cast<size_t>(*rs * kRows));
  std::mt19937 rng(1234);
  const quant::QuantFns& fns = quant::quant_fns(type);
  if (fns.quantize != nullptr) {
    std::normal_distribution<float> dist(0.0f, 0.02f);
    std::vector<float> w(static_cast<size_t>(kNe0 * kRows));
    for (float& x : w) x = dist(rng);
    if (quant::quantize_rows(type, w.data(), src.data(), kRows, kNe0, nullptr, 1).ok()) return src;
  }
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& b : src) b = static_cast<uint8_t>(byte(rng));
  return src;
}

void BM_dequantize(benchmark::State& state, GgmlType type) {
  if (quant::quant_fns(type).to_float == nullptr) {
    state.SkipWithError((std::string("no to_float registered for ") + type_upper_name(type)).c_str());
    return;
  }
  std::vector<uint8_t> src = make_source(type);
  if (src.empty()) {
    state.SkipWithError("row size invalid for ne0 = 4096");
    return;
  }
  std::vector<float> dst(static_cast<size_t>(kNe0 * kRows));
  const int n_threads = static_cast<int>(state.range(0));
  for (auto _ : state) {
    Status s = quant::dequantize_rows(type, src.data(), dst.data(), kRows, kNe0, n_threads);
    if (!s.ok()) {
      state.SkipWithError(s.to_string().c_str());
      break;
    }
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(src.size()));
  state.SetItemsProcessed(state.iterations() * kNe0 * kRows);
}

void thread_args(benchmark::internal::Benchmark* b) {
  b->ArgName("threads")->Arg(1);
  unsigned hw = std::thread::hardware_concurrency();
  if (hw > 1) b->Arg(static_cast<int64_t>(hw));
  b->UseRealTime();  // the driver spawns threads: CPU time of the caller alone would mislead
}

BENCHMARK_CAPTURE(BM_dequantize, F16, GgmlType::F16)->Apply(thread_args);
BENCHMARK_CAPTURE(BM_dequantize, BF16, GgmlType::BF16)->Apply(thread_args);
BENCHMARK_CAPTURE(BM_dequantize, Q8_0, GgmlType::Q8_0)->Apply(thread_args);

}  // namespace
}  // namespace expertmesh
