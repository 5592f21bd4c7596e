// libFuzzer entry point for the GGUF parser (also driven by gguf_fuzz_driver without libFuzzer).
//
// Invariants checked on every input, beyond "no crash, no out-of-bounds access" (ASan):
//  - a refusal names the file;
//  - every accepted tensor's bytes are readable in full (first and last byte touched);
//  - whatever is accepted can be written back (Writer::from_file + to_bytes) and re-parsed with the
//    same number of keys and tensors.
// A violated invariant traps, so libFuzzer (or the driver) reports the input.
#include <cstdint>
#include <cstdio>
#include <string>

#include "model/gguf/gguf.h"

namespace {

constexpr const char* kName = "fuzz-input.gguf";

[[noreturn]] void violated(const char* what, const std::string& detail) {
  std::fprintf(stderr, "gguf_fuzz: invariant violated: %s: %s\n", what, detail.c_str());
  __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace expertmesh::gguf;
  auto f = File::parse(data, size, kName);
  if (!f.ok()) {
    if (f.status().message().find(kName) == std::string::npos)
      violated("message lacks the file name", f.status().message());
    return 0;
  }
  const File& file = *f.value();
  volatile uint8_t sink = 0;
  for (const auto& kv : file.kvs()) sink = sink + static_cast<uint8_t>(kv.value.to_display(4).size());
  for (const auto& t : file.tensors()) {
    if (t.data == nullptr) {
      if (!file.vocab_only()) violated("tensor without data in a file with a data section", t.name);
      continue;
    }
    if (t.nbytes <= 0) violated("tensor with no bytes", t.name);
    sink = sink + t.data[0] + t.data[t.nbytes - 1];
  }
  (void)sink;

  auto w = Writer::from_file(file);
  if (!w.ok()) violated("accepted file cannot be copied to a Writer", w.status().to_string());
  auto bytes = w->to_bytes();
  if (!bytes.ok()) violated("accepted file cannot be written", bytes.status().to_string());
  auto again = File::parse(bytes->data(), bytes->size(), "rewritten.gguf");
  if (!again.ok()) violated("rewritten file cannot be parsed", again.status().to_string());
  if ((*again)->kvs().size() != file.kvs().size() || (*again)->tensors().size() != file.tensors().size())
    violated("rewritten file differs in shape", "");
  return 0;
}
