#include "coordinator/http/openai_request.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <utility>

namespace expertmesh::coordinator::http {

namespace {

Status field_error(const std::string& field, const std::string& what) {
  return Status::InvalidArgument("\"" + field + "\" " + what);
}

// Iterative depth check (nlohmann's parser already accepted the bytes; we refuse hostile
// nesting before any recursive walk touches it).
size_t json_depth(const Json& j, size_t limit) {
  std::vector<std::pair<const Json*, size_t>> stack = {{&j, 1}};
  size_t max_depth = 0;
  while (!stack.empty()) {
    auto [node, d] = stack.back();
    stack.pop_back();
    max_depth = std::max(max_depth, d);
    if (max_depth > limit) break;
    if (node->is_structured())
      for (const auto& c : *node) stack.emplace_back(&c, d + 1);
  }
  return max_depth;
}

// Typed optional field readers over one JSON object; `null` counts as absent, as in OpenAI.
class Fields {
 public:
  Fields(const Json& obj, std::string prefix) : obj_(obj), prefix_(std::move(prefix)) {}

  const Json* get(const char* key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  std::string name(const char* key) const { return prefix_ + key; }

  Result<std::optional<double>> number(const char* key) const {
    const Json* v = get(key);
    if (!v) return std::optional<double>();
    if (!v->is_number()) return field_error(name(key), "must be a number");
    double d = v->get<double>();
    if (!std::isfinite(d)) return field_error(name(key), "must be a finite number");
    return std::optional<double>(d);
  }
  Result<std::optional<int64_t>> integer(const char* key) const {
    const Json* v = get(key);
    if (!v) return std::optional<int64_t>();
    if (v->is_number_integer()) {
      if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
        return field_error(name(key), "is out of range");
      return std::optional<int64_t>(v->get<int64_t>());
    }
    if (v->is_number_float()) {
      double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15)
        return std::optional<int64_t>(static_cast<int64_t>(d));
    }
    return field_error(name(key), "must be an integer");
  }
  Result<std::optional<bool>> boolean(const char* key) const {
    const Json* v = get(key);
    if (!v) return std::optional<bool>();
    if (!v->is_boolean()) return field_error(name(key), "must be a boolean");
    return std::optional<bool>(v->get<bool>());
  }
  Result<std::optional<std::string>> string(const char* key) const {
    const Json* v = get(key);
    if (!v) return std::optional<std::string>();
    if (!v->is_string()) return field_error(name(key), "must be a string");
    return std::optional<std::string>(v->get<std::string>());
  }

