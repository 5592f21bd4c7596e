// Test helper shared by the imatrix tests: a copy of a BF16 model whose token-embedding row is
// NaN for a token that only one chunk of the calibration text evaluates, so that exactly that
// chunk meets a non-finite activation (first in the input of blk.0.attn_q.weight).
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/gguf/gguf.h"
#include "model/tokenizer/tokenizer.h"

namespace expertmesh::testing {

// The first token id that chunk `bad` (of chunks 0..n-1, `chunk_tokens` tokens each, BOS at
// the start of each) evaluates and no other chunk does; -1 if there is none.
inline int32_t token_only_in_chunk(const Tokenizer& tok, const std::string& text_path, int64_t chunk_tokens, int64_t n,
                                   int64_t bad) {
  std::ifstream in(text_path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!text.empty() && text.back() == '\n') text.pop_back();
  const std::vector<int32_t> t = tok.encode(text, true);
  if (int64_t(t.size()) < n * chunk_tokens) return -1;
  std::set<int32_t> others, mine;
  for (int64_t c = 0; c < n; ++c)
    for (int64_t i = c * chunk_tokens + 1; i < (c + 1) * chunk_tokens; ++i)
      (c == bad ? mine : others).insert(t[size_t(i)]);
  for (int32_t id : mine)
    if (!others.count(id) && id != tok.bos()) return id;
  return -1;
}

// Copies `model` to `out` with the embedding row of token_only_in_chunk(...) set to NaN.
inline Status write_poisoned_model(const std::string& model, const std::string& text_path, int64_t chunk_tokens,
                                   int64_t n, int64_t bad, const std::string& out) {
  std::error_code ec;
  std::filesystem::copy_file(model, out, std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) return Status::IoError(fmt::format("copy {} -> {}: {}", model, out, ec.message()));
  EM_ASSIGN_OR_RETURN(auto f, gguf::File::open(model));
  EM_ASSIGN_OR_RETURN(auto tok, Tokenizer::from_gguf(*f));
  const int32_t id = token_only_in_chunk(*tok, text_path, chunk_tokens, n, bad);
  if (id < 0) return Status::NotFound(fmt::format("no token is used by chunk {} alone", bad));
  const gguf::TensorInfo* te = f->find_tensor("token_embd.weight");
  if (te == nullptr || te->type != GgmlType::BF16) return Status::InvalidArgument("token_embd.weight: BF16 expected");
  const uint64_t row = f->data_offset(0) + te->offset + uint64_t(id) * uint64_t(te->ne[0]) * 2;
  std::vector<uint16_t> nan_row(size_t(te->ne[0]), 0x7FC0);  // BF16 quiet NaN
  std::fstream io(out, std::ios::in | std::ios::out | std::ios::binary);
  io.seekp(std::streamoff(row));
  io.write(reinterpret_cast<const char*>(nan_row.data()), std::streamsize(nan_row.size() * 2));
  if (!io.good()) return Status::IoError(fmt::format("{}: cannot write the poisoned row", out));
  return Status::Ok();
}

}  // namespace expertmesh::testing
