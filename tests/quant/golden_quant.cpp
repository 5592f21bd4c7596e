#include "tests/quant/golden_quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/sha256.h"
#include "kernels/quant/quant.h"
#include "model/gguf/gguf.h"
#include "model/imatrix_dat.h"
#include "tests/common/golden.h"

namespace expertmesh::testing {
namespace fs = std::filesystem;

std::vector<GoldenTensor> load_golden_json(const fs::path& path) {
  std::vector<GoldenTensor> out;
  std::ifstream f(path);
  if (!f) return out;
  nlohmann::json j = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return out;
  for (const auto& e : j) {
    GoldenTensor t;
    t.name = e.value("name", "");
    t.type = e.value("type", "");
    t.sha256 = e.value("sha256", "");
    if (e.contains("ne")) t.ne = e["ne"].get<std::vector<int64_t>>();
    if (e.contains("rmse")) t.rmse = e["rmse"].get<double>();
    if (e.contains("weighted_mse")) t.weighted_mse = e["weighted_mse"].get<double>();
    out.push_back(std::move(t));
  }
  return out;
}

namespace {

fs::path types_dir() { return golden_dir() / "types"; }

int64_t nrows_of(const gguf::TensorInfo& t) { return t.ne[1] * t.ne[2] * t.ne[3]; }

std::map<std::string, GoldenTensor> by_name(const std::vector<GoldenTensor>& v) {
  std::map<std::string, GoldenTensor> m;
  for (const auto& t : v) m[t.name] = t;
  return m;
}

}  // namespace

int check_dequant(const std::string& type_upper, const std::string& variant) {
  const fs::path file = types_dir() / fmt::format("zoo-{}-{}.gguf", type_upper, variant);
  const fs::path json = types_dir() / fmt::format("zoo-{}-{}.dequant.json", type_upper, variant);
  auto golden = by_name(load_golden_json(json));
  if (golden.empty()) {
    ADD_FAILURE() << "no golden dequant data in " << json;
    return 0;
  }
  auto f = gguf::File::open(file.string());
  if (!f.ok()) {
    ADD_FAILURE() << f.status().to_string();
    return 0;
  }
  int checked = 0;
  for (const auto& t : (*f)->tensors()) {
    auto it = golden.find(t.name);
    if (it == golden.end()) {
      ADD_FAILURE() << file.filename() << ": tensor " << t.name << " not in " << json.filename();
      continue;
    }
    std::vector<float> out(static_cast<size_t>(t.n_elements()));
    Status s = quant::dequantize_rows(t.type, t.data, out.data(), nrows_of(t), t.ne[0], 2);
    if (!s.ok()) {
      ADD_FAILURE() << file.filename() << ": " << t.name << " (" << type_name(t.type) << "): " << s.to_string();
      continue;
    }
    std::string sha = sha256_hex(out.data(), out.size() * sizeof(float));
    EXPECT_EQ(sha, it->second.sha256) << file.filename() << ": dequantized " << t.name << " (" << type_name(t.type)
                                      << ") differs from the peer's; first value ours " << out[0];
    ++checked;
  }
  return checked;
}

QuantizeReport check_quantize(const std::string& type_upper, const std::string& variant, double max_ratio) {
  QuantizeReport rep;
  auto type = parse_type_name(type_upper);
  if (!type.ok()) {
    ADD_FAILURE() << type.status().to_string();
    return rep;
  }
  auto src = gguf::File::open((golden_dir() / "models" / "zoo-src-f32.gguf").string());
  if (!src.ok()) {
    ADD_FAILURE() << src.status().to_string();
    return rep;
  }
  Imatrix imatrix;
  if (variant == "imat") {
    auto im = Imatrix::read((golden_dir() / "imatrix" / "zoo.imatrix.dat").string());
    if (!im.ok()) {
      ADD_FAILURE() << im.status().to_string();
      return rep;
    }
    imatrix = std::move(im).value();
  }
  auto raw = load_golden_json(types_dir() / fmt::format("zoo-{}-{}.raw.json", type_upper, variant));
  auto deq = by_name(load_golden_json(types_dir() / fmt::format("zoo-{}-{}.dequant.json", type_upper, variant)));
  if (raw.empty()) {
    ADD_FAILURE() << "no raw.json for " << type_upper << " " << variant;
    return rep;
  }
  for (const auto& g : raw) {
    if (g.type != type_upper) continue;
    const gguf::TensorInfo* t = (*src)->find_tensor(g.name);
    if (!t || t->type != GgmlType::F32) {
      ADD_FAILURE() << "source tensor " << g.name << " missing or not F32";
      continue;
    }
    ++rep.tensors;
    const int64_t ne0 = t->ne[0], ne1 = t->ne[1], n_expert = t->ne[2] * t->ne[3];
    const float* x = reinterpret_cast<const float*>(t->data);
    const int64_t rs = row_size(*type, ne0);
    std::vector<uint8_t> q(static_cast<size_t>(rs * ne1 * n_expert));
    const ImatrixEntry* ie = variant == "imat" ? imatrix.find_for_tensor(g.name) : nullptr;
    std::vector<float> w = ie ? ie->mean() : std::vector<float>();
    if (ie && static_cast<int64_t>(w.size()) != ne0 * n_expert) {
      ADD_FAILURE() << g.name << ": imatrix entry has " << w.size() << " values, expected " << ne0 * n_expert;
      continue;
    }
    bool ok = true;
    for (int64_t e = 0; e < n_expert && ok; ++e) {
      Status s = quant::quantize_rows(*type, x + e * ne0 * ne1, q.data() + e * rs * ne1, ne1, ne0,
                                      ie ? w.data() + e * ne0 : nullptr, 2);
      if (!s.ok()) {
        ADD_FAILURE() << g.name << ": " << s.to_string();
        ok = false;
      }
    }
    if (!ok) continue;
    if (sha256_hex(q.data(), q.size()) == g.sha256) {
      ++rep.identical;
      continue;
    }
    std::vector<float> y(static_cast<size_t>(ne0 * ne1 * n_expert));
    Status s = quant::dequantize_rows(*type, q.data(), y.data(), ne1 * n_expert, ne0, 2);
    if (!s.ok()) {
      ADD_FAILURE() << g.name << ": " << s.to_string();
      continue;
    }
    // Same metric as the golden files: weighted by the imatrix entry of exactly this name.
    const ImatrixEntry* exact = variant == "imat" ? imatrix.find(g.name) : nullptr;
    std::vector<float> wm = exact ? exact->mean() : std::vector<float>();
    const bool weighted = exact && deq.count(g.name) && deq[g.name].weighted_mse >= 0;
    double acc = 0;
    for (int64_t e = 0; e < n_expert; ++e)
      for (int64_t r = 0; r < ne1; ++r)
        for (int64_t c = 0; c < ne0; ++c) {
          size_t i = static_cast<size_t>((e * ne1 + r) * ne0 + c);
          double d = double(y[i]) - double(x[i]);
          acc += d * d * (weighted ? double(wm[static_cast<size_t>(e * ne0 + c)]) : 1.0);
        }
    const double ours = acc / double(ne0 * ne1 * n_expert);
    double peer = -1;
    if (deq.count(g.name)) peer = weighted ? deq[g.name].weighted_mse : deq[g.name].rmse * deq[g.name].rmse;
    if (peer <= 0) {
      ADD_FAILURE() << g.name << ": no peer error figure to compare with";
      continue;
    }
    const double ratio = ours / peer;
    rep.worst_ratio = std::max(rep.worst_ratio, ratio);
    EXPECT_LE(ratio, max_ratio) << type_upper << " " << variant << " " << g.name << ": our "
                                << (weighted ? "weighted " : "") << "MSE " << ours << " vs peer " << peer;
  }
  std::printf("[quantize %-8s %-5s] %d tensors, %d bit-identical, worst MSE ratio %.4f\n", type_upper.c_str(),
              variant.c_str(), rep.tensors, rep.identical, rep.worst_ratio);
  EXPECT_GT(rep.tensors, 0) << "no tensors of type " << type_upper << " in the golden " << variant << " file";
  return rep;
}

int check_repack(const std::string& r_type_upper) {
  auto rtype = parse_type_name(r_type_upper);
  if (!rtype.ok()) {
    ADD_FAILURE() << rtype.status().to_string();
    return 0;
  }
  const TypeTraits* rt = type_traits(*rtype);
  const quant::QuantFns& fns = quant::quant_fns(*rtype);
  if (!fns.repack || !fns.unpack) {
    ADD_FAILURE() << r_type_upper << ": no repack/unpack functions";
    return 0;
  }
  auto rf = gguf::File::open((types_dir() / fmt::format("zoo-{}-plain.gguf", r_type_upper)).string());
  auto bf = gguf::File::open((types_dir() / fmt::format("zoo-{}-plain.gguf", type_upper_name(rt->base))).string());
  if (!rf.ok() || !bf.ok()) {
    ADD_FAILURE() << (rf.ok() ? bf.status() : rf.status()).to_string();
    return 0;
  }
  int checked = 0;
  for (const auto& t : (*rf)->tensors()) {
    if (t.type != *rtype) continue;
    const gguf::TensorInfo* b = (*bf)->find_tensor(t.name);
    if (!b || b->type != rt->base || b->nbytes != t.nbytes) {
      ADD_FAILURE() << t.name << ": base tensor missing or of another type/size";
      continue;
    }
    std::vector<uint8_t> out(static_cast<size_t>(t.nbytes));
    fns.repack(b->data, out.data(), nrows_of(t), t.ne[0]);
    EXPECT_EQ(0, std::memcmp(out.data(), t.data, out.size())) << r_type_upper << ": repacked " << t.name
                                                              << " differs from the peer's bytes";
    fns.unpack(t.data, out.data(), nrows_of(t), t.ne[0]);
    EXPECT_EQ(0, std::memcmp(out.data(), b->data, out.size())) << r_type_upper << ": unpacked " << t.name
                                                               << " differs from the base bytes";
    ++checked;
  }
  EXPECT_GT(checked, 0) << "no " << r_type_upper << " tensors found";
  return checked;
}

}  // namespace expertmesh::testing
