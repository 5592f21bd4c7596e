// The official `openai` npm package against `expertmesh serve` (issue 7 acceptance): models,
// chat (plain and streamed), completions, max_tokens -> "length", a wrong API key -> 401
// AuthenticationError. The checks live in openai_client/client_test.mjs; this test installs the
// pinned package into the build folder (npm ci from the committed lock file, cached there),
// starts the server with --api-key and runs node.
//
// Without node/npm, or when the install fails (no registry), the test skips saying why, unless
// EXPERTMESH_REQUIRE_GOLDEN=1 (CI), where it fails.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/common/golden.h"
#include "tests/server/e2e/serve_process.h"

namespace expertmesh {
namespace {

namespace fs = std::filesystem;
using testing::run_command;

// Skips, or fails when CI requires every prerequisite.
#define EM_SKIP_OR_FAIL(msg)                        \
  do {                                              \
    if (::expertmesh::testing::golden_required()) { \
      FAIL() << (msg);                              \
    } else {                                        \
      GTEST_SKIP() << (msg);                        \
    }                                               \
  } while (0)

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Copies `name` from the source folder into the install folder when its content differs.
void sync_file(const fs::path& src, const fs::path& dst, const std::string& name) {
  if (!fs::exists(src / name)) return;
  if (fs::exists(dst / name) && slurp(src / name) == slurp(dst / name)) return;
  fs::copy_file(src / name, dst / name, fs::copy_options::overwrite_existing);
}

// The installed openai version, or empty.
std::string installed_openai(const fs::path& prefix) {
  const fs::path pj = prefix / "node_modules" / "openai" / "package.json";
  if (!fs::exists(pj)) return {};
  auto j = testing::Json::parse(slurp(pj), nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j.value("version", std::string()) : std::string();
}

TEST(ServerOpenAiClient, OfficialClientTalksToServe) {
  std::string out;
  if (run_command("node --version", &out) != 0) EM_SKIP_OR_FAIL("node not found (apt-get install nodejs npm): " + out);
  if (run_command("npm --version", &out) != 0) EM_SKIP_OR_FAIL("npm not found (apt-get install nodejs npm): " + out);

  // Install once per build folder; the pinned version comes from package.json / package-lock.json.
  const fs::path src = EXPERTMESH_OPENAI_CLIENT_SRC;
  const fs::path prefix = EXPERTMESH_OPENAI_CLIENT_PREFIX;
  fs::create_directories(prefix);
  for (const char* f : {"package.json", "package-lock.json", "client_test.mjs"}) sync_file(src, prefix, f);
  const std::string wanted = testing::Json::parse(slurp(src / "package.json"))["dependencies"]["openai"];
  if (installed_openai(prefix) != wanted) {
    const std::string npm = fs::exists(prefix / "package-lock.json") ? "npm ci" : "npm install";
    const std::string cmd = "cd '" + prefix.string() + "' && timeout 240 " + npm +
                            " --no-audit --no-fund --loglevel=error --cache '" + (prefix / ".npm-cache").string() + "'";
    if (run_command(cmd, &out) != 0 || installed_openai(prefix) != wanted)
      EM_SKIP_OR_FAIL("could not install openai@" + wanted + " with `" + cmd + "`:\n" + out);
  }

  const auto dir = testing::temp_dir("serve-openai");
  const std::string model = testing::write_serve_model(dir);
  ASSERT_FALSE(model.empty());
  const std::string key = "em-test-key-5f1c";
  testing::ServeProcess srv;
  testing::ServeOptions opt;
  opt.model = model;
  opt.args = {"--parallel", "2", "-c", "2048", "--api-key", key, "--alias", "tiny-moe"};
  std::string error;
  ASSERT_TRUE(srv.start(opt, &error)) << error;

  // Without the key the server refuses even before the client is involved (GET /v1/models and
  // /health are public in the peer, so a generating endpoint is asked).
  testing::HttpReply r =
      testing::http_post(srv.host(), srv.port(), "/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 1}});
  EXPECT_EQ(r.status, 401) << r.body;

  const int rc = run_command("timeout 120 node '" + (prefix / "client_test.mjs").string() + "' '" + srv.base_url() +
                                 "/v1' '" + key + "' tiny-moe",
                             &out);
  EXPECT_EQ(rc, 0) << "client_test.mjs failed:\n" << out << "\nserver output:\n" << srv.output();
  EXPECT_NE(out.find("client_test: ok"), std::string::npos) << out;
  std::printf("%s", out.c_str());

  const int st = srv.stop(SIGTERM, 30);
  EXPECT_EQ(st, 0) << srv.output();
}

}  // namespace
}  // namespace expertmesh
