#include "coordinator/imatrix/imatrix.h"

#include <fmt/format.h>
#include <mpi.h>

#include "common/check.h"
#include "coordinator/imatrix/gather.h"
#include "coordinator/imatrix/run.h"

namespace expertmesh::coordinator::imatrix {

namespace {

// The peer's llama_init_from_model pads n_ctx to the KV padding, 256 with flash attention
// (on by default in ik_llama.cpp), and compute_imatrix cuts chunks of llama_n_ctx().
constexpr int64_t kCtxPad = 256;

}  // namespace

Result<ChunkGeometry> chunk_geometry(const ImatrixOptions& opt) {
  if (opt.n_ctx <= 0) return Status::InvalidArgument(fmt::format("-c: must be > 0, got {}", opt.n_ctx));
  if (opt.n_batch <= 0) return Status::InvalidArgument(fmt::format("-b: must be > 0, got {}", opt.n_batch));
  if (opt.n_ubatch <= 0) return Status::InvalidArgument(fmt::format("-ub: must be > 0, got {}", opt.n_ubatch));
  ChunkGeometry g;
  g.n_ctx = (opt.n_ctx + kCtxPad - 1) / kCtxPad * kCtxPad;
  g.n_batch = std::min(opt.n_batch, opt.n_ctx);
  g.n_ubatch = std::min(g.n_batch, opt.n_ubatch);
  return g;
}

ImatrixRun::ImatrixRun(const RankContext& ctx, const ImatrixOptions& opt, ChunkGeometry g)
    : ctx_(ctx),
      opt_(opt),
      g_(g),
      stats_(CollectRules{opt.process_output, opt.layer_similarity, opt.output_tensor_name}),
      base_(stats_.rules()),
      sim_(opt.output_tensor_name) {
  st_.first_chunk = opt.from_chunk;
  st_.n_ctx = g.n_ctx;
  st_.n_batch = g.n_batch;
  st_.n_ubatch = g.n_ubatch;
  st_.text_file = opt.text_file;
}

Status ImatrixRun::load_in_file(const std::string& path) {
  std::printf("imatrix: loading imatrix from '%s'\n", path.c_str());
  EM_ASSIGN_OR_RETURN(Imatrix dat, Imatrix::read(path));
  if (dat.entries.empty()) return Status::InvalidArgument(fmt::format("{}: no data in imatrix file", path));
  auto st = read_state(state_path(path));
  if (!st.ok() && st.status().code() != StatusCode::kNotFound) return st.status();
  if (st.ok() && dat.last_call && st->last_call == *dat.last_call) {
    EM_RETURN_IF_ERROR(base_.merge(dat, &st->counts, path));
    return merge_unstored(*st, base_, state_path(path));
  }
  if (st.ok())
    std::fprintf(stderr, "imatrix: %s does not match %s (saved at another point); using the .dat alone\n",
                 state_path(path).c_str(), path.c_str());
  return base_.merge(dat, nullptr, path);
}

Status ImatrixRun::load_resume() {
  const std::string& path = opt_.out_file;
  if (!opt_.in_files.empty())
    return Status::InvalidArgument("--resume: the saved run already contains its --in-file data; drop --in-file");
  auto dat = Imatrix::read(path);
  if (!dat.ok())
    return Status::InvalidArgument(fmt::format("--resume: cannot read the saved run: {}", dat.status().message()));
  auto st = read_state(state_path(path));
  if (!st.ok()) {
    return Status::InvalidArgument(fmt::format(
        "--resume: {} ({}); without it the run cannot continue exactly: use --from-chunk N --in-file {} instead",
        state_path(path), st.status().message(), path));
  }
  if (!dat->last_call || st->last_call != *dat->last_call)
    return Status::InvalidArgument(
        fmt::format("--resume: {} does not belong to {} (saved at another point)", state_path(path), path));
  auto differs = [&](const char* flag, int64_t saved, int64_t now) -> Status {
    if (saved == now) return Status::Ok();
    return Status::InvalidArgument(
        fmt::format("--resume: {} was run with {} giving {}, this command gives {}", path, flag, saved, now));
  };
  EM_RETURN_IF_ERROR(differs("-c", st->n_ctx, g_.n_ctx));
  EM_RETURN_IF_ERROR(differs("-b", st->n_batch, g_.n_batch));
  EM_RETURN_IF_ERROR(differs("-ub", st->n_ubatch, g_.n_ubatch));
  if (st->text_file != opt_.text_file)
    return Status::InvalidArgument(
        fmt::format("--resume: {} was computed on -f {}, not {}", path, st->text_file, opt_.text_file));
  EM_RETURN_IF_ERROR(base_.merge(*dat, &st->counts, path));
  EM_RETURN_IF_ERROR(merge_unstored(*st, base_, state_path(path)));
  st_ = *st;
  std::fprintf(stderr, "imatrix: resuming %s after %lld chunks (from chunk %lld of the text)\n", path.c_str(),
               (long long)st_.chunks_done, (long long)(st_.first_chunk + st_.chunks_done));
  return Status::Ok();
}

Status ImatrixRun::load_inputs() {
  Status s = Status::Ok();
  if (ctx_.is_root()) {
    if (opt_.resume) {
      s = load_resume();
    } else {
      for (const std::string& f : opt_.in_files) {
        s = load_in_file(f);
        if (!s.ok()) break;
      }
    }
    base_calls_ = base_.last_call();
  }
  EM_RETURN_IF_ERROR(ctx_.agree(s));
  if (ctx_.world > 1) {
    // Every rank needs the run position to walk the same chunks, and the call base for the
    // save schedule.
    int64_t pos[5] = {st_.first_chunk, st_.chunks_done, st_.bad_chunks, st_.ppl_count, base_calls_};
    EM_MPI_CHECK(MPI_Bcast(pos, 5, MPI_INT64_T, 0, ctx_.comm));
    st_.first_chunk = pos[0];
    st_.chunks_done = pos[1];
    st_.bad_chunks = pos[2];
    st_.ppl_count = pos[3];
    base_calls_ = int32_t(pos[4]);
  }
  return Status::Ok();
}

Status ImatrixRun::save(const std::string& path) {
  EM_ASSIGN_OR_RETURN(std::optional<ImatrixStats> gathered, gather_stats(ctx_, stats_));
  Status s = Status::Ok();
  if (ctx_.is_root()) {
    // What this run computed, with the ncall of its kept calls (the same for any placement).
    ImatrixStats& computed = gathered ? *gathered : stats_;
    computed.set_ncalls(calls_done_);
    ImatrixStats all(stats_.rules());
    all.mutable_entries() = base_.entries();
    s = add_stats(all, computed);
    if (s.ok()) {
      const Imatrix dat = all.to_dat(opt_.text_file, stderr);
      s = dat.write(path);
      ImatrixState st = st_;
      st.last_call = *dat.last_call;
      const SegmentCounts counts = all.segment_counts();
      for (const ImatrixEntry& e : dat.entries) st.counts.emplace(e.name, counts.at(e.name));
      for (const auto& [name, e] : all.entries())
        if (!dat.find(name)) st.unstored.emplace(name, e);
      if (s.ok()) s = write_state(state_path(path), st);
      if (s.ok() && opt_.verbosity > 0)
        std::fprintf(stderr, "\nsave_imatrix: stored collected data after %d chunks in %s\n", *dat.last_call,
                     path.c_str());
      res_.last_call = *dat.last_call;
    }
  }
  return ctx_.agree(s);
}

Result<ImatrixResult> run_imatrix(const RankContext& ctx, worker::Engine* engine, const Tokenizer* tok,
                                  const ImatrixOptions& opt, FILE* out) {
  EM_ASSIGN_OR_RETURN(ChunkGeometry g, chunk_geometry(opt));
  if (opt.out_freq <= 0) return Status::InvalidArgument(fmt::format("-ofreq: must be > 0, got {}", opt.out_freq));
  if (opt.save_freq < 0)
    return Status::InvalidArgument(fmt::format("--save-frequency: must be >= 0, got {}", opt.save_freq));
  if (opt.from_chunk < 0)
    return Status::InvalidArgument(fmt::format("--from-chunk: must be >= 0, got {}", opt.from_chunk));
  if (opt.resume && opt.from_chunk > 0)
    return Status::InvalidArgument("--resume takes the start chunk from the saved run; drop --from-chunk");
  ImatrixRun run(ctx, opt, g);
  EM_RETURN_IF_ERROR(run.load_inputs());
  if (opt.in_files.size() > 1) {
    if (ctx.is_root()) std::printf("imatrix: saving combined imatrix to '%s'\n", opt.out_file.c_str());
    EM_RETURN_IF_ERROR(run.save(opt.out_file));
  }
  if (opt.text_file.empty()) {  // merge only
    if (opt.in_files.size() == 1) EM_RETURN_IF_ERROR(run.save(opt.out_file));
    return run.result();
  }
  if (engine == nullptr || tok == nullptr) return Status::Internal("imatrix: a model is needed to compute");
  EM_RETURN_IF_ERROR(run.compute(*engine, *tok, out));
  EM_RETURN_IF_ERROR(run.save(opt.out_file));
  if (opt.layer_similarity && ctx.is_root()) run.similarity().print(out);
  return run.result();
}

}  // namespace expertmesh::coordinator::imatrix
