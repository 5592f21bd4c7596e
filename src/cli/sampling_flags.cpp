#include "cli/sampling_flags.h"

#include <fmt/format.h>

#include <limits>

#include "model/tokenizer/tokenizer.h"

namespace expertmesh::cli {

void add_sampling_flags(FlagSet& fs, SamplingFlags* f) {
  fs.add_float({"--temp"}, &f->temp, "T", "temperature (default 0.8; 0 = greedy)");
  fs.add_int({"--top-k"}, &f->top_k, "K", "top-k sampling (default 40, 0 = off)");
  fs.add_float({"--top-p"}, &f->top_p, "P", "top-p sampling (default 0.95, 1.0 = off)");
  fs.add_float({"--min-p"}, &f->min_p, "P", "min-p sampling (default 0.05, 0.0 = off)");
  fs.add_float({"--repeat-penalty"}, &f->repeat_penalty, "X",
               "penalise repeats of the last --repeat-last-n tokens (default 1.0 = off)");
  fs.add_int({"--repeat-last-n"}, &f->repeat_last_n, "N",
             "tokens the penalties look back over (default 64, 0 = off, -1 = the whole context)");
  fs.add_float({"--frequency-penalty"}, &f->frequency_penalty, "X",
               "subtract X per earlier occurrence in the window (default 0.0 = off)");
  fs.add_float({"--presence-penalty"}, &f->presence_penalty, "X",
               "subtract X once for a token present in the window (default 0.0 = off)");
  fs.add_bool({"--penalize-nl"}, &f->penalize_nl, "let the penalties touch the newline token too");
}

Status check_sampling_flags(const SamplingFlags& f) {
  if (!(f.temp <= 100.0))  // <= 0 is greedy, as in the peer
    return Status::InvalidArgument(fmt::format("--temp: must be <= 100, got {}", f.temp));
  if (f.top_k < 0 || f.top_k > std::numeric_limits<int32_t>::max())
    return Status::InvalidArgument(fmt::format("--top-k: must be >= 0, got {}", f.top_k));
  if (!(f.top_p > 0.0 && f.top_p <= 1.0))
    return Status::InvalidArgument(fmt::format("--top-p: must be in (0, 1], got {}", f.top_p));
  if (!(f.min_p >= 0.0 && f.min_p <= 1.0))
    return Status::InvalidArgument(fmt::format("--min-p: must be in [0, 1], got {}", f.min_p));
  if (!(f.repeat_penalty > 0.0 && f.repeat_penalty <= 100.0))
    return Status::InvalidArgument(fmt::format("--repeat-penalty: must be in (0, 100], got {}", f.repeat_penalty));
  if (f.repeat_last_n < -1 || f.repeat_last_n > std::numeric_limits<int32_t>::max())
    return Status::InvalidArgument(fmt::format("--repeat-last-n: must be >= -1, got {}", f.repeat_last_n));
  if (!(f.frequency_penalty >= -2.0 && f.frequency_penalty <= 2.0))
    return Status::InvalidArgument(fmt::format("--frequency-penalty: must be in [-2, 2], got {}", f.frequency_penalty));
  if (!(f.presence_penalty >= -2.0 && f.presence_penalty <= 2.0))
    return Status::InvalidArgument(fmt::format("--presence-penalty: must be in [-2, 2], got {}", f.presence_penalty));
  return Status::Ok();
}

SamplingParams sampling_params(const SamplingFlags& f, const Tokenizer& tok) {
  SamplingParams p;
  p.temp = static_cast<float>(f.temp);
  p.top_k = static_cast<int32_t>(f.top_k);
  p.top_p = static_cast<float>(f.top_p);
  p.min_p = static_cast<float>(f.min_p);
  p.repeat_penalty = static_cast<float>(f.repeat_penalty);
  p.repeat_last_n = static_cast<int32_t>(f.repeat_last_n);
  p.frequency_penalty = static_cast<float>(f.frequency_penalty);
  p.presence_penalty = static_cast<float>(f.presence_penalty);
  p.penalty_exempt = f.penalize_nl ? -1 : tok.newline();
  return p;
}

}  // namespace expertmesh::cli
