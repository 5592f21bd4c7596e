// `expertmesh serve`: the OpenAI-compatible / llama-server-compatible HTTP server (issue 7).
//
//   expertmesh serve -m MODEL [--host 127.0.0.1] [--port 8080] [-c CTX] [-np/--parallel N] [-b N]
//                    [-n N] [--api-key KEY]... [--api-key-file F] [--alias NAME]
//                    [--chat-template NAME|JINJA] [--chat-template-file F] [-t N] [-ctk T] [-ctv T]
//                    [--temp T] [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty X] [--repeat-last-n N]
//                    [--frequency-penalty X] [--presence-penalty X] [--penalize-nl] [--metrics]
//                    [--reasoning-format none|deepseek] [placement flags]
//
// Every rank maps the model and builds its engine with --parallel KV-cache sequences of
// c / parallel positions each (the peer's per-slot context; -c 0: n_ctx_train, at most 4096,
// per slot). Rank 0 runs the HTTP server on a background thread and the Scheduler's compute
// loop on its main thread, the loop's batches going through Engine::decode_batch; the other
// ranks follow() those batches.
//
// Contract (tests/server/e2e rely on it): once connections are accepted, rank 0 prints exactly
// one line "serve: listening on http://HOST:PORT" to stderr (flushed); --port 0 picks a free
// port and the line names it. Bad flags, a bad model or an unusable chat template fail before
// that line with a message naming the flag or file and a non-zero exit. SIGINT / SIGTERM stop
// the server gracefully (running requests end with an error, the followers are released) and
// the command returns Ok (exit 0).
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "cli/compat_flags.h"
#include "cli/engine_setup.h"
#include "cli/flags.h"
#include "cli/sampling_flags.h"
#include "coordinator/server/auth.h"
#include "coordinator/server/chat_prompt.h"
#include "coordinator/server/http_server.h"
#include "coordinator/server/scheduler.h"
#include "model/model.h"
#include "model/tokenizer/tokenizer.h"
#include "worker/engine.h"

