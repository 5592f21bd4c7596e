// End-to-end test helpers for `expertmesh serve` (issue 7): launch the real binary (optionally
// under `mpirun -np N`) on a free port, wait for its listening line, talk HTTP to it, stop it.
//
// Contract of the CLI these helpers rely on: with `--port 0` rank 0 prints exactly one line
// `serve: listening on http://HOST:PORT` to stderr once it accepts connections, and SIGTERM /
// SIGINT make every rank exit 0.
//
// Threads: a ServeProcess is used from one thread (the test's); its reader thread only drains the
// child's output into a buffer so a chatty server never blocks on a full pipe.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace expertmesh::testing {

using Json = nlohmann::ordered_json;  // the server's own JSON type

struct ServeOptions {
  std::string model;              // -m
  std::vector<std::string> args;  // further flags, e.g. {"--parallel", "8", "-c", "2048"}
  int np = 0;                     // 0: run the binary directly; N >= 1: under mpirun -np N
  int start_timeout_s = 90;       // until the listening line
  int run_timeout_s = 300;        // `timeout S` in front bounds the whole run (a leak if the test dies)
  // mpirun only, when set: every rank runs under a bash wrapper that writes the rank's exit status
  // to DIR/rank-R.exit and the pid of its own session to DIR/rank-R.pid (mpirun itself exits 1
  // whenever it forwarded a signal, whatever the ranks did, so this is the only way to see that
  // each rank exited 0). The ranks then outlive mpirun briefly: see wait_rank_exits().
  std::filesystem::path rank_exit_dir;
};

class ServeProcess {
 public:
  ServeProcess() = default;
  ~ServeProcess();  // SIGKILLs the launched session if still running
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  // Launches and waits for the listening line. On failure (the process exits first, the line
  // does not come within start_timeout_s) returns false with `error` holding the reason and the
  // captured output; the process is killed.
  bool start(const ServeOptions& opt, std::string* error);

  // Sends `sig` to the launched process (expertmesh, or `timeout` which passes it to mpirun, which
  // forwards it to every rank) — what a supervisor does — and waits up to timeout_s for it to exit.
  // Returns its exit status (128 + signal when killed by one), or -1 when it did not exit in
  // time. Afterwards every process still in the launched session 5 s after the leader exited
  // (mpirun puts each rank in a process group of its own, but they stay in our session) is
  // SIGKILLed and counted in stragglers().
  int stop(int sig, int timeout_s);
  int stragglers() const { return stragglers_; }
  const std::string& straggler_list() const { return straggler_list_; }  // "PID (COMM) STATE ppid P" lines

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const std::string& host() const { return host_; }
  int port() const { return port_; }
  std::string base_url() const;  // http://HOST:PORT
  std::string output() const;    // everything printed so far (stdout and stderr, interleaved)
  std::string command() const { return command_; }

 private:
  void reader_loop(int fd);
  void finish_reading();          // waits up to 2 s for the pipe's end, then stops the reader and joins it
  int wait_exit(int timeout_ms);  // reaps the leader: exit status, or -1 if still running at the deadline
  void kill_all();                // SIGKILLs the leader and the session, reaps the leader

  pid_t pid_ = -1;
  std::string command_;
  std::string host_;
  int port_ = 0;
  int stragglers_ = 0;
  std::string straggler_list_;
  std::thread reader_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string out_;   // guarded by mu_
  bool eof_ = false;  // guarded by mu_
  std::atomic<bool> stop_reading_{false};
};

// Waits up to timeout_s for DIR/rank-R.exit of ranks 0..np-1; returns each status (-1: none).
// Afterwards SIGKILLs the session of any rank that has not recorded one (DIR/rank-R.pid).
std::vector<int> wait_rank_exits(const std::filesystem::path& dir, int np, int timeout_s);

// A small MoE model for the server tests: synthetic qwen3moe (3 layers, n_embd 64, 4 heads / 2 KV,
// 6 experts top-2, F16, the built-in 512-token SentencePiece-style vocabulary with byte fallback,
// so any text tokenizes) plus a ChatML `tokenizer.chat_template`. Deterministic; written into dir.
// Returns the path, or empty after adding a gtest failure.
std::string write_serve_model(const std::filesystem::path& dir);

// One HTTP exchange with the server.
struct HttpReply {
  int status = 0;     // 0: no response (connection error; `error` says why)
  std::string body;   // raw body
  std::string error;  // transport error
};
HttpReply http_post(const std::string& host, int port, const std::string& path, const Json& body,
                    const std::string& api_key = {}, int timeout_s = 60);
HttpReply http_get(const std::string& host, int port, const std::string& path, const std::string& api_key = {},
                   int timeout_s = 30);

// Parses a server-sent-events body: the JSON of every `data:` line but the final `[DONE]`.
// `done` tells whether `data: [DONE]` was seen (and was the last event).
std::vector<Json> parse_sse(const std::string& body, bool* done, std::string* error);

// The generated answer of one /v1/completions or /v1/chat/completions request, streamed or not
// (body["stream"]). A stream's text is the concatenation of its deltas, its counts those of the
// `usage` chunk (ask for it with stream_options.include_usage).
struct Answer {
  int status = 0;
  std::string text;
  std::string finish_reason;
  int64_t prompt_tokens = -1, completion_tokens = -1;
  std::string error;  // transport or format problem; empty when the reply was well formed
  std::string raw;    // the body, for failure messages
};
Answer ask(const std::string& host, int port, const std::string& path, const Json& body,
           const std::string& api_key = {});

// `j` without the keys that legitimately differ between two runs of the same request (id,
// created, system_fingerprint, timings), recursively.
Json without_volatile_fields(const Json& j);

// Compares two JSON values exactly, except numbers that are not both integers, which must agree
// to rel_tol (relative) — log-probabilities after a different reduction order. Returns an empty
// string when equal, else the JSON path of the first difference with both values.
std::string json_diff(const Json& a, const Json& b, double rel_tol, const std::string& path = "$");

}  // namespace expertmesh::testing