 private:
  const Json& obj_;
  std::string prefix_;
};

Result<double> in_range(std::optional<double> v, const std::string& field, double lo, double hi) {
  if (*v < lo || *v > hi) return field_error(field, fmt::format("must be between {:g} and {:g}", lo, hi));
  return *v;
}

Status parse_stop(const Fields& f, GenerationParams& g, const ApiLimits& lim) {
  const Json* v = f.get("stop");
  if (!v) return Status::Ok();
  if (v->is_string()) {
    g.stop = {v->get<std::string>()};
  } else if (v->is_array()) {
    if (v->size() > lim.max_stop_strings)
      return field_error(f.name("stop"), "must have at most " + std::to_string(lim.max_stop_strings) + " strings");
    for (size_t i = 0; i < v->size(); ++i) {
      if (!(*v)[i].is_string()) return field_error(f.name("stop") + "[" + std::to_string(i) + "]", "must be a string");
      g.stop.push_back((*v)[i].get<std::string>());
    }
  } else {
    return field_error(f.name("stop"), "must be a string or an array of strings");
  }
  for (const auto& s : g.stop)
    if (s.empty()) return field_error(f.name("stop"), "must not contain empty strings");
  return Status::Ok();
}

// A logit_bias value: a finite number, or false (the peer's "ban").
Result<float> bias_value(const Json& v, const std::string& field) {
  if (v.is_boolean() && !v.get<bool>()) return -std::numeric_limits<float>::infinity();
  if (!v.is_number() || !std::isfinite(v.get<double>()) || std::fabs(v.get<double>()) > 1.0e30)
    return field_error(field, "must be a finite number or false");
  return static_cast<float>(v.get<double>());
}

// logit_bias: OpenAI's {"TOKEN_ID": bias} object, or the peer's [[TOKEN_ID or "text", bias], ...].
Status parse_logit_bias(const Fields& f, GenerationParams& g, const ApiLimits& lim) {
  const Json* v = f.get("logit_bias");
  if (!v) return Status::Ok();
  const std::string name = f.name("logit_bias");
  if (v->size() > lim.max_logit_bias)
    return field_error(name, "must have at most " + std::to_string(lim.max_logit_bias) + " entries");
  if (v->is_object()) {
    for (const auto& [key, val] : v->items()) {
      GenerationParams::LogitBias b;
      b.field = name + "[\"" + key + "\"]";
      const bool digits = !key.empty() && key.size() <= 10 && key.find_first_not_of("0123456789") == std::string::npos;
      if (!digits) return field_error(b.field, "must be keyed by a token id");
      b.id = std::stoll(key);
      EM_ASSIGN_OR_RETURN(b.bias, bias_value(val, b.field));
      g.logit_bias.push_back(std::move(b));
    }
    return Status::Ok();
  }
  if (!v->is_array()) return field_error(name, "must be an object of token id -> bias, or an array of [token, bias]");
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& e = (*v)[i];
    GenerationParams::LogitBias b;
    b.field = name + "[" + std::to_string(i) + "]";
    if (!e.is_array() || e.size() != 2) return field_error(b.field, "must be a [token, bias] pair");
    if (e[0].is_number_integer()) {
      b.id = e[0].get<int64_t>();
    } else if (e[0].is_string() && !e[0].get<std::string>().empty()) {
      b.text = e[0].get<std::string>();
    } else {
      return field_error(b.field + "[0]", "must be a token id or a non-empty string");
    }
    EM_ASSIGN_OR_RETURN(b.bias, bias_value(e[1], b.field + "[1]"));
    g.logit_bias.push_back(std::move(b));
  }
  return Status::Ok();
}

Status parse_penalties(const Fields& f, GenerationParams& g) {
  EM_ASSIGN_OR_RETURN(auto rp, f.number("repeat_penalty"));
  if (rp) {
    if (*rp <= 0.0 || *rp > 100.0) return field_error(f.name("repeat_penalty"), "must be > 0 and <= 100");
    g.repeat_penalty = *rp;
  }
  for (auto [key, out] :
       {std::pair{"frequency_penalty", &g.frequency_penalty}, std::pair{"presence_penalty", &g.presence_penalty}}) {
    EM_ASSIGN_OR_RETURN(auto v, f.number(key));
    if (v) {
      EM_ASSIGN_OR_RETURN(*out, in_range(v, f.name(key), -2.0, 2.0));
    }
  }
  EM_ASSIGN_OR_RETURN(auto last_n, f.integer("repeat_last_n"));
  if (last_n) {
    if (*last_n < -1 || *last_n > std::numeric_limits<int32_t>::max())
      return field_error(f.name("repeat_last_n"), "must be >= -1 (-1: the whole context, 0: off)");
    g.repeat_last_n = static_cast<int32_t>(*last_n);
  }
  EM_ASSIGN_OR_RETURN(g.penalize_nl, f.boolean("penalize_nl"));
  return Status::Ok();
}

// Fields that ask for output control this server does not have. At their neutral values (what
// UIs send by default) they are accepted; otherwise the request is refused rather than answered
// as if they had been honoured.
Status refuse_unsupported_sampling(const Fields& f) {
  const std::string kGrammar = " needs grammar-constrained sampling, which this server does not have";
  if (const Json* rf = f.get("response_format")) {
    if (!rf->is_object()) return field_error(f.name("response_format"), "must be an object");
    auto type = rf->find("type");
    if (type == rf->end() || !type->is_string()) return field_error(f.name("response_format.type"), "must be a string");
    const std::string t = type->get<std::string>();
    if (t == "json_object" || t == "json_schema")
      return Status::Unsupported("\"" + f.name("response_format") + "\" of type \"" + t + "\"" + kGrammar);
    if (t != "text")
      return field_error(f.name("response_format.type"), "must be \"text\", \"json_object\" or \"json_schema\"");
  }
  if (const Json* gr = f.get("grammar"); gr && !(gr->is_string() && gr->get<std::string>().empty()))
    return Status::Unsupported("\"" + f.name("grammar") + "\"" + kGrammar);
  if (f.get("json_schema")) return Status::Unsupported("\"" + f.name("json_schema") + "\"" + kGrammar);
  // The peer's other samplers, each with the value that turns it off.
  struct Off {
    const char* key;
    bool (*neutral)(double);
  };
  static const Off kOff[] = {
      {"mirostat", [](double v) { return v == 0; }},       {"typical_p", [](double v) { return v >= 1; }},
      {"tfs_z", [](double v) { return v >= 1; }},          {"xtc_probability", [](double v) { return v <= 0; }},
      {"dry_multiplier", [](double v) { return v <= 0; }}, {"top_n_sigma", [](double v) { return v <= 0; }},
      {"dynatemp_range", [](double v) { return v <= 0; }},
  };
  for (const Off& o : kOff) {
    EM_ASSIGN_OR_RETURN(auto v, f.number(o.key));
    if (v && !o.neutral(*v))
      return Status::Unsupported(
          fmt::format("\"{}\": {:g} is not supported (that sampler is not implemented; "
                      "leave it at its off value)",
                      f.name(o.key), *v));
  }
  return Status::Ok();
}

// Fields common to every generating endpoint. `n_predict_keys` lists the token-limit fields
// in the peer's priority order (the first present wins).
Status parse_generation(const Fields& f, GenerationParams& g, const ApiLimits& lim,
                        std::initializer_list<const char*> n_predict_keys) {
  for (const char* key : n_predict_keys) {
    EM_ASSIGN_OR_RETURN(auto n, f.integer(key));
    if (!n) continue;
    bool native = std::string_view(key) == "n_predict";
    if (*n < (native ? -1 : 1)) return field_error(f.name(key), native ? "must be >= -1" : "must be >= 1");
    if (*n > lim.max_tokens_cap) return field_error(f.name(key), "must be <= " + std::to_string(lim.max_tokens_cap));
    g.n_predict = static_cast<int32_t>(*n);
    break;
  }
  EM_ASSIGN_OR_RETURN(auto temp, f.number("temperature"));
  if (temp) {
    EM_ASSIGN_OR_RETURN(g.temperature, in_range(temp, f.name("temperature"), 0.0, 100.0));
  }
  EM_ASSIGN_OR_RETURN(auto top_p, f.number("top_p"));
  if (top_p) {
    EM_ASSIGN_OR_RETURN(g.top_p, in_range(top_p, f.name("top_p"), 0.0, 1.0));
  }
  EM_ASSIGN_OR_RETURN(auto min_p, f.number("min_p"));
  if (min_p) {
    EM_ASSIGN_OR_RETURN(g.min_p, in_range(min_p, f.name("min_p"), 0.0, 1.0));
  }
  EM_ASSIGN_OR_RETURN(auto top_k, f.integer("top_k"));
  if (top_k) {
    if (*top_k < 0 || *top_k > std::numeric_limits<int32_t>::max()) return field_error(f.name("top_k"), "must be >= 0");
    g.top_k = static_cast<int32_t>(*top_k);
  }
  EM_ASSIGN_OR_RETURN(auto seed, f.integer("seed"));
  if (seed) {
    if (*seed < -1 || *seed > static_cast<int64_t>(UINT32_MAX))
      return field_error(f.name("seed"), "must be -1 or an integer in [0, 4294967295]");
    g.seed = *seed;
  }
  EM_RETURN_IF_ERROR(parse_stop(f, g, lim));
  EM_ASSIGN_OR_RETURN(auto stream, f.boolean("stream"));
  g.stream = stream.value_or(false);
  EM_ASSIGN_OR_RETURN(auto ignore_eos, f.boolean("ignore_eos"));  // the peer's extension
  g.ignore_eos = ignore_eos.value_or(false);
  if (const Json* so = f.get("stream_options")) {
    if (!so->is_object()) return field_error(f.name("stream_options"), "must be an object");
    Fields sf(*so, f.name("stream_options") + ".");
    EM_ASSIGN_OR_RETURN(auto iu, sf.boolean("include_usage"));
    g.include_usage = iu.value_or(false);
  }
  EM_ASSIGN_OR_RETURN(auto n, f.integer("n"));
  if (n && *n != 1) return Status::Unsupported("\"" + f.name("n") + "\" must be 1 (one choice per request)");
  EM_RETURN_IF_ERROR(parse_penalties(f, g));
  EM_RETURN_IF_ERROR(parse_logit_bias(f, g, lim));
  return refuse_unsupported_sampling(f);
}

// The OpenAI "model" and "user" strings (both optional) of a chat or completion request.
template <class Request>
Status parse_model_and_user(const Fields& f, Request& req) {
  EM_ASSIGN_OR_RETURN(auto model, f.string("model"));
  req.model = model.value_or("");
  EM_ASSIGN_OR_RETURN(auto user, f.string("user"));
  req.user = user.value_or("");
  return Status::Ok();
}

Status check_n_probs(int64_t v, const std::string& field, const ApiLimits& lim) {
  if (v < 0 || v > lim.max_n_probs)
    return field_error(field, "must be between 0 and " + std::to_string(lim.max_n_probs));
  return Status::Ok();
}

Result<std::optional<std::string>> parse_content(const Json& m, const std::string& field) {
  auto it = m.find("content");
  if (it == m.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (!it->is_array()) return field_error(field, "must be a string, an array of content parts or null");
  std::string text;
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& part = (*it)[i];
    std::string pf = field + "[" + std::to_string(i) + "]";
    if (!part.is_object()) return field_error(pf, "must be an object");
    auto type = part.find("type");
    if (type == part.end() || !type->is_string()) return field_error(pf + ".type", "must be a string");
    if (*type != "text")
      return Status::Unsupported("\"" + pf + ".type\" '" + type->get<std::string>() +
                                 "' is not supported (only \"text\")");
    auto t = part.find("text");
    if (t == part.end() || !t->is_string()) return field_error(pf + ".text", "must be a string");
    if (i) text += "\n";  // the peer joins text parts with newlines
    text += t->get<std::string>();
  }
  return std::optional<std::string>(std::move(text));
}

Status parse_tool_calls(const Json& m, const std::string& prefix, ChatMessage& msg) {
  auto it = m.find("tool_calls");
  if (it == m.end() || it->is_null()) return Status::Ok();
  if (!it->is_array()) return field_error(prefix + "tool_calls", "must be an array");
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& tc = (*it)[i];
    std::string p = prefix + "tool_calls[" + std::to_string(i) + "]";
    if (!tc.is_object()) return field_error(p, "must be an object");
    Fields f(tc, p + ".");
    ToolCall call;
    EM_ASSIGN_OR_RETURN(auto id, f.string("id"));
    call.id = id.value_or("");
    EM_ASSIGN_OR_RETURN(auto type, f.string("type"));
    if (type && *type != "function") return field_error(p + ".type", "must be \"function\"");
    const Json* fn = f.get("function");
    if (!fn || !fn->is_object()) return field_error(p + ".function", "must be an object");
    Fields ff(*fn, p + ".function.");
    EM_ASSIGN_OR_RETURN(auto name, ff.string("name"));
    if (!name || name->empty()) return field_error(p + ".function.name", "must be a non-empty string");
    call.name = *name;
    const Json* args = ff.get("arguments");
    if (args && !args->is_string() && !args->is_object())
      return field_error(p + ".function.arguments", "must be a string or an object");
    call.arguments = args ? *args : Json("{}");
    msg.tool_calls.push_back(std::move(call));
  }
  return Status::Ok();
}