namespace expertmesh::cli {

namespace {

namespace srv = coordinator::server;

// The write end of the self-pipe SIGINT/SIGTERM report to. A signal handler can reach nothing
// but a global, so this one file descriptor is the exception to "no mutable globals"; it is
// set and cleared only by SignalPipe (one per process, for the command's lifetime).
std::atomic<int> g_signal_fd{-1};

extern "C" void on_stop_signal(int) {
  const int fd = g_signal_fd.load();
  if (fd >= 0) {
    const char b = 1;
    [[maybe_unused]] ssize_t n = ::write(fd, &b, 1);  // async-signal-safe; a full pipe loses nothing we need
  }
}

// Installs the SIGINT/SIGTERM handlers for the command's lifetime (on every rank, so a signal a
// launcher forwards to the followers does not kill them before rank 0 releases them) and lets
// rank 0 wait for one.
class SignalPipe {
 public:
  SignalPipe() {
    if (::pipe2(fds_, O_CLOEXEC | O_NONBLOCK) != 0) return;
    g_signal_fd.store(fds_[1]);
    struct sigaction sa = {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, &old_int_);
    ::sigaction(SIGTERM, &sa, nullptr);
    installed_ = true;
  }
  ~SignalPipe() {
    if (!installed_) return;
    // The command ends only when the server stops (a signal on some rank, or a failure), and
    // the process then exits. SIGTERM stays ignored for that last stretch: Open MPI's daemon
    // sends one while MPI_Finalize waits for the job's teardown, and it must not turn a clean
    // exit into a death by signal (on a follower that never saw the first signal, too).
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::signal(SIGTERM, SIG_IGN);
    g_signal_fd.store(-1);
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  SignalPipe(const SignalPipe&) = delete;
  SignalPipe& operator=(const SignalPipe&) = delete;
  // True once a signal arrived; waits at most `ms`.
  bool wait(int ms) const {
    if (!installed_) return false;
    pollfd p{fds_[0], POLLIN, 0};
    return ::poll(&p, 1, ms) > 0 && (p.revents & POLLIN) != 0;
  }

 private:
  int fds_[2] = {-1, -1};
  bool installed_ = false;
  struct sigaction old_int_ = {};
};

struct ServeFlags {
  std::string model_path, alias, chat_template, chat_template_file, api_key_file;
  std::string reasoning_format = "deepseek";
  std::vector<std::string> api_keys;
  std::string host = "127.0.0.1";
  int64_t port = 8080, n_ctx = 0, n_parallel = 1, n_batch = 512, n_predict = -1;
  int threads = 1;
  SamplingFlags sampling;  // the defaults a request's own fields override
  bool metrics = false;
};

Status validate(const ServeFlags& f) {
  if (f.model_path.empty()) return Status::InvalidArgument("-m: a model is required");
  if (f.port < 0 || f.port > 65535)
    return Status::InvalidArgument(fmt::format("--port: must be in [0, 65535], got {}", f.port));
  if (f.n_ctx < 0) return Status::InvalidArgument(fmt::format("-c: must be >= 0, got {}", f.n_ctx));
  if (f.n_parallel < 1 || f.n_parallel > 256)
    return Status::InvalidArgument(fmt::format("--parallel: must be in [1, 256], got {}", f.n_parallel));
  if (f.n_batch < 1) return Status::InvalidArgument(fmt::format("-b: must be >= 1, got {}", f.n_batch));
  if (f.n_predict < -1) return Status::InvalidArgument(fmt::format("-n: must be >= -1, got {}", f.n_predict));
  if (f.threads <= 0) return Status::InvalidArgument(fmt::format("-t: must be > 0, got {}", f.threads));
  EM_RETURN_IF_ERROR(check_sampling_flags(f.sampling));
  if (!f.chat_template.empty() && !f.chat_template_file.empty())
    return Status::InvalidArgument("--chat-template and --chat-template-file: give one of them");
  for (const std::string& k : f.api_keys)
    if (k.empty()) return Status::InvalidArgument("--api-key: a key must not be empty");
  if (srv::ReasoningFormat rf; !srv::parse_reasoning_format(f.reasoning_format, &rf))
    return Status::InvalidArgument(
        fmt::format("--reasoning-format: must be none, deepseek or auto, got '{}'", f.reasoning_format));
  return Status::Ok();
}

Result<std::string> read_text_file(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(fmt::format("{}: cannot open {}", flag, path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The peer's /v1/models "meta": vocab_type (1 SPM, 2 BPE, 3 WPM), n_vocab, n_ctx_train, n_embd,
// n_params, size (bytes of tensor data).
coordinator::http::Json model_meta(const Model& m, const Tokenizer& tok) {
  int64_t n_params = 0, size = 0;
  for (const gguf::TensorInfo& t : m.file().tensors()) {
    n_params += t.n_elements();
    size += t.nbytes;
  }
  const VocabType vt = tok.type();
  coordinator::http::Json j = coordinator::http::Json::object();
  j["vocab_type"] = vt == VocabType::kSpm ? 1 : vt == VocabType::kBpe ? 2 : vt == VocabType::kWpm ? 3 : 0;
  j["n_vocab"] = tok.n_vocab();
  j["n_ctx_train"] = m.hparams().n_ctx_train;
  j["n_embd"] = m.hparams().n_embd;
  j["n_params"] = n_params;
  j["size"] = size;
  return j;
}

void register_flags(FlagSet& fs, ServeFlags& f) {
  fs.add_string({"-m", "--model"}, &f.model_path, "FILE", "model GGUF (first shard of a split model)");
  fs.add_string({"--host"}, &f.host, "ADDR", "address to listen on (default 127.0.0.1)");
  fs.add_int({"--port"}, &f.port, "N", "port to listen on (default 8080; 0 = any free port)");
  fs.add_int({"-c", "--ctx-size"}, &f.n_ctx, "N",
             "total context, split evenly over the slots (default 0 = n_ctx_train, at most 4096, per slot)");
  fs.add_int({"-np", "--parallel"}, &f.n_parallel, "N", "slots: requests decoded concurrently (default 1)");
  fs.add_int({"-b", "--batch-size"}, &f.n_batch, "N", "most tokens in one batched step (default 512)");
  fs.add_int({"-n", "--n-predict"}, &f.n_predict, "N", "default tokens to generate (default -1 = until EOG)");
  fs.add_list({"--api-key"}, &f.api_keys, "KEY", "accept requests with 'Authorization: Bearer KEY' (repeatable)");
  fs.add_string({"--api-key-file"}, &f.api_key_file, "FILE", "file with one API key per line");
  fs.add_string({"-a", "--alias"}, &f.alias, "NAME", "model name in responses (default: the file name)");
  fs.add_string({"--chat-template"}, &f.chat_template, "NAME|JINJA",
                "chat template: 'chatml' or Jinja source (default: the model's tokenizer.chat_template)");
  fs.add_string({"--chat-template-file"}, &f.chat_template_file, "FILE", "chat template Jinja source file");
  fs.add_int({"-t", "--threads"}, &f.threads, "N", "compute threads");
  add_sampling_flags(fs, &f.sampling);
  fs.add_string({"--reasoning-format"}, &f.reasoning_format, "FMT",
                "chat: none leaves <think> blocks in the content; deepseek (default; auto: the same) moves them "
                "to reasoning_content");
  fs.add_bool({"--metrics"}, &f.metrics, "accepted for llama-server compatibility; /metrics is always on");
}

// Rank 0's side of the lockstep: the HTTP server on its own threads, the scheduler on this one.
Status drive(worker::Engine& eng, const Tokenizer& tok, const chat::ChatTemplate& tmpl, const srv::SchedulerOptions& so,
             srv::HttpServerOptions ho, const SignalPipe& sig) {
  srv::DecodeFn decode = [&eng](std::span<const int32_t> t, std::span<const int32_t> p, std::span<const int32_t> s,
                                std::span<const int64_t> rows,
                                float* logits) { return eng.decode_batch(t, p, s, rows, logits); };
  srv::Scheduler sched(std::move(decode), tok, eng.n_vocab(), so);
  const std::string host = ho.host;
  srv::HttpServer http(sched, tok, tmpl, std::move(ho));
  EM_RETURN_IF_ERROR(http.start());
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done.load()) {
      if (sig.wait(200)) {
        std::fprintf(stderr, "serve: stopping\n");
        sched.shutdown();
        return;
      }
    }
  });
  std::fprintf(stderr, "serve: listening on http://%s:%d\n", host.c_str(), http.port());
  std::fflush(stderr);
  Status st = sched.run();
  done.store(true);
  watcher.join();
  http.stop();
  return st;
}

}  // namespace

Status cmd_serve(RankContext& ctx, const std::vector<std::string>& args) {
  ServeFlags f;
  f.threads = ctx.n_threads;
  worker::EngineOptions eo;
  placement::PlacementFlags pf;
  FlagSet fs("serve", "OpenAI-compatible HTTP server (llama-server) with continuous batching");
  register_flags(fs, f);
  add_kv_cache_flags(fs, &eo);
  placement::add_placement_flags(fs, &pf);
  PeerCompatFlags compat;
  add_peer_compat_flags(fs, &compat, CompatScope{true, true});
  EM_RETURN_IF_ERROR(fs.parse(args));
  if (fs.help_requested()) {
    if (ctx.is_root()) std::printf("%s", fs.usage().c_str());
    return Status::Ok();
  }
  note_peer_compat_flags(ctx, "serve", compat);
  EM_RETURN_IF_ERROR(validate(f));
  // Files named by flags are read on every rank and the outcome agreed, so a rank that cannot
  // read one fails the job instead of leaving the others in a collective.
  std::string template_src = f.chat_template;
  {
    Status local = Status::Ok();
    if (!f.api_key_file.empty()) {
      auto keys = srv::read_api_key_file(f.api_key_file);
      if (keys.ok()) {
        f.api_keys.insert(f.api_keys.end(), keys->begin(), keys->end());
      } else {
        local = keys.status();
      }
    }
    if (local.ok() && !f.chat_template_file.empty()) {
      auto src = read_text_file(f.chat_template_file, "--chat-template-file");
      if (src.ok()) {
        template_src = std::move(*src);
      } else {
        local = src.status();
      }
    }
    EM_RETURN_IF_ERROR(ctx.agree(local));
  }

  SignalPipe sig;
  EM_ASSIGN_OR_RETURN(auto model, load_model_agreed(ctx, f.model_path));
  std::unique_ptr<Tokenizer> tok;
  std::optional<chat::ChatTemplate> tmpl;
  {
    // The tokenizer and template are needed on rank 0 only, but every rank checks them so a
    // bad one fails the job on every rank alike.
    Status local = Status::Ok();
    auto t = Tokenizer::from_gguf(model->file());
    if (t.ok()) {
      tok = std::move(*t);
      std::string model_tmpl;
      if (auto v = model->file().get_string("tokenizer.chat_template"); v.ok()) model_tmpl = *v;
      const std::string origin = !f.chat_template_file.empty() ? "--chat-template-file " + f.chat_template_file
                                 : !f.chat_template.empty()    ? std::string("--chat-template")
                                                               : "tokenizer.chat_template of " + f.model_path;
      auto parsed = srv::resolve_chat_template(template_src, model_tmpl, origin);
      if (parsed.ok()) {
        tmpl = std::move(*parsed);
      } else {
        local = parsed.status();
      }
    } else {
      local = t.status();
    }
    EM_RETURN_IF_ERROR(ctx.agree(local));
  }

  const int64_t train = model->hparams().n_ctx_train > 0 ? model->hparams().n_ctx_train : 4096;
  const int64_t n_ctx_slot = f.n_ctx == 0 ? std::min<int64_t>(train, 4096) : f.n_ctx / f.n_parallel;
  if (n_ctx_slot < 8)
    return Status::InvalidArgument(fmt::format("-c: {} over {} slots leaves {} positions per slot (need >= 8)", f.n_ctx,
                                               f.n_parallel, n_ctx_slot));
  eo.n_threads = f.threads;
  if (compat.no_mmap) eo.weights = worker::WeightSource::kRead;
  eo.n_ctx = n_ctx_slot;
  eo.n_seq = f.n_parallel;
  eo.n_batch_max = f.n_batch;

  srv::SchedulerOptions so;
  so.n_slots = static_cast<int32_t>(f.n_parallel);
  so.n_ctx_slot = n_ctx_slot;
  so.n_batch = f.n_batch;
  srv::HttpServerOptions ho;
  ho.host = f.host;
  ho.port = static_cast<int>(f.port);
  ho.api_keys = f.api_keys;
  ho.n_predict = static_cast<int32_t>(f.n_predict);
  ho.sampling = sampling_params(f.sampling, *tok);
  ho.model_alias = f.alias.empty() ? std::filesystem::path(f.model_path).filename().string() : f.alias;
  ho.model_path = f.model_path;
  srv::parse_reasoning_format(f.reasoning_format, &ho.reasoning_format);  // validated above
  ho.model_meta = model_meta(*model, *tok);

  EM_ASSIGN_OR_RETURN(EngineSetup setup, setup_engine(ctx, std::move(model), pf, eo));
  if (ctx.is_root())
    std::fprintf(stderr, "serve: %s, %lld slots x %lld positions, %d threads, %s kernels\n", f.model_path.c_str(),
                 static_cast<long long>(f.n_parallel), static_cast<long long>(n_ctx_slot), f.threads,
                 setup.engine->kernels().name);
  return run_lockstep(ctx, setup, [&] { return drive(*setup.engine, *tok, *tmpl, so, ho, sig); });
}

}  // namespace expertmesh::cli
