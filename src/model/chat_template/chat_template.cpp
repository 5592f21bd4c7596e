#include "model/chat_template/chat_template.h"

#include <vector>

#include "model/chat_template/parser.h"

namespace expertmesh::chat {

struct ChatTemplate::Impl {
  Body body;
  TemplateOptions opt;
};

namespace {

constexpr int64_t kMaxRange = 100000;  // jinja2's sandbox MAX_RANGE

Result<Value> global_range(const CallArgs& a) {
  if (!a.kw.empty()) return Status::InvalidArgument("range() takes no keyword arguments");
  if (a.pos.empty() || a.pos.size() > 3) return Status::InvalidArgument("range expected 1 to 3 arguments");
  for (const auto& v : a.pos)
    if (!v.is_number() || v.is_float())
      return Status::InvalidArgument("'" + v.type_name() + "' object cannot be interpreted as an integer");
  int64_t start = 0, stop, step = 1;
  if (a.pos.size() == 1) {
    stop = a.pos[0].as_int();
  } else {
    start = a.pos[0].as_int();
    stop = a.pos[1].as_int();
    if (a.pos.size() == 3) step = a.pos[2].as_int();
  }
  if (step == 0) return Status::InvalidArgument("range() arg 3 must not be zero");
  // Length computed in double: no overflow for any int64 arguments.
  double len = step > 0 ? (static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step)
                        : (static_cast<double>(start) - static_cast<double>(stop)) / static_cast<double>(-step);
  if (len > static_cast<double>(kMaxRange))
    return Status::OutOfRange("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  std::vector<Value> items;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) items.emplace_back(i);
  Value r = Value::sequence(std::move(items), SeqKind::kRange);
  r.mutable_list().range_args[0] = start;
  r.mutable_list().range_args[1] = stop;
  r.mutable_list().range_args[2] = step;
  return r;
}

Result<Value> global_namespace(const CallArgs& a) {
  Value ns = Value::make_namespace();
  if (a.pos.size() > 1) return Status::InvalidArgument("namespace() takes at most one positional argument");
  if (a.pos.size() == 1) {
    if (!a.pos[0].is_dict()) return Status::InvalidArgument("namespace() positional argument must be a mapping");
    for (const auto& [k, v] : a.pos[0].as_dict().items) ns.mutable_dict().set(k, v);
  }
  for (const auto& [k, v] : a.kw) ns.mutable_dict().set(Value(k), v);
  return ns;
}

Result<Value> global_dict(const CallArgs& a) {
  Value d = Value::dict();
  if (a.pos.size() > 1) return Status::InvalidArgument("dict expected at most 1 argument");
  if (a.pos.size() == 1) {
    if (!a.pos[0].is_dict()) return Status::InvalidArgument("dict() positional argument must be a mapping");
    for (const auto& [k, v] : a.pos[0].as_dict().items) d.mutable_dict().set(k, v);
  }
  for (const auto& [k, v] : a.kw) d.mutable_dict().set(Value(k), v);
  return d;
}

std::tm local_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  return tm;
}

int json_depth(const nlohmann::ordered_json& j, int limit) {
  // Iterative, so hostile nesting cannot overflow the stack before we refuse it.
  std::vector<std::pair<const nlohmann::ordered_json*, int>> stack = {{&j, 1}};
  int max_depth = 0;
  while (!stack.empty()) {
    auto [node, d] = stack.back();
    stack.pop_back();
    max_depth = std::max(max_depth, d);
    if (max_depth > limit) return max_depth;
    if (node->is_structured())
      for (const auto& c : *node) stack.emplace_back(&c, d + 1);
  }
  return max_depth;
}

}  // namespace

Result<ChatTemplate> ChatTemplate::parse(std::string_view source, TemplateOptions opt) {
  EM_ASSIGN_OR_RETURN(std::vector<Token> tokens, lex_template(source, opt.lex));
  EM_ASSIGN_OR_RETURN(Body body, parse_template(tokens, opt.max_parse_depth));
  auto impl = std::make_shared<Impl>();
  impl->body = std::move(body);
  impl->opt = std::move(opt);
  ChatTemplate t;
  t.impl_ = std::move(impl);
  t.source_ = std::make_shared<const std::string>(source);
  return t;
}

Result<std::string> ChatTemplate::render(const Value& vars) const {
  auto globals = std::make_shared<Scope>();
  globals->vars["range"] = Value::callable("range", global_range);
  globals->vars["namespace"] = Value::callable("namespace", global_namespace);
  globals->vars["dict"] = Value::callable("dict", global_dict);
  globals->vars["raise_exception"] = Value::callable("raise_exception", [](const CallArgs& a) -> Result<Value> {
    const Value* m = a.get(0, "message");
    return Status::InvalidArgument("raise_exception: " + (m ? m->str() : std::string()));
  });
  auto clock = impl_->opt.now ? impl_->opt.now : std::function<std::tm()>(local_now);
  globals->vars["strftime_now"] = Value::callable("strftime_now", [clock](const CallArgs& a) -> Result<Value> {
    const Value* f = a.get(0, "format");
    if (!f || !f->is_string()) return Status::InvalidArgument("strftime_now() needs a format string");
    if (f->as_string().size() > 256) return Status::InvalidArgument("strftime_now() format too long");
    std::tm tm = clock();
    char buf[1024];
    size_t n = std::strftime(buf, sizeof(buf), f->as_string().c_str(), &tm);
    if (n == 0 && !f->as_string().empty()) return Status::InvalidArgument("strftime_now() result too long");
    return Value(std::string(buf, n));
  });
  auto scope = std::make_shared<Scope>();
  scope->parent = globals;
  if (vars.is_dict())
    for (const auto& [k, v] : vars.as_dict().items) scope->vars[k.str()] = v;
  return render_body(impl_->body, scope, impl_->opt.limits);
}

Result<std::string> ChatTemplate::apply(const ChatInputs& in) const {
  for (const auto* j : {&in.messages, &in.tools, &in.extra})
    if (json_depth(*j, 128) > 128) return Status::InvalidArgument("chat template: input JSON nested too deeply");
  if (!in.extra.is_object() && !in.extra.is_null())
    return Status::InvalidArgument("chat template: extra variables must be a JSON object");
  Value vars = Value::dict();
  DictData& d = vars.mutable_dict();
  if (in.extra.is_object())
    for (auto it = in.extra.begin(); it != in.extra.end(); ++it) d.set(Value(it.key()), Value::from_json(it.value()));
  d.set(Value("messages"), Value::from_json(in.messages));
  d.set(Value("tools"), Value::from_json(in.tools));
  if (!d.find_key("documents")) d.set(Value("documents"), Value::none());
  d.set(Value("add_generation_prompt"), Value(in.add_generation_prompt));
  d.set(Value("bos_token"), Value(in.bos_token));
  d.set(Value("eos_token"), Value(in.eos_token));
  return render(vars);
}

}  // namespace expertmesh::chat
