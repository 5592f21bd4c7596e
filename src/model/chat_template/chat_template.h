// Chat templates: renders a model's `tokenizer.chat_template` (a Jinja template) the way HF
// transformers' apply_chat_template does with Python jinja2 — ImmutableSandboxedEnvironment with
// trim_blocks=True, lstrip_blocks=True, the loopcontrols extension (break/continue), its
// `tojson` override (json.dumps, ensure_ascii=False) and the globals raise_exception(msg) and
// strftime_now(fmt) — so the prompt we tokenize is byte-identical to the one the model was
// trained on.
//
// Supported: text, {{ }}, {% %}, {# #} with `-`/`+` whitespace control; if/elif/else; for (tuple
// unpacking, inline `if` filter, else, loop.*, break/continue); set (names, tuples, ns.attr,
// block set); macro (with varargs/kwargs) + call blocks; filter blocks; with; {% generation %};
// {% raw %}; the expression grammar, tests, filters and str/dict/list methods listed in
// builtins.h, with Python's object semantics where templates can observe them (Markup from
// |safe escaping what it is added to; generators from map/select being single-pass and not
// JSON serializable; dict views; range). Anything else (extends, include, import, block,
// recursive loops, *args, \N{} escapes, integers beyond 64 bits, str.format specs, a few rare
// jinja2 filters) is an error naming line:column and the construct, at parse time when
// syntactic, at render time otherwise.
//
// Thread-safety: a ChatTemplate is immutable after parse() and may be rendered concurrently.
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/status.h"
#include "model/chat_template/interpreter.h"
#include "model/chat_template/lexer.h"
#include "model/chat_template/value.h"

namespace expertmesh::chat {

struct TemplateOptions {
  LexOptions lex;             // whitespace rules; defaults are HF's
  int max_parse_depth = 100;  // nesting of blocks and expressions
  RenderLimits limits;
  // Clock of strftime_now(); default: the local time now (Python's datetime.now()).
  std::function<std::tm()> now;
};

// The variables apply_chat_template passes (`tools`/`documents` are None when absent) plus any
// extra keyword arguments (e.g. enable_thinking), which override nothing above them.
struct ChatInputs {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;  // null: None
  bool add_generation_prompt = false;
  std::string bos_token;
  std::string eos_token;
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();  // object of extra template variables
};

class ChatTemplate {
 public:
  // Parses `source`; syntax errors and unsupported tags name "line L:C".
  static Result<ChatTemplate> parse(std::string_view source, TemplateOptions opt = {});

  // Renders with the globals (range, namespace, dict, raise_exception, strftime_now) and
  // `vars` (a dict Value) as the template's variables.
  Result<std::string> render(const Value& vars) const;
  // apply_chat_template: messages, tools, documents, add_generation_prompt, bos_token,
  // eos_token and the extra kwargs. JSON nested deeper than 128 levels is rejected.
  Result<std::string> apply(const ChatInputs& in) const;

  const std::string& source() const { return *source_; }

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
  std::shared_ptr<const std::string> source_;
};

}  // namespace expertmesh::chat