Result<ChatMessage> parse_message(const Json& m, size_t i) {
  std::string prefix = "messages[" + std::to_string(i) + "].";
  if (!m.is_object()) return field_error("messages[" + std::to_string(i) + "]", "must be an object");
  Fields f(m, prefix);
  ChatMessage msg;
  EM_ASSIGN_OR_RETURN(auto role, f.string("role"));
  if (!role) return field_error(prefix + "role", "is required");
  if (*role != "system" && *role != "developer" && *role != "user" && *role != "assistant" && *role != "tool")
    return field_error(prefix + "role", "must be one of system, developer, user, assistant, tool");
  msg.role = *role;
  EM_ASSIGN_OR_RETURN(msg.content, parse_content(m, prefix + "content"));
  EM_RETURN_IF_ERROR(parse_tool_calls(m, prefix, msg));
  if (!msg.content && msg.role != "assistant")
    return field_error(prefix + "content", "is required for role " + msg.role);
  if (!msg.content && msg.tool_calls.empty())
    return field_error(prefix + "content", "is required unless the message has tool_calls");
  EM_ASSIGN_OR_RETURN(auto rc, f.string("reasoning_content"));
  msg.reasoning_content = rc.value_or("");
  EM_ASSIGN_OR_RETURN(auto name, f.string("name"));
  msg.name = name.value_or("");
  EM_ASSIGN_OR_RETURN(auto tcid, f.string("tool_call_id"));
  msg.tool_call_id = tcid.value_or("");
  return msg;
}

