// `expertmesh imatrix`: llama-imatrix's flags, statistics and .dat output (inventory §3).
//
//   expertmesh imatrix -m MODEL -f TEXT [-o imatrix.dat] [-c 512] [-b 2048] [-ub 512] [--chunks N]
//                      [--from-chunk N] [--in-file F ...] [-ofreq 10] [--save-frequency 0]
//                      [--process-output] [--no-ppl] [-lsim] [-t N] [--skip-bad-chunks] [--resume]
//   expertmesh imatrix --in-file A --in-file B -o C     (merge only, no model needed)
//
// Under mpirun every rank computes its share of each chunk (--placement ep|pp|hybrid|FILE, -ot,
// --cluster, as perplexity): each accumulates the statistics of the inputs it reads (its heads,
// its experts, its layers), rank 0 drives the chunks, scores the PPL and gathers and writes at
// every save; the .dat and its state are byte-identical for any rank count and placement.
#include <fmt/format.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/compat_flags.h"
#include "cli/engine_setup.h"
#include "cli/flags.h"
#include "coordinator/imatrix/imatrix.h"
#include "model/model.h"
#include "model/tokenizer/tokenizer.h"
#include "worker/engine.h"

namespace expertmesh::cli {

namespace {

void add_imatrix_flags(FlagSet& fs, coordinator::imatrix::ImatrixOptions& o, std::string& model, int& threads,
                       bool& no_ppl) {
  fs.add_string({"-m", "--model"}, &model, "FILE", "model GGUF (first shard of a split model)");
  fs.add_string({"-f", "--file"}, &o.text_file, "FILE", "calibration text (stored in the .dat as the dataset)");
  fs.add_string({"-o", "--output-file"}, &o.out_file, "FILE", "output .dat (default imatrix.dat)");
  fs.add_int({"-c", "--ctx-size"}, &o.n_ctx, "N",
             "context size (default 512; chunks are N rounded up to 256 as the peer)");
  fs.add_int({"-b", "--batch-size"}, &o.n_batch, "N", "tokens per decode (default 2048, at most -c)");
  fs.add_int({"-ub", "--ubatch-size"}, &o.n_ubatch, "N", "tokens per forward call (default 512)");
  fs.add_int({"--chunks"}, &o.n_chunks, "N",
             "process at most N chunks (default all; with --resume counted from the run's start)");
  fs.add_int({"--chunk", "--from-chunk"}, &o.from_chunk, "N", "skip the first N chunks of the text");
  fs.add_list({"--in-file"}, &o.in_files, "FILE", "merge an existing .dat first (repeatable)");
  fs.add_int({"-ofreq", "--output-frequency"}, &o.out_freq, "N", "rewrite -o every N forward calls (default 10)");
  fs.add_int({"--save-frequency"}, &o.save_freq, "N",
             "also keep snapshots <out>.at_<N> every N calls (default 0: off)");
  fs.add_bool({"--process-output"}, &o.process_output, "also collect the output tensor");
  fs.add_string({"--output-tensor-name"}, &o.output_tensor_name, "NAME", "name of the output tensor (output.weight)");
  fs.add_bool({"--no-ppl"}, &no_ppl, "do not compute perplexity");
  fs.add_bool({"-lsim", "--layer-similarity"}, &o.layer_similarity, "collect and print layer similarity");
  fs.add_int({"-t", "--threads"}, &threads, "N", "compute threads");
  fs.add_int({"--verbosity"}, &o.verbosity, "N",
             "0: quiet saves; 1: report each save (default); 2: also what each rank accumulated");
  fs.add_bool({"--skip-bad-chunks"}, &o.skip_bad_chunks, "drop a chunk with a NaN/Inf activation and go on");
  fs.add_bool({"--resume"}, &o.resume, "continue the run saved in -o (needs its .state file)");
}

}  // namespace

Status cmd_imatrix(RankContext& ctx, const std::vector<std::string>& args) {
  coordinator::imatrix::ImatrixOptions opt;
  std::string model_path;
  int threads = ctx.n_threads;
  bool no_ppl = false;
  placement::PlacementFlags pf;
  RuntimeFlags rf;
  FlagSet fs("imatrix", "importance matrix of a model's weights on a calibration text (llama-imatrix)");
  add_imatrix_flags(fs, opt, model_path, threads, no_ppl);
  placement::add_placement_flags(fs, &pf);
  PeerCompatFlags compat;
  add_peer_compat_flags(fs, &compat, CompatScope{false, false});
  add_runtime_flags(fs, &rf);
  EM_RETURN_IF_ERROR(fs.parse(args));
  opt.compute_ppl = !no_ppl;
  if (fs.help_requested()) {
    if (ctx.is_root()) std::printf("%s", fs.usage().c_str());
    return Status::Ok();
  }
  note_peer_compat_flags(ctx, "imatrix", compat);
  if (opt.text_file.empty() && opt.in_files.empty())
    return Status::InvalidArgument("-f: a calibration text is required (or --in-file files to merge)");
  if (!opt.text_file.empty() && model_path.empty()) return Status::InvalidArgument("-m: a model is required");
  if (opt.text_file.empty() && opt.resume) return Status::InvalidArgument("--resume: -f is required");
  if (threads <= 0) return Status::InvalidArgument(fmt::format("-t: must be > 0, got {}", threads));
  EM_ASSIGN_OR_RETURN(auto geometry, coordinator::imatrix::chunk_geometry(opt));
  if (opt.text_file.empty()) {  // merge only: rank 0 reads and writes, the others agree
    EM_ASSIGN_OR_RETURN(auto r, coordinator::imatrix::run_imatrix(ctx, nullptr, nullptr, opt, stdout));
    (void)r;
    return Status::Ok();
  }
  EM_ASSIGN_OR_RETURN(auto model, load_model_agreed(ctx, model_path));
  auto tok = Tokenizer::from_gguf(model->file());
  EM_RETURN_IF_ERROR(ctx.agree(tok.status()));
  worker::EngineOptions eo;
  eo.n_threads = threads;
  if (compat.no_mmap) eo.weights = worker::WeightSource::kRead;
  eo.n_ctx = geometry.n_ctx;
  eo.n_batch_max = geometry.n_ubatch;
  EM_ASSIGN_OR_RETURN(EngineSetup setup, setup_engine(ctx, std::move(model), pf, eo));
  if (ctx.is_root()) {
    if (geometry.n_ctx != opt.n_ctx)
      std::fprintf(stderr, "imatrix: n_ctx %lld padded to %lld (chunks of %lld tokens, as the peer)\n",
                   (long long)opt.n_ctx, (long long)geometry.n_ctx, (long long)geometry.n_ctx);
    std::fprintf(stderr, "imatrix: %s, %s kernels, %d threads, %d rank%s\n", model_path.c_str(),
                 setup.engine->kernels().name, threads, ctx.world, ctx.world > 1 ? "s" : "");
  }
  auto r = coordinator::imatrix::run_imatrix(ctx, setup.engine.get(), tok->get(), opt, stdout);
  // A rank that failed inside a chunk tells the others, which may be waiting in the engine (as
  // run_lockstep does); agreed failures (Aborted) have nothing new to tell.
  if (!r.ok() && r.status().code() != StatusCode::kAborted) setup.cluster->notify_failure(r.status());
  EM_RETURN_IF_ERROR(r.status());
  return report_runtime(ctx, setup, "imatrix", r->chunks_done * geometry.n_ctx, rf);
}

}  // namespace expertmesh::cli
