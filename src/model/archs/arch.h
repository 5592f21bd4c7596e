// Per-architecture entry points (STYLE.md R3): each arch file binds its tensors (with a shape
// comment on every weight) and defines its layer step, a forward over one layer that reads top
// to bottom in terms of worker/blocks.h. The engine drives the layer steps over a plan.
#pragma once

#include "common/status.h"
#include "model/hparams.h"
#include "model/model.h"

namespace expertmesh::worker {
struct StepContext;
struct LayerPlan;
}  // namespace expertmesh::worker

namespace expertmesh {

struct ArchSpec {
  Arch arch;
  // Binds every tensor of the model (global and per layer).
  Status (*bind)(TensorBinder& b, const HParams& hp, ModelWeights* w);
  // One layer over the batch: x (n_tokens × n_embd, the residual stream) is updated in place.
  Status (*layer)(worker::StepContext& c, const LayerWeights& w, const worker::LayerPlan& p, float* x);
};

const ArchSpec& llama_arch();
const ArchSpec& qwen3_arch();
const ArchSpec& qwen3moe_arch();
const ArchSpec& arch_spec(Arch a);

// Shared binding of token_embd / output_norm / output (tied to token_embd when absent).
Status bind_globals(TensorBinder& b, const HParams& hp, ModelWeights* w);

}  // namespace expertmesh
