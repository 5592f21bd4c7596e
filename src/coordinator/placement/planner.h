// Placement planner (ARCHITECTURE.md §3): which rank stores and computes which tensors, heads,
// FFN rows, experts and vocabulary rows. The contract between the planner and the distributed
// runtime is `proto::Placement` (src/comm/proto/cluster.proto documents its semantics).
//
// Everything here except resolve_placement() is a pure, deterministic function: equal inputs give
// byte-identical Placements on every rank and every run. No function reads tensor data.
//
// Split rules (what each rank of a layer's stage holds; the proto documents the same):
//   attn_q / attn_k / attn_v      rows of its query heads (K/V: the KV heads of those groups)
//   attn_output, ffn_down         output rows (of n_embd): the runtime gathers the attention (FFN)
//     (+ ffn_down_shexp)          activations of the whole stage and each rank of the stage that
//                                 owns heads (FFN rows) computes whole dot products for an even,
//                                 16-row-aligned share of the rows (worker::out_rows_by_stage;
//                                 exact, as on one rank). A rank without heads (FFN rows) holds
//                                 none. ffn_down_shexp follows ffn_down's rule.
//   ffn_up / ffn_gate (+ _shexp)  its `ffn_rows` rows
//   ffn_{up,gate,down}_exps       the experts it owns (the whole [ne0, ne1] slab of each)
//   norms, router, biases, other  a full copy on every rank of the stage
//   token_embd                    a full copy on every rank of stage 0 (lookup stays local)
//   output                        its `output_vocab` rows (ranks of the last stage); when the
//                                 model ties output to token_embd, those rows of token_embd
//   output_norm                   a full copy on every rank of the last stage
// Alignment: head range boundaries are multiples of LayerShape::head_align (whole GQA groups whose
// attn_q/k/v row slices are whole interleave groups) or n_head; ffn_rows boundaries are multiples
// of LayerShape::ffn_row_align (ffn_up/gate row slices of whole interleave groups) or n_ff. A rank
// may own an empty range (zero heads, zero rows, zero experts).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comm/proto/cluster.pb.h"
#include "common/rank_context.h"
#include "common/status.h"
#include "model/types.h"

namespace expertmesh {
namespace gguf {
class File;
}
namespace cli {
class FlagSet;
}
namespace topology {
struct Machine;
}
}  // namespace expertmesh

