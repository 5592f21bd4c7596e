// Small synthetic models for the distributed-runtime tests (written per test, deterministic).
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "model/gguf/gguf.h"
#include "model/synth.h"

namespace expertmesh::testing {

// The shape of the small test models: 3 layers, n_embd 64, 4 heads / 2 KV heads, dense FFN 96,
// 6 experts (top-2) of 32, F16, seed 11.
inline synth::Options synth_options(const std::string& arch) {
  synth::Options o;
  o.arch = arch;
  o.n_layer = 3;
  o.n_embd = 64;
  o.n_head = 4;
  o.n_head_kv = 2;
  o.n_ff = 96;
  o.n_expert = 6;
  o.n_expert_used = 2;
  o.n_ff_exp = 32;
  o.dtype = GgmlType::F16;
  o.seed = 11;
  return o;
}

// A small synthetic model of `arch`; "<arch>-tied" drops output.weight (the head is token_embd).
inline std::string synth_model(const std::filesystem::path& dir, std::string arch, const std::string& name,
                               bool split = false) {
  const bool tied = arch.ends_with("-tied");
  if (tied) arch.resize(arch.size() - 5);
  const synth::Options o = synth_options(arch);
  const std::string path = (dir / name).string();
  gguf::SplitOptions so;
  if (split) so.max_tensors = 7;
  auto s = synth::write_model(o, tied ? path + ".untied" : path, 1, tied ? gguf::SplitOptions{} : so);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  if (!s.ok()) return path;
  if (!tied) return s->paths.front();
  auto f = gguf::File::open(s->paths.front());
  EXPECT_TRUE(f.ok()) << f.status().to_string();
  auto all = gguf::Writer::from_file(**f);
  EXPECT_TRUE(all.ok()) << all.status().to_string();
  gguf::Writer w;
  for (const gguf::KeyValue& kv : all->kvs()) w.set(kv.key, kv.value);
  for (const gguf::WriteTensor& t : all->tensors())
    if (t.name != "output.weight") {
      EXPECT_TRUE(w.add_tensor(t).ok()) << t.name;
    }
  auto written = w.write(path, so);
  EXPECT_TRUE(written.ok()) << written.status().to_string();
  return written.ok() ? written->front() : path;
}

}  // namespace expertmesh::testing
