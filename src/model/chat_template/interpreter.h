// Tree-walking evaluator of the chat-template AST with jinja2's scoping: `for` bodies and macro
// calls get their own scope (a `set` there does not leak out), `if` bodies do not; namespaces
// are the way to carry state out of a loop.
//
// Robustness contract: evaluation never recurses deeper than `max_eval_depth`, never runs more
// than `max_steps` node evaluations, never builds output longer than `max_output_bytes`; each
// limit, like every runtime error, returns a Status "chat template: line L:C: <construct>: ...".
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/status.h"
#include "model/chat_template/ast.h"
#include "model/chat_template/builtins.h"
#include "model/chat_template/value.h"

namespace expertmesh::chat {

struct RenderLimits {
  size_t max_output_bytes = 8u << 20;
  uint64_t max_steps = 20'000'000;
  int max_eval_depth = 1500;         // nested statement/expression evaluations (bounds the C++ stack)
  int max_macro_depth = 40;          // nested macro calls
  bool allow_list_mutation = false;  // see BuiltinLimits::allow_list_mutation
};

struct Scope {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;

  const Value* lookup(const std::string& name) const;
};
using ScopePtr = std::shared_ptr<Scope>;

// Renders `body` with `globals` as the outermost scope. The AST must outlive the call; the
// interpreter holds no state between renders.
Result<std::string> render_body(const Body& body, ScopePtr globals, const RenderLimits& limits);

}  // namespace expertmesh::chat
