// AST of the chat-template Jinja subset. Every node records the template position (line:col of
// its first token) so runtime errors can name it. Trees are immutable after parsing.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/chat_template/value.h"

namespace expertmesh::chat {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,   // literal
    kName,      // name
    kList,      // args = items
    kTuple,     // args = items
    kDict,      // args = k0, v0, k1, v1, ...
    kGetAttr,   // args[0] . name
    kGetItem,   // args[0] [ args[1] ]
    kSlice,     // args[0] [ args[1] : args[2] : args[3] ] (null parts allowed)
    kCall,      // args[0] ( args[1..], kwargs )
    kFilter,    // args[0] | name ( args[1..], kwargs ); args[0] null inside {% filter %}
    kTest,      // args[0] is [not] name ( args[1..] )
    kNeg,       // - args[0]
    kPos,       // + args[0]
    kNot,       // not args[0]
    kBinary,    // args[0] name args[1]; name in + - * / // % ** ~
    kCompare,   // args[0] ops[0] args[1] ops[1] args[2] ... (Python chaining)
    kAnd,       // args[0] and args[1]
    kOr,        // args[0] or args[1]
    kCondExpr,  // args[0] if args[1] else args[2] (args[2] may be null: undefined)
  };
  Kind kind;
  int line = 0;
  int col = 0;
  Value literal;
  std::string name;
  bool negated = false;
  std::vector<std::string> ops;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

// Target of `set` / `for`: plain names (several for unpacking) or `ns.attr`.
struct AssignTarget {
  std::vector<std::string> names;
  std::string attr;  // non-empty: names[0].attr (namespace assignment)
};

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // null: required
};

struct Stmt {
  enum class Kind {
    kText,         // text
    kOutput,       // {{ expr }}
    kIf,           // conds[i] -> bodies[i]; else_body
    kFor,          // for target in expr [if cond] : bodies[0]; else_body
    kSet,          // set target = expr
    kSetBlock,     // set target [| filter]: bodies[0] rendered, filter in expr (args[0] null) or null
    kMacro,        // macro name(params): bodies[0]
    kCallBlock,    // call(params) expr: bodies[0] is `caller`
    kFilterBlock,  // filter expr (chain with null subject): bodies[0]
    kBreak,
    kContinue,
    kGeneration,  // transformers' {% generation %}: renders bodies[0] unchanged
    kWith,        // with params[i].name = params[i].default_value ...: bodies[0] in a new scope
  };
  Kind kind;
  int line = 0;
  int col = 0;
  std::string text;  // kText; macro name
  ExprPtr expr;
  ExprPtr cond;  // for-loop filter
  std::vector<ExprPtr> conds;
  std::vector<Body> bodies;
  Body else_body;
  AssignTarget target;
  std::vector<MacroParam> params;
};

}  // namespace expertmesh::chat
