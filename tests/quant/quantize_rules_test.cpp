// Unit tests of the quantize planning pieces that need no golden data: the peer's preset rules on
// synthetic llama / qwen3 / deepseek2 models (tensor names and hparams only; data is zeros), the
// flag parsers, dealing tensors to ranks and the progress line.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <numeric>
#include <random>

#include "coordinator/quantize/distribute.h"
#include "coordinator/quantize/plan.h"
#include "coordinator/quantize/progress.h"
#include "model/gguf/gguf.h"

namespace expertmesh {
namespace {

struct SynthTensor {
  std::string name;
  int64_t ne0, ne1, ne2;
};

// A model file in memory: `kvs` (u32 values) and F32 tensors of zeros.
class SynthModel {
 public:
  SynthModel(const std::string& arch, const std::map<std::string, uint32_t>& kvs, std::vector<SynthTensor> ts) {
    gguf::Writer w;
    w.set("general.architecture", gguf::Value::string(arch));
    for (const auto& [k, v] : kvs) w.set(arch + "." + k, gguf::Value::u32(v));
    int64_t most = 0;
    for (const auto& t : ts) most = std::max(most, t.ne0 * t.ne1 * t.ne2);
    zeros_.assign(static_cast<size_t>(most), 0.0f);
    for (const auto& t : ts) {
      gguf::WriteTensor wt;
      wt.name = t.name;
      wt.n_dims = t.ne2 > 1 ? 3 : (t.ne1 > 1 ? 2 : 1);
      wt.ne[0] = t.ne0;
      wt.ne[1] = t.ne1;
      wt.ne[2] = t.ne2;
      wt.type = GgmlType::F32;
      wt.nbytes = t.ne0 * t.ne1 * t.ne2 * 4;
      wt.data = reinterpret_cast<const uint8_t*>(zeros_.data());
      EXPECT_TRUE(w.add_tensor(wt).ok()) << t.name;
    }
    bytes_ = *w.to_bytes();
    auto f = gguf::File::parse(bytes_.data(), bytes_.size(), arch);
    EXPECT_TRUE(f.ok()) << f.status().to_string();
    file_ = std::move(f).value();
  }
  const gguf::File& file() const { return *file_; }

