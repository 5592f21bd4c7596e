// Helpers shared by the cli tests: running the built binary and reading its JSON.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/common/golden.h"

namespace expertmesh::testing {

// Single-quotes `s` for /bin/sh.
inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs `expertmesh ARGS...`; stdout+stderr go to *output. Returns the exit status.
inline int run_expertmesh(const std::vector<std::string>& args, std::string* output) {
  std::string cmd = shell_quote(expertmesh_binary().string());
  for (const auto& a : args) cmd += " " + shell_quote(a);
  return run_command(cmd, output);
}

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `expertmesh ARGS... > stdout_file` so stderr (logs) cannot mix into the JSON; returns the
// exit status, stdout in *json_text and stderr in *err.
inline int run_expertmesh_json(const std::vector<std::string>& args, const std::filesystem::path& tmp,
                               std::string* json_text, std::string* err) {
  const auto out_path = tmp / "stdout.json";
  std::string cmd = shell_quote(expertmesh_binary().string());
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " > " + shell_quote(out_path.string());
  int rc = run_command(cmd, err);
  *json_text = read_text(out_path);
  return rc;
}

// `expertmesh inspect --json ARGS... FILE`, parsed; fails the test on a non-zero exit or bad JSON.
inline nlohmann::json inspect_json(const std::string& file, const std::vector<std::string>& extra,
                                   const std::filesystem::path& tmp) {
  std::vector<std::string> args = {"inspect", "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back(file);
  std::string text, err;
  int rc = run_expertmesh_json(args, tmp, &text, &err);
  EXPECT_EQ(rc, 0) << file << ": " << err;
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << file << ": inspect --json did not print valid JSON: " << text.substr(0, 400);
  return j;
}

// Checks the summary against the tensor list: sums of bytes and params, per-type counts, bpw.
inline void check_summary_consistent(const nlohmann::json& j, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_TRUE(j.contains("summary"));
  const auto& s = j["summary"];
  ASSERT_TRUE(j.contains("tensors"));
  int64_t bytes = 0, params = 0;
  for (const auto& t : j["tensors"]) {
    int64_t n = 1;
    for (const auto& d : t["ne"]) n *= d.get<int64_t>();
    params += n;
    bytes += t["bytes"].get<int64_t>();
  }
  EXPECT_EQ(s["n_tensors"].get<int64_t>(), static_cast<int64_t>(j["tensors"].size()));
  EXPECT_EQ(s["params"].get<int64_t>(), params);
  EXPECT_EQ(s["bytes"].get<int64_t>(), bytes);
  int64_t type_tensors = 0, type_params = 0, type_bytes = 0;
  for (const auto& [name, t] : s["types"].items()) {
    type_tensors += t["tensors"].get<int64_t>();
    type_params += t["params"].get<int64_t>();
    type_bytes += t["bytes"].get<int64_t>();
  }
  EXPECT_EQ(type_tensors, static_cast<int64_t>(j["tensors"].size()));
  EXPECT_EQ(type_params, params);
  EXPECT_EQ(type_bytes, bytes);
  if (params > 0)
    EXPECT_NEAR(s["bits_per_weight"].get<double>(), 8.0 * static_cast<double>(bytes) / static_cast<double>(params), 1e-9);
  else
    EXPECT_TRUE(s["bits_per_weight"].is_null());
}

}  // namespace expertmesh::testing
