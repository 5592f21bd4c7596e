#include "coordinator/sweep/svg_plot.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include "tests/common/golden.h"

namespace expertmesh::coordinator {
namespace {

PlotSpec sample(bool log_y) {
  PlotSpec s;
  s.title = "PPL vs bpw <tiny & friends>";
  s.x_label = "bits per weight";
  s.y_label = "PPL";
  s.log_y = log_y;
  s.points = {{4.5, 10.0, "IQ4_KS"}, {8.5, 1.0, "Q8_0"}, {2.6, 100.0, "IQ2_KL"}};
  s.references = {{1.0, "BF16"}};
  return s;
}

// (cx, cy) of every circle, in document order.
std::vector<std::pair<double, double>> circles(const std::string& svg) {
  std::vector<std::pair<double, double>> out;
  std::regex re(R"re(<circle cx="([0-9.\-]+)" cy="([0-9.\-]+)")re");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it)
    out.emplace_back(std::stod((*it)[1]), std::stod((*it)[2]));
  return out;
}

TEST(SvgPlot, TicksAreNice) {
  EXPECT_EQ(axis_ticks(0.8, 9.3, false), (std::vector<double>{2, 4, 6, 8}));
  EXPECT_EQ(axis_ticks(-1, 1, false), (std::vector<double>{-1, -0.5, 0, 0.5, 1}));
  const auto lg = axis_ticks(0.001, 0.5, true);
  EXPECT_EQ(lg, (std::vector<double>{0.001, 0.01, 0.1}));
  const auto fine = axis_ticks(3, 80, true);  // under three decades: 1-2-5 steps
  EXPECT_EQ(fine, (std::vector<double>{5, 10, 20, 50}));
  EXPECT_TRUE(axis_ticks(1, 1, false).empty());
  EXPECT_TRUE(axis_ticks(NAN, 1, false).empty());
}

TEST(SvgPlot, LogScalePlacesDecadesEvenlyAndEscapesText) {
  const SvgResult r = render_svg(sample(true));
  EXPECT_EQ(r.skipped, 0);
  const auto c = circles(r.svg);
  ASSERT_EQ(c.size(), 3u);
  // y = 10 sits halfway between y = 1 and y = 100 on a log axis; higher values are higher up.
  EXPECT_NEAR(c[0].second, (c[1].second + c[2].second) / 2, 0.15);
  EXPECT_LT(c[2].second, c[0].second);
  EXPECT_LT(c[2].first, c[0].first);  // x = 2.6 left of x = 4.5
  EXPECT_NE(r.svg.find("&lt;tiny &amp; friends&gt;"), std::string::npos);
  EXPECT_EQ(r.svg.find("<tiny"), std::string::npos);
  EXPECT_NE(r.svg.find("stroke-dasharray"), std::string::npos);  // the reference line
  for (const char* label : {"IQ4_KS", "Q8_0", "IQ2_KL", "BF16", "(log scale)"})
    EXPECT_NE(r.svg.find(label), std::string::npos) << label;
  const SvgResult lin = render_svg(sample(false));
  const auto cl = circles(lin.svg);
  ASSERT_EQ(cl.size(), 3u);
  EXPECT_GT(cl[0].second - cl[2].second, 0);
  EXPECT_GT(std::fabs(cl[0].second - (cl[1].second + cl[2].second) / 2), 50);  // not halfway on a linear axis
}

TEST(SvgPlot, UnplottablePointsAreSkippedNotFatal) {
  PlotSpec s = sample(true);
  s.points.push_back({1, 0, "zero"});
  s.points.push_back({NAN, 1, "nan"});
  s.points.push_back({1, INFINITY, "inf"});
  const SvgResult r = render_svg(s);
  EXPECT_EQ(r.skipped, 3);
  EXPECT_EQ(circles(r.svg).size(), 3u);
  PlotSpec empty;
  const SvgResult e = render_svg(empty);
  EXPECT_NE(e.svg.find("</svg>"), std::string::npos);
  PlotSpec one;
  one.points = {{3, 3, "only"}};  // degenerate ranges still give a finite position
  const auto c = circles(render_svg(one).svg);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_TRUE(std::isfinite(c[0].first) && std::isfinite(c[0].second));
}

// Minimal PNG decoder for 8-bit RGB/RGBA, non-interlaced (what rsvg-convert writes): returns
// width, height and RGBA pixels, or false.
bool decode_png(const std::vector<unsigned char>& f, int* w, int* h, std::vector<unsigned char>* rgba) {
  if (f.size() < 8 || std::memcmp(f.data(), "\x89PNG\r\n\x1a\n", 8) != 0) return false;
  auto be32 = [&](size_t p) {
    return (uint32_t(f[p]) << 24) | (uint32_t(f[p + 1]) << 16) | (uint32_t(f[p + 2]) << 8) | f[p + 3];
  };
  std::vector<unsigned char> idat;
  int color = -1, depth = 0, interlace = 0;
  for (size_t p = 8; p + 12 <= f.size();) {
    const uint32_t len = be32(p);
    if (p + 12 + len > f.size()) return false;
    const std::string type(reinterpret_cast<const char*>(&f[p + 4]), 4);
    const unsigned char* d = &f[p + 8];
    if (type == "IHDR") {
      *w = int(be32(p + 8));
      *h = int(be32(p + 12));
      depth = d[8];
      color = d[9];
      interlace = d[12];
    } else if (type == "IDAT") {
      idat.insert(idat.end(), d, d + len);
    }
    p += 12 + len;
  }
  if (depth != 8 || (color != 2 && color != 6) || interlace != 0 || *w <= 0 || *h <= 0) return false;
  const int bpp = color == 6 ? 4 : 3;
  const size_t stride = size_t(*w) * bpp;
  std::vector<unsigned char> raw((stride + 1) * size_t(*h));
  uLongf n = raw.size();
  if (uncompress(raw.data(), &n, idat.data(), idat.size()) != Z_OK || n != raw.size()) return false;
  std::vector<unsigned char> prev(stride, 0), cur(stride);
  rgba->assign(size_t(*w) * size_t(*h) * 4, 255);
  for (int y = 0; y < *h; ++y) {
    const unsigned char filter = raw[size_t(y) * (stride + 1)];
    const unsigned char* src = &raw[size_t(y) * (stride + 1) + 1];
    for (size_t i = 0; i < stride; ++i) {
      const int a = i >= size_t(bpp) ? cur[i - bpp] : 0, b = prev[i], c = i >= size_t(bpp) ? prev[i - bpp] : 0;
      int pred = 0;
      switch (filter) {
        case 0:
          pred = 0;
          break;
        case 1:
          pred = a;
          break;
        case 2:
          pred = b;
          break;
        case 3:
          pred = (a + b) / 2;
          break;
        case 4: {
          const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
          pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default:
          return false;
      }
      cur[i] = static_cast<unsigned char>(src[i] + pred);
    }
    for (int x = 0; x < *w; ++x)
      for (int k = 0; k < bpp; ++k) (*rgba)[(size_t(y) * *w + x) * 4 + k] = cur[size_t(x) * bpp + k];
    prev = cur;
  }
  return true;
}

TEST(SvgPlot, RendersWithRsvgConvertToANonBlankImage) {
  if (std::system("command -v rsvg-convert > /dev/null 2>&1") != 0) {
    if (std::getenv("EXPERTMESH_REQUIRE_GOLDEN")) FAIL() << "rsvg-convert (librsvg2-bin) is required";
    GTEST_SKIP() << "rsvg-convert not installed (apt install librsvg2-bin)";
  }
  const auto dir = testing::temp_dir("svg");
  PlotSpec spec = sample(true);
  spec.width = 640;
  spec.height = 400;
  { std::ofstream(dir / "plot.svg") << render_svg(spec).svg; }
  const std::string cmd = "rsvg-convert -o " + (dir / "plot.png").string() + " " + (dir / "plot.svg").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(dir / "plot.png", std::ios::binary);
  std::vector<unsigned char> png((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  int w = 0, h = 0;
  std::vector<unsigned char> px;
  ASSERT_TRUE(decode_png(png, &w, &h, &px)) << "not a PNG rsvg-convert would write";
  EXPECT_EQ(w, 640);
  EXPECT_EQ(h, 400);
  size_t dark = 0, blue = 0;
  for (size_t i = 0; i < px.size(); i += 4) {
    const int r = px[i], g = px[i + 1], b = px[i + 2];
    if (r + g + b < 200) ++dark;
    if (b > 150 && r < 80 && g < 130) ++blue;  // the markers' fill
  }
  EXPECT_GT(dark, 1000u) << "axes and text should be drawn";
  EXPECT_GT(blue, 3u * 20) << "three markers should be drawn";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace expertmesh::coordinator
