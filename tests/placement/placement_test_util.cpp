#include "tests/placement/placement_test_util.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace expertmesh::placement::testing {

namespace {
TensorDesc desc(const std::string& name, GgmlType t, std::vector<int64_t> ne) {
  TensorDesc d;
  d.name = name;
  d.type = t;
  for (size_t i = 0; i < ne.size(); ++i) d.ne[i] = ne[i];
  auto b = tensor_nbytes(t, d.ne);
  EXPECT_TRUE(b.ok()) << name << ": " << b.status().to_string();
  d.bytes = b.ok() ? *b : 0;
  return d;
}
}  // namespace

ModelShape make_shape(const ShapeSpec& s) {
  ModelDims d;
  d.arch = s.n_expert > 0 ? "qwen3moe" : "llama";
  d.n_layer = s.n_layer, d.n_embd = s.n_embd, d.n_head = s.n_head, d.n_head_kv = s.n_head_kv;
  d.head_dim = s.head_dim, d.head_dim_v = s.head_dim, d.n_vocab = s.n_vocab;
  d.n_expert = s.n_expert, d.n_expert_used = s.n_expert > 0 ? 2 : 0;
  const GgmlType f32 = GgmlType::F32;
  std::vector<TensorDesc> t;
  t.push_back(desc("token_embd.weight", s.type, {s.n_embd, s.n_vocab}));
  for (int64_t il = 0; il < s.n_layer; ++il) {
    auto n = [&](const char* base) { return fmt::format("blk.{}.{}.weight", il, base); };
    t.push_back(desc(n("attn_norm"), f32, {s.n_embd}));
    t.push_back(desc(n("attn_q"), s.type, {s.n_embd, s.n_head * s.head_dim}));
    t.push_back(desc(n("attn_k"), s.type, {s.n_embd, s.n_head_kv * s.head_dim}));
    t.push_back(desc(n("attn_v"), s.type, {s.n_embd, s.n_head_kv * s.head_dim}));
    t.push_back(desc(n("attn_output"), s.type, {s.n_head * s.head_dim, s.n_embd}));
    t.push_back(desc(n("attn_q_norm"), f32, {s.head_dim}));
    t.push_back(desc(n("ffn_norm"), f32, {s.n_embd}));
    if (s.n_expert > 0) {
      t.push_back(desc(n("ffn_gate_inp"), f32, {s.n_embd, s.n_expert}));
      t.push_back(desc(n("ffn_gate_exps"), s.type, {s.n_embd, s.n_ff_exp, s.n_expert}));
      t.push_back(desc(n("ffn_up_exps"), s.type, {s.n_embd, s.n_ff_exp, s.n_expert}));
      t.push_back(desc(n("ffn_down_exps"), s.type, {s.n_ff_exp, s.n_embd, s.n_expert}));
    }
    if (s.n_ff > 0) {
      t.push_back(desc(n("ffn_gate"), s.type, {s.n_embd, s.n_ff}));
      t.push_back(desc(n("ffn_up"), s.type, {s.n_embd, s.n_ff}));
      t.push_back(desc(n("ffn_down"), s.type, {s.n_ff, s.n_embd}));
    }
  }
  t.push_back(desc("output_norm.weight", f32, {s.n_embd}));
  if (!s.tied) t.push_back(desc("output.weight", s.type, {s.n_embd, s.n_vocab}));
  auto m = model_shape_from(d, t);
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  return m.ok() ? *m : ModelShape{};
}

std::vector<RankResources> make_ranks(int world, int per_host, int64_t memory) {
  std::vector<RankResources> out;
  for (int r = 0; r < world; ++r) {
    RankResources rr;
    rr.rank = r;
    rr.host = fmt::format("h{}", r / per_host);
    rr.numa_node = r % per_host;
    rr.memory_bytes = memory;
    rr.cores = 1;
    out.push_back(rr);
  }
  return out;
}

}  // namespace expertmesh::placement::testing
