#include "coordinator/quantize/job.h"

#include <chrono>
#include <cmath>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "kernels/quant/quant.h"

namespace expertmesh {
namespace {

std::string shape_string(const gguf::TensorInfo& t) {
  std::string s;
  for (uint32_t i = 0; i < t.n_dims; ++i) s += (i ? ", " : "") + std::to_string(t.ne[i]);
  return s;
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
        return Status::OutOfRange(fmt::format("tensor '{}': row {} column {} is {}; refusing to quantize it", t.name,
                                              r, c, f32[static_cast<size_t>(r * ne0 + c)]));
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

void output_metadata(const gguf::File& in, const QuantizeJob& job, const Imatrix* imatrix, gguf::Writer* w) {
  for (const auto& kv : in.kvs()) w->set(kv.key, kv.value);
  w->set("general.quantization_version", gguf::Value::u32(2));
  w->remove("split.no");
  w->remove("split.count");
  w->remove("split.tensors.count");
  if (imatrix) {
    w->set("quantize.imatrix.file", gguf::Value::string(job.hide_imatrix ? "top_secret" : job.imatrix_path));
    if (!imatrix->dataset.empty())
      w->set("quantize.imatrix.dataset", gguf::Value::string(job.hide_imatrix ? "top_secret" : imatrix->dataset));
    w->set("quantize.imatrix.entries_count",
           gguf::Value::i32(job.hide_imatrix ? 0 : static_cast<int32_t>(imatrix->entries.size())));
    if (imatrix->last_call && *imatrix->last_call > 0)
      w->set("quantize.imatrix.chunks_count", gguf::Value::i32(job.hide_imatrix ? 0 : *imatrix->last_call));
  }
  w->set("general.file_type", gguf::Value::u32(static_cast<uint32_t>(job.options.preset.ftype)));
}

Status run_quantize_job(const QuantizeJob& job, const Logger& log) {
  const auto t0 = std::chrono::steady_clock::now();
  EM_ASSIGN_OR_RETURN(std::unique_ptr<gguf::File> in, gguf::File::open(job.input_path));
  std::optional<Imatrix> imatrix;
  if (!job.imatrix_path.empty()) {
    EM_ASSIGN_OR_RETURN(Imatrix im, Imatrix::read(job.imatrix_path));
    imatrix = std::move(im);
    log.info("loaded imatrix {}: {} entries{}", job.imatrix_path, imatrix->entries.size(),
             imatrix->dataset.empty() ? "" : fmt::format(", dataset {}", imatrix->dataset));
  }
  const Imatrix* im = imatrix ? &*imatrix : nullptr;
  EM_ASSIGN_OR_RETURN(QuantPlan plan, plan_quantization(*in, job.options, im));

  gguf::Writer w;  // GGUF v3, as the peer writes
  output_metadata(*in, job, im, &w);
  // Every offset is known from the plan, so the header goes out first and each tensor is produced
  // only when the writer reaches it: memory stays at one tensor, not the whole output model.
  const auto& tensors = in->tensors();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const gguf::TensorInfo& t = tensors[i];
    gguf::WriteTensor wt;
    wt.name = t.name;
    wt.n_dims = t.n_dims;
    for (int d = 0; d < 4; ++d) wt.ne[d] = t.ne[d];
    wt.type = plan.tensors[i].dst_type;
    wt.nbytes = plan.tensors[i].dst_bytes;
    EM_RETURN_IF_ERROR(w.add_tensor(wt));
  }
  auto produce = [&](size_t i, std::vector<uint8_t>* out) -> Status {
    const gguf::TensorInfo& t = tensors[i];
    const TensorPlan& tp = plan.tensors[i];
    if (tp.action == TensorAction::kCopy) {
      if (!t.data) return Status::Corruption(fmt::format("tensor '{}' has no data in the file", t.name));
      out->assign(t.data, t.data + t.nbytes);
    } else {
      EM_RETURN_IF_ERROR(quantize_tensor(t, tp, job.n_threads, out));
    }
    log.info("[{:4}/{:4}] {:>36} - [{}], type = {:>6}, {} {:>8.3f} MiB -> {:>8.3f} MiB{}", i + 1, tensors.size(),
             t.name, shape_string(t), type_name(t.type),
             tp.action == TensorAction::kCopy ? "copied       " : fmt::format("to {:>9}", type_name(tp.dst_type)),
             tp.src_bytes / 1048576.0, tp.dst_bytes / 1048576.0, tp.fallback ? " (fallback: " + tp.note + ")" : "");
    return Status::Ok();
  };
  EM_ASSIGN_OR_RETURN(std::vector<std::string> written, w.write_streaming(job.output_path, {}, produce));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log.info("model size  = {:.2f} MiB ({:.3f} bpw)", plan.src_bytes / 1048576.0, 8.0 * plan.src_bytes / plan.n_params);
  log.info("quant size  = {:.2f} MiB ({:.3f} bpw)", plan.dst_bytes / 1048576.0, 8.0 * plan.dst_bytes / plan.n_params);
  if (plan.n_fallback > 0) log.warn("{} of {} tensors required fallback quantization", plan.n_fallback, tensors.size());
  log.info("wrote {} in {:.2f} s", written.empty() ? job.output_path : written.front(), secs);
  return Status::Ok();
}

}  // namespace expertmesh
