#include "coordinator/quantize/job.h"

#include <fmt/format.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>

#include "coordinator/quantize/distribute.h"
#include "coordinator/quantize/manifest.h"
#include "coordinator/quantize/progress.h"
#include "kernels/quant/quant.h"

namespace expertmesh {
namespace {

std::string shape_string(const gguf::TensorInfo& t) {
  std::string s;
  for (uint32_t i = 0; i < t.n_dims; ++i) s += (i ? ", " : "") + std::to_string(t.ne[i]);
  return s;
}

// One line per tensor, like the peer's "[ i/ N] name - [shape], type = src, converting to dst".
std::string tensor_line(size_t i, size_t n, const gguf::TensorInfo& t, const TensorPlan& tp, const char* how) {
  std::string what =
      tp.action == TensorAction::kCopy
          ? std::string("copied       ")
          : fmt::format("{} {:>9}", tp.action == TensorAction::kRepack ? "repacked" : "to", type_name(tp.dst_type));
  return fmt::format("[{:4}/{:4}] {:>36} - [{}], type = {:>6}, {} {:>8.3f} MiB -> {:>8.3f} MiB{}{}", i + 1, n, t.name,
                     shape_string(t), type_name(t.type), what, tp.src_bytes / 1048576.0, tp.dst_bytes / 1048576.0,
                     tp.note.empty() ? "" : " (" + tp.note + ")", how);
}

Status produce_tensor(const gguf::TensorInfo& t, const TensorPlan& tp, int n_threads, std::vector<uint8_t>* out) {
  if (!t.data) return Status::Corruption(fmt::format("tensor '{}' has no data in the file", t.name));
  switch (tp.action) {
    case TensorAction::kCopy:
      out->assign(t.data, t.data + t.nbytes);
      return Status::Ok();
    case TensorAction::kRepack: {
      out->assign(static_cast<size_t>(tp.dst_bytes), 0);
      const int64_t nrows = t.ne[1] * t.ne[2] * t.ne[3];
      quant::quant_fns(tp.dst_type).repack(t.data, out->data(), nrows, t.ne[0]);
      return Status::Ok();
    }
    case TensorAction::kQuantize:
      return quantize_tensor(t, tp, n_threads, out);
  }
  return Status::Internal("unknown tensor action");
}

void print_dry_run(const gguf::File& in, const QuantPlan& plan) {
  const auto& tensors = in.tensors();
  for (size_t i = 0; i < tensors.size(); ++i)
    std::printf("%s\n", tensor_line(i, tensors.size(), tensors[i], plan.tensors[i], "").c_str());
}

void print_summary(const QuantPlan& plan, const Logger& log, bool to_stdout) {
  const double p = static_cast<double>(std::max<int64_t>(plan.n_params, 1));
  const std::string a = fmt::format("model size  = {:.3f} GiB ({:.2f} MiB, {:.3f} bpw)", plan.src_bytes / 1073741824.0,
                                    plan.src_bytes / 1048576.0, 8.0 * plan.src_bytes / p);
  const std::string b = fmt::format("quant size  = {:.3f} GiB ({:.2f} MiB, {:.3f} bpw)", plan.dst_bytes / 1073741824.0,
                                    plan.dst_bytes / 1048576.0, 8.0 * plan.dst_bytes / p);
  const std::string c = plan.n_fallback > 0 ? fmt::format("{} of {} quantized tensors required fallback quantization",
                                                          plan.n_fallback, plan.n_quantized)
                                            : std::string();
  if (to_stdout) {
    std::printf("%s\n%s\n%s%s", a.c_str(), b.c_str(), c.c_str(), c.empty() ? "" : "\n");
    return;
  }
  log.info("{}", a);
  log.info("{}", b);
  if (!c.empty()) log.warn("{}", c);
}

// Everything before the writing: input, imatrix, plan.
struct Prepared {
  std::unique_ptr<gguf::File> in;
  std::optional<Imatrix> imatrix;  // after include/exclude; empty ones are dropped
  QuantPlan plan;
};

Status prepare(const QuantizeJob& job, const Logger& log, bool root, Prepared* p) {
  EM_ASSIGN_OR_RETURN(p->in, gguf::File::open(job.input_path));
  if (!job.include_weights.empty() && !job.exclude_weights.empty())
    return Status::InvalidArgument("--include-weights and --exclude-weights cannot be used together");
  if (!job.imatrix_path.empty()) {
    EM_ASSIGN_OR_RETURN(Imatrix im, Imatrix::read(job.imatrix_path));
    Imatrix kept = filter_imatrix(im, job.include_weights, job.exclude_weights);
    if (root)
      log.info("loaded imatrix {}: {} entries, {} used{}", job.imatrix_path, im.entries.size(), kept.entries.size(),
               im.dataset.empty() ? "" : fmt::format(", dataset {}", im.dataset));
    if (!kept.entries.empty()) p->imatrix = std::move(kept);
  }
  EM_ASSIGN_OR_RETURN(p->plan, plan_quantization(*p->in, job.options, p->imatrix ? &*p->imatrix : nullptr));
  return Status::Ok();
}

// This rank's share of the tensors: produce, write, record; skip what a previous run finished.
Status write_own_tensors(const QuantizeJob& job, const Prepared& p, const OutputLayout& layout,
                         const std::string& fingerprint, const QuantizeRanks& ranks, const Logger& log) {
  const auto& tensors = p.in->tensors();
  std::vector<double> costs;
  for (const auto& tp : p.plan.tensors) costs.push_back(tensor_cost(tp));
  const std::vector<int> owner = deal_tensors(costs, ranks.world);
  const std::map<size_t, ManifestEntry> done = read_manifests(layout, fingerprint);
  EM_ASSIGN_OR_RETURN(PartialWriter writer, PartialWriter::open(layout, fingerprint, ranks.rank));
  int n_mine = 0;
  int64_t bytes_mine = 0;
  for (size_t i = 0; i < tensors.size(); ++i)
    if (owner[i] == ranks.rank) ++n_mine, bytes_mine += p.plan.tensors[i].src_bytes;
  QuantizeProgress progress(log, n_mine, bytes_mine, job.progress_bar);
  const char* kill_env = std::getenv("EXPERTMESH_QUANTIZE_TEST_KILL_AFTER");
  const long kill_after = kill_env ? std::strtol(kill_env, nullptr, 10) : -1;
  long written = 0;
  int resumed = 0;
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (owner[i] != ranks.rank) continue;
    const TensorPlan& tp = p.plan.tensors[i];
    if (auto it = done.find(i); it != done.end()) {
      EM_ASSIGN_OR_RETURN(bool ok, writer.verify(it->second, &bytes));
      if (ok) {
        ++resumed;
        progress.tensor_done(tensor_line(i, tensors.size(), tensors[i], tp, " [done in an earlier run]"), tp.src_bytes);
        continue;
      }
    }
    EM_RETURN_IF_ERROR(produce_tensor(tensors[i], tp, job.n_threads, &bytes));
    EM_RETURN_IF_ERROR(writer.write_tensor(i, tp.name, bytes));
    progress.tensor_done(tensor_line(i, tensors.size(), tensors[i], tp, ""), tp.src_bytes);
    if (++written == kill_after) std::raise(SIGKILL);
  }
  progress.finish();
  if (resumed > 0)
    log.info("resumed: {} tensors were already complete in {}", resumed, partial_path(layout.files[0].path));
  return Status::Ok();
}

}  // namespace

