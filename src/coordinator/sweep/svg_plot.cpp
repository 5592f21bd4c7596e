#include "coordinator/sweep/svg_plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace expertmesh::coordinator {
namespace {

constexpr double kLeft = 84, kRight = 150, kTop = 56, kBottom = 64;  // margins around the plot area

std::string xml_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        // Control characters are not allowed in XML 1.0 text; drop them.
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t' || c == '\n') out += c;
    }
  }
  return out;
}

// 1, 2 or 5 times a power of ten, the smallest such step >= raw.
double nice_step(double raw) {
  if (!(raw > 0) || !std::isfinite(raw)) return 1;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= raw * (1 - 1e-9)) return m * p;
  return 10 * p;
}

std::string tick_label(double v) {
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 1e5 || a < 1e-3) return fmt::format("{:.0e}", v);
  return fmt::format("{:.6g}", v);
}

// The axis range in plot space (log10 for a log axis) covering `vals`, padded by 5%.
std::pair<double, double> axis_range(const std::vector<double>& vals) {
  if (vals.empty()) return {0, 1};
  double lo = *std::min_element(vals.begin(), vals.end()), hi = *std::max_element(vals.begin(), vals.end());
  if (hi - lo < 1e-12 * std::max(1.0, std::fabs(hi))) {
    const double pad = std::max(0.5, std::fabs(hi) * 0.1);
    return {lo - pad, hi + pad};
  }
  const double pad = 0.05 * (hi - lo);
  return {lo - pad, hi + pad};
}

}  // namespace

std::vector<double> axis_ticks(double lo, double hi, bool log_scale) {
  std::vector<double> t;
  if (!std::isfinite(lo) || !std::isfinite(hi) || hi <= lo) return t;
  if (!log_scale) {
    const double step = nice_step((hi - lo) / 6);
    for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * step && t.size() < 64; v += step)
      t.push_back(std::fabs(v) < 1e-12 * step ? 0.0 : v);
    return t;
  }
  // lo/hi are values (> 0); ticks at decades, with 2 and 5 when the span is small.
  if (lo <= 0) return t;
  const int d0 = int(std::floor(std::log10(lo))), d1 = int(std::ceil(std::log10(hi)));
  const bool fine = d1 - d0 < 3;
  for (int d = d0; d <= d1 && t.size() < 64; ++d) {
    for (double m : {1.0, 2.0, 5.0}) {
      if (m != 1.0 && !fine) continue;
      const double v = m * std::pow(10.0, d);
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) t.push_back(v);
    }
  }
  if (t.size() < 2) {  // less than a decade with no 1-2-5 inside: fall back to linear ticks
    t = axis_ticks(lo, hi, false);
    t.erase(std::remove_if(t.begin(), t.end(), [](double v) { return v <= 0; }), t.end());
  }
  return t;
}

SvgResult render_svg(const PlotSpec& spec) {
  SvgResult r;
  const double W = std::clamp(spec.width, 320, 4096), H = std::clamp(spec.height, 240, 4096);
  const double pw = W - kLeft - kRight, ph = H - kTop - kBottom;
  auto fy = [&](double y) { return spec.log_y ? std::log10(y) : y; };
  auto usable = [&](double x, double y) { return std::isfinite(x) && std::isfinite(y) && (!spec.log_y || y > 0); };

  std::vector<const PlotPoint*> pts;
  std::vector<double> xs, ys;
  for (const PlotPoint& p : spec.points) {
    if (!usable(p.x, p.y)) {
      ++r.skipped;
      continue;
    }
    pts.push_back(&p);
    xs.push_back(p.x);
    ys.push_back(fy(p.y));
  }
  std::vector<const PlotReference*> refs;
  for (const PlotReference& ref : spec.references)
    if (usable(0, ref.y)) {
      refs.push_back(&ref);
      ys.push_back(fy(ref.y));
    }
  const auto [x0, x1] = axis_range(xs);
  const auto [y0, y1] = axis_range(ys);
  auto px = [&](double x) { return kLeft + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return kTop + ph - (fy(y) - y0) / (y1 - y0) * ph; };

  std::string& s = r.svg;
  s += fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"DejaVu Sans, Arial, sans-serif\">\n"
      "<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"#ffffff\"/>\n",
      W, H);
  s += fmt::format("<text x=\"{:.1f}\" y=\"30\" font-size=\"18\" text-anchor=\"middle\">{}</text>\n", W / 2,
                   xml_escape(spec.title));
  // Grid and ticks.
  const double vy0 = spec.log_y ? std::pow(10.0, y0) : y0, vy1 = spec.log_y ? std::pow(10.0, y1) : y1;
  for (double t : axis_ticks(vy0, vy1, spec.log_y)) {
    const double y = py(t);
    s += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#e0e0e0\"/>\n", kLeft, y,
                     kLeft + pw, y);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\" text-anchor=\"end\">{}</text>\n", kLeft - 6,
                     y + 4, tick_label(t));
  }
  for (double t : axis_ticks(x0, x1, false)) {
    const double x = px(t);
    s += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#e0e0e0\"/>\n", x, kTop, x,
                     kTop + ph);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\" text-anchor=\"middle\">{}</text>\n", x,
                     kTop + ph + 18, tick_label(t));
  }
  s += fmt::format(
      "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"none\" stroke=\"#000000\"/>\n", kLeft,
      kTop, pw, ph);
  s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"14\" text-anchor=\"middle\">{}</text>\n",
                   kLeft + pw / 2, H - 16, xml_escape(spec.x_label));
  s += fmt::format(
      "<text x=\"20\" y=\"{0:.1f}\" font-size=\"14\" text-anchor=\"middle\" transform=\"rotate(-90 20 "
      "{0:.1f})\">{1}{2}</text>\n",
      kTop + ph / 2, xml_escape(spec.y_label), spec.log_y ? " (log scale)" : "");
  for (const PlotReference* ref : refs) {
    const double y = py(ref->y);
    s += fmt::format(
        "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#c03030\" stroke-dasharray=\"6,4\"/>\n",
        kLeft, y, kLeft + pw, y);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\" fill=\"#c03030\">{}</text>\n", kLeft + pw + 6,
                     y + 4, xml_escape(ref->label));
  }
  for (const PlotPoint* p : pts) {
    const double x = px(p->x), y = py(p->y);
    s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4.5\" fill=\"#1f5fbf\" stroke=\"#0b2f6f\"/>\n", x, y);
    s +=
        fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\">{}</text>\n", x + 7, y - 7, xml_escape(p->label));
  }
  s += "</svg>\n";
  return r;
}

}  // namespace expertmesh::coordinator
