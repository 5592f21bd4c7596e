// `expertmesh bench` on a tiny synth qwen3moe model: the llama-bench markdown table parses, with
// one pp and one tg row of positive tokens/s; the weight-traffic table below it (bytes per
// generated token from the file's tensors, GB/s = bytes × t/s); -pg / -gp rows labelled as the
// peer's llama-bench labels them; --bandwidth; the --sweep table shaped like llama-sweep-bench's;
// bad values of every new flag fail with a message naming the flag.
#include <gtest/gtest.h>

#include <cmath>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "tests/cli/cli_test_util.h"

namespace expertmesh {
namespace {

using testing::expertmesh_binary;
using testing::run_command;
using testing::shell_quote;

struct BenchRun {
  int rc = -1;
  std::vector<std::string> lines;  // stdout
  std::string out, err;
};

class Bench : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new std::filesystem::path(testing::temp_dir("bench"));
    model_ = new std::string((*tmp_ / "tiny.gguf").string());
    std::string out;
    // 4 experts, top-2: the expert tensors count half per generated token.
    ASSERT_EQ(
        testing::run_expertmesh(
            {"synth", "--arch",     "qwen3moe", "--embd",    "64", "--layers", "2",    "--heads",  "4",  "--kv-heads",
             "2",     "--head-dim", "32",       "--experts", "4",  "--top-k",  "2",    "--ff-exp", "32", "--vocab-size",
             "300",   "--dtype",    "bf16",     "-t",        "2",  "-o",       *model_},
            &out),
        0)
        << out;
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tmp_;
  }

  // `expertmesh bench -m MODEL ARGS...` (no -m when with_model is false); stdout and stderr apart.
  static BenchRun bench(const std::vector<std::string>& args, bool with_model = true) {
    const auto out_path = *tmp_ / "stdout.txt";
    std::string cmd = shell_quote(expertmesh_binary().string()) + " bench";
    if (with_model) cmd += " -m " + shell_quote(*model_);
    for (const auto& a : args) cmd += " " + shell_quote(a);
    BenchRun r;
    // run_command appends 2>&1; the subshell keeps stderr (progress notes) out of the stdout file.
    r.rc = run_command("(" + cmd + " > " + shell_quote(out_path.string()) + ")", &r.err);
    r.out = testing::read_text(out_path);
    std::istringstream in(r.out);
    for (std::string l; std::getline(in, l);) r.lines.push_back(l);
    return r;
  }

  // Expects a non-zero exit whose message names `flag`.
  static void expect_refused(const std::vector<std::string>& args, const std::string& flag) {
    std::string shown;
    for (const auto& a : args) shown += " " + a;
    SCOPED_TRACE("bench" + shown);
    const BenchRun r = bench(args);
    EXPECT_NE(r.rc, 0) << r.out << r.err;
    EXPECT_NE(r.err.find(flag), std::string::npos) << "message does not name " << flag << ": " << r.err;
  }

  static std::filesystem::path* tmp_;
  static std::string* model_;
};

std::filesystem::path* Bench::tmp_ = nullptr;
std::string* Bench::model_ = nullptr;

// The llama-bench table: the lines up to the first empty one.
std::vector<std::string> first_table(const std::vector<std::string>& lines) {
  std::vector<std::string> t;
  for (const auto& l : lines) {
    if (l.empty()) break;
    t.push_back(l);
  }
  return t;
}

const std::regex kRow(
    R"(^\| qwen3moe .*\| +[0-9.]+ MiB \| +[0-9.]+ M \| CPU +\| +2 \| +([a-z0-9+@]+) \| +([0-9.]+) ± ([0-9.]+) \|$)");

// test label -> mean t/s of the llama-bench table's rows, in order.
std::vector<std::pair<std::string, double>> rows_of(const std::vector<std::string>& table) {
  std::vector<std::pair<std::string, double>> rows;
  for (size_t i = 2; i < table.size(); ++i) {
    std::smatch m;
    EXPECT_TRUE(std::regex_search(table[i], m, kRow)) << table[i];
    if (!m.empty()) rows.emplace_back(m[1], std::stod(m[2]));
  }
  return rows;
}

// Weight traffic table rows: label -> (bytes/token cell, GB/s, fraction cell).
struct TrafficRow {
  std::string label, bytes, frac;
  double gbps = 0;
};
std::vector<TrafficRow> traffic_rows(const std::vector<std::string>& lines) {
  std::vector<TrafficRow> rows;
  const std::regex head(R"(^\| test +\| +weights/token \| +GB/s \| of bandwidth \|$)");
  const std::regex row(R"(^\| ([a-z0-9@+]+) weights +\| +([0-9.]+ [kMG]?B) \| +([0-9.]+) \| +(-|[0-9.]+%) \|$)");
  size_t i = 0;
  while (i < lines.size() && !std::regex_search(lines[i], head)) ++i;
  for (i += 2; i < lines.size() && !lines[i].empty(); ++i) {
    std::smatch m;
    EXPECT_TRUE(std::regex_search(lines[i], m, row)) << lines[i];
    if (!m.empty()) rows.push_back({m[1], m[2], m[4], std::stod(m[3])});
  }
  return rows;
}

