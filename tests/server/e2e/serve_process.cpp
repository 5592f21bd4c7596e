#include "tests/server/e2e/serve_process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <regex>
#include <sstream>
#include <vector>

#include "model/gguf/gguf.h"
#include "model/synth.h"
#include "tests/common/golden.h"
#include "tests/common/mpirun.h"
#include "tests/mpi/test_models.h"

namespace expertmesh::testing {
namespace fs = std::filesystem;

namespace {

// Single-quotes `s` for /bin/sh.
std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs one rank (`rank_wrapper.sh DIR BIN ARGS...`) and records its exit status in
// DIR/rank-R.exit. The server runs under an inner bash in a session of its own, so the SIGKILL
// with which mpirun ends its teardown — sometimes a millisecond after a rank exited — cannot cut
// the recording short; the outer bash forwards SIGTERM / SIGINT to the inner session's group
// (the server and the recording bash, which ignores them until the server has exited). The inner
// pid goes to DIR/rank-R.pid so a test can clean up a rank that never exits.
constexpr const char* kRankWrapper = R"(dir=$1; shift
r=${OMPI_COMM_WORLD_RANK:-0}
D=$dir R=$r setsid bash -c 'trap : TERM INT; "$@"; echo $? > "$D/rank-$R.exit"' inner "$@" &
c=$!
echo $c > "$dir/rank-$r.pid"
trap 'kill -TERM -- -$c 2>/dev/null' TERM
trap 'kill -INT -- -$c 2>/dev/null' INT
while kill -0 $c 2>/dev/null; do wait $c; done
)";

int decode_wait_status(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st); }

// Every live process of session `sid` but the caller's, as "PID (COMM) STATE", SIGKILLed first
// when `kill` is set. Reads /proc/PID/stat: field 6 is the session id (after the parenthesised
// command name). Zombies are left out: they have exited and only wait for a parent to reap them.
std::vector<std::string> scan_session(pid_t sid, bool kill) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t rp = stat.rfind(')');
    if (rp == std::string::npos) continue;
    std::istringstream rest(stat.substr(rp + 1));
    std::string state;
    long ppid = 0, pgrp = 0, session = 0;
    if (!(rest >> state >> ppid >> pgrp >> session)) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    if (session != sid || pid == ::getpid() || state == "Z" || state == "X") continue;
    if (kill) ::kill(pid, SIGKILL);
    found.push_back(stat.substr(0, rp + 1) + " " + state + " ppid " + std::to_string(ppid));
  }
  return found;
}

int kill_session(pid_t sid) { return static_cast<int>(scan_session(sid, true).size()); }

// Waits up to timeout_ms for every process of session `sid` to exit on its own, then SIGKILLs
// and returns what is left. The grace is needed because mpirun may exit while a rank it
// signalled is still leaving MPI_Finalize (the rank is reparented and ends a moment later); a
// process still there after the grace really did outlive the server.
std::vector<std::string> drain_session(pid_t sid, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!scan_session(sid, false).empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  return scan_session(sid, true);
}

}  // namespace

ServeProcess::~ServeProcess() {
  if (pid_ > 0) kill_all();
  finish_reading();
}

std::string ServeProcess::base_url() const { return "http://" + host_ + ":" + std::to_string(port_); }

std::string ServeProcess::output() const {
  std::lock_guard<std::mutex> lock(mu_);
  return out_;
}

void ServeProcess::reader_loop(int fd) {
  char buf[4096];
  for (;;) {
    // poll, not a blocking read: a rank outside our session (rank_exit_dir) may hold the pipe
    // open after the leader exited; finish_reading() must still be able to end this loop.
    pollfd p = {fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, 100);
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) {
      if (stop_reading_.load()) break;
      continue;
    }
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    std::lock_guard<std::mutex> lock(mu_);
    if (n <= 0) break;
    out_.append(buf, static_cast<size_t>(n));
    cv_.notify_all();
  }
  ::close(fd);
  std::lock_guard<std::mutex> lock(mu_);
  eof_ = true;
  cv_.notify_all();
}