 private:
  std::vector<float> zeros_;
  std::vector<uint8_t> bytes_;
  std::unique_ptr<gguf::File> file_;
};

std::map<std::string, std::string> plan_types(const SynthModel& m, const std::string& preset, bool pure = false) {
  QuantizeOptions opt;
  opt.preset = *parse_quant_preset(preset);
  opt.pure = pure;
  opt.ignore_imatrix_rules = true;
  auto plan = plan_quantization(m.file(), opt, nullptr);
  EXPECT_TRUE(plan.ok()) << plan.status().to_string();
  std::map<std::string, std::string> out;
  if (plan.ok())
    for (const auto& tp : plan->tensors) out[tp.name] = type_name(tp.dst_type);
  return out;
}

// Dense llama, 32 layers, GQA 4, 32k vocab (the peer's MODEL_7B class).
SynthModel llama_model(int n_layer) {
  std::vector<SynthTensor> ts = {{"token_embd.weight", 256, 16, 1}};
  for (int il = 0; il < n_layer; ++il)
    for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_down", "ffn_up"})
      ts.push_back({fmt::format("blk.{}.{}.weight", il, n), 256, 8, 1});
  ts.push_back({"output.weight", 256, 16, 1});
  return SynthModel(
      "llama",
      {{"block_count", n_layer}, {"attention.head_count", 32}, {"attention.head_count_kv", 8}, {"vocab_size", 32000}},
      ts);
}

TEST(QuantizeRules, LlamaQ4KMUsesMoreBitsWhereThePeerDoes) {
  const auto m = llama_model(32);
  const auto t = plan_types(m, "Q4_K_M");
  // ffn_down and attn_v get Q6_K on use_more_bits layers: i < n/8, i >= 7n/8, (i - n/8) % 3 == 2.
  for (int il = 0; il < 32; ++il) {
    const bool more = il < 4 || il >= 28 || (il - 4) % 3 == 2;
    EXPECT_EQ(t.at(fmt::format("blk.{}.ffn_down.weight", il)), more ? "q6_K" : "q4_K") << il;
    // attn_v elsewhere: the GQA >= 4 step up from q4_K.
    EXPECT_EQ(t.at(fmt::format("blk.{}.attn_v.weight", il)), more ? "q6_K" : "q5_K") << il;
    EXPECT_EQ(t.at(fmt::format("blk.{}.attn_q.weight", il)), "q4_K") << il;
  }
  EXPECT_EQ(t.at("output.weight"), "q6_K");
  EXPECT_EQ(t.at("token_embd.weight"), "q4_K");
}

TEST(QuantizeRules, LlamaIq4KsWithoutImatrixBumpsFirstFfnDownAndGqaAttnV) {
  const auto t = plan_types(llama_model(16), "IQ4_KS");
  EXPECT_EQ(t.at("blk.0.ffn_down.weight"), "q5_K");  // first 1/8 without imatrix
  EXPECT_EQ(t.at("blk.1.ffn_down.weight"), "q5_K");
  EXPECT_EQ(t.at("blk.2.ffn_down.weight"), "iq4_ks");
  EXPECT_EQ(t.at("blk.5.attn_v.weight"), "iq5_k");  // GQA >= 2
  EXPECT_EQ(t.at("blk.5.attn_output.weight"), "iq4_ks");
  EXPECT_EQ(t.at("output.weight"), "q6_K");
  // --pure: one type everywhere.
  const auto p = plan_types(llama_model(16), "IQ4_KS", true);
  EXPECT_EQ(p.at("blk.0.ffn_down.weight"), "iq4_ks");
  EXPECT_EQ(p.at("output.weight"), "iq4_ks");
}

TEST(QuantizeRules, Qwen3EightBClassDemotesAttnQForIq5K) {
  std::vector<SynthTensor> ts;
  for (int il = 0; il < 36; ++il)
    for (const char* n : {"attn_q", "attn_v", "ffn_down"})
      ts.push_back({fmt::format("blk.{}.{}.weight", il, n), 256, 8, 1});
  const SynthModel m("qwen3",
                     {{"block_count", 36},
                      {"attention.head_count", 32},
                      {"attention.head_count_kv", 8},
                      {"embedding_length", 4096},
                      {"vocab_size", 151936}},
                     ts);
  const auto t = plan_types(m, "IQ5_K");
  EXPECT_EQ(t.at("blk.3.attn_q.weight"), "iq4_k");  // MODEL_8B with a >= 128k vocab
  EXPECT_EQ(t.at("blk.3.attn_v.weight"), "iq6_k");
  EXPECT_EQ(t.at("blk.3.ffn_down.weight"), "iq5_k");
}

TEST(QuantizeRules, DeepSeek2NamesFollowThePeersSubstringRules) {
  std::vector<SynthTensor> ts = {{"token_embd.weight", 256, 16, 1}};
  for (int il = 0; il < 8; ++il) {
    for (const char* n : {"attn_q_a", "attn_q_b", "attn_kv_a_mqa", "attn_kv_b", "attn_k_b", "attn_v_b", "attn_output"})
      ts.push_back({fmt::format("blk.{}.{}.weight", il, n), 256, 8, 1});
    if (il == 0) {
      for (const char* n : {"ffn_gate", "ffn_up", "ffn_down"})
        ts.push_back({fmt::format("blk.0.{}.weight", n), 256, 8, 1});
    } else {
      for (const char* n : {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"})
        ts.push_back({fmt::format("blk.{}.{}.weight", il, n), 256, 8, 4});
      for (const char* n : {"ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp"})
        ts.push_back({fmt::format("blk.{}.{}.weight", il, n), 256, 8, 1});
      ts.push_back({fmt::format("blk.{}.ffn_gate_inp.weight", il), 256, 8, 1});
    }
  }
  ts.push_back({"output.weight", 256, 16, 1});
  const SynthModel m("deepseek2",
                     {{"block_count", 8},
                      {"attention.head_count", 16},
                      {"attention.head_count_kv", 16},
                      {"expert_count", 64},
                      {"vocab_size", 102400}},
                     ts);
  auto t = plan_types(m, "IQ4_KS");
  // Every name containing "attn_k" gets Q8_0 in a model with >= 4 experts.
  EXPECT_EQ(t.at("blk.3.attn_kv_a_mqa.weight"), "q8_0");
  EXPECT_EQ(t.at("blk.3.attn_kv_b.weight"), "q8_0");
  EXPECT_EQ(t.at("blk.3.attn_k_b.weight"), "q8_0");
  EXPECT_EQ(t.at("blk.3.attn_q_a.weight"), "iq4_ks");
  EXPECT_EQ(t.at("blk.3.attn_v_b.weight"), "iq4_ks");   // not "attn_v.weight"
  EXPECT_EQ(t.at("blk.3.attn_output.weight"), "q5_K");  // MoE attn_output
  EXPECT_EQ(t.at("blk.0.ffn_down.weight"), "q5_K");     // layer 0 of 8 is the first eighth, no imatrix
  EXPECT_EQ(t.at("blk.3.ffn_down_exps.weight"), "iq4_ks");
  EXPECT_EQ(t.at("blk.3.ffn_gate_inp.weight"), "f32");  // routers are kept
  // IQ2_KT: blk.0 FFN IQ3_K, shared experts IQ4_K, attn_k* Q4_K (>= 8 experts), attn_output Q5_K.
  t = plan_types(m, "IQ2_KT");
  EXPECT_EQ(t.at("blk.0.ffn_up.weight"), "iq3_k");
  EXPECT_EQ(t.at("blk.2.ffn_up_shexp.weight"), "iq4_k");
  EXPECT_EQ(t.at("blk.2.attn_kv_b.weight"), "q4_K");
  EXPECT_EQ(t.at("blk.2.attn_q_b.weight"), "q4_K");
  EXPECT_EQ(t.at("blk.2.attn_output.weight"), "q5_K");
  EXPECT_EQ(t.at("blk.2.ffn_gate_exps.weight"), "iq2_kt");
}

TEST(QuantizeRules, CustomRulesFirstMatchWinsAndArePureBlind) {
  const auto m = llama_model(4);
  QuantizeOptions opt;
  opt.preset = *parse_quant_preset("Q4_0");
  ASSERT_TRUE(parse_custom_quants(R"(ffn_down=q8_0,blk\.1\..*=q6_0,ffn_.*=iq4_nl)", &opt.custom_quants).ok());
  auto plan = plan_quantization(m.file(), opt, nullptr);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  std::map<std::string, GgmlType> t;
  for (const auto& tp : plan->tensors) t[tp.name] = tp.dst_type;
  EXPECT_EQ(t["blk.1.ffn_down.weight"], GgmlType::Q8_0);  // first rule
  EXPECT_EQ(t["blk.1.attn_q.weight"], GgmlType::Q6_0);
  EXPECT_EQ(t["blk.2.ffn_up.weight"], GgmlType::IQ4_NL);
  EXPECT_EQ(t["blk.2.attn_q.weight"], GgmlType::Q4_0);
  opt.pure = true;  // ignored with --pure, as the peer
  plan = plan_quantization(m.file(), opt, nullptr);
  ASSERT_TRUE(plan.ok());
  for (const auto& tp : plan->tensors)
    if (tp.name.find("blk.") == 0) {
      EXPECT_EQ(tp.dst_type, GgmlType::Q4_0) << tp.name;
    }
}

TEST(QuantizeRules, RowFallbacksAreCountedAndInterleavedTypesNeedWholeRowGroups) {
  const SynthModel m(
      "llama", {{"block_count", 1}, {"attention.head_count", 4}, {"attention.head_count_kv", 4}},
      {{"blk.0.ffn_down.weight", 172, 8, 1}, {"blk.0.ffn_up.weight", 128, 8, 1}, {"blk.0.ffn_gate.weight", 256, 6, 1}});
  QuantizeOptions opt;
  opt.preset = *parse_quant_preset("IQ4_KS_R4");
  opt.pure = true;
  auto plan = plan_quantization(m.file(), opt, nullptr);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  EXPECT_EQ(plan->tensors[0].dst_type, GgmlType::F16);     // 172: even IQ4_NL does not fit
  EXPECT_EQ(plan->tensors[1].dst_type, GgmlType::IQ4_NL);  // 128: the peer's 256 fallback
  EXPECT_EQ(plan->tensors[2].dst_type, GgmlType::IQ4_KS);  // 6 rows: not in groups of 4
  EXPECT_EQ(plan->n_fallback, 3);                          // the peer counts 172 and 128 (IQ4_NL), we also the F16 step
  EXPECT_TRUE(plan->tensors[0].fallback);
  EXPECT_FALSE(plan->tensors[2].fallback);
  EXPECT_NE(plan->tensors[2].note.find("groups of 4"), std::string::npos);
}

TEST(QuantizeOptionsParse, KvOverridesAndSplitSizes) {
  auto o = parse_kv_override("a.b=float:0.5");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->value.type, gguf::ValueType::FLOAT32);
  EXPECT_EQ(parse_kv_override("a=bool:true")->value.type, gguf::ValueType::BOOL);
  EXPECT_EQ(parse_kv_override("a=str:hello")->value.str, "hello");
  EXPECT_FALSE(parse_kv_override("a=bool:yes").ok());
  EXPECT_FALSE(parse_kv_override("=int:1").ok());
  EXPECT_FALSE(parse_kv_override("a=str:" + std::string(128, 'x')).ok());
  EXPECT_EQ(*parse_split_size("5M"), 5000000);
  EXPECT_EQ(*parse_split_size("2G"), 2000000000);
  EXPECT_FALSE(parse_split_size("0M").ok());
  EXPECT_FALSE(parse_split_size("5").ok());
  std::vector<CustomQuantRule> r;
  EXPECT_TRUE(parse_custom_quants("a=q4_K,b=F16", &r).ok());
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].type, GgmlType::Q4_K);
  EXPECT_EQ(r[1].type, GgmlType::F16);
}

TEST(QuantizeDistribute, DealIsBalancedCompleteAndDeterministic) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> u(1.0, 100.0);
  std::vector<double> costs(200);
  for (auto& c : costs) c = u(rng);
  costs[7] = 5000.0;  // one big tensor
  ASSERT_GT(*std::max_element(costs.begin(), costs.end()), *std::min_element(costs.begin(), costs.end()));
  for (int world : {1, 2, 3, 7}) {
    const auto owner = deal_tensors(costs, world);
    ASSERT_EQ(owner.size(), costs.size());
    std::vector<double> load(static_cast<size_t>(world), 0.0);
    for (size_t i = 0; i < costs.size(); ++i) {
      ASSERT_GE(owner[i], 0);
      ASSERT_LT(owner[i], world);
      load[static_cast<size_t>(owner[i])] += costs[i];
    }
    const double total = std::accumulate(costs.begin(), costs.end(), 0.0);
    const double biggest = *std::max_element(costs.begin(), costs.end());
    // LPT bound: no rank exceeds the ideal share plus one tensor.
    EXPECT_LE(*std::max_element(load.begin(), load.end()), total / world + biggest) << world;
    EXPECT_EQ(owner, deal_tensors(costs, world)) << "not deterministic";
  }
  // The big tensor sits alone-ish: with 3 ranks, its rank gets few others.
  const auto owner = deal_tensors(costs, 3);
  EXPECT_LT(std::count(owner.begin(), owner.end(), owner[7]), 20);
  // Costlier types cost more per element.
  EXPECT_GT(quantize_type_cost(GgmlType::IQ2_KT), quantize_type_cost(GgmlType::IQ4_KS));
  EXPECT_GT(quantize_type_cost(GgmlType::IQ4_KS), quantize_type_cost(GgmlType::Q8_0));
}

TEST(QuantizeProgress, LineShowsCountBytesRateAndEta) {
  const std::string s = format_progress(12, 39, 3 * 1048576, 12 * 1048576, 2.0, 20);
  EXPECT_NE(s.find("12/39 tensors"), std::string::npos) << s;
  EXPECT_NE(s.find("3.00/12.00 MiB"), std::string::npos) << s;
  EXPECT_NE(s.find("1.6 MB/s"), std::string::npos) << s;  // 3 MiB in 2 s
  EXPECT_NE(s.find("ETA 0:06"), std::string::npos) << s;  // 9 MiB left at that rate
  EXPECT_NE(s.find("[#####---------------]"), std::string::npos) << s;
  EXPECT_NE(format_progress(0, 39, 0, 100, 0.0, 10).find("ETA --:--"), std::string::npos);
}

}  // namespace
}  // namespace expertmesh
