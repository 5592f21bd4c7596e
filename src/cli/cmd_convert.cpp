// `expertmesh convert --vocab-only --hf-dir DIR -o OUT.gguf [--pre NAME]`: writes a vocab-only
// GGUF (tokenizer.ggml.* keys, as llama.cpp's convert_hf_to_gguf.py --vocab-only does) from a
// Hugging Face tokenizer directory. Full model conversion (safetensors weights) is out of scope.
//
// Every rank validates the flags; only rank 0 writes.
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "model/tokenizer/hf_vocab.h"

namespace expertmesh::cli {

Status cmd_convert(RankContext& ctx, const std::vector<std::string>& args) {
  bool vocab_only = false;
  std::string dir, out, pre;
  FlagSet fs("convert",
             "write a vocab-only GGUF from a Hugging Face tokenizer directory (tokenizer.json, or vocab.json + "
             "merges.txt, plus tokenizer_config.json); byte-level BPE vocabularies only. Converting model "
             "weights (safetensors) is not supported: --vocab-only is required");
  fs.add_bool({"--vocab-only"}, &vocab_only, "write only the tokenizer metadata (required)");
  fs.add_string({"--hf-dir"}, &dir, "DIR", "Hugging Face model/tokenizer directory (required)");
  fs.add_string({"--pre"}, &pre, "NAME",
                "tokenizer.ggml.pre, e.g. qwen2, llama-bpe, gpt-2 (default: from tokenizer_class; Qwen2 -> qwen2)");
  fs.add_string({"-o", "--output"}, &out, "OUT.gguf", "output file (required)");
  EM_RETURN_IF_ERROR(fs.parse(args));
  if (fs.help_requested()) {
    if (ctx.is_root()) std::fputs(fs.usage().c_str(), stdout);
    return Status::Ok();
  }
  if (!vocab_only)
    return Status::Unsupported("convert: only --vocab-only is supported (full safetensors conversion is out of scope)");
  if (dir.empty()) return Status::InvalidArgument("--hf-dir: a tokenizer directory is required");
  if (out.empty()) return Status::InvalidArgument("-o: an output path is required (-o OUT.gguf)");
  if (!ctx.is_root()) return Status::Ok();
  EM_ASSIGN_OR_RETURN(hf::VocabSummary s, hf::write_vocab_gguf(dir, pre, out));
  std::printf("wrote %s: vocab-only, gpt2/%s, %zu tokens (%zu added), %zu merges\n", out.c_str(), s.pre.c_str(),
              s.n_tokens, s.n_added, s.n_merges);
  return Status::Ok();
}

}  // namespace expertmesh::cli