Status parse_tools(const Fields& f, ChatRequest& req) {
  const Json* tools = f.get("tools");
  if (!tools) return Status::Ok();
  if (!tools->is_array()) return field_error("tools", "must be an array");
  for (size_t i = 0; i < tools->size(); ++i) {
    const Json& t = (*tools)[i];
    std::string p = "tools[" + std::to_string(i) + "]";
    if (!t.is_object()) return field_error(p, "must be an object");
    auto type = t.find("type");
    if (type == t.end() || *type != "function") return field_error(p + ".type", "must be \"function\"");
    auto fn = t.find("function");
    if (fn == t.end() || !fn->is_object()) return field_error(p + ".function", "must be an object");
    auto name = fn->find("name");
    if (name == fn->end() || !name->is_string() || name->get<std::string>().empty())
      return field_error(p + ".function.name", "must be a non-empty string");
    auto params = fn->find("parameters");
    if (params != fn->end() && !params->is_object() && !params->is_null())
      return field_error(p + ".function.parameters", "must be an object");
  }
  if (!tools->empty()) req.tools = *tools;
  return Status::Ok();
}

Status parse_tool_choice(const Fields& f, ChatRequest& req) {
  const Json* tc = f.get("tool_choice");
  if (!tc || tc->is_null()) return Status::Ok();
  const std::string kForced =
      " cannot be honoured: forcing a tool call needs grammar-constrained sampling, which this server does not "
      "have; use \"auto\" (the model may still call a tool) or \"none\"";
  if (tc->is_object()) return Status::Unsupported("\"tool_choice\" naming a function" + kForced);
  if (!tc->is_string()) return field_error("tool_choice", "must be \"auto\", \"none\" or \"required\"");
  const std::string v = tc->get<std::string>();
  if (v == "auto") {
    req.tool_choice = ToolChoice::kAuto;
  } else if (v == "none") {
    req.tool_choice = ToolChoice::kNone;
  } else if (v == "required") {
    return Status::Unsupported("\"tool_choice\": \"required\"" + kForced);
  } else {
    return field_error("tool_choice", "must be \"auto\", \"none\" or \"required\" (got \"" + v + "\")");
  }
  return Status::Ok();
}

