// hwloc discovery on the machine running the test: consistency, not specific numbers.
#include "comm/topology.h"

#include <gtest/gtest.h>

#include <set>

namespace expertmesh::topology {
namespace {

TEST(Topology, DiscoveryIsConsistent) {
  auto m = discover();
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  ASSERT_GE(m->numa.size(), 1u);
  EXPECT_FALSE(m->hostname.empty());
  EXPECT_GE(m->n_cores, 1);
  EXPECT_GE(m->n_pus, m->n_cores);
  int64_t mem = 0;
  int cores = 0;
  std::set<int> cpus;
  for (const NumaNode& n : m->numa) {
    EXPECT_GT(n.memory_bytes, 0) << "node " << n.os_index;
    EXPECT_GE(n.cores, 1) << "node " << n.os_index;
    EXPECT_FALSE(n.cpus.empty());
    for (int c : n.cpus) {
      EXPECT_TRUE(cpus.insert(c).second) << "cpu " << c << " in two nodes";
      EXPECT_EQ(m->node_of_cpu(c), n.os_index);
    }
    mem += n.memory_bytes, cores += n.cores;
  }
  EXPECT_EQ(mem, m->memory_bytes);
  EXPECT_EQ(cores, m->n_cores) << "every core in exactly one node";
  EXPECT_EQ(static_cast<int>(cpus.size()), m->n_pus);
  for (const Gpu& g : m->gpus) {
    EXPECT_NE(m->node(g.numa_node), nullptr) << "gpu " << g.index << " near an unknown node";
  }
  EXPECT_NE(describe(*m).find("numa"), std::string::npos);
}

TEST(Topology, BindingOnThisMachine) {
  auto m = discover();
  ASSERT_TRUE(m.ok());
  auto allowed = allowed_cpus();
  ASSERT_TRUE(allowed.ok());
  ASSERT_FALSE(allowed->empty());
  for (int c : *allowed) EXPECT_GE(m->node_of_cpu(c), 0) << "allowed cpu " << c << " in no node";
  // On a 1-node machine every allowed set lies in node 0 and nothing is rebound at startup.
  if (m->numa.size() == 1) {
    EXPECT_EQ(launched_node(*m, *allowed), m->numa[0].os_index);
    auto b = bind_if_launched_bound(*m);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(*b, -1);
  }
  // A set spanning two nodes is unbound; a set inside one node is bound to it.
  Machine two;
  two.numa = {{0, 1, 1, {0, 1}}, {1, 1, 1, {2, 3}}};
  EXPECT_EQ(launched_node(two, {0, 1, 2, 3}), -1);
  EXPECT_EQ(launched_node(two, {1, 2}), -1);
  EXPECT_EQ(launched_node(two, {2, 3}), 1);
  EXPECT_EQ(launched_node(two, {}), -1);
  // Binding to the node we already run on keeps every allowed CPU usable.
  const int node = m->node_of_cpu(allowed->front());
  ASSERT_TRUE(bind_to_node(*m, node).ok());
  auto after = allowed_cpus();
  ASSERT_TRUE(after.ok());
  for (int c : *after) EXPECT_EQ(m->node_of_cpu(c), node);
  EXPECT_FALSE(bind_to_node(*m, 999).ok());
}

}  // namespace
}  // namespace expertmesh::topology
