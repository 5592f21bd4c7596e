#include "cli/compat_flags.h"

#include <fmt/format.h>

#include <cstdio>
#include <string_view>

namespace expertmesh::cli {

namespace {

// How a flag's value is checked: none (a switch), a non-negative integer, or one of a list.
// Comma lists are accepted where llama-bench takes them (each element checked).
enum class Value { kSwitch, kCount, kChoice, kText };

struct Inert {
  std::vector<std::string> names;
  Value value;
  const char* metavar;
  std::vector<std::string_view> choices;  // kChoice
  const char* why;
  bool optional = false;  // the value may be left out (older peers took these as switches)
};

// GPU and peer-engine tuning flags: our engine runs every layer on CPU ranks with one attention
// and one MoE path, so these have nothing to switch.
const std::vector<Inert>& common_inert() {
  static const std::vector<Inert> kTable = {
      {{"-ngl", "--gpu-layers", "--n-gpu-layers"},
       Value::kCount,
       "N",
       {},
       "GPU offload is not in the engine yet: every layer runs on the CPU ranks"},
      {{"-fa", "--flash-attn"},
       Value::kChoice,
       "on|off|auto",
       {"on", "off", "auto", "1", "0"},
       "attention has one exact path, softmax over the cache",
       true},
      {{"-no-fa", "--no-flash-attn"}, Value::kSwitch, "", {}, "attention has one exact path, softmax over the cache"},
      {{"-fmoe", "--fused-moe"}, Value::kChoice, "0|1", {"0", "1"}, "routed experts have one path", true},
      {{"-no-fmoe", "--no-fused-moe"}, Value::kSwitch, "", {}, "routed experts have one path"},
      {{"-ger", "--grouped-expert-routing"}, Value::kSwitch, "", {}, "expert routing follows the model's metadata"},
      {{"-ser", "--smart-expert-reduction"}, Value::kText, "K,t", {}, "a no-op in the peer too"},
      {{"-mla", "--mla-use"}, Value::kChoice, "0..3", {"0", "1", "2", "3"}, "no MLA model such as deepseek2 runs here yet"},
      {{"-amb", "--attention-max-batch"},
       Value::kCount,
       "MiB",
       {},
       "attention needs no buffer cap: it works per head and row"},
      {{"-rtr", "--run-time-repack"},
       Value::kChoice,
       "0|1",
       {"0", "1"},
       "weights are used in their file types; quantize --repack makes _R4/_R8 files",
       true},
      {{"-mqkv", "--merge-qkv"}, Value::kSwitch, "", {}, "Q/K/V stay separate tensors"},
      {{"-muge", "--merge-up-gate-experts"}, Value::kSwitch, "", {}, "up/gate experts stay separate tensors"},
      {{"--mlock"}, Value::kSwitch, "", {}, "pages are not locked"},
      {{"-sm", "--split-mode"},
       Value::kChoice,
       "none|layer|attn|graph",
       {"none", "layer", "attn", "graph"},
       "ranks split the model: --placement ep|pp|hybrid"},
      {{"-ts", "--tensor-split"}, Value::kText, "a,b,...", {}, "ranks split the model: --placement"},
      {{"-mg", "--main-gpu"}, Value::kCount, "N", {}, "GPU offload is not in the engine yet"},
      {{"-cmoe", "--cpu-moe"}, Value::kSwitch, "", {}, "experts already run on the CPU ranks"},
      {{"-ncmoe", "--n-cpu-moe"}, Value::kCount, "N", {}, "experts already run on the CPU ranks"},
      {{"--numa"},
       Value::kChoice,
       "distribute|isolate|numactl",
       {"distribute", "isolate", "numactl"},
       "one rank per NUMA node does that: launch/expertmesh-mpirun"},
      {{"--no-warmup"}, Value::kSwitch, "", {}, "there is no warm-up run"},
  };
  return kTable;
}

const Inert kUbatch{{"-ub", "--ubatch-size"}, Value::kCount, "N", {}, "each batch is evaluated whole"};
const std::vector<Inert> kServer = {
    {{"-cb", "--cont-batching"}, Value::kSwitch, "", {}, "continuous batching is always on"},
    {{"--jinja"}, Value::kSwitch, "", {}, "chat templates are always rendered by the Jinja interpreter"},
};

Status check_value(const Inert& f, const std::string& v) {
  const std::string& flag = f.names.front();
  if (f.optional && v.empty()) return Status::Ok();
  if (f.value == Value::kSwitch || f.value == Value::kText) {
    if (f.value == Value::kText && v.empty())
      return Status::InvalidArgument(fmt::format("{}: a value is required", flag));
    return Status::Ok();
  }
  size_t at = 0;
  do {
    const size_t comma = v.find(',', at);
    const std::string item = v.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    if (f.value == Value::kCount) {
      if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos || item.size() > 9)
        return Status::InvalidArgument(fmt::format("{}: expected a non-negative integer, got '{}'", flag, item));
    } else {
      bool ok = false;
      for (std::string_view c : f.choices) ok = ok || c == item;
      if (!ok) return Status::InvalidArgument(fmt::format("{}: expected {}, got '{}'", flag, f.metavar, item));
    }
    at = comma == std::string::npos ? std::string::npos : comma + 1;
  } while (at != std::string::npos);
  return Status::Ok();
}

void add_inert(FlagSet& fs, const Inert& f, PeerCompatFlags* c) {
  auto record = [&f, c](const std::string& v) -> Status {
    EM_RETURN_IF_ERROR(check_value(f, v));
    const std::string shown = f.names.front() + (v.empty() ? "" : " " + v);
    c->inert.push_back(fmt::format("{} ({})", shown, f.why));
    return Status::Ok();
  };
  std::string help = fmt::format("accepted for llama.cpp compatibility; no effect: {}", f.why);
  if (f.optional)
    fs.add_custom_optional(f.names, f.metavar, std::move(help), record);
  else
    fs.add_custom(f.names, f.metavar, std::move(help), record);
}

}  // namespace

void add_peer_compat_flags(FlagSet& fs, PeerCompatFlags* c, CompatScope scope) {
  fs.add_bool({"--no-mmap"}, &c->no_mmap, "read the weights into private memory instead of computing from the mapping");
  for (const Inert& f : common_inert()) add_inert(fs, f, c);
  if (scope.ubatch) add_inert(fs, kUbatch, c);
  if (scope.server)
    for (const Inert& f : kServer) add_inert(fs, f, c);
}

void note_peer_compat_flags(const RankContext& ctx, const char* cmd, const PeerCompatFlags& c) {
  if (!ctx.is_root() || c.inert.empty()) return;
  std::string line = fmt::format("{}: accepted for compatibility, no effect here:", cmd);
  for (size_t i = 0; i < c.inert.size(); ++i) line += (i ? "; " : " ") + c.inert[i];
  std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace expertmesh::cli