void ServeProcess::finish_reading() {
  if (!reader_.joinable()) return;
  {
    // What the processes printed last (their exit messages) is usually already in the pipe.
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(2), [this] { return eof_; });
  }
  stop_reading_.store(true);
  reader_.join();
}

bool ServeProcess::start(const ServeOptions& opt, std::string* error) {
  // `timeout` bounds a server a crashed test would leave behind. --foreground: it forwards a
  // signal to its child only, not to its process group too — mpirun takes a second SIGTERM as
  // "abort now" and exits without waiting for the ranks.
  std::string cmd = "timeout --foreground " + std::to_string(opt.run_timeout_s) + " ";
  if (opt.np > 0) cmd += mpirun_prefix(opt.np);
  if (opt.np > 0 && !opt.rank_exit_dir.empty()) {
    const fs::path wrapper = opt.rank_exit_dir / "rank_wrapper.sh";
    std::ofstream(wrapper) << kRankWrapper;
    cmd += "bash " + shell_quote(wrapper.string()) + " " + shell_quote(opt.rank_exit_dir.string()) + " " +
           shell_quote(expertmesh_binary().string());
  } else {
    cmd += shell_quote(expertmesh_binary().string());
  }
  cmd += " serve -m " + shell_quote(opt.model) + " --host 127.0.0.1 --port 0";
  for (const std::string& a : opt.args) cmd += " " + shell_quote(a);
  command_ = cmd;

  const std::string full = "exec " + cmd;  // built before fork: the child only calls async-signal-safe functions
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    *error = "pipe2 failed";
    return false;
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    *error = "fork failed";
    return false;
  }
  if (pid == 0) {
    // A session of its own: mpirun puts every rank in a process group of its own but they stay in
    // this session, which is how stop() and the destructor find them (kill_session).
    ::setsid();
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::execl("/bin/sh", "sh", "-c", full.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  pid_ = pid;
  reader_ = std::thread([this, fd = fds[0]] { reader_loop(fd); });

  // The port is only known from the line; the host too when --host is a name.
  static const std::regex kListening(R"(serve: listening on http://([^\s:/]+):(\d+))");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(opt.start_timeout_s);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    std::smatch m;
    if (std::regex_search(out_, m, kListening)) {
      host_ = m[1].str();
      port_ = std::stoi(m[2].str());
      return true;
    }
    if (eof_ || std::chrono::steady_clock::now() >= deadline) break;
    cv_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(200)));
  }
  const bool timed_out = !eof_;
  lock.unlock();
  const int st = timed_out ? -1 : wait_exit(5000);
  if (st < 0) {
    kill_all();
  } else {
    kill_session(pid_);
    pid_ = -1;
  }
  finish_reading();
  std::ostringstream os;
  if (timed_out)
    os << "no 'serve: listening on' line within " << opt.start_timeout_s << " s";
  else
    os << "the server exited with status " << st << " before listening";
  os << "\ncommand: " << cmd << "\noutput:\n" << output();
  *error = os.str();
  return false;
}

int ServeProcess::wait_exit(int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) return decode_wait_status(st);
    if (r < 0 && errno != EINTR) return 255;  // not our child any more: nothing to wait for
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void ServeProcess::kill_all() {
  // The leader is not reaped yet, so its pid (= the session id) cannot have been reused.
  ::kill(pid_, SIGKILL);
  kill_session(pid_);
  int st = 0;
  ::waitpid(pid_, &st, 0);
  pid_ = -1;
}

int ServeProcess::stop(int sig, int timeout_s) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, sig);
  const int st = wait_exit(timeout_s * 1000);
  if (st < 0) {
    stragglers_ = 1;
    kill_all();
  } else {
    // Reaped, but the session id stays reserved while any member lives: no reuse race.
    const std::vector<std::string> left = drain_session(pid_, 5000);
    stragglers_ = static_cast<int>(left.size());
    for (const auto& p : left) straggler_list_ += p + "\n";
    pid_ = -1;
  }
  finish_reading();
  return st;
}

