// Hugging Face tokenizer files -> GGUF tokenizer.ggml.* metadata, as llama.cpp's
// convert_hf_to_gguf.py writes it for byte-level BPE ("gpt2") vocabularies.
//
// Reads from `dir`: tokenizer.json (model.vocab, model.merges, added_tokens) when present, else
// vocab.json + merges.txt; tokenizer_config.json when present (added_tokens_decoder, bos/eos/
// pad/unk token strings, add_bos_token, add_eos_token). Ids absent from both vocab and added
// tokens become "[PAD<id>]" (UNUSED), added tokens CONTROL when "special" else USER_DEFINED, all
// other tokens NORMAL. Only byte-level BPE (model type BPE) is supported.
#pragma once

#include <string>

#include "common/status.h"
#include "model/gguf/gguf.h"

namespace expertmesh::hf {

struct VocabSummary {
  std::string pre;
  size_t n_tokens = 0;
  size_t n_merges = 0;
  size_t n_added = 0;
};

// Adds the tokenizer KVs (and general.architecture/general.name if unset) to `w`. `pre` is the
// tokenizer.ggml.pre name; empty guesses it from tokenizer_config.json's tokenizer_class (Qwen2
// -> "qwen2") and fails otherwise, naming the flag to pass. Errors name the file and the key.
Result<VocabSummary> add_hf_vocab(const std::string& dir, const std::string& pre, gguf::Writer* w);

// Writes a vocab-only GGUF (llama.cpp's layout: header only) to `out`.
Result<VocabSummary> write_vocab_gguf(const std::string& dir, const std::string& pre, const std::string& out);

}  // namespace expertmesh::hf
