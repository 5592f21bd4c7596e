// Access to ../shared/golden for tests. The folder is found via EXPERTMESH_SHARED_DIR (set by
// ctest) or ../shared relative to the source tree. When it is absent a golden test skips with a
// clear message, unless EXPERTMESH_REQUIRE_GOLDEN=1, in which case it fails (CI sets that).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace expertmesh::testing {

// Path of the golden folder, or empty if it does not exist.
std::filesystem::path golden_dir();
bool golden_required();
// Sorted list of files in golden_dir()/sub whose names match the ECMAScript regex `pattern`.
std::vector<std::filesystem::path> golden_files(const std::string& sub, const std::string& pattern);
// Path of the built expertmesh binary (EXPERTMESH_BIN/expertmesh).
std::filesystem::path expertmesh_binary();
// A fresh empty temporary directory for this test (removed by the caller or left in /tmp).
std::filesystem::path temp_dir(const std::string& tag);

// Runs `cmd` with /bin/sh, captures stdout+stderr; returns the exit status (-1 on failure to run).
int run_command(const std::string& cmd, std::string* output);

}  // namespace expertmesh::testing

// Put at the top of a golden test body: skips (or fails under EXPERTMESH_REQUIRE_GOLDEN=1)
// when ../shared/golden is missing.
#define EM_REQUIRE_GOLDEN()                                                                        \
  do {                                                                                             \
    if (::expertmesh::testing::golden_dir().empty()) {                                             \
      if (::expertmesh::testing::golden_required()) {                                              \
        FAIL() << "golden data folder ../shared/golden not found and EXPERTMESH_REQUIRE_GOLDEN=1"; \
      } else {                                                                                     \
        GTEST_SKIP() << "golden data folder ../shared/golden not found; set EXPERTMESH_SHARED_DIR"; \
      }                                                                                            \
    }                                                                                              \
  } while (0)
