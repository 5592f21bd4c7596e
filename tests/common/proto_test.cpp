// src/comm/proto/cluster.proto: messages survive text-format and binary round trips, and the
// documented example configs/two-hosts.textproto parses and describes 2 hosts x 2 ranks.
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "comm/proto/cluster.pb.h"

namespace expertmesh {
namespace {

namespace pb = ::expertmesh::proto;
using google::protobuf::TextFormat;
using google::protobuf::util::MessageDifferencer;

// Round-trips `m` through text format and binary into fresh messages of the same type and checks
// that both equal the original field by field.
template <typename M>
void expect_round_trips(const M& m) {
  std::string text;
  ASSERT_TRUE(TextFormat::PrintToString(m, &text));
  M from_text;
  ASSERT_TRUE(TextFormat::ParseFromString(text, &from_text)) << text;
  EXPECT_TRUE(MessageDifferencer::Equals(m, from_text)) << text;

  std::string bin;
  ASSERT_TRUE(m.SerializeToString(&bin));
  M from_bin;
  ASSERT_TRUE(from_bin.ParseFromString(bin));
  EXPECT_TRUE(MessageDifferencer::Equals(m, from_bin));
  EXPECT_EQ(from_bin.SerializeAsString(), bin) << "serialisation is deterministic for these messages";
}

TEST(Proto, TokenBatchRoundTrips) {
  pb::TokenBatch b;
  for (int i = 0; i < 5; ++i) {
    b.add_token(1000 + i);
    b.add_pos(i);
    b.add_seq_id(i % 2);
    b.add_want_logits(i == 4);
  }
  expect_round_trips(b);

  pb::TokenBatch stop;
  stop.set_shutdown(true);
  expect_round_trips(stop);
}

TEST(Proto, TokenBatchTextFormatIsReadable) {
  pb::TokenBatch b;
  ASSERT_TRUE(TextFormat::ParseFromString("token: 1 token: 2 pos: 0 pos: 1 seq_id: 0 seq_id: 0 "
                                          "want_logits: false want_logits: true",
                                          &b));
  ASSERT_EQ(b.token_size(), 2);
  EXPECT_EQ(b.token(1), 2);
  EXPECT_TRUE(b.want_logits(1));
  EXPECT_FALSE(b.shutdown());
}

pb::ClusterConfig make_config() {
  pb::ClusterConfig c;
  c.set_name("test");
  for (int h = 0; h < 2; ++h) {
    pb::Host* host = c.add_hosts();
    host->set_name("host-" + std::to_string(h));
    host->set_memory_bytes(int64_t{64} << 30);
    pb::NumaNode* n = host->add_numa();
    n->set_id(0);
    n->set_memory_bytes(int64_t{64} << 30);
    n->set_cores(16);
    pb::Gpu* g = host->add_gpus();
    g->set_index(0);
    g->set_name("gpu");
    g->set_memory_bytes(int64_t{80} << 30);
    for (int r = 0; r < 2; ++r) {
      pb::RankSpec* rs = host->add_ranks();
      rs->set_rank(2 * h + r);
      rs->set_numa_node(0);
      rs->set_threads(8);
      if (r == 0) rs->set_gpu(0);
    }
  }
  pb::Policy* p = c.mutable_policy();
  p->set_pipeline(pb::Policy::PIPELINE_PER_HOST);
  p->set_memory_headroom(0.15);
  p->set_expert_replicas(2);
  p->set_use_gpus(true);
  pb::TensorOverride* o = p->add_overrides();
  o->set_pattern("blk\\.[0-9]+\\.ffn_.*_exps\\.weight");
  o->mutable_device()->set_kind(pb::DEVICE_KIND_CPU);
  o->mutable_device()->set_index(0);
  return c;
}

TEST(Proto, ClusterConfigRoundTrips) {
  pb::ClusterConfig c = make_config();
  expect_round_trips(c);
  // proto3 `optional` keeps presence: rank 0 drives GPU 0, rank 1 has no GPU (not "GPU 0").
  EXPECT_TRUE(c.hosts(0).ranks(0).has_gpu());
  EXPECT_FALSE(c.hosts(0).ranks(1).has_gpu());
  std::string bin = c.SerializeAsString();
  pb::ClusterConfig back;
  ASSERT_TRUE(back.ParseFromString(bin));
  EXPECT_TRUE(back.hosts(1).ranks(0).has_gpu());
  EXPECT_FALSE(back.hosts(1).ranks(1).has_gpu());
}

TEST(Proto, PlacementAndJobSpecRoundTrip) {
  pb::Placement pl;
  pl.set_world(2);
  pb::Stage* st = pl.add_stages();
  st->set_stage(0);
  st->add_rank(0);
  st->add_rank(1);
  pb::LayerPlacement* l = pl.add_layers();
  l->set_layer(0);
  for (int r = 0; r < 2; ++r) {
    pb::RankRange* h = l->add_heads();
    h->set_rank(r);
    h->set_begin(2 * r);
    h->set_end(2 * r + 2);
  }
  for (int e = 0; e < 4; ++e) {
    pb::ExpertOwners* eo = l->add_experts();
    eo->set_expert(e);
    eo->add_rank(e % 2);
  }
  pb::TensorLocation* t = l->add_tensors();
  t->set_name("blk.0.ffn_up_exps.weight");
  t->set_rank(1);
  t->mutable_device()->set_kind(pb::DEVICE_KIND_GPU);
  t->set_bytes(123456);
  expect_round_trips(pl);

  pb::JobSpec j;
  j.set_kind(pb::JobSpec::PERPLEXITY);
  j.add_args("-m");
  j.add_args("model.gguf");
  j.set_id("ppl-1");
  j.set_group(1);
  expect_round_trips(j);
}

TEST(Proto, TextFormatRejectsUnknownFields) {
  pb::ClusterConfig c;
  EXPECT_FALSE(TextFormat::ParseFromString("hosts { nmae: \"typo\" }", &c));
}

std::filesystem::path source_dir() {
  if (const char* s = std::getenv("EXPERTMESH_SOURCE_DIR")) return s;
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
}

TEST(Proto, TwoHostsExampleConfigParses) {
  std::filesystem::path path = source_dir() / "configs" / "two-hosts.textproto";
  std::ifstream in(path);
  ASSERT_TRUE(in) << "cannot open " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  pb::ClusterConfig c;
  ASSERT_TRUE(TextFormat::ParseFromString(ss.str(), &c)) << path;

  ASSERT_EQ(c.hosts_size(), 2);
  std::set<int> ranks;
  std::set<std::string> hosts;
  for (const pb::Host& h : c.hosts()) {
    EXPECT_TRUE(hosts.insert(h.name()).second) << "duplicate host " << h.name();
    EXPECT_EQ(h.ranks_size(), 2) << h.name();
    for (const pb::RankSpec& r : h.ranks()) {
      EXPECT_TRUE(ranks.insert(r.rank()).second) << "duplicate rank " << r.rank();
      bool numa_known = false;
      for (const pb::NumaNode& n : h.numa()) numa_known |= n.id() == r.numa_node();
      EXPECT_TRUE(numa_known) << "rank " << r.rank() << " bound to unknown NUMA node " << r.numa_node();
      EXPECT_FALSE(r.has_gpu()) << "the example is CPU only";
    }
  }
  EXPECT_EQ(ranks, (std::set<int>{0, 1, 2, 3}));
  EXPECT_EQ(c.policy().pipeline(), pb::Policy::PIPELINE_AUTO);
  ASSERT_EQ(c.policy().overrides_size(), 1);
  EXPECT_EQ(c.policy().overrides(0).device().kind(), pb::DEVICE_KIND_CPU);
  expect_round_trips(c);
}

}  // namespace
}  // namespace expertmesh
