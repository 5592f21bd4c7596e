// Parser of the chat-template Jinja subset: tokens (lexer.h) to an AST (ast.h), following
// jinja2's grammar and operator precedence. Unsupported tags (extends, include, import, block,
// with, ...) and constructs are errors naming "line L:C" and the construct; nesting deeper than
// `max_depth` is an error rather than a stack overflow.
#pragma once

#include <vector>

#include "common/status.h"
#include "model/chat_template/ast.h"
#include "model/chat_template/lexer.h"

namespace expertmesh::chat {

Result<Body> parse_template(const std::vector<Token>& tokens, int max_depth);

}  // namespace expertmesh::chat