std::vector<int> wait_rank_exits(const fs::path& dir, int np, int timeout_s) {
  std::vector<int> codes(static_cast<size_t>(np), -1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    int missing = 0;
    for (int r = 0; r < np; ++r) {
      if (codes[static_cast<size_t>(r)] >= 0) continue;
      std::ifstream in(dir / ("rank-" + std::to_string(r) + ".exit"));
      int code = -1;
      if (in >> code) {
        codes[static_cast<size_t>(r)] = code;
      } else {
        ++missing;
      }
    }
    if (missing == 0 || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (int r = 0; r < np; ++r) {
    if (codes[static_cast<size_t>(r)] >= 0) continue;
    std::ifstream in(dir / ("rank-" + std::to_string(r) + ".pid"));
    long pid = 0;
    if (in >> pid && pid > 1) kill_session(static_cast<pid_t>(pid));
  }
  return codes;
}

std::string write_serve_model(const fs::path& dir) {
  synth::Options o = synth_options("qwen3moe");
  o.n_ctx = 4096;
  const std::string raw = (dir / "serve-raw.gguf").string();
  auto written = synth::write_model(o, raw, 1, gguf::SplitOptions{});
  if (!written.ok()) {
    ADD_FAILURE() << written.status().to_string();
    return {};
  }
  auto f = gguf::File::open(written->paths.front());
  if (!f.ok()) {
    ADD_FAILURE() << f.status().to_string();
    return {};
  }
  auto w = gguf::Writer::from_file(**f);
  if (!w.ok()) {
    ADD_FAILURE() << w.status().to_string();
    return {};
  }
  // ChatML, the format of Qwen's own templates, in the Jinja subset every template engine has.
  w->set("tokenizer.chat_template",
         gguf::Value::string("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
                             "message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
                             "{{ '<|im_start|>assistant\\n' }}{% endif %}"));
  const std::string path = (dir / "serve-tiny-qwen3moe.gguf").string();
  auto out = w->write(path);
  if (!out.ok()) {
    ADD_FAILURE() << out.status().to_string();
    return {};
  }
  return out->front();
}

namespace {

httplib::Headers auth_headers(const std::string& api_key) {
  httplib::Headers h;
  if (!api_key.empty()) h.emplace("Authorization", "Bearer " + api_key);
  return h;
}

HttpReply to_reply(const httplib::Result& r) {
  HttpReply out;
  if (!r) {
    out.error = httplib::to_string(r.error());
    return out;
  }
  out.status = r->status;
  out.body = r->body;
  return out;
}

}  // namespace

HttpReply http_post(const std::string& host, int port, const std::string& path, const Json& body,
                    const std::string& api_key, int timeout_s) {
  httplib::Client cli(host, port);
  cli.set_read_timeout(timeout_s, 0);
  cli.set_write_timeout(timeout_s, 0);
  return to_reply(cli.Post(path.c_str(), auth_headers(api_key), body.dump(), "application/json"));
}

HttpReply http_get(const std::string& host, int port, const std::string& path, const std::string& api_key,
                   int timeout_s) {
  httplib::Client cli(host, port);
  cli.set_read_timeout(timeout_s, 0);
  return to_reply(cli.Get(path.c_str(), auth_headers(api_key)));
}

std::vector<Json> parse_sse(const std::string& body, bool* done, std::string* error) {
  std::vector<Json> events;
  *done = false;
  error->clear();
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == ':') continue;  // event separator / comment
    if (line.rfind("data:", 0) != 0) continue;     // event:, id:, retry: carry nothing we check
    std::string data = line.substr(5);
    if (!data.empty() && data[0] == ' ') data.erase(0, 1);
    if (*done) {
      *error = "an event after data: [DONE]: " + data;
      return events;
    }
    if (data == "[DONE]") {
      *done = true;
      continue;
    }
    Json j = Json::parse(data, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      *error = "an SSE data line is not JSON: " + data;
      return events;
    }
    events.push_back(std::move(j));
  }
  return events;
}

