// cli::FlagSet: aliases, --flag=value, environment variables, positionals, help, and errors that
// name the offending flag.
#include "cli/flags.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "cli/compat_flags.h"

namespace expertmesh::cli {
namespace {

// Sets an environment variable for the lifetime of the object (tests run in one thread).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_.c_str()); }

 private:
  std::string name_;
};

struct Opts {
  bool json = false;
  int threads = 1;
  int64_t ctx = 0;
  double temp = 0.8;
  std::string out = "default.gguf";
  std::vector<std::string> ot;
  std::string file;
  std::string second;
};

// True if `msg` starts with one of the flag's spellings followed by ':' (which spelling is the
// parser's choice: the one typed or the flag's first name).
bool starts_with_flag(const std::string& msg, const std::vector<std::string>& spellings) {
  for (const std::string& s : spellings)
    if (msg.rfind(s + ":", 0) == 0) return true;
  return false;
}

FlagSet make_flags(Opts* o) {
  FlagSet fs("demo", "a demo command");
  fs.add_bool({"--json"}, &o->json, "print JSON", "EM_TEST_FLAGS_JSON");
  fs.add_int({"-t", "--threads"}, &o->threads, "N", "threads to use", "EM_TEST_FLAGS_THREADS");
  fs.add_int({"-c", "--ctx-size"}, &o->ctx, "N", "context size");
  fs.add_float({"--temp"}, &o->temp, "T", "sampling temperature");
  fs.add_string({"-o", "--output"}, &o->out, "FILE", "output file", "EM_TEST_FLAGS_OUTPUT");
  fs.add_list({"-ot", "--override-tensor"}, &o->ot, "RULE", "tensor override (repeatable)");
  fs.positional("FILE", &o->file, "the input GGUF");
  fs.positional("EXTRA", &o->second, "an optional second argument", /*required=*/false);
  return fs;
}

TEST(Flags, DefaultsSurviveWhenOnlyPositionalGiven) {
  Opts o;
  FlagSet fs = make_flags(&o);
  ASSERT_TRUE(fs.parse({"model.gguf"}).ok());
  EXPECT_EQ(o.file, "model.gguf");
  EXPECT_EQ(o.second, "");
  EXPECT_FALSE(o.json);
  EXPECT_EQ(o.threads, 1);
  EXPECT_EQ(o.out, "default.gguf");
  EXPECT_FALSE(fs.help_requested());
}

TEST(Flags, AliasesSetTheSameDestination) {
  for (const char* name : {"-t", "--threads"}) {
    Opts o;
    FlagSet fs = make_flags(&o);
    ASSERT_TRUE(fs.parse({name, "12", "m.gguf"}).ok()) << name;
    EXPECT_EQ(o.threads, 12) << name;
  }
  Opts o;
  FlagSet fs = make_flags(&o);
  ASSERT_TRUE(fs.parse({"-o", "a.gguf", "--output", "b.gguf", "m.gguf"}).ok());
  EXPECT_EQ(o.out, "b.gguf") << "the last occurrence wins";
}

TEST(Flags, EqualsSyntax) {
  Opts o;
  FlagSet fs = make_flags(&o);
  ASSERT_TRUE(fs.parse({"--threads=7", "--output=x=y.gguf", "--temp=0.25", "--ctx-size=8192", "m.gguf"}).ok());
  EXPECT_EQ(o.threads, 7);
  EXPECT_EQ(o.out, "x=y.gguf") << "only the first '=' separates name and value";
  EXPECT_DOUBLE_EQ(o.temp, 0.25);
  EXPECT_EQ(o.ctx, 8192);
}

TEST(Flags, EqualsWithEmptyValue) {
  Opts o;
  FlagSet fs = make_flags(&o);
  ASSERT_TRUE(fs.parse({"--output=", "m.gguf"}).ok());
  EXPECT_EQ(o.out, "");
  Status s = fs.parse({"--threads=", "m.gguf"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(starts_with_flag(s.message(), {"-t", "--threads"})) << s.message();
}

TEST(Flags, BoolFlags) {
  {
    Opts o;
    FlagSet fs = make_flags(&o);
    ASSERT_TRUE(fs.parse({"--json", "m.gguf"}).ok());
    EXPECT_TRUE(o.json);
    EXPECT_EQ(o.file, "m.gguf") << "a bool flag does not consume the next argument";
  }
  for (const char* v : {"1", "true", "on", "yes"}) {
    Opts o;
    FlagSet fs = make_flags(&o);
    ASSERT_TRUE(fs.parse({std::string("--json=") + v, "m.gguf"}).ok());
    EXPECT_TRUE(o.json) << v;
  }
  for (const char* v : {"0", "false", "off", "no"}) {
    Opts o;
    o.json = true;
    FlagSet fs = make_flags(&o);
    ASSERT_TRUE(fs.parse({std::string("--json=") + v, "m.gguf"}).ok());
    EXPECT_FALSE(o.json) << v;
  }
}

TEST(Flags, NumbersIncludingNegativeValues) {
  Opts o;
  FlagSet fs = make_flags(&o);
  ASSERT_TRUE(fs.parse({"--temp", "-0.5", "-c", "-1", "--ctx-size", "9000000000", "m.gguf"}).ok());
  EXPECT_DOUBLE_EQ(o.temp, -0.5);
  EXPECT_EQ(o.ctx, 9000000000LL) << "int64 flags hold values beyond 32 bits";
  Opts o2;
  FlagSet fs2 = make_flags(&o2);
  ASSERT_TRUE(fs2.parse({"--temp", "1e-3", "m.gguf"}).ok());
  EXPECT_DOUBLE_EQ(o2.temp, 1e-3);
}

TEST(Flags, NegativeNumberIsAPositional) {
  Opts o;
  FlagSet fs = make_flags(&o);
  ASSERT_TRUE(fs.parse({"m.gguf", "-5"}).ok());
  EXPECT_EQ(o.second, "-5");
}

TEST(Flags, RepeatableList) {
  Opts o;
  FlagSet fs = make_flags(&o);
  ASSERT_TRUE(fs.parse({"-ot", "exps=CPU", "m.gguf", "--override-tensor=attn=CUDA0"}).ok());
  EXPECT_EQ(o.ot, (std::vector<std::string>{"exps=CPU", "attn=CUDA0"}));
  EXPECT_EQ(o.file, "m.gguf") << "flags and positionals may be interleaved";
}

TEST(Flags, DoubleDashEndsFlags) {
  Opts o;
  FlagSet fs = make_flags(&o);
  ASSERT_TRUE(fs.parse({"--json", "--", "--threads", "--help"}).ok());
  EXPECT_TRUE(o.json);
  EXPECT_EQ(o.file, "--threads");
  EXPECT_EQ(o.second, "--help");
  EXPECT_FALSE(fs.help_requested());
}

TEST(Flags, EnvironmentVariablesApplyBeforeFlags) {
  ScopedEnv t("EM_TEST_FLAGS_THREADS", "24");
  ScopedEnv j("EM_TEST_FLAGS_JSON", "1");
  {
    Opts o;
    FlagSet fs = make_flags(&o);
    ASSERT_TRUE(fs.parse({"m.gguf"}).ok());
    EXPECT_EQ(o.threads, 24);
    EXPECT_TRUE(o.json);
  }
  {
    Opts o;
    FlagSet fs = make_flags(&o);
    ASSERT_TRUE(fs.parse({"-t", "3", "m.gguf"}).ok());
    EXPECT_EQ(o.threads, 3) << "a flag on the command line overrides the environment";
  }
}

TEST(Flags, BadEnvironmentValueNamesVariableAndFlag) {
  ScopedEnv t("EM_TEST_FLAGS_THREADS", "many");
  Opts o;
  FlagSet fs = make_flags(&o);
  Status s = fs.parse({"m.gguf"});
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("EM_TEST_FLAGS_THREADS"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("-t"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("'many'"), std::string::npos) << s.message();
}

// Every parse error is InvalidArgument and names the flag or argument at fault.
TEST(Flags, ErrorsNameTheFlag) {
  struct Case {
    std::vector<std::string> args;
    std::vector<std::string> must_contain;
    std::vector<std::string> flag = {};  // value errors start with one of these + ':'
  };
  const std::vector<Case> cases = {
      {{"--bogus", "m.gguf"}, {"demo", "unknown flag", "'--bogus'"}},
      {{"--bogus=3", "m.gguf"}, {"unknown flag", "'--bogus'"}},
      {{"-x"}, {"unknown flag", "'-x'"}},
      {{"m.gguf", "--threads"}, {"missing value", "N", "--threads"}},
      {{"m.gguf", "-o"}, {"missing value", "FILE", "-o"}},
      {{"--threads", "x", "m.gguf"}, {"expected an integer", "'x'"}, {"-t", "--threads"}},
      {{"-t", "1.5", "m.gguf"}, {"expected an integer", "'1.5'"}, {"-t", "--threads"}},
      {{"-t", "99999999999", "m.gguf"}, {"out of range"}, {"-t", "--threads"}},
      {{"--temp", "warm", "m.gguf"}, {"expected a number", "'warm'"}, {"--temp"}},
      {{"--temp", "inf", "m.gguf"}, {"expected a number"}, {"--temp"}},
      {{"--temp", "nan", "m.gguf"}, {"expected a number"}, {"--temp"}},
      {{"--temp", "0.5x", "m.gguf"}, {"expected a number"}, {"--temp"}},
      {{"--ctx-size", "12abc", "m.gguf"}, {"expected an integer", "'12abc'"}, {"-c", "--ctx-size"}},
      {{}, {"demo", "missing argument FILE"}},
      {{"a.gguf", "b", "c"}, {"demo", "unexpected argument 'c'"}},
  };
  for (const auto& c : cases) {
    Opts o;
    FlagSet fs = make_flags(&o);
    Status s = fs.parse(c.args);
    std::string argline;
    for (const auto& a : c.args) argline += a + " ";
    ASSERT_FALSE(s.ok()) << argline;
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << argline;
    for (const auto& want : c.must_contain)
      EXPECT_NE(s.message().find(want), std::string::npos) << argline << "-> " << s.message() << " lacks " << want;
    if (!c.flag.empty()) {
      EXPECT_TRUE(starts_with_flag(s.message(), c.flag)) << argline << "-> " << s.message();
    }
  }
}

TEST(Flags, CustomHandlerValidates) {
  std::string type = "f16";
  FlagSet fs("quantize", "q");
  fs.add_custom({"--type"}, "TYPE", "output type", [&type](const std::string& v) {
    if (v != "q8_0" && v != "iq4_ks") return Status::InvalidArgument("--type: unknown type '" + v + "'");
    type = v;
    return Status::Ok();
  });
  ASSERT_TRUE(fs.parse({"--type", "iq4_ks"}).ok());
  EXPECT_EQ(type, "iq4_ks");
  Status s = fs.parse({"--type=q9_9"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'q9_9'"), std::string::npos);
  EXPECT_EQ(type, "iq4_ks");
}

TEST(Flags, HelpIsRequestedEvenWithoutRequiredPositionals) {
  for (const char* h : {"-h", "--help"}) {
    Opts o;
    FlagSet fs = make_flags(&o);
    Status s = fs.parse({h});
    EXPECT_TRUE(s.ok()) << h << ": " << s.to_string();
    EXPECT_TRUE(fs.help_requested()) << h;
  }
}

TEST(Flags, UsageListsEverything) {
  Opts o;
  FlagSet fs = make_flags(&o);
  std::string u = fs.usage();
  for (const char* want : {"usage: expertmesh demo [options] FILE [EXTRA]", "a demo command", "-t, --threads N",
                           "threads to use", "[env EM_TEST_FLAGS_THREADS]", "--json", "-o, --output FILE",
                           "-ot, --override-tensor RULE", "the input GGUF", "-h, --help"})
    EXPECT_NE(u.find(want), std::string::npos) << "usage lacks '" << want << "':\n" << u;
}

TEST(Flags, ArgcArgvOverload) {
  Opts o;
  FlagSet fs = make_flags(&o);
  char a0[] = "--threads=5";
  char a1[] = "in.gguf";
  char* argv[] = {a0, a1};
  ASSERT_TRUE(fs.parse(2, argv).ok());
  EXPECT_EQ(o.threads, 5);
  EXPECT_EQ(o.file, "in.gguf");
}

// The peer's runtime flags: a real llama-server command line parses, every flag without effect
// is named with its reason, values are checked like the peer checks them, and "-fa" works with
// and without a value.
TEST(PeerCompatFlags, AcceptsAUsersLlamaServerCommandLine) {
  FlagSet fs("serve", "test");
  int threads = 1;
  fs.add_int({"-t", "--threads"}, &threads, "N", "threads");
  PeerCompatFlags c;
  add_peer_compat_flags(fs, &c, CompatScope{true, true});
  const std::vector<std::string> args = {
      "-ngl", "99", "-fa", "-fmoe",   "-rtr", "-mla", "3",   "-amb",  "512",    "-ub",        "4096",   "--no-mmap",
      "-t",   "8",  "-cb", "--jinja", "-fa",  "on",   "-sm", "graph", "--numa", "distribute", "-ncmoe", "10"};
  Status s = fs.parse(args);
  ASSERT_TRUE(s.ok()) << s.to_string();
  EXPECT_EQ(threads, 8);
  EXPECT_TRUE(c.no_mmap);
  ASSERT_EQ(c.inert.size(), 13u);
  EXPECT_EQ(c.inert[0].rfind("-ngl 99 (GPU offload", 0), 0u) << c.inert[0];
  EXPECT_EQ(c.inert[1].rfind("-fa (", 0), 0u) << c.inert[1];  // no value: the next was a flag
  EXPECT_EQ(c.inert[2].rfind("-fmoe (", 0), 0u) << c.inert[2];
  EXPECT_EQ(c.inert[9].rfind("-fa on (", 0), 0u) << c.inert[9];
}

TEST(PeerCompatFlags, BadValuesNameTheFlag) {
  auto parse = [](std::vector<std::string> args, CompatScope scope = {}) {
    FlagSet fs("run", "test");
    PeerCompatFlags c;
    add_peer_compat_flags(fs, &c, scope);
    return fs.parse(args);
  };
  EXPECT_TRUE(parse({"-fa", "auto"}).ok());
  EXPECT_TRUE(parse({"-fa", "0,1"}).ok());  // llama-bench's lists
  Status s = parse({"-fa", "maybe"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("-fa: expected on|off|auto, got 'maybe'"), std::string::npos) << s.message();
  s = parse({"-ngl", "x"});
  EXPECT_NE(s.message().find("-ngl: expected a non-negative integer"), std::string::npos) << s.message();
  EXPECT_FALSE(parse({"-mla", "7"}).ok());
  EXPECT_FALSE(parse({"-sm", "row"}).ok());  // the peer has no row split either
  EXPECT_FALSE(parse({"-ngl"}).ok());        // a value is required
  // Scope: -cb / --jinja only for serve; -ub only where the command has no own -ub.
  EXPECT_FALSE(parse({"--jinja"}).ok());
  EXPECT_FALSE(parse({"-ub", "512"}, CompatScope{false, false}).ok());
}

}  // namespace
}  // namespace expertmesh::cli