Status quantize_tensor(const gguf::TensorInfo& t, const TensorPlan& tp, int n_threads, std::vector<uint8_t>* out) {
  const int64_t ne0 = t.ne[0];
  const int64_t rows_per_slice = t.ne[1];
  const int64_t n_slices = t.ne[2] * t.ne[3];
  const int64_t nrows = rows_per_slice * n_slices;
  if (!t.data) return Status::Corruption(fmt::format("tensor '{}' has no data in the file", t.name));
  std::vector<float> f32(static_cast<size_t>(ne0 * nrows));
  Status s = quant::dequantize_rows(t.type, t.data, f32.data(), nrows, ne0, n_threads);
  if (!s.ok()) return s.with_context(fmt::format("tensor '{}'", t.name));
  for (int64_t r = 0; r < nrows; ++r)
    for (int64_t c = 0; c < ne0; ++c)
      if (!std::isfinite(f32[static_cast<size_t>(r * ne0 + c)]))
        return Status::OutOfRange(fmt::format("tensor '{}': row {} column {} is {}; refusing to quantize it", t.name, r,
                                              c, f32[static_cast<size_t>(r * ne0 + c)]));
  out->assign(static_cast<size_t>(tp.dst_bytes), 0);
  const int64_t slice_bytes = row_size(tp.dst_type, ne0) * rows_per_slice;
  std::vector<float> weights = tp.imatrix ? tp.imatrix->mean() : std::vector<float>();
  for (int64_t e = 0; e < n_slices; ++e) {
    const float* w = tp.imatrix ? weights.data() + e * ne0 : nullptr;
    s = quant::quantize_rows(tp.dst_type, f32.data() + e * rows_per_slice * ne0, out->data() + e * slice_bytes,
                             rows_per_slice, ne0, w, n_threads);
    if (!s.ok()) return s.with_context(fmt::format("tensor '{}'", t.name));
  }
  return Status::Ok();
}

