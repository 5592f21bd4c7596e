// Scale-search tables of the i-quant grids (the peer's iq2xs_init_impl / iq3xs_init_impl), built
// once per grid from the dequantization grids in iquants_tables*.cpp: the peer's compressed
// index tables are exactly the ranks of each grid byte in the grid's value set (checked against
// its kgrid_* tables when this was written), so one copy of the grids serves both directions.
#include <algorithm>
#include <climits>
#include <vector>

#include "kernels/quant/iquants_internal.h"

namespace expertmesh::quant::iq {
namespace {

// Builds the lattice of `grid_size` entries of `dim` bytes (bits per coordinate in the index u:
// `bits`). `is_signed`: bytes are int8 (IQ1_S grid) rather than uint8. `nwant`: number of
// distinct nearest distances whose points are kept as neighbours of an off-grid u.
template <typename Entry>
Lattice build_lattice(const Entry* grid, int grid_size, int dim, int bits, bool is_signed, int nwant) {
  Lattice lat;
  lat.dim = dim;
  lat.bits = bits;

  auto value = [&](Entry e, int j) {
    int b = grid_byte(static_cast<uint64_t>(e), j);
    return is_signed ? static_cast<int>(static_cast<int8_t>(b)) : b;
  };
  std::vector<int> values;
  for (int i = 0; i < grid_size; ++i)
    for (int j = 0; j < dim; ++j) values.push_back(value(grid[i], j));
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  const int max_l = static_cast<int>(values.size()) - 1;

  lat.points.resize(static_cast<size_t>(grid_size) * dim);
  const int map_size = 1 << (dim * bits);
  constexpr int32_t kUnreachable = INT32_MIN;  // u with a coordinate above max_l: never looked up
  lat.map.assign(map_size, -1);
  for (int i = 0; i < grid_size; ++i) {
    int u = 0;
    for (int j = 0; j < dim; ++j) {
      const int l =
          static_cast<int>(std::lower_bound(values.begin(), values.end(), value(grid[i], j)) - values.begin());
      lat.points[static_cast<size_t>(i) * dim + j] = static_cast<int8_t>(2 * l + 1);
      u |= l << (bits * j);
    }
    lat.map[u] = i;
  }

  // Quantizers clamp every coordinate to [0, max_l], so only those u need neighbours.
  const int mask = (1 << bits) - 1;
  std::vector<int> dist2(grid_size);
  for (int u = 0; u < map_size; ++u) {
    if (lat.map[u] >= 0) continue;
    int pos[8];
    bool reachable = true;
    for (int k = 0; k < dim; ++k) {
      const int l = (u >> (bits * k)) & mask;
      reachable = reachable && l <= max_l;
      pos[k] = 2 * l + 1;
    }
    if (!reachable) {
      lat.map[u] = kUnreachable;
      continue;
    }
    for (int j = 0; j < grid_size; ++j) {
      const int8_t* pg = lat.point(j);
      int d2 = 0;
      for (int k = 0; k < dim; ++k) d2 += (pg[k] - pos[k]) * (pg[k] - pos[k]);
      dist2[j] = d2;
    }
    // The nwant smallest distinct distances; then all points at those distances by (d2, index),
    // the order of the peer's qsort on (d2, index) pairs.
    std::vector<int> levels;
    for (int w = 0; w < nwant; ++w) {
      int next = INT_MAX;
      for (int d : dist2)
        if ((levels.empty() || d > levels.back()) && d < next) next = d;
      if (next == INT_MAX) break;
      levels.push_back(next);
    }
    const size_t start = lat.neighbours.size();
    lat.map[u] = -static_cast<int32_t>(start) - 1;
    lat.neighbours.push_back(0);
    for (int level : levels)
      for (int j = 0; j < grid_size; ++j)
        if (dist2[j] == level) lat.neighbours.push_back(static_cast<uint16_t>(j));
    lat.neighbours[start] = static_cast<uint16_t>(lat.neighbours.size() - start - 1);
  }
  return lat;
}

}  // namespace

const Lattice& iq2xxs_lattice() {
  static const Lattice lat = build_lattice(kIq2xxsGrid, 256, 8, 2, false, 2);
  return lat;
}
const Lattice& iq2xs_lattice() {
  static const Lattice lat = build_lattice(kIq2xsGrid, 512, 8, 2, false, 2);
  return lat;
}
const Lattice& iq2s_lattice() {
  static const Lattice lat = build_lattice(kIq2sGrid, 1024, 8, 2, false, 1);
  return lat;
}
const Lattice& iq1s_lattice() {
  static const Lattice lat = build_lattice(kIq1sGrid, 2048, 8, 2, true, 3);
  return lat;
}
const Lattice& iq3xxs_lattice() {
  static const Lattice lat = build_lattice(kIq3xxsGrid, 256, 4, 3, false, 2);
  return lat;
}
const Lattice& iq3s_lattice() {
  static const Lattice lat = build_lattice(kIq3sGrid, 512, 4, 3, false, 3);
  return lat;
}

}  // namespace expertmesh::quant::iq
