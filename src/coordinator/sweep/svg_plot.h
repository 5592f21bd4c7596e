// A small SVG scatter-plot writer for sweep results (issue: PPL / KLD against bits per weight),
// so the project needs no plotting dependency. The plot is self-contained SVG 1.1 that any
// renderer (browsers, rsvg-convert, Inkscape) draws the same way: axes with "nice" ticks, a
// linear x axis, a linear or log10 y axis (the log scale users post for PPL/KLD sweeps), one
// labelled marker per point, and optional horizontal reference lines (the BF16 / Q8_0 base).
//
// Contract: render_svg never fails; non-finite points and, on a log axis, non-positive y values
// are left out (and counted in the returned `skipped`), an empty plot still has its axes. Text
// is XML-escaped. Pure function, thread-safe.
#pragma once

#include <string>
#include <vector>

namespace expertmesh::coordinator {

struct PlotPoint {
  double x = 0, y = 0;
  std::string label;
};

struct PlotReference {
  double y = 0;
  std::string label;
};

struct PlotSpec {
  std::string title;
  std::string x_label;
  std::string y_label;
  bool log_y = false;
  std::vector<PlotPoint> points;
  std::vector<PlotReference> references;  // dashed horizontal lines across the plot
  int width = 960, height = 600;          // pixels; clamped to [320, 4096] x [240, 4096]
};

struct SvgResult {
  std::string svg;
  int skipped = 0;  // points left out (non-finite, or y <= 0 on a log axis)
};

SvgResult render_svg(const PlotSpec& spec);

// Tick positions for [lo, hi]: "nice" steps (1, 2, 5 × 10^k) on a linear axis, decades (and 2, 5
// subdivisions when fewer than three decades are spanned) on a log axis. Exposed for tests.
std::vector<double> axis_ticks(double lo, double hi, bool log_scale);

}  // namespace expertmesh::coordinator
