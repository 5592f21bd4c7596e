// Declarative command-line flags (STYLE.md R10): each flag is declared once with its aliases,
// help text, optional environment variable and a typed destination. No if-chains.
//
//   FlagSet fs("inspect", "print a GGUF file's metadata and tensors");
//   fs.add_bool({"--json"}, &opt.json, "print one JSON object");
//   fs.add_int({"-t", "--threads"}, &opt.threads, "N", "threads to use");
//   fs.positional("FILE", &opt.path, "the GGUF file");
//   EM_RETURN_IF_ERROR(fs.parse(argc, argv));
//
// Errors name the flag ("--threads: expected an integer, got 'x'"). `-h/--help` sets help_requested().
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"

namespace expertmesh::cli {

class FlagSet {
 public:
  FlagSet(std::string command, std::string summary) : command_(std::move(command)), summary_(std::move(summary)) {}

  void add_bool(std::vector<std::string> names, bool* dst, std::string help, std::string env = "");
  void add_int(std::vector<std::string> names, int64_t* dst, std::string metavar, std::string help,
               std::string env = "");
  void add_int(std::vector<std::string> names, int* dst, std::string metavar, std::string help, std::string env = "");
  void add_float(std::vector<std::string> names, double* dst, std::string metavar, std::string help,
                 std::string env = "");
  void add_string(std::vector<std::string> names, std::string* dst, std::string metavar, std::string help,
                  std::string env = "");
  // Repeatable flag: each occurrence appends.
  void add_list(std::vector<std::string> names, std::vector<std::string>* dst, std::string metavar, std::string help);
  // Custom handler for values that need validation at parse time (e.g. type names).
  void add_custom(std::vector<std::string> names, std::string metavar, std::string help,
                  std::function<Status(const std::string&)> handler);
  // Like add_custom, but the value may be left out ("-fa" as well as "-fa on"): the next
  // argument is taken as the value only when it does not look like a flag; else "" is passed.
  void add_custom_optional(std::vector<std::string> names, std::string metavar, std::string help,
                           std::function<Status(const std::string&)> handler);

  // Positional arguments in order; `required` ones must be present.
  void positional(std::string metavar, std::string* dst, std::string help, bool required = true);

  // Parses argv[0..argc) (argv[0] is the first argument after the subcommand). Environment
  // variables are applied first, then flags. Supports "--flag value" and "--flag=value".
  Status parse(int argc, char** argv);
  Status parse(const std::vector<std::string>& args);
  bool help_requested() const { return help_; }
  std::string usage() const;

 private:
  struct Flag {
    std::vector<std::string> names;
    std::string metavar;  // empty for boolean flags
    std::string help;
    std::string env;
    std::function<Status(const std::string&)> set;
    bool optional_value = false;
  };
  struct Positional {
    std::string metavar;
    std::string* dst;
    std::string help;
    bool required;
  };
  const Flag* find(const std::string& name) const;
  std::string command_, summary_;
  std::vector<Flag> flags_;
  std::vector<Positional> positionals_;
  bool help_ = false;
};

}  // namespace expertmesh::cli