// The bytes one generated token reads, from `inspect --json`: every tensor in full, the expert
// tensors at top_k / n_expert, token_embd one row.
double expected_bytes_per_token(const std::string& model, const std::filesystem::path& tmp, double expert_share) {
  const auto j = testing::inspect_json(model, {}, tmp);
  double total = 0;
  bool tied = true;
  for (const auto& t : j["tensors"]) {
    const std::string name = t["name"];
    const double b = t["bytes"].get<double>();
    if (name == "token_embd.weight")
      total += b / t["ne"][1].get<double>();
    else if (name.find("_exps") != std::string::npos)
      total += b * expert_share;
    else
      total += b;
    if (name == "output.weight") tied = false;
  }
  EXPECT_FALSE(tied) << "synth writes an output head";
  return total;
}

double parse_bytes(const std::string& cell) {
  std::istringstream in(cell);
  double v = 0;
  std::string unit;
  in >> v >> unit;
  const double scale = unit == "GB" ? 1e9 : unit == "MB" ? 1e6 : unit == "kB" ? 1e3 : 1;
  return v * scale;
}

TEST_F(Bench, TableHasPpAndTgRows) {
  const BenchRun r = bench({"-p", "32", "-n", "8", "-t", "2", "-r", "2"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto lines = first_table(r.lines);
  ASSERT_EQ(lines.size(), 4u) << r.out;
  EXPECT_TRUE(std::regex_search(
      lines[0], std::regex(R"(^\| model +\| +size \| +params \| backend +\| threads \| +test \| +t/s \|$)")))
      << lines[0];
  EXPECT_TRUE(std::regex_search(lines[1], std::regex(R"(^\| -+ \| -+: \| -+: \| -+ \| -+: \| -+: \| -+: \|$)")))
      << lines[1];
  const auto rows = rows_of(lines);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].first, "pp32");
  EXPECT_GT(rows[0].second, 0.0);
  EXPECT_EQ(rows[1].first, "tg8");
  EXPECT_GT(rows[1].second, 0.0);
}

