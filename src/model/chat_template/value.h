// Value: the dynamic value of the chat-template interpreter, modelled on the Python objects that
// jinja2 templates see when HF transformers renders `tokenizer.chat_template`.
//
// Kinds: undefined (jinja2's default Undefined: falsy, renders as "", iterates as empty, errors on
// attribute access, arithmetic and ordering), none, bool, int (int64), float (double), string
// (UTF-8; length/index/slice count code points like Python), list (or tuple: a flag changing only
// repr), dict (insertion-ordered; keys are values; a dict flagged `namespace` is the one mutable
// object, target of `{% set ns.x = ... %}`) and callable (macros, globals, bound methods).
//
// Lists and dicts are shared by reference (shared_ptr) and, except for namespaces, never mutated
// after construction, so copying a Value is cheap and aliasing is harmless (jinja2's
// ImmutableSandboxedEnvironment forbids mutating them too). Not thread-safe across renders that
// share a namespace object; a render never shares its values with another.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/status.h"

namespace expertmesh::chat {

class Value;

// What Python object a list value stands for. Filters such as map/select return generators and
// dict.items() returns a view; jinja2 templates observe the difference (a generator is always
// truthy, single-pass, has no len() and is not JSON serializable), so we keep it.
enum class SeqKind : uint8_t {
  kList,         // list, or tuple when ListData::is_tuple
  kGenerator,    // single-pass; map/select/reject/selectattr/rejectattr/unique/items/batch/slice
  kReverseIter,  // single-pass; reversed(list) from the `reverse` filter
  kDictItems,    // dict.items() / keys() / values(): sized, multi-pass, not subscriptable
  kDictKeys,
  kDictValues,
  kRange,  // range(): sized, subscriptable, repr "range(a, b)"
};

struct ListData {
  std::vector<Value> items;
  bool is_tuple = false;
  SeqKind seq = SeqKind::kList;
  int64_t range_args[3] = {0, 0, 1};  // start, stop, step of a kRange

  bool plain() const { return seq == SeqKind::kList; }
  bool single_pass() const { return seq == SeqKind::kGenerator || seq == SeqKind::kReverseIter; }
};

// Python type name of a list-like value: "list", "tuple", "generator", "dict_items", ...
std::string seq_type_name(const ListData& l);

struct DictData {
  std::vector<std::pair<Value, Value>> items;  // insertion order, unique keys
  bool is_namespace = false;

  const Value* find(const Value& key) const;  // nullptr if absent
  const Value* find_key(std::string_view key) const;
  void set(Value key, Value value);  // replaces in place or appends
};

// Arguments of a call: positional then keyword, as written.
struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;

  // Python-style binding: parameter i is pos[i] or the keyword of that name, else nullptr.
  const Value* get(size_t i, std::string_view name) const;
};

// A callable: a global (range, namespace, ...), a macro or a bound method. The function returns
// an error Status whose message the interpreter prefixes with the template location.
struct Callable {
  std::string name;
  std::function<Result<Value>(const CallArgs&)> fn;
};

struct UndefinedData {
  std::string hint;  // what was looked up, for error messages ("'foo' is undefined")
};

class Value {
 public:
  enum class Kind : uint8_t { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kCallable };

  Value() : v_(UndefinedData{}) {}
  static Value undefined(std::string hint = {}) { return Value(Storage(UndefinedData{std::move(hint)})); }
  static Value none() { return Value(Storage(std::monostate{})); }
  Value(bool b) : v_(b) {}                       // NOLINT(implicit)
  Value(int64_t i) : v_(i) {}                    // NOLINT(implicit)
  Value(int i) : v_(static_cast<int64_t>(i)) {}  // NOLINT(implicit)
  Value(double d) : v_(d) {}                     // NOLINT(implicit)
  Value(std::string s) : v_(std::move(s)) {}     // NOLINT(implicit)
  Value(const char* s) : v_(std::string(s)) {}   // NOLINT(implicit)
  static Value list(std::vector<Value> items, bool is_tuple = false);
  static Value sequence(std::vector<Value> items, SeqKind kind);
  // markupsafe.Markup (what `|safe` and `|escape` return): a str that HTML-escapes the plain str
  // it is combined with (`+`, `%`, its methods). Printing it prints the text unchanged.
  static Value markup(std::string s);
  static Value dict(std::vector<std::pair<Value, Value>> items = {});
  static Value make_namespace();
  static Value callable(std::string name, std::function<Result<Value>(const CallArgs&)> fn);

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_bool() const { return kind() == Kind::kBool; }
  bool is_int() const { return kind() == Kind::kInt; }
  bool is_float() const { return kind() == Kind::kFloat; }
  bool is_number() const { return is_int() || is_float() || is_bool(); }  // bool is an int in Python
  bool is_string() const { return kind() == Kind::kString; }
  bool is_list() const { return kind() == Kind::kList; }
  bool is_dict() const { return kind() == Kind::kDict; }
  bool is_callable() const { return kind() == Kind::kCallable; }
  bool is_markup() const { return markup_; }
  // A list or tuple proper (not a generator, iterator, view or range).
  bool is_plain_list() const { return is_list() && as_list().plain(); }

