// The recipes file of `expertmesh sweep --recipes FILE`: one recipe per line; a line ending in a
// backslash continues on the next one; `#` starts a comment line; blank lines are ignored.
//
//   NAME: TYPE [quantize flags ...]   quantize the base with preset TYPE (name or llama_ftype
//                                     number) and the flags `expertmesh quantize` takes, e.g.
//                                     --custom-q "ffn_down_exps=IQ5_KS,attn_.*=Q8_0" --pure
//   NAME: file=PATH.gguf              evaluate an existing GGUF as is
//
// Words split like a POSIX shell: whitespace separates, '...' is literal, "..." allows \" and \\.
// NAME is [A-Za-z0-9_.+-]+, unique in the file (it names the output GGUF and the results row).
// Errors name the file and line.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace expertmesh::coordinator {

struct Recipe {
  std::string name;
  std::string type;               // preset as written (empty for file= recipes)
  std::vector<std::string> args;  // quantize flags after TYPE, already split
  std::string gguf_path;          // file= recipes: the GGUF to evaluate
  int line = 0;                   // first line of the recipe in the file (1-based)
  std::string text;               // the recipe as written after "NAME:", whitespace-normalised

  bool is_file() const { return !gguf_path.empty(); }
};

Result<std::vector<Recipe>> parse_recipes(std::string_view text, const std::string& file_name);

// Splits one command line like a POSIX shell (no expansions). Errors: an unterminated quote.
Result<std::vector<std::string>> split_words(std::string_view s);

// A stable identity of what a recipe produces: SHA-256 over the recipe's type and arguments and
// the identities of its inputs (e.g. the base model's and the imatrix's content hashes). Two
// runs reuse a quantized file only when this matches.
std::string recipe_hash(const Recipe& r, const std::string& base_identity, const std::string& imatrix_identity);

}  // namespace expertmesh::coordinator