void output_metadata(const gguf::File& in, const QuantizeJob& job, const Imatrix* imatrix, int32_t ftype,
                     gguf::Writer* w) {
  for (const auto& kv : in.kvs()) w->set(kv.key, kv.value);
  w->set("general.quantization_version", gguf::Value::u32(2));
  w->remove("split.no");
  w->remove("split.count");
  w->remove("split.tensors.count");
  for (const auto& o : job.kv_overrides) w->set(o.key, o.value);
  if (imatrix) {
    // The peer passes these as KV overrides with 127-byte string buffers.
    auto str = [&](const std::string& s) {
      return gguf::Value::string(job.hide_imatrix ? "top_secret" : s.substr(0, 127));
    };
    w->set("quantize.imatrix.file", str(job.imatrix_path));
    if (!imatrix->dataset.empty()) w->set("quantize.imatrix.dataset", str(imatrix->dataset));
    w->set("quantize.imatrix.entries_count",
           gguf::Value::i32(job.hide_imatrix ? 0 : static_cast<int32_t>(imatrix->entries.size())));
    if (imatrix->last_call && *imatrix->last_call > 0)
      w->set("quantize.imatrix.chunks_count", gguf::Value::i32(job.hide_imatrix ? 0 : *imatrix->last_call));
  }
  w->set("general.file_type", gguf::Value::u32(static_cast<uint32_t>(ftype)));
}

Status run_quantize_job(const QuantizeJob& job, const Logger& log) {
  return run_quantize_job(job, log, QuantizeRanks{});
}

Status run_quantize_job(const QuantizeJob& job, const Logger& log, const QuantizeRanks& ranks) {
  auto agree = [&](const Status& s) { return ranks.agree ? ranks.agree(s) : s; };
  const bool root = ranks.rank == 0;
  const auto t0 = std::chrono::steady_clock::now();
  Prepared p;
  EM_RETURN_IF_ERROR(agree(prepare(job, log, root, &p)));
  if (job.options.repack && p.plan.n_quantized == 0) {
    if (root) log.info("nothing to do for --repack: no tensor of {} has an interleaved layout", job.input_path);
    return Status::Ok();
  }
  if (job.dry_run) {
    if (root) {
      print_dry_run(*p.in, p.plan);
      print_summary(p.plan, log, true);
    }
    return Status::Ok();
  }
  const Imatrix* im = p.imatrix ? &*p.imatrix : nullptr;
  gguf::Writer meta;  // GGUF v3, as the peer writes
  output_metadata(*p.in, job, im, p.plan.ftype, &meta);
  Result<OutputLayout> layout = make_output_layout(meta, *p.in, p.plan, job.output_path, job.layout);
  EM_RETURN_IF_ERROR(agree(layout.status()));
  Result<std::string> fingerprint = layout_fingerprint(*layout, p.in->shard_paths());
  EM_RETURN_IF_ERROR(agree(fingerprint.status()));
  Status s = Status::Ok();
  if (root) {
    Result<bool> resume = prepare_partial_outputs(*layout, *fingerprint);
    s = resume.status();
    if (resume.ok() && *resume) log.info("resuming from {}", partial_path(layout->files[0].path));
  }
  EM_RETURN_IF_ERROR(agree(s));
  EM_RETURN_IF_ERROR(agree(write_own_tensors(job, p, *layout, *fingerprint, ranks, log)));
  EM_RETURN_IF_ERROR(agree(root ? finalize_outputs(*layout) : Status::Ok()));
  if (root) {
    print_summary(p.plan, log, false);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log.info("wrote {}{} in {:.2f} s on {} rank{}", layout->files[0].path,
             layout->files.size() > 1 ? fmt::format(" and {} more files", layout->files.size() - 1) : "", secs,
             ranks.world, ranks.world > 1 ? "s" : "");
  }
  return Status::Ok();
}

}  // namespace expertmesh
