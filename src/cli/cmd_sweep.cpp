// `expertmesh sweep`: quantize a list of recipes, measure each one's perplexity and KL-divergence
// against the base, and tabulate and plot the results (size against quality), on the cluster.
//
//   expertmesh sweep --base MODEL-bf16.gguf [--imatrix F.dat] --recipes FILE -f TEXT [-c 512]
//                    [--chunks N] [-b N] [--group-size R] -o DIR [-t N] [--placement ...]
//
// Phases (ARCHITECTURE.md §4): (1) the whole world evaluates the base once and saves its logits
// in the peer's --kl-divergence-base format; (2) the world splits into groups of R ranks
// (MPI_Comm_split), group g takes recipes g, g+G, g+2G, ...: quantize (reusing a finished file
// whose recipe hash matches), then PPL + KLD against the base logits; (3) rank 0 collects the
// finished rows into results.json / .csv / .md and two SVG plots and prints the Pareto front.
// Every finished step is on disk (sweep_steps.h), so a rerun after a crash skips what is done.
//
// Test hook (documented here, used only by tests/sweep/sweep_cli_test.cpp): with the environment
// variable EXPERTMESH_SWEEP_TEST_KILL_AFTER=K, a rank whose group has finished K recipes in this
// run kills itself with SIGKILL — a crash at a known point.
#include <fmt/format.h>
#include <mpi.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/sweep_steps.h"
#include "common/check.h"
#include "common/sha256.h"
#include "coordinator/sweep/svg_plot.h"

