// Shared checks of our reference quantizers against ../shared/golden/types (see its README):
// zoo-T-{plain,imat}.gguf are the peer's quantizations of models/zoo-src-f32.gguf, *.raw.json
// hold the sha256 of every tensor's bytes, *.dequant.json the sha256 of every tensor dequantized
// to F32 and the peer's RMSE / imatrix-weighted MSE against the source.
//
// Each family's test calls these for its types; failures are reported with ADD_FAILURE naming
// the file, tensor and type.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace expertmesh::testing {

struct GoldenTensor {
  std::string name;
  std::string type;           // upper-case ggml name
  std::vector<int64_t> ne;
  std::string sha256;
  double rmse = -1;           // dequant.json only, vs the F32 source
  double weighted_mse = -1;   // dequant.json only, when the imatrix has an entry of that name
};

std::vector<GoldenTensor> load_golden_json(const std::filesystem::path& path);

// Dequantizes every tensor of zoo-<type>-<variant>.gguf and expects the sha256 of our F32 bytes
// to equal the peer's. Returns the number of tensors checked (0 if the file is absent → failure).
int check_dequant(const std::string& type_upper, const std::string& variant);

struct QuantizeReport {
  int tensors = 0;           // tensors the peer stored as this type
  int identical = 0;         // of those, our bytes equal the peer's
  double worst_ratio = 0;    // max over non-identical tensors of our (weighted) MSE / the peer's
};

// Quantizes every tensor of zoo-src-f32.gguf that the peer stored as `type_upper` in
// zoo-<type>-<variant> (imat: with imatrix/zoo.imatrix.dat, the peer's name fallbacks, one
// imatrix row per expert) and expects identical bytes or MSE <= max_ratio × the peer's.
// Prints one summary line per call.
QuantizeReport check_quantize(const std::string& type_upper, const std::string& variant, double max_ratio = 1.02);

// For an interleaved type R with base B: repacking the peer's B bytes (zoo-B-plain) equals the
// peer's R bytes (zoo-R-plain) exactly, and unpacking R gives B back. Returns tensors checked.
int check_repack(const std::string& r_type_upper);

}  // namespace expertmesh::testing