// /v1/completions and /completion prompt: a string, [string], or token ids.
Status parse_prompt(const Fields& f, CompletionRequest& req, const ApiLimits& lim, const char* key) {
  const Json* p = f.get(key);
  if (!p) return field_error(key, "is required");
  const Json* one = p;
  if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) one = &(*p)[0];
  if (one->is_string()) {
    req.prompt = one->get<std::string>();
    if (req.prompt.size() > lim.max_prompt_bytes)
      return field_error(key, "is too long (" + std::to_string(req.prompt.size()) + " bytes, limit " +
                                  std::to_string(lim.max_prompt_bytes) + ")");
    return Status::Ok();
  }
  if (!p->is_array()) return field_error(key, "must be a string or an array of token ids");
  if (p->size() * 4 > lim.max_prompt_bytes) return field_error(key, "has too many tokens");
  for (size_t i = 0; i < p->size(); ++i) {
    const Json& t = (*p)[i];
    if (t.is_string() || t.is_array())
      return Status::Unsupported(std::string("\"") + key + "\" with several prompts is not supported");
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX)
      return field_error(std::string(key) + "[" + std::to_string(i) + "]", "must be a non-negative token id");
    req.prompt_tokens.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  req.prompt_is_tokens = true;
  return Status::Ok();
}

}  // namespace

