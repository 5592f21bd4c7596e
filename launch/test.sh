#!/usr/bin/env bash
# Test suite: installs missing Debian packages (or prints the apt command when not root), builds
# everything into build/, runs ctest (all labels but `gpu` unless a GPU is visible), then builds the
# libFuzzer target with clang into build-fuzz/ and fuzzes the GGUF parser for a bounded time.
# Prints one summary line; exits non-zero if anything failed. Runnable from any directory.
#
#   ./launch/test.sh
#
# Environment:
#   EXPERTMESH_REQUIRE_GOLDEN=1     golden tests fail (instead of skip) without ../shared/golden (CI)
#   EXPERTMESH_FUZZ_SECONDS=N       fuzzing time (default 60; 0 skips fuzzing)
#   EXPERTMESH_CTEST_JOBS=N         ctest parallelism (default 2)
#   EXPERTMESH_CTEST_ARGS="..."     extra ctest arguments, e.g. "-R gguf" or "-L unit"
#   EXPERTMESH_CUDA, EXPERTMESH_CMAKE_ARGS, EXPERTMESH_JOBS, EXPERTMESH_SHARED_DIR: see launch/lib.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=launch/lib.sh
source launch/lib.sh

START=$SECONDS
RESULTS=()  # "name: PASS|FAIL|SKIP (detail)"
FAILED=0
record() { RESULTS+=("$1: $2"); if [[ "$2" == FAIL* ]]; then FAILED=1; fi; }

summary() {
  local elapsed=$((SECONDS - START))
  echo
  echo "==== test.sh summary ===="
  local r
  for r in "${RESULTS[@]}"; do echo "  $r"; done
  if ((FAILED)); then
    echo "test.sh: FAILED in ${elapsed}s"
  else
    echo "test.sh: PASSED in ${elapsed}s"
  fi
}

SHARED="${EXPERTMESH_SHARED_DIR:-../shared}"
if [[ "${EXPERTMESH_REQUIRE_GOLDEN:-0}" == 1 && ! -d "$SHARED/golden" ]]; then
  em_log "EXPERTMESH_REQUIRE_GOLDEN=1 but $SHARED/golden does not exist (clone beside ../shared, or set EXPERTMESH_SHARED_DIR)"
  exit 1
fi

em_install_deps

# ---- build ---------------------------------------------------------------------------------------
if ! em_build_main all; then
  record build "FAIL"
  summary
  exit 1
fi
record build PASS

# ---- ctest ---------------------------------------------------------------------------------------
em_mpirun_init  # exports the Open MPI settings the mpi-labelled tests inherit
LABEL_ARGS=(-LE gpu)
GPU_NOTE="no GPU: label gpu excluded"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  LABEL_ARGS=()
  GPU_NOTE="GPU present: all labels"
fi
# shellcheck disable=SC2206  # word splitting of EXPERTMESH_CTEST_ARGS is intended
CTEST_EXTRA=(${EXPERTMESH_CTEST_ARGS:-})
em_log "ctest ($GPU_NOTE)"
if ctest --test-dir build "${LABEL_ARGS[@]}" --output-on-failure -j "${EXPERTMESH_CTEST_JOBS:-2}" "${CTEST_EXTRA[@]}"; then
  record ctest "PASS ($GPU_NOTE)"
else
  record ctest "FAIL ($GPU_NOTE; see the output above, or build/Testing/Temporary/LastTest.log)"
fi

# ---- libFuzzer: GGUF parser ----------------------------------------------------------------------
# A separate clang build in build-fuzz/ (CUDA off: nvcc is not built for clang hosts here). The
# target gguf_fuzz is defined in tests/fuzz/CMakeLists.txt; once that file exists, a missing
# target or any failure to build or run it fails the suite (never a silent skip).
fuzz() {
  local seconds="${EXPERTMESH_FUZZ_SECONDS:-60}"
  if [[ "$seconds" == 0 ]]; then
    record fuzz "SKIP (EXPERTMESH_FUZZ_SECONDS=0)"
    return
  fi
  if ! command -v clang++ >/dev/null 2>&1; then
    record fuzz "SKIP (clang++ not installed)"
    return
  fi
  if [[ ! -f tests/fuzz/CMakeLists.txt ]]; then
    record fuzz "SKIP (tests/fuzz/CMakeLists.txt does not exist yet)"
    return
  fi
  if ! em_configure build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
      -DEXPERTMESH_BUILD_FUZZ=ON -DEXPERTMESH_BUILD_TESTS=ON -DEXPERTMESH_BUILD_BENCH=OFF -DEXPERTMESH_CUDA=OFF; then
    record fuzz "FAIL (configure build-fuzz)"
    return
  fi
  if ! grep -q '/gguf_fuzz\.dir$' build-fuzz/CMakeFiles/TargetDirectories.txt 2>/dev/null; then
    record fuzz "FAIL (tests/fuzz/CMakeLists.txt exists but configures no gguf_fuzz target)"
    return
  fi
  if ! cmake --build build-fuzz -j "$(em_jobs)" --target gguf_fuzz; then
    record fuzz "FAIL (build gguf_fuzz)"
    return
  fi
  local bin=build-fuzz/bin/gguf_fuzz
  if [[ ! -x "$bin" ]]; then
    bin="$(find build-fuzz -type f -name gguf_fuzz -perm -u+x | head -n 1)"
  fi
  if [[ -z "$bin" || ! -x "$bin" ]]; then
    record fuzz "FAIL (gguf_fuzz built but its executable was not found)"
    return
  fi
  # Seeds: small golden GGUFs whole, and the first 64 KiB of every golden GGUF (headers, KVs,
  # tensor infos; the truncated data exercises the bounds checks). New inputs go to corpus/.
  local work=build-fuzz/fuzz seeds=build-fuzz/fuzz/seeds corpus=build-fuzz/fuzz/corpus
  rm -rf "$seeds"
  mkdir -p "$seeds" "$corpus" "$work/artifacts"
  local f n=0
  for f in "$SHARED"/golden/vocab/*.gguf "$SHARED"/golden/models/*.gguf "$SHARED"/golden/models/bad/*.gguf; do
    [[ -f "$f" ]] || continue
    if (($(stat -c %s "$f") <= 1048576)); then cp "$f" "$seeds/"; fi
    head -c 65536 "$f" >"$seeds/head64k-$(basename "$f")"
    n=$((n + 1))
  done
  if ((n == 0)); then
    em_log "no golden GGUF files under $SHARED/golden: fuzzing from an empty corpus"
  fi
  em_log "fuzzing the GGUF parser for ${seconds}s ($n seed files)"
  if "$bin" "$corpus" "$seeds" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 \
      -max_len=1048576 -print_final_stats=1 -artifact_prefix="$work/artifacts/" >"$work/fuzz.log" 2>&1; then
    record fuzz "PASS (${seconds}s, $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/fuzz.log" | grep -o '[0-9]*$' || echo '?') runs)"
  else
    tail -n 60 "$work/fuzz.log" >&2
    record fuzz "FAIL (crash or error; log $work/fuzz.log, reproducer under $work/artifacts/)"
  fi
}
fuzz

summary
exit "$FAILED"