// Bytes per generated token as the file's tensors give them; GB/s = bytes × the tg row's t/s;
// no "| tg8 |" cell outside the llama-bench table (scripts pick rows by that cell).
TEST_F(Bench, WeightTrafficTableBelowTheTable) {
  const BenchRun r = bench({"-p", "16", "-n", "8", "-t", "2", "-r", "2"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto rows = rows_of(first_table(r.lines));
  ASSERT_EQ(rows.size(), 2u) << r.out;
  const auto traffic = traffic_rows(r.lines);
  ASSERT_EQ(traffic.size(), 1u) << r.out;  // tg rows only: pp reads each weight once per batch
  EXPECT_EQ(traffic[0].label, "tg8");
  EXPECT_EQ(traffic[0].frac, "-");  // no --bandwidth
  const double want = expected_bytes_per_token(*model_, *tmp_, 2.0 / 4.0);
  const double got = parse_bytes(traffic[0].bytes);
  EXPECT_NEAR(got, want, want * 1e-4 + 5.0) << traffic[0].bytes;
  EXPECT_NEAR(traffic[0].gbps, want * rows[1].second / 1e9, 0.006 + 1e-3 * traffic[0].gbps);
  int label_cells = 0;
  for (const auto& l : r.lines) label_cells += std::regex_search(l, std::regex(R"(\| *tg8 *\|)"));
  EXPECT_EQ(label_cells, 1) << r.out;
  EXPECT_NE(r.err.find("bench: weights read per generated token: "), std::string::npos) << r.err;
}

// -pg PP,TG -> "ppPP+tgTG" after pp and tg; -gp PP,TG -> "tgTG@ppPP"; both repeat; the peer's
// order: pp, tg, every -pg, every -gp.
TEST_F(Bench, PgAndGpRowsAsThePeerLabelsThem) {
  const BenchRun r =
      bench({"-p", "16", "-n", "4", "-pg", "16,4", "-gp", "16,4", "-pg", "8,0", "-gp", "0,2", "-t", "2", "-r", "2"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto rows = rows_of(first_table(r.lines));
  ASSERT_EQ(rows.size(), 6u) << r.out;
  const std::vector<std::string> want = {"pp16", "tg4", "pp16+tg4", "pp8+tg0", "tg4@pp16", "tg2@pp0"};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(rows[i].first, want[i]);
    EXPECT_GT(rows[i].second, 0.0) << want[i];
  }
  const auto traffic = traffic_rows(r.lines);
  ASSERT_EQ(traffic.size(), 3u) << r.out;  // the generation tests: tg4, tg4@pp16, tg2@pp0
  EXPECT_EQ(traffic[0].label, "tg4");
  EXPECT_EQ(traffic[1].label, "tg4@pp16");
  EXPECT_EQ(traffic[2].label, "tg2@pp0");
}

// -c below the longest test's positions is refused; at it, the test runs.
TEST_F(Bench, ContextHoldsTheLongestTest) {
  expect_refused({"-p", "16", "-n", "4", "-gp", "32,8", "-c", "39"}, "-c");
  const BenchRun r = bench({"-p", "0", "-n", "0", "-gp", "32,8", "-c", "40", "-t", "2", "-r", "1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto rows = rows_of(first_table(r.lines));
  ASSERT_EQ(rows.size(), 1u) << r.out;
  EXPECT_EQ(rows[0].first, "tg8@pp32");
}

TEST_F(Bench, BandwidthFillsTheFractionColumn) {
  const BenchRun r = bench({"-p", "0", "-n", "4", "-t", "2", "-r", "1", "--bandwidth", "--bandwidth-mib", "16"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::regex line(R"(^bandwidth: ([0-9.]+) GB/s read, 2 threads \(16 MiB buffer, best of [0-9]+ passes\)$)");
  double bw = 0;
  for (const auto& l : r.lines) {
    std::smatch m;
    if (std::regex_search(l, m, line)) bw = std::stod(m[1]);
  }
  ASSERT_GT(bw, 0.0) << r.out;
  const auto traffic = traffic_rows(r.lines);
  ASSERT_EQ(traffic.size(), 1u) << r.out;
  ASSERT_NE(traffic[0].frac, "-");
  EXPECT_NEAR(std::stod(traffic[0].frac), 100.0 * traffic[0].gbps / bw, 0.06 + 0.01 * traffic[0].gbps / bw * 100.0);

  // Without a model: the bandwidth line alone.
  const BenchRun alone = bench({"--bandwidth", "--bandwidth-mib", "16", "-t", "1"}, /*with_model=*/false);
  ASSERT_EQ(alone.rc, 0) << alone.err;
  ASSERT_EQ(alone.lines.size(), 1u) << alone.out;
  EXPECT_TRUE(std::regex_search(alone.lines[0], std::regex(R"(^bandwidth: [0-9.]+ GB/s read, 1 threads )")))
      << alone.lines[0];
}

// llama-sweep-bench's header byte for byte; rows at N_KV = 0, U, 2U, ... while N_KV + U fits.
TEST_F(Bench, SweepRowsAsTheCacheFills) {
  const BenchRun r = bench({"--sweep", "-c", "70", "-ub", "16", "-n", "3", "-t", "2"});
  ASSERT_EQ(r.rc, 0) << r.err;
  ASSERT_EQ(r.lines.size(), 6u) << r.out;  // header, rule, N_KV 0 16 32 48 (64 + 16 > 70)
  EXPECT_EQ(r.lines[0], "|    PP |     TG |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |");
  EXPECT_EQ(r.lines[1], "|-------|--------|--------|----------|----------|----------|----------|");
  const std::regex row(R"(^\| +(\d+) \| +(\d+) \| +(\d+) \| +([0-9.]+) \| +([0-9.]+) \| +([0-9.]+) \| +([0-9.]+) \|$)");
  for (size_t i = 2; i < r.lines.size(); ++i) {
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.lines[i], m, row)) << r.lines[i];
    EXPECT_EQ(std::stoi(m[1]), 16);
    EXPECT_EQ(std::stoi(m[2]), 3);
    EXPECT_EQ(std::stoi(m[3]), 16 * static_cast<int>(i - 2));
    EXPECT_GT(std::stod(m[5]), 0.0);
    EXPECT_GT(std::stod(m[7]), 0.0);
  }
  // -n left out: TG = -ub / 4, as the peer's.
  const BenchRun d = bench({"--sweep", "-c", "32", "-ub", "16", "-t", "2"});
  ASSERT_EQ(d.rc, 0) << d.err;
  ASSERT_EQ(d.lines.size(), 4u) << d.out;
  EXPECT_TRUE(std::regex_search(d.lines[2], std::regex(R"(^\|    16 \|      4 \|      0 \|)"))) << d.lines[2];
  EXPECT_TRUE(std::regex_search(d.lines[3], std::regex(R"(^\|    16 \|      4 \|     16 \|)"))) << d.lines[3];
}

TEST_F(Bench, BadValuesNameTheFlag) {
  expect_refused({"-pg", "5"}, "-pg");
  expect_refused({"-pg", "0,0"}, "-pg");
  expect_refused({"-pg", "1,2,3"}, "-pg");
  expect_refused({"-gp", "x,y"}, "-gp");
  expect_refused({"-gp", "16,0"}, "-gp");
  expect_refused({"-gp", "-1,4"}, "-gp");
  expect_refused({"--sweep"}, "--sweep");
  expect_refused({"--sweep"}, "-c");
  expect_refused({"--sweep", "-c", "64", "-p", "16"}, "-p");
  expect_refused({"--sweep", "-c", "64", "-gp", "16,4"}, "-gp");
  expect_refused({"--sweep", "-c", "8", "-ub", "16"}, "-c");
  expect_refused({"-ub", "0"}, "-ub");
  expect_refused({"-c", "-1"}, "-c");
  expect_refused({"--bandwidth", "--bandwidth-mib", "0"}, "--bandwidth-mib");
}

}  // namespace
}  // namespace expertmesh
