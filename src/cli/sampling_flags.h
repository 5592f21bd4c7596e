// The sampler flags `run` and `serve` share, under the peer's names:
//   --temp --top-k --top-p --min-p --repeat-penalty --repeat-last-n --frequency-penalty
//   --presence-penalty --penalize-nl
// with the peer's defaults (0.8, 40, 0.95, 0.05, 1.0, 64, 0, 0, off). For serve they are the
// defaults a request's own fields override. The seed stays with each command (-s for run, the
// request for serve).
#pragma once

#include <cstdint>

#include "cli/flags.h"
#include "common/status.h"
#include "model/sampling.h"

namespace expertmesh {
class Tokenizer;
}

namespace expertmesh::cli {

struct SamplingFlags {
  double temp = 0.8, top_p = 0.95, min_p = 0.05;
  int64_t top_k = 40;
  double repeat_penalty = 1.0, frequency_penalty = 0.0, presence_penalty = 0.0;
  int64_t repeat_last_n = 64;
  bool penalize_nl = false;
};

void add_sampling_flags(FlagSet& fs, SamplingFlags* f);

// Checks every value; an error names the flag. Needs no model, so commands call it before loading.
Status check_sampling_flags(const SamplingFlags& f);
// The parameters of checked flags; `tok` gives the newline token that the penalties spare unless
// --penalize-nl. The seed is left at 0.
SamplingParams sampling_params(const SamplingFlags& f, const Tokenizer& tok);

}  // namespace expertmesh::cli
