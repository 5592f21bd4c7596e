#include "coordinator/server/chat_prompt.h"

#include <fmt/format.h>

namespace expertmesh::coordinator::server {

std::string_view chatml_template_source() {
  // Content that is not a string (null for an assistant turn with tool calls) renders empty.
  static constexpr std::string_view kChatml =
      "{%- for message in messages -%}\n"
      "{{- '<|im_start|>' + message['role'] + '\\n' -}}\n"
      "{%- if message['content'] is string -%}{{- message['content'] -}}{%- endif -%}\n"
      "{{- '<|im_end|>\\n' -}}\n"
      "{%- endfor -%}\n"
      "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}\n";
  return kChatml;
}

Result<chat::ChatTemplate> resolve_chat_template(std::string_view override_src, std::string_view model_src,
                                                 const std::string& origin) {
  std::string_view src = override_src.empty() ? model_src : override_src;
  if (src.empty() || src == "chatml") src = chatml_template_source();
  // list.append() allowed: HF's immutable sandbox refuses it, but Kimi-K2's templates call it to
  // render tool calls, and the peer (minja) renders them; the output then equals jinja2's
  // mutable sandbox byte for byte.
  chat::TemplateOptions opt;
  opt.limits.allow_list_mutation = true;
  auto t = chat::ChatTemplate::parse(src, opt);
  if (!t.ok()) return Status::InvalidArgument(fmt::format("{}: {}", origin, t.status().message()));
  return std::move(*t);
}

Result<std::vector<int32_t>> chat_prompt_tokens(const chat::ChatTemplate& tmpl, const Tokenizer& tok,
                                                const http::ChatRequest& req) {
  chat::ChatInputs in;
  in.messages = http::messages_for_template(req);
  in.tools = req.tools;
  in.add_generation_prompt = true;
  if (tok.bos() >= 0) in.bos_token = tok.token_text(tok.bos());
  if (tok.eos() >= 0) in.eos_token = tok.token_text(tok.eos());
  in.extra = req.chat_template_kwargs;
  auto text = tmpl.apply(in);
  if (!text.ok()) return Status::InvalidArgument("\"messages\": the chat template failed: " + text.status().message());
  std::vector<int32_t> ids = tok.encode(*text, /*add_special=*/false, /*parse_special=*/true);
  const bool template_has_bos = !in.bos_token.empty() && text->starts_with(in.bos_token);
  if (tok.add_bos() && tok.bos() >= 0 && !template_has_bos) ids.insert(ids.begin(), tok.bos());
  return ids;
}

Result<std::vector<int32_t>> completion_prompt_tokens(const Tokenizer& tok, const http::CompletionRequest& req) {
  if (!req.prompt_is_tokens) return tok.encode(req.prompt, /*add_special=*/true, /*parse_special=*/true);
  for (size_t i = 0; i < req.prompt_tokens.size(); ++i) {
    const int32_t id = req.prompt_tokens[i];
    if (id < 0 || id >= tok.n_vocab())
      return Status::InvalidArgument(
          fmt::format("\"prompt[{}]\": token id {} is outside the vocabulary [0, {})", i, id, tok.n_vocab()));
  }
  return req.prompt_tokens;
}

}  // namespace expertmesh::coordinator::server