namespace expertmesh::cli {
namespace {

namespace fs = std::filesystem;
using coordinator::Recipe;
using coordinator::RecipeResult;

// The settings that make two sweeps' figures comparable; a DIR holding other settings is refused.
nlohmann::json settings_json(const SweepOptions& o, const std::string& base_id, const std::string& imat_id,
                             const std::string& text_id) {
  return {{"base", fs::absolute(o.base).string()},
          {"base_identity", base_id},
          {"imatrix_identity", imat_id},
          {"text_identity", text_id},
          {"n_ctx", o.n_ctx},
          {"chunks", o.n_chunks}};
}

// Rank 0: reads inputs, prepares DIR, checks that DIR belongs to this sweep. Returns the blob
// every rank needs: recipes text and identities.
Result<nlohmann::json> prepare(const SweepOptions& o) {
  EM_ASSIGN_OR_RETURN(std::string recipes, read_file(o.recipes_file));
  EM_ASSIGN_OR_RETURN(std::string base_id, file_identity(o.base));
  EM_ASSIGN_OR_RETURN(std::string text_id, file_identity(o.text_file));
  std::string imat_id;
  if (!o.imatrix.empty()) {
    EM_ASSIGN_OR_RETURN(std::string imat, read_file(o.imatrix));
    imat_id = sha256_hex(imat.data(), imat.size());
  }
  std::error_code ec;
  for (const char* sub : {"", "models", "results", "logs"}) {
    fs::create_directories(fs::path(o.out_dir) / sub, ec);
    if (ec) return Status::IoError(fmt::format("-o {}: cannot create {}: {}", o.out_dir, sub, ec.message()));
  }
  const nlohmann::json settings = settings_json(o, base_id, imat_id, text_id);
  const std::string settings_path = (fs::path(o.out_dir) / "sweep.json").string();
  if (fs::exists(settings_path)) {
    EM_ASSIGN_OR_RETURN(std::string old, read_file(settings_path));
    auto j = nlohmann::json::parse(old, nullptr, false);
    if (j != settings)
      return Status::InvalidArgument(fmt::format(
          "-o {}: holds a sweep with other settings (base, imatrix, text, -c or --chunks differ; see {}); use another "
          "directory",
          o.out_dir, settings_path));
  } else {
    EM_RETURN_IF_ERROR(write_file_atomic(settings_path, settings.dump(2) + "\n"));
  }
  return nlohmann::json{{"recipes", recipes}, {"base_id", base_id}, {"imat_id", imat_id}};
}

// A finished row for `name` with this hash, if DIR has one.
std::optional<RecipeResult> finished_row(const std::string& path, const std::string& hash) {
  auto text = read_file(path);
  if (!text.ok()) return std::nullopt;
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  auto r = coordinator::recipe_result_from_json(j);
  if (!r.ok() || !r->complete || r->recipe_hash != hash) return std::nullopt;
  return *r;
}

// One recipe on group g (collective over g.comm). Group rank 0 writes the row.
Status run_recipe(RankContext& g, const SweepOptions& o, const Recipe& r, const std::string& hash) {
  const fs::path dir(o.out_dir);
  const std::string row_path = (dir / "results" / (r.name + ".json")).string();
  const std::string log_path = (dir / "logs" / (r.name + ".log")).string();
  RecipeResult row;
  row.name = r.name;
  row.recipe = r.text;
  row.recipe_hash = hash;
  std::string model = r.gguf_path;
  if (!r.is_file()) {
    model = (dir / "models" / (r.name + ".gguf")).string();
    const std::string stamp = model + ".recipe";
    // Reuse the quantized file when it was finished for exactly this recipe.
    int reuse = 0;
    if (g.is_root()) {
      auto s = read_file(stamp);
      reuse = s.ok() && *s == hash && fs::exists(model);
    }
    EM_MPI_CHECK(MPI_Bcast(&reuse, 1, MPI_INT, 0, g.comm));
    if (reuse) {
      g.log.info("sweep: {}: reusing {} (recipe hash matches)", r.name, model);
    } else {
      EM_ASSIGN_OR_RETURN(row.quantize_seconds, quantize_recipe(g, o, r, model));
      if (g.is_root()) EM_RETURN_IF_ERROR(write_file_atomic(stamp, hash));
    }
  }
  row.model_path = model;
  EM_RETURN_IF_ERROR(evaluate_recipe(g, o, model, (dir / "base.kld").string(), log_path, &row));
  row.complete = true;
  if (g.is_root()) EM_RETURN_IF_ERROR(write_file_atomic(row_path, coordinator::to_json(row).dump(2) + "\n"));
  return Status::Ok();
}

void write_plots(const SweepOptions& o, const std::vector<RecipeResult>& rows, const RecipeResult& base) {
  for (int which = 0; which < 2; ++which) {
    coordinator::PlotSpec spec;
    spec.log_y = true;
    spec.x_label = "bits per weight";
    spec.y_label = which == 0 ? "perplexity" : "mean KL-divergence";
    spec.title = fmt::format("{} vs bpw — {} (-c {})", which == 0 ? "PPL" : "KLD", fs::path(o.base).filename().string(),
                             o.n_ctx);
    for (const auto& r : rows)
      if (r.complete && !r.is_base) spec.points.push_back({r.bpw, which == 0 ? r.ppl : r.kld_mean, r.name});
    if (which == 0) spec.references.push_back({base.ppl, fmt::format("base {:.4f}", base.ppl)});
    const auto svg = coordinator::render_svg(spec);
    (void)write_file_atomic((fs::path(o.out_dir) / (which == 0 ? "ppl-vs-bpw.svg" : "kld-vs-bpw.svg")).string(),
                            svg.svg);
  }
}

// Rank 0, at the end: the tables, plots and the Pareto front of every finished row.
Status report(const SweepOptions& o, const std::vector<Recipe>& recipes, const std::vector<std::string>& hashes) {
  const fs::path dir(o.out_dir);
  std::vector<RecipeResult> rows;
  auto base_text = read_file((dir / "base.json").string());
  if (!base_text.ok()) return base_text.status();
  const auto base_json = nlohmann::json::parse(*base_text, nullptr, false);
  EM_ASSIGN_OR_RETURN(RecipeResult base, coordinator::recipe_result_from_json(base_json));
  rows.push_back(base);
  int missing = 0;
  for (size_t i = 0; i < recipes.size(); ++i) {
    auto row = finished_row((dir / "results" / (recipes[i].name + ".json")).string(), hashes[i]);
    if (row)
      rows.push_back(*row);
    else
      ++missing;
  }
  // Partial results are never reported as final: without every row there is no results.json.
  if (missing > 0)
    return Status::Aborted(
        fmt::format("sweep: {} of {} recipes did not finish (finished rows are in {}); rerun the same "
                    "command to complete it",
                    missing, recipes.size(), (dir / "results").string()));
  EM_RETURN_IF_ERROR(
      write_file_atomic((dir / "results.json").string(), coordinator::results_to_json(rows).dump(2) + "\n"));
  EM_RETURN_IF_ERROR(write_file_atomic((dir / "results.csv").string(), coordinator::results_csv(rows)));
  const std::string md = coordinator::results_markdown(rows);
  EM_RETURN_IF_ERROR(write_file_atomic((dir / "results.md").string(), md));
  write_plots(o, rows, base);
  std::printf("\n%s\nPareto front (not beaten on both size and mean KLD):\n", md.c_str());
  for (size_t i : coordinator::pareto_front(rows))
    std::printf("  %-24s %8.4f GiB  %6.3f bpw  KLD %.6f  PPL %.4f\n", rows[i].name.c_str(), rows[i].size_gib,
                rows[i].bpw, rows[i].kld_mean, rows[i].ppl);
  std::printf("results: %s\n", (dir / "results.json").string().c_str());
  std::fflush(stdout);
  return Status::Ok();
}

}  // namespace

Status cmd_sweep(RankContext& ctx, const std::vector<std::string>& args) {
  SweepOptions o;
  o.threads = ctx.n_threads;
  FlagSet flags("sweep", "quantize recipes and measure PPL / KL-divergence against the base, on the cluster");
  flags.add_string({"--base"}, &o.base, "FILE", "the reference model (BF16 / Q8_0) every recipe is quantized from");
  flags.add_string({"--imatrix"}, &o.imatrix, "FILE",
                   "imatrix .dat passed to every quantize (unless a recipe sets one)");
  flags.add_string({"--recipes"}, &o.recipes_file, "FILE",
                   "recipes: 'NAME: TYPE [quantize flags]' or 'NAME: file=X.gguf'");
  flags.add_string({"-f", "--file"}, &o.text_file, "FILE", "text to evaluate (e.g. wiki.test.raw)");
  flags.add_string({"-o", "--output"}, &o.out_dir, "DIR", "results directory (resumes when it holds this sweep)");
  flags.add_int({"-c", "--ctx-size"}, &o.n_ctx, "N", "tokens per chunk (default 512)");
  flags.add_int({"--chunks"}, &o.n_chunks, "N", "evaluate at most N chunks (default all)");
  flags.add_int({"-b", "--batch-size"}, &o.n_batch, "N", "tokens per forward batch (default 2048)");
  flags.add_int({"--group-size"}, &o.group_size, "R", "ranks per group; groups evaluate different recipes (default 1)");
  flags.add_int({"-t", "--threads"}, &o.threads, "N", "compute threads per rank");
  placement::add_placement_flags(flags, &o.placement);
  EM_RETURN_IF_ERROR(flags.parse(args));
  if (flags.help_requested()) {
    if (ctx.is_root()) std::printf("%s", flags.usage().c_str());
    return Status::Ok();
  }
  for (auto [v, flag] :
       {std::pair{&o.base, "--base"}, {&o.recipes_file, "--recipes"}, {&o.text_file, "-f"}, {&o.out_dir, "-o"}})
    if (v->empty()) return Status::InvalidArgument(fmt::format("{}: required", flag));
  if (o.group_size < 1 || o.group_size > ctx.world)
    return Status::InvalidArgument(
        fmt::format("--group-size: must be in 1..{} (the number of ranks), got {}", ctx.world, o.group_size));
  if (o.threads <= 0 || o.n_ctx < 8 || o.n_batch <= 0)
    return Status::InvalidArgument("-t, -c (>= 8) and -b must be positive");

  // Rank 0 reads the inputs and prepares DIR; every rank gets the same recipes and identities.
  std::string blob;
  Status prep;
  if (ctx.is_root()) {
    auto p = prepare(o);
    prep = p.status();
    if (p.ok()) blob = p->dump();
  }
  EM_RETURN_IF_ERROR(ctx.agree(prep));
  EM_RETURN_IF_ERROR(broadcast_string(ctx.comm, 0, &blob));
  const auto info = nlohmann::json::parse(blob);
  EM_ASSIGN_OR_RETURN(auto recipes, coordinator::parse_recipes(info["recipes"].get<std::string>(), o.recipes_file));
  std::vector<std::string> hashes;
  for (const auto& r : recipes)
    hashes.push_back(
        coordinator::recipe_hash(r, info["base_id"].get<std::string>(), info["imat_id"].get<std::string>()));
  const fs::path dir(o.out_dir);

  // Phase 1: the base's logits, once, on every rank.
  int have_base = 0;
  if (ctx.is_root()) {
    auto b = finished_row((dir / "base.json").string(), "base");
    have_base = b.has_value() && fs::exists(dir / "base.kld");
  }
  EM_MPI_CHECK(MPI_Bcast(&have_base, 1, MPI_INT, 0, ctx.comm));
  if (!have_base) {
    ctx.log.info("sweep: evaluating the base {} on {} rank(s)", o.base, ctx.world);
    EM_ASSIGN_OR_RETURN(RecipeResult base,
                        evaluate_base(ctx, o, (dir / "base.kld").string(), (dir / "logs" / "base.log").string()));
    base.recipe_hash = "base";
    Status w;
    if (ctx.is_root()) w = write_file_atomic((dir / "base.json").string(), coordinator::to_json(base).dump(2) + "\n");
    EM_RETURN_IF_ERROR(ctx.agree(w));
  }

  // Phase 2: groups take recipes round-robin.
  const int n_groups = (ctx.world + o.group_size - 1) / o.group_size, color = ctx.rank / o.group_size;
  MPI_Comm gcomm = MPI_COMM_NULL;
  EM_MPI_CHECK(MPI_Comm_split(ctx.comm, color, ctx.rank, &gcomm));
  EM_ASSIGN_OR_RETURN(auto group, RankContext::create(gcomm, ctx.log.level()));
  group->n_threads = o.threads;
  Status first_failure;
  const auto t_start = std::chrono::steady_clock::now();
  int done_here = 0, mine = 0;
  for (size_t i = size_t(color); i < recipes.size(); i += size_t(n_groups)) ++mine;
  for (size_t i = size_t(color); i < recipes.size(); i += size_t(n_groups)) {
    const Recipe& r = recipes[i];
    int finished = 0;
    if (group->is_root())
      finished = finished_row((dir / "results" / (r.name + ".json")).string(), hashes[i]).has_value();
    EM_MPI_CHECK(MPI_Bcast(&finished, 1, MPI_INT, 0, group->comm));
    if (finished) {
      group->log.info("sweep: recipe {}/{} {}: finished earlier, skipped", i + 1, recipes.size(), r.name);
      continue;
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    const std::string eta =
        done_here > 0 ? fmt::format(", ETA {:.0f} s", elapsed / done_here * (mine - done_here)) : std::string();
    group->log.info("sweep: group {}/{}: recipe {}/{} {}: {}{}", color + 1, n_groups, i + 1, recipes.size(), r.name,
                    r.is_file() ? "evaluating" : "quantizing + evaluating", eta);
    Status s = run_recipe(*group, o, r, hashes[i]);
    ++done_here;
    if (const char* k = std::getenv("EXPERTMESH_SWEEP_TEST_KILL_AFTER"); k && std::atoi(k) == done_here)
      std::raise(SIGKILL);
    if (!s.ok()) {
      group->log.error("sweep: recipe {} failed: {}", r.name, s.message());
      if (first_failure.ok()) first_failure = s;
    }
  }
  group.reset();
  MPI_Comm_free(&gcomm);

  // Phase 3: every rank waits for every group; rank 0 reports what finished.
  Status all = ctx.agree(first_failure);
  Status rep;
  if (ctx.is_root()) {
    rep = report(o, recipes, hashes);
    if (!all.ok() && !rep.ok()) ctx.log.error("{}", rep.message());  // the failure itself is returned below
  }
  EM_RETURN_IF_ERROR(all);
  return ctx.agree(rep);
}

}  // namespace expertmesh::cli
