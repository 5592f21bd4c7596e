// Built-in semantics of the chat-template interpreter: jinja2's attribute and item lookup,
// Python operators, iteration, tests (`is ...`), filters (`| ...`) and the methods of str, dict
// and list that templates call. All are pure functions of their arguments; errors are Status
// messages without a location (the interpreter adds "line L:C").
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/chat_template/value.h"

namespace expertmesh::chat {

// Limits shared by the built-ins: no string or list they build may exceed max_size bytes/items.
struct BuiltinLimits {
  size_t max_size = 16u << 20;
  // list.append / list.pop / list.extend. jinja2's ImmutableSandboxedEnvironment (what HF
  // transformers uses) refuses them; llama.cpp's template engine allows them and Kimi-K2's
  // tool-call template needs them. Lists are shared by reference, as in Python.
  bool allow_list_mutation = false;
};

// jinja2 Environment.getattr: a method of the object (str/dict/list methods, as bound
// callables) first, then the item of that name; a missing one is undefined, except that any
// access on undefined is an error.
Result<Value> get_attr(const Value& obj, const std::string& name, const BuiltinLimits& lim);
// jinja2 Environment.getitem: the item first (negative list indices count from the end), then
// a method of that name; out of range or missing is undefined.
Result<Value> get_item(const Value& obj, const Value& key, const BuiltinLimits& lim);
// Python slicing obj[start:stop:step] for strings (code points), lists and tuples.
Result<Value> get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step);

// Python binary operators: + - * / // % ** and jinja2's ~ (string concatenation).
Result<Value> binary_op(const std::string& op, const Value& a, const Value& b, const BuiltinLimits& lim);
Result<Value> negate(const Value& v);
// Python `item in container`.
Result<bool> contains(const Value& container, const Value& item);
// Python iteration: list items, dict keys, string code points; undefined iterates as empty.
Result<std::vector<Value>> iterate(const Value& v);
// Python len(); undefined has length 0.
Result<int64_t> length_of(const Value& v);

// `value is name(args)`.
Result<bool> apply_test(const std::string& name, const Value& value, const CallArgs& args);
bool has_test(const std::string& name);
// `value | name(args)`.
Result<Value> apply_filter(const std::string& name, const Value& value, const CallArgs& args, const BuiltinLimits& lim);
bool has_filter(const std::string& name);

// Python printf-style formatting (`"%s" % x`, `|format`): %s %r %d %i %f %e %g %x %o %c %%, with
// flags, width and precision.
Result<std::string> percent_format(const std::string& fmt, const std::vector<Value>& args);

// Methods of str (startswith, split, strip, ...), dict (items, keys, values, get) and list
// (index, count): the bound callable for `obj.name`, or nullopt when the type has no such method.
std::optional<Value> bound_method(const Value& obj, const std::string& name, const BuiltinLimits& lim);

// String helpers shared by methods and filters (Python semantics on code points).
std::string py_strip(const std::string& s, const Value* chars, bool left, bool right);
std::string py_upper(const std::string& s);
std::string py_lower(const std::string& s);
std::string py_title(const std::string& s);       // str.title()
std::string py_capitalize(const std::string& s);  // str.capitalize()
std::string py_casefold(const std::string& s);
std::string py_swapcase(const std::string& s);
bool py_is_lower(const std::string& s);  // str.islower()
bool py_is_upper(const std::string& s);
bool py_is_title(const std::string& s);
bool py_is_alpha_cp(char32_t c);
bool py_is_decimal_cp(char32_t c);
bool py_is_digit_cp(char32_t c);
bool py_is_numeric_cp(char32_t c);
// markupsafe.escape: & < > " ' as entities; escape() of a Markup returns it unchanged, of
// anything else str(value) escaped, as a Markup.
std::string html_escape(const std::string& s);
Value markup_escape(const Value& v);
// str.ljust/rjust/center padding ('l', 'r', 'c') with Python's placement of the odd fill.
std::string py_pad(const std::string& s, int64_t width, const std::string& fill, char align);

// The str methods beyond the common ones (str_methods.cpp).
bool is_more_str_method(const std::string& name);
Result<Value> call_more_str_method(const std::string& s, const std::string& m, const CallArgs& a,
                                   const BuiltinLimits& lim);
// Whether Markup overrides str method `name` (escaping str arguments, returning Markup), and
// the conversion of a method result (str, or a list/tuple of str) to Markup.
bool markup_wraps(const std::string& name);
// jinja2's truncate filter: keeps `s` within length + leeway, else cuts (at a word boundary
// unless killwords) and appends `end`.
std::string jinja_truncate(const std::string& s, int64_t length, bool killwords, const std::string& end,
                           int64_t leeway);
Value as_markup(const Value& v);
std::vector<std::string> py_split(const std::string& s, const Value* sep, int64_t maxsplit, bool from_right);
std::string py_replace(const std::string& s, const std::string& old, const std::string& repl, int64_t count);

}  // namespace expertmesh::chat