Result<Json> parse_json_body(std::string_view body, const ApiLimits& lim) {
  if (body.size() > lim.max_body_bytes)
    return Status::OutOfRange("request body is too large (" + std::to_string(body.size()) + " bytes, limit " +
                              std::to_string(lim.max_body_bytes) + ")");
  Json j = Json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument("request body is not valid JSON");
  if (!j.is_object()) return Status::InvalidArgument("request body must be a JSON object");
  if (json_depth(j, lim.max_json_depth) > lim.max_json_depth)
    return Status::InvalidArgument("request body is nested deeper than " + std::to_string(lim.max_json_depth));
  return j;
}

Result<ChatRequest> parse_chat_request(std::string_view body, const ApiLimits& lim) {
  EM_ASSIGN_OR_RETURN(Json j, parse_json_body(body, lim));
  Fields f(j, "");
  ChatRequest req;
  EM_RETURN_IF_ERROR(parse_model_and_user(f, req));
  const Json* msgs = f.get("messages");
  if (!msgs) return field_error("messages", "is required");
  if (!msgs->is_array()) return field_error("messages", "must be an array");
  if (msgs->empty()) return field_error("messages", "must not be empty");
  if (msgs->size() > lim.max_messages)
    return field_error("messages", "must have at most " + std::to_string(lim.max_messages) + " entries");
  size_t total = 0;
  for (size_t i = 0; i < msgs->size(); ++i) {
    EM_ASSIGN_OR_RETURN(ChatMessage m, parse_message((*msgs)[i], i));
    total += (m.content ? m.content->size() : 0) + m.reasoning_content.size();
    req.messages.push_back(std::move(m));
  }
  if (total > lim.max_prompt_bytes)
    return field_error("messages", "are too long (" + std::to_string(total) + " bytes of text, limit " +
                                       std::to_string(lim.max_prompt_bytes) + ")");
  EM_RETURN_IF_ERROR(parse_tools(f, req));
  EM_RETURN_IF_ERROR(parse_tool_choice(f, req));
  if (const Json* kw = f.get("chat_template_kwargs")) {
    if (!kw->is_object()) return field_error("chat_template_kwargs", "must be an object");
    req.chat_template_kwargs = *kw;
  }
  EM_RETURN_IF_ERROR(parse_generation(f, req.gen, lim, {"max_completion_tokens", "max_tokens", "n_predict"}));
  EM_ASSIGN_OR_RETURN(auto lp, f.boolean("logprobs"));
  req.logprobs = lp.value_or(false);
  EM_ASSIGN_OR_RETURN(auto top, f.integer("top_logprobs"));
  if (top) {
    EM_RETURN_IF_ERROR(check_n_probs(*top, "top_logprobs", lim));
    if (!req.logprobs) return field_error("top_logprobs", "requires \"logprobs\": true");
  }
  // The peer reports at least the chosen token when logprobs is on.
  if (req.logprobs) req.gen.n_probs = std::max<int32_t>(1, static_cast<int32_t>(top.value_or(1)));
  return req;
}

Result<CompletionRequest> parse_oai_completion_request(std::string_view body, const ApiLimits& lim) {
  EM_ASSIGN_OR_RETURN(Json j, parse_json_body(body, lim));
  Fields f(j, "");
  CompletionRequest req;
  EM_RETURN_IF_ERROR(parse_model_and_user(f, req));
  EM_RETURN_IF_ERROR(parse_prompt(f, req, lim, "prompt"));
  EM_RETURN_IF_ERROR(parse_generation(f, req.gen, lim, {"max_tokens", "n_predict"}));
  EM_ASSIGN_OR_RETURN(auto lp, f.integer("logprobs"));
  if (lp) {
    EM_RETURN_IF_ERROR(check_n_probs(*lp, "logprobs", lim));
    req.gen.n_probs = static_cast<int32_t>(*lp);
  }
  EM_ASSIGN_OR_RETURN(auto echo, f.boolean("echo"));
  if (echo.value_or(false)) return Status::Unsupported("\"echo\": true is not supported");
  return req;
}