namespace {

// Reads choices[0] of a completion object or chunk into `a`; false with a.error on a bad shape.
bool read_choice(const Json& j, bool chat, bool chunk, Answer* a) {
  if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array()) {
    a->error = "no choices array in " + j.dump();
    return false;
  }
  if (j.contains("usage") && j["usage"].is_object()) {
    a->prompt_tokens = j["usage"].value("prompt_tokens", int64_t{-1});
    a->completion_tokens = j["usage"].value("completion_tokens", int64_t{-1});
  }
  if (j["choices"].empty()) return chunk;  // the usage chunk of a stream has no choices
  const Json& c = j["choices"][0];
  const Json* text = nullptr;
  if (!chat)
    text = c.contains("text") ? &c["text"] : nullptr;
  else if (chunk)
    text = c.contains("delta") && c["delta"].contains("content") ? &c["delta"]["content"] : nullptr;
  else
    text = c.contains("message") && c["message"].contains("content") ? &c["message"]["content"] : nullptr;
  if (text && text->is_string())
    a->text += text->get<std::string>();
  else if (text && !text->is_null()) {
    a->error = "content is neither a string nor null in " + j.dump();
    return false;
  } else if (!chunk && !chat) {
    a->error = "no text in " + j.dump();
    return false;
  }
  if (c.contains("finish_reason") && c["finish_reason"].is_string()) a->finish_reason = c["finish_reason"];
  return true;
}

}  // namespace

Answer ask(const std::string& host, int port, const std::string& path, const Json& body, const std::string& api_key) {
  Answer a;
  HttpReply r = http_post(host, port, path, body, api_key);
  a.status = r.status;
  a.raw = r.body;
  if (r.status == 0) {
    a.error = "no response: " + r.error;
    return a;
  }
  if (r.status != 200) return a;
  const bool chat = path.find("chat") != std::string::npos;
  if (!body.value("stream", false)) {
    Json j = Json::parse(r.body, nullptr, /*allow_exceptions=*/false);
    read_choice(j, chat, /*chunk=*/false, &a);
    return a;
  }
  bool done = false;
  std::vector<Json> events = parse_sse(r.body, &done, &a.error);
  if (!a.error.empty()) return a;
  if (!done) {
    a.error = "the stream did not end with data: [DONE]";
    return a;
  }
  for (const Json& e : events)
    if (!read_choice(e, chat, /*chunk=*/true, &a)) return a;
  return a;
}

Json without_volatile_fields(const Json& j) {
  static const char* const kVolatile[] = {"id", "created", "system_fingerprint", "timings"};
  if (j.is_array()) {
    Json out = Json::array();
    for (const Json& e : j) out.push_back(without_volatile_fields(e));
    return out;
  }
  if (!j.is_object()) return j;
  Json out = Json::object();
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool drop = false;
    for (const char* k : kVolatile) drop = drop || it.key() == k;
    if (!drop) out[it.key()] = without_volatile_fields(it.value());
  }
  return out;
}

std::string json_diff(const Json& a, const Json& b, double rel_tol, const std::string& path) {
  auto show = [&] { return path + ": " + a.dump() + " vs " + b.dump(); };
  if (a.is_number() && b.is_number()) {
    if (a.is_number_integer() && b.is_number_integer()) return a.get<int64_t>() == b.get<int64_t>() ? "" : show();
    const double x = a.get<double>(), y = b.get<double>();
    return std::fabs(x - y) <= rel_tol * std::max({1.0, std::fabs(x), std::fabs(y)}) ? "" : show();
  }
  if (a.type() != b.type()) return show();
  if (a.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      if (!b.contains(it.key())) return path + "." + it.key() + ": only in the first";
      std::string d = json_diff(it.value(), b.at(it.key()), rel_tol, path + "." + it.key());
      if (!d.empty()) return d;
    }
    for (auto it = b.begin(); it != b.end(); ++it)
      if (!a.contains(it.key())) return path + "." + it.key() + ": only in the second";
    return "";
  }
  if (a.is_array()) {
    if (a.size() != b.size()) return show();
    for (size_t i = 0; i < a.size(); ++i) {
      std::string d = json_diff(a[i], b[i], rel_tol, path + "[" + std::to_string(i) + "]");
      if (!d.empty()) return d;
    }
    return "";
  }
  return a == b ? "" : show();
}

}  // namespace expertmesh::testing
