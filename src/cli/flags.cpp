#include "cli/flags.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdlib>

namespace expertmesh::cli {

namespace {

// "-x"/"--xx" but not a negative number ("-1", "-.5").
bool looks_like_a_flag(const std::string& a) {
  return a.size() > 1 && a[0] == '-' && !(std::isdigit(static_cast<unsigned char>(a[1])) || a[1] == '.');
}

std::string join_names(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

Status parse_int64(const std::string& flag, const std::string& v, int64_t* out) {
  int64_t x = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (v.empty() || ec != std::errc() || p != v.data() + v.size())
    return Status::InvalidArgument(fmt::format("{}: expected an integer, got '{}'", flag, v));
  *out = x;
  return Status::Ok();
}

}  // namespace

void FlagSet::add_bool(std::vector<std::string> names, bool* dst, std::string help, std::string env) {
  flags_.push_back({std::move(names), "", std::move(help), std::move(env), [dst](const std::string& v) {
                      *dst = v.empty() || v == "1" || v == "true" || v == "on" || v == "yes";
                      return Status::Ok();
                    }});
}

void FlagSet::add_int(std::vector<std::string> names, int64_t* dst, std::string metavar, std::string help,
                      std::string env) {
  std::string flag = names.front();
  flags_.push_back({std::move(names), std::move(metavar), std::move(help), std::move(env),
                    [dst, flag](const std::string& v) { return parse_int64(flag, v, dst); }});
}

void FlagSet::add_int(std::vector<std::string> names, int* dst, std::string metavar, std::string help,
                      std::string env) {
  std::string flag = names.front();
  flags_.push_back(
      {std::move(names), std::move(metavar), std::move(help), std::move(env), [dst, flag](const std::string& v) {
         int64_t x = 0;
         EM_RETURN_IF_ERROR(parse_int64(flag, v, &x));
         if (x < INT32_MIN || x > INT32_MAX)
           return Status::InvalidArgument(fmt::format("{}: value {} out of range", flag, v));
         *dst = static_cast<int>(x);
         return Status::Ok();
       }});
}

void FlagSet::add_float(std::vector<std::string> names, double* dst, std::string metavar, std::string help,
                        std::string env) {
  std::string flag = names.front();
  flags_.push_back(
      {std::move(names), std::move(metavar), std::move(help), std::move(env), [dst, flag](const std::string& v) {
         char* end = nullptr;
         double x = std::strtod(v.c_str(), &end);
         if (v.empty() || end != v.c_str() + v.size() || !std::isfinite(x))
           return Status::InvalidArgument(fmt::format("{}: expected a number, got '{}'", flag, v));
         *dst = x;
         return Status::Ok();
       }});
}

void FlagSet::add_string(std::vector<std::string> names, std::string* dst, std::string metavar, std::string help,
                         std::string env) {
  flags_.push_back({std::move(names), std::move(metavar), std::move(help), std::move(env), [dst](const std::string& v) {
                      *dst = v;
                      return Status::Ok();
                    }});
}

void FlagSet::add_list(std::vector<std::string> names, std::vector<std::string>* dst, std::string metavar,
                       std::string help) {
  flags_.push_back({std::move(names), std::move(metavar), std::move(help), "", [dst](const std::string& v) {
                      dst->push_back(v);
                      return Status::Ok();
                    }});
}

void FlagSet::add_custom(std::vector<std::string> names, std::string metavar, std::string help,
                         std::function<Status(const std::string&)> handler) {
  flags_.push_back({std::move(names), std::move(metavar), std::move(help), "", std::move(handler)});
}

void FlagSet::add_custom_optional(std::vector<std::string> names, std::string metavar, std::string help,
                                  std::function<Status(const std::string&)> handler) {
  flags_.push_back({std::move(names), "[" + metavar + "]", std::move(help), "", std::move(handler), true});
}

void FlagSet::positional(std::string metavar, std::string* dst, std::string help, bool required) {
  positionals_.push_back({std::move(metavar), dst, std::move(help), required});
}

const FlagSet::Flag* FlagSet::find(const std::string& name) const {
  for (const auto& f : flags_)
    for (const auto& n : f.names)
      if (n == name) return &f;
  return nullptr;
}

Status FlagSet::parse(int argc, char** argv) {
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) args.emplace_back(argv[i]);
  return parse(args);
}

Status FlagSet::parse(const std::vector<std::string>& args) {
  for (const auto& f : flags_) {
    if (f.env.empty()) continue;
    if (const char* v = std::getenv(f.env.c_str())) {
      Status s = f.set(v);
      if (!s.ok()) return Status::InvalidArgument(fmt::format("environment variable {}: {}", f.env, s.message()));
    }
  }
  size_t npos = 0;
  bool only_positional = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (!only_positional && a == "--") {
      only_positional = true;
      continue;
    }
    if (!only_positional && (a == "-h" || a == "--help")) {
      help_ = true;
      continue;
    }
    if (!only_positional && looks_like_a_flag(a)) {
      std::string name = a, value;
      bool has_value = false;
      size_t eq = a.find('=');
      if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
        name = a.substr(0, eq);
        value = a.substr(eq + 1);
        has_value = true;
      }
      const Flag* f = find(name);
      if (!f)
        return Status::InvalidArgument(fmt::format("{}: unknown flag '{}' (see {} --help)", command_, name, command_));
      if (f->optional_value && !has_value) {
        const bool next_is_value = i + 1 < args.size() && !looks_like_a_flag(args[i + 1]);
        if (next_is_value) value = args[++i];
        EM_RETURN_IF_ERROR(f->set(value));
        continue;
      }
      if (!f->metavar.empty() && !has_value) {
        if (i + 1 >= args.size())
          return Status::InvalidArgument(fmt::format("{}: missing value {} for flag {}", command_, f->metavar, name));
        value = args[++i];
      }
      EM_RETURN_IF_ERROR(f->set(value));
      continue;
    }
    if (npos >= positionals_.size())
      return Status::InvalidArgument(fmt::format("{}: unexpected argument '{}'", command_, a));
    *positionals_[npos++].dst = a;
  }
  if (help_) return Status::Ok();
  for (size_t i = npos; i < positionals_.size(); ++i)
    if (positionals_[i].required)
      return Status::InvalidArgument(
          fmt::format("{}: missing argument {} (see {} --help)", command_, positionals_[i].metavar, command_));
  return Status::Ok();
}

std::string FlagSet::usage() const {
  std::string s = fmt::format("usage: expertmesh {} [options]", command_);
  for (const auto& p : positionals_) s += p.required ? " " + p.metavar : " [" + p.metavar + "]";
  s += "\n\n" + summary_ + "\n";
  if (!positionals_.empty()) {
    s += "\narguments:\n";
    for (const auto& p : positionals_) s += fmt::format("  {:<28} {}\n", p.metavar, p.help);
  }
  s += "\noptions:\n";
  for (const auto& f : flags_) {
    std::string left = join_names(f.names) + (f.metavar.empty() ? "" : " " + f.metavar);
    s += fmt::format("  {:<28} {}{}\n", left, f.help, f.env.empty() ? "" : fmt::format(" [env {}]", f.env));
  }
  s += fmt::format("  {:<28} {}\n", "-h, --help", "print this help");
  return s;
}

}  // namespace expertmesh::cli
