// Ranks' resources from reports and cluster configs, simulated jobs, and --placement parsing.
#include <gtest/gtest.h>

#include <cstdlib>

#include "comm/topology.h"
#include "coordinator/placement/planner.h"
#include "tests/placement/placement_test_util.h"

namespace expertmesh::placement {
namespace {

std::string source_dir() {
  const char* s = std::getenv("EXPERTMESH_SOURCE_DIR");
  return s ? s : EXPERTMESH_TEST_SOURCE_DIR;
}

topology::Machine two_node_machine() {
  topology::Machine m;
  m.hostname = "box";
  for (int i = 0; i < 2; ++i) {
    topology::NumaNode n;
    n.os_index = i, n.memory_bytes = int64_t{64} << 30, n.cores = 8;
    for (int c = 0; c < 8; ++c) n.cpus.push_back(8 * i + c);
    m.numa.push_back(n);
  }
  m.n_cores = m.n_pus = 16;
  m.memory_bytes = int64_t{128} << 30;
  return m;
}

TEST(Resources, SimulatedHostsBindRanksToNodesRoundRobin) {
  auto r = simulated_reports(4, "a:2,b:2", two_node_machine());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->size(), 4u);
  EXPECT_EQ((*r)[1].host(), "a");
  EXPECT_EQ((*r)[2].host(), "b");
  EXPECT_EQ((*r)[1].numa_node(), 1);
  EXPECT_EQ((*r)[2].numa_node(), 0);
  auto res = rank_resources(*r, nullptr);
  ASSERT_TRUE(res.ok());
  for (const RankResources& rr : *res) EXPECT_EQ(rr.memory_bytes, int64_t{64} << 30);
  // Three ranks on one 2-node host: two share node 0 and split its memory.
  auto three = rank_resources(*simulated_reports(3, "", two_node_machine()), nullptr);
  ASSERT_TRUE(three.ok());
  EXPECT_EQ((*three)[0].memory_bytes, int64_t{32} << 30);
  EXPECT_EQ((*three)[1].memory_bytes, int64_t{64} << 30);
  EXPECT_FALSE(simulated_reports(4, "a:2,b:1", two_node_machine()).ok());
  EXPECT_FALSE(simulated_reports(2, "a:x,b", two_node_machine()).ok());
}

TEST(Resources, ClusterConfigDefinesHostsAndMemory) {
  auto c = load_cluster_config(source_dir() + "/configs/two-hosts.textproto");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  auto reports = simulated_reports(4, "", two_node_machine());  // all on "box" per hwloc
  ASSERT_TRUE(reports.ok());
  auto res = rank_resources(*reports, &*c);
  ASSERT_TRUE(res.ok()) << res.status().to_string();
  EXPECT_EQ((*res)[0].host, "node-a");
  EXPECT_EQ((*res)[3].host, "node-b");
  EXPECT_EQ((*res)[3].numa_node, 1);
  EXPECT_EQ((*res)[2].memory_bytes, int64_t{128} << 30);
  // The config's ranks must match the job.
  auto five = simulated_reports(5, "", two_node_machine());
  EXPECT_FALSE(rank_resources(*five, &*c).ok());
  // Hybrid over the config: one stage per simulated host.
  testing::ShapeSpec s;
  s.n_expert = 8;
  const ModelShape m = testing::make_shape(s);
  PlacementFlags flags;
  flags.placement = "hybrid";
  flags.cluster = source_dir() + "/configs/two-hosts.textproto";
  auto p = placement_for_reports(flags, m, *reports);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(n_stages(*p), 2);
  EXPECT_EQ(stage_ranks(*p, 1), (std::vector<int>{2, 3}));
  // The config's override (token_embd -> CPU) is recorded after the command line's.
  flags.overrides = {"exps=rank0"};
  flags.placement = "ep";
  auto q = placement_for_reports(flags, m, *reports);
  ASSERT_TRUE(q.ok()) << q.status().to_string();
  ASSERT_EQ(q->overrides_size(), 2);
  EXPECT_EQ(q->overrides(0).pattern(), "exps");
  EXPECT_EQ(primary_experts(q->layers(0), 0).size(), 8u);
}

TEST(Resources, PlacementFlagParsing) {
  std::string file;
  EXPECT_EQ(*parse_policy("pp", &file), PolicyKind::kPp);
  EXPECT_TRUE(file.empty());
  EXPECT_EQ(*parse_policy("hybrid", &file), PolicyKind::kHybrid);
  ASSERT_TRUE(parse_policy("configs/x.textproto", &file).ok());
  EXPECT_EQ(file, "configs/x.textproto");
  auto bad = parse_policy("tensor", &file);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--placement"), std::string::npos);
  PlacementFlags flags;
  flags.placement = "/nonexistent/p.textproto";
  auto missing = placement_for_reports(flags, testing::make_shape({}), *simulated_reports(1, "", two_node_machine()));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/p.textproto"), std::string::npos);
}

}  // namespace
}  // namespace expertmesh::placement