namespace expertmesh::placement {

// How a tensor is divided among the ranks that hold it (see the split rules above).
enum class Split {
  kReplicated,   // full copy on every rank of its stage (per-layer) or of the stage noted above (global)
  kHeadRows,     // attn_q/k/v: rows by head (query heads for q; their KV heads for k/v)
  kAttnOutRows,  // attn_output: output rows, split over the stage's head owners (worker::out_rows_by_stage)
  kFfnRows,      // ffn_up/ffn_gate (dense or shared expert): rows by ffn_rows
  kFfnOutRows,   // ffn_down (dense or shared expert): output rows, split over the stage's ffn_rows owners
  kExperts,      // *_exps: by routed expert (ne[2])
  kVocabRows,    // output (or tied token_embd on the last stage): rows by output_vocab
  kEmbedding,    // token_embd: full copy on every rank of stage 0
};

// What a tensor is, for per-kind byte reports (`expertmesh plan`).
enum class TensorKind { kEmbedding, kAttention, kFfn, kSharedExperts, kExperts, kRouter, kNorm, kOutput, kOther };
const char* tensor_kind_name(TensorKind k);  // "embedding", "attention", "ffn", "shexp", "experts", ...
inline constexpr int kTensorKindCount = 9;

struct TensorShape {
  std::string name;  // GGUF name, e.g. "blk.3.ffn_up_exps.weight"
  int layer = -1;    // il, or -1 for global tensors (token_embd, output_norm, output, rope freqs, ...)
  TensorKind kind = TensorKind::kOther;
  Split split = Split::kReplicated;
  GgmlType type = GgmlType::F32;
  int64_t ne[4] = {1, 1, 1, 1};
  int64_t bytes = 0;  // on-disk bytes of the whole tensor
};

struct LayerShape {
  int64_t n_ff = 0;           // dense FFN (or, in MoE layers, shared-expert) intermediate rows; 0 = none
  int64_t n_expert = 0;       // routed experts (ne[2] of *_exps); 0 = dense layer
  int64_t expert_bytes = 0;   // bytes of one routed expert summed over its up/gate/down slabs
  int64_t head_align = 1;     // heads ranges: boundaries multiples of this (a multiple of n_gqa) or n_head
  int64_t ffn_row_align = 1;  // ffn_rows: boundaries multiples of this (ffn_up/gate interleave) or n_ff
  int64_t bytes = 0;          // all tensors of the layer
  std::vector<int> tensors;   // indices into ModelShape::tensors
};

// Model facts the planner needs, read from GGUF metadata and tensor infos only.
struct ModelShape {
  std::string arch;  // general.architecture
  int64_t n_layer = 0, n_embd = 0, n_head = 0, n_head_kv = 0, head_dim = 0, head_dim_v = 0;
  int64_t n_vocab = 0, n_expert = 0, n_expert_used = 0;
  bool tied_output = false;          // no output.weight: the output head is token_embd
  int64_t vocab_align = 1;           // output_vocab boundaries: multiples of this (row interleave) or n_vocab
  int64_t total_bytes = 0;           // sum of every tensor's bytes
  std::vector<TensorShape> tensors;  // in file order
  std::vector<LayerShape> layers;    // n_layer entries
  int64_t n_gqa() const { return n_head_kv > 0 ? n_head / n_head_kv : 1; }
};

// Model dimensions as the caller knows them (load_hparams' subset), for model_shape_from().
struct ModelDims {
  std::string arch;
  int64_t n_layer = 0, n_embd = 0, n_head = 0, n_head_kv = 0, head_dim = 0, head_dim_v = 0;
  int64_t n_vocab = 0, n_expert = 0, n_expert_used = 0;
};
struct TensorDesc {
  std::string name;
  GgmlType type = GgmlType::F32;
  int64_t ne[4] = {1, 1, 1, 1};
  int64_t bytes = 0;
};

// Model facts from GGUF metadata + tensor infos (no tensor data). Errors name the file and the
// key or tensor (unknown arch, missing attn_q in a layer, inconsistent expert counts, ...).
Result<ModelShape> model_shape(const gguf::File& f);
// The same from explicit dimensions and tensor descriptions (tests, synthetic shapes).
Result<ModelShape> model_shape_from(const ModelDims& dims, const std::vector<TensorDesc>& tensors);

// One rank's resources, as the planner sees them.
struct RankResources {
  int rank = 0;
  std::string host;              // ranks with equal host strings share a host (hybrid: one stage per host)
  int numa_node = 0;             // NUMA node its memory is bound to (TensorLocation.device.index for CPU)
  int64_t memory_bytes = 0;      // host memory this rank may use: its node's memory / ranks bound to the
                                 // node; 0 = unknown (no limit). The planner subtracts the headroom.
  int cores = 0;                 // informational
  int gpu = -1;                  // CUDA ordinal it drives, -1 = none
  int64_t gpu_memory_bytes = 0;  // usable memory of that GPU, 0 = unknown
};

enum class PolicyKind { kEp, kPp, kHybrid };
const char* policy_kind_name(PolicyKind k);  // "ep", "pp", "hybrid"

struct PlacementRequest {
  const ModelShape* model = nullptr;  // REQUIRES: non-null, outlives the call
  std::vector<RankResources> ranks;   // ranks[i].rank == i; size = world >= 1
  PolicyKind policy = PolicyKind::kEp;
  proto::Policy options;                         // memory_headroom (0 = 0.10), expert_replicas (0 = 1), use_gpus
  std::vector<proto::TensorOverride> overrides;  // applied in order, first match wins
};

// Pure: (model shape, ranks' resources, policy, overrides) -> a complete Placement (every field
// filled: stages, each layer's heads/ffn_rows/experts, output_vocab, tensor locations with
// bytes). Deterministic. Policies:
//   ep      one stage of every rank; routed experts dealt in contiguous blocks balanced by the
//           bytes each rank already holds; heads (whole groups) and FFN rows split tensor-parallel.
//   pp      one rank per stage (or, when hosts hold several ranks and options.pipeline is
//           PIPELINE_PER_HOST, one stage per host); contiguous layers balanced by bytes.
//   hybrid  one stage per host (ranks grouped by RankResources::host), layers balanced by each
//           host's memory, ep + tp inside each stage.
// Errors: InvalidArgument when the model does not fit ("rank 2 (host node-b) needs 1.2 GiB, has
// 0.9 GiB after 10% headroom"), when an override names a rank outside the world or a GPU a rank
// lacks, or when a rankN override would split one unit (attention, ffn, experts) across ranks.
Result<proto::Placement> make_placement(const PlacementRequest& req);

// Fills what a partial (manual) placement leaves out, the way make_placement would within the
// given stages: empty `stages` = one stage of all ranks; layers missing from `layers` or with
// empty heads/ffn_rows/experts get them from the planner; tensor locations are recomputed.
// Then validates. Used for `--placement FILE.textproto`.
Result<proto::Placement> complete_placement(const proto::Placement& partial, const PlacementRequest& req);

// Validates a placement against a model and world size: world matches, stages contiguous from 0
// and each rank in at most one stage, every layer present once in order, layer stages
// non-decreasing, heads/ffn_rows/output_vocab ranges disjoint and covering, on ranks of the right
// stage, aligned (whole GQA groups); every expert owned by >= 1 rank of the stage, no duplicates;
// ranks in [0, world). Errors name the layer and field ("layer 3: heads: rank 1 [2, 3) is not a
// whole GQA group (2 heads)").
Status validate_placement(const proto::Placement& p, const ModelShape& m, int world);

// `--placement ep|pp|hybrid|FILE.textproto`, `-ot REGEX=DEV[,REGEX=DEV...]` (repeatable; DEV is
// CPU, GPU, GPU<n>, CUDA<n> or rank<N>), `--cluster FILE.textproto`.
struct PlacementFlags {
  std::string placement = "ep";
  std::vector<std::string> overrides;  // raw -ot values, in order
  std::string cluster;                 // empty = ranks grouped by actual hostname, resources from hwloc
};
// Registers --placement, -ot/--override-tensor and --cluster on a subcommand's FlagSet.
void add_placement_flags(cli::FlagSet& fs, PlacementFlags* flags);

// Parses -ot values ("exps=CPU,attn=rank1"). Errors name the flag and the bad element.
Result<std::vector<proto::TensorOverride>> parse_tensor_overrides(const std::vector<std::string>& values);
// Reads a ClusterConfig / Placement textproto; errors name the file and line.
Result<proto::ClusterConfig> load_cluster_config(const std::string& path);
Result<proto::Placement> load_placement_file(const std::string& path);
std::string to_textproto(const proto::Placement& p);
std::string to_json(const proto::Placement& p);

// Parses `--placement`: ep, pp or hybrid; anything else is taken as a Placement textproto path
// (returned in *file). Errors name the flag.
Result<PolicyKind> parse_policy(const std::string& placement, std::string* file);

// This rank's report for resolve_placement (hwloc + its launch binding). Not collective.
Result<proto::RankReport> local_report(int rank, const std::string& host);
// Reports for a simulated job (`expertmesh plan --np N [--hosts a:2,b:2]`): ranks dealt to the hosts
// in order (without `hosts`, all on this machine; np 0 with `hosts`: their sum), each host like `m`, ranks of a host
// bound to its NUMA nodes round-robin as launch/expertmesh-mpirun binds them. Errors name the --hosts element.
Result<std::vector<proto::RankReport>> simulated_reports(int np, const std::string& hosts, const topology::Machine& m);
// Every rank's resources from the reports, overridden by the cluster config when given (hosts,
// NUMA nodes, GPUs, memory). Memory of a NUMA node (or of an unbound host) is divided evenly among
// the ranks that share it. Pure. Errors when the config's ranks do not match the reports.
Result<std::vector<RankResources>> rank_resources(const std::vector<proto::RankReport>& reports,
                                                  const proto::ClusterConfig* cluster);
// The non-collective core of resolve_placement: reads --cluster and a --placement file, parses -ot
// (command-line rules before the config's), and plans for the given reports.
Result<proto::Placement> placement_for_reports(const PlacementFlags& flags, const ModelShape& m,
                                               const std::vector<proto::RankReport>& reports);

// What the flags resolve to for this job. Collective over ctx.comm: every rank reports its
// resources (topology::discover, and the ClusterConfig when given) to rank 0; rank 0 builds the
// Placement (make_placement, or complete_placement of the file) and broadcasts it serialized, so
// every rank returns the identical Placement. A failure on any rank (bad file, model does not
// fit) returns the same Aborted/InvalidArgument status on every rank.
Result<proto::Placement> resolve_placement(const PlacementFlags& flags, const gguf::File& f, const RankContext& ctx);

// ----- Queries for the runtime (pure; `p` must be valid for some world containing `rank`) -----
struct Range {
  int64_t begin = 0, end = 0;  // [begin, end); empty when begin == end
  int64_t size() const { return end - begin; }
  bool empty() const { return end <= begin; }
};
int n_stages(const proto::Placement& p);                 // >= 1
int stage_of_rank(const proto::Placement& p, int rank);  // -1 when the rank is in no stage
std::vector<int> stage_ranks(const proto::Placement& p, int stage);
Range head_range(const proto::LayerPlacement& l, int rank);  // empty when the rank owns none
Range ffn_range(const proto::LayerPlacement& l, int rank);
Range vocab_range(const proto::Placement& p, int rank);
// Experts whose primary (first) owner is `rank`, ascending. The runtime computes each expert on
// its primary owner only, so results do not depend on replicas.
std::vector<int> primary_experts(const proto::LayerPlacement& l, int rank);
// Bytes `rank` holds (sum of its TensorLocations), and split by TensorKind (kTensorKindCount).
int64_t rank_bytes(const proto::Placement& p, int rank);

}  // namespace expertmesh::placement