  bool as_bool() const { return std::get<bool>(v_); }
  // int or bool; a float is truncated with saturation (callers check the kind first, this only
  // keeps a slip from being undefined behaviour).
  int64_t as_int() const {
    if (is_bool()) return as_bool() ? 1 : 0;
    if (is_float()) return float_to_int(std::get<double>(v_));
    return std::get<int64_t>(v_);
  }
  double as_float() const { return is_float() ? std::get<double>(v_) : static_cast<double>(as_int()); }
  const std::string& as_string() const { return std::get<std::string>(v_); }
  const ListData& as_list() const { return *std::get<std::shared_ptr<ListData>>(v_); }
  const DictData& as_dict() const { return *std::get<std::shared_ptr<DictData>>(v_); }
  DictData& mutable_dict() const { return *std::get<std::shared_ptr<DictData>>(v_); }
  ListData& mutable_list() const { return *std::get<std::shared_ptr<ListData>>(v_); }
  const Callable& as_callable() const { return *std::get<std::shared_ptr<Callable>>(v_); }
  const std::string& undefined_hint() const { return std::get<UndefinedData>(v_).hint; }
  // Identity of a list/dict/callable object (Python `is`); nullptr for scalars.
  const void* identity() const;

  // Python truthiness (undefined is false).
  bool truthy() const;
  // Python type name: "str", "int", "dict", "NoneType", ... ("Undefined" for undefined).
  std::string type_name() const;
  // Python str(): what `{{ x }}` prints. Undefined prints as "".
  std::string str() const;
  // Python repr(): strings quoted, as inside a printed list.
  std::string repr() const;

  static Value from_json(const nlohmann::ordered_json& j);
  // Fails for undefined and callables (they have no JSON form), naming the type.
  Result<nlohmann::ordered_json> to_json() const;

 private:
  static int64_t float_to_int(double d) {
    if (!(d == d)) return 0;
    if (d >= 9.2233720368547758e18) return INT64_MAX;
    if (d <= -9.2233720368547758e18) return INT64_MIN;
    return static_cast<int64_t>(d);
  }
  using Storage = std::variant<UndefinedData, std::monostate, bool, int64_t, double, std::string,
                               std::shared_ptr<ListData>, std::shared_ptr<DictData>, std::shared_ptr<Callable>>;
  explicit Value(Storage s) : v_(std::move(s)) {}
  Storage v_;
  bool markup_ = false;  // only ever set on strings
};

// Python `==` (1 == 1.0 == True; lists element-wise; dicts as unordered maps; undefined equals
// only undefined).
bool values_equal(const Value& a, const Value& b);
// Python ordering for `<` etc. and sort: -1/0/1, or an error for unorderable types.
Result<int> values_compare(const Value& a, const Value& b);

// Python float repr (shortest round-trip digits; "1.0", "1e+16", "inf", "nan").
std::string python_float_repr(double d);

// json.dumps(value, ensure_ascii, indent, separators, sort_keys) exactly as Python writes it;
// `indent` < 0 means None (one line). `item_sep`/`key_sep` empty means Python's default for the
// indent. Fails for undefined and callables ("Object of type Undefined is not JSON serializable").
struct JsonDumpOptions {
  bool ensure_ascii = false;
  int indent = -1;
  std::string indent_str;  // when set, used instead of `indent` spaces (indent given as a string)
  std::string item_sep;
  std::string key_sep;
  bool sort_keys = false;
};
Result<std::string> python_json_dumps(const Value& v, const JsonDumpOptions& opt);

// UTF-8 helpers: decode to code points (invalid bytes map to themselves as U+00XX, like
// surrogateescape would keep them distinct) and encode back.
std::u32string utf8_decode(std::string_view s);
std::string utf8_encode(std::u32string_view s);
bool is_ascii(std::string_view s);

}  // namespace expertmesh::chat