Result<CompletionRequest> parse_completion_request(std::string_view body, const ApiLimits& lim) {
  EM_ASSIGN_OR_RETURN(Json j, parse_json_body(body, lim));
  Fields f(j, "");
  CompletionRequest req;
  EM_RETURN_IF_ERROR(parse_prompt(f, req, lim, "prompt"));
  EM_RETURN_IF_ERROR(parse_generation(f, req.gen, lim, {"n_predict", "max_tokens", "max_completion_tokens"}));
  EM_ASSIGN_OR_RETURN(auto np, f.integer("n_probs"));
  if (np) {
    EM_RETURN_IF_ERROR(check_n_probs(*np, "n_probs", lim));
    req.gen.n_probs = static_cast<int32_t>(*np);
  }
  return req;
}

Result<TokenizeRequest> parse_tokenize_request(std::string_view body, const ApiLimits& lim) {
  EM_ASSIGN_OR_RETURN(Json j, parse_json_body(body, lim));
  Fields f(j, "");
  TokenizeRequest req;
  EM_ASSIGN_OR_RETURN(auto content, f.string("content"));
  if (!content) return field_error("content", "is required");
  if (content->size() > lim.max_prompt_bytes) return field_error("content", "is too long");
  req.content = *content;
  EM_ASSIGN_OR_RETURN(auto add_special, f.boolean("add_special"));
  req.add_special = add_special.value_or(false);
  EM_ASSIGN_OR_RETURN(auto with_pieces, f.boolean("with_pieces"));
  req.with_pieces = with_pieces.value_or(false);
  return req;
}

Result<DetokenizeRequest> parse_detokenize_request(std::string_view body, const ApiLimits& lim) {
  EM_ASSIGN_OR_RETURN(Json j, parse_json_body(body, lim));
  Fields f(j, "");
  const Json* toks = f.get("tokens");
  if (!toks) return field_error("tokens", "is required");
  if (!toks->is_array()) return field_error("tokens", "must be an array of token ids");
  DetokenizeRequest req;
  for (size_t i = 0; i < toks->size(); ++i) {
    const Json& t = (*toks)[i];
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX)
      return field_error("tokens[" + std::to_string(i) + "]", "must be a non-negative token id");
    req.tokens.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return req;
}

bool parses_tool_calls(const ChatRequest& req) {
  return req.tools.is_array() && !req.tools.empty() && req.tool_choice != ToolChoice::kNone;
}

Json messages_for_template(const ChatRequest& req) {
  Json out = Json::array();
  for (const auto& m : req.messages) {
    Json jm = Json::object();
    jm["role"] = m.role;
    jm["content"] = m.content ? Json(*m.content) : Json(nullptr);
    if (!m.reasoning_content.empty()) jm["reasoning_content"] = m.reasoning_content;
    if (!m.name.empty()) jm["name"] = m.name;
    if (!m.tool_call_id.empty()) jm["tool_call_id"] = m.tool_call_id;
    if (!m.tool_calls.empty()) {
      Json calls = Json::array();
      for (const auto& c : m.tool_calls) {
        Json jc = Json::object();
        if (!c.id.empty()) jc["id"] = c.id;
        jc["type"] = c.type;
        jc["function"] = Json{{"name", c.name}, {"arguments", c.arguments}};
        calls.push_back(std::move(jc));
      }
      jm["tool_calls"] = std::move(calls);
    }
    out.push_back(std::move(jm));
  }
  return out;
}

ApiError api_error_from_status(const Status& s) {
  ApiError e;
  e.message = s.message();
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kUnsupported:
      break;
    case StatusCode::kOutOfRange:
      e.code = 413;
      break;
    case StatusCode::kNotFound:
      e.code = 404;
      e.type = "not_found_error";
      break;
    default:
      e.code = 500;
      e.type = "server_error";
  }
  return e;
}

Json error_body(const ApiError& e) {
  Json inner = Json::object();
  inner["code"] = e.code;
  inner["message"] = e.message;
  inner["type"] = e.type;
  Json out = Json::object();
  out["error"] = std::move(inner);
  return out;
}

}  // namespace expertmesh::coordinator::http
