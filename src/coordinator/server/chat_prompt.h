// Chat templates and prompt tokens for `serve`: which template a server uses and how a chat
// request becomes prompt token ids.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "coordinator/http/openai_request.h"
#include "model/chat_template/chat_template.h"
#include "model/tokenizer/tokenizer.h"

namespace expertmesh::coordinator::server {

// The ChatML template (<|im_start|>role\ncontent<|im_end|>\n ..., then <|im_start|>assistant\n),
// written for expertmesh; the peer's fallback when a model has no template.
std::string_view chatml_template_source();

// The template a server renders with: `override_src` (--chat-template / --chat-template-file)
// when non-empty — a built-in name ("chatml") or Jinja source —, else the model's
// tokenizer.chat_template, else ChatML. `origin` names the source in parse errors
// ("--chat-template", "tokenizer.chat_template of FILE").
Result<chat::ChatTemplate> resolve_chat_template(std::string_view override_src, std::string_view model_src,
                                                 const std::string& origin);

// Renders `req` with add_generation_prompt = true, the vocabulary's BOS/EOS token text, its
// tools and chat_template_kwargs, and tokenizes the result with parse_special = true. BOS is
// prepended when the vocabulary adds one and the rendered text does not already start with it.
// Template errors (raise_exception, unsupported constructs) are kInvalidArgument naming
// "messages".
Result<std::vector<int32_t>> chat_prompt_tokens(const chat::ChatTemplate& tmpl, const Tokenizer& tok,
                                                const http::ChatRequest& req);

// Tokens of a completion prompt: the ids as sent (each checked against the vocabulary, naming
// "prompt[i]"), or the text tokenized with add_special = true and parse_special = true as the
// peer's /completion does.
Result<std::vector<int32_t>> completion_prompt_tokens(const Tokenizer& tok, const http::CompletionRequest& req);

}  // namespace expertmesh::coordinator::server
