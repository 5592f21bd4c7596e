#!/usr/bin/env bash
# Quick start: installs the Debian packages expertmesh needs (or prints the apt command when not
# root), builds build/bin/expertmesh, writes a small random qwen3moe model and runs it on 2 MPI
# ranks on this machine. Runnable from any directory.
#
#   ./launch/quickstart.sh
#
# Environment: EXPERTMESH_CUDA=AUTO|ON|OFF (default AUTO), EXPERTMESH_CMAKE_ARGS, EXPERTMESH_JOBS
# (see launch/lib.sh); EXPERTMESH_QUICKSTART_DIR: where the demo model goes (default build/quickstart).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=launch/lib.sh
source launch/lib.sh

em_install_deps
em_build_main expertmesh

EM=build/bin/expertmesh
OUT="${EXPERTMESH_QUICKSTART_DIR:-build/quickstart}"
MODEL="$OUT/qwen3moe-tiny-f16.gguf"
mkdir -p "$OUT"
em_mpirun_init

step() { printf '\n==> %s\n' "$*"; }

# ---- 1. a small random MoE model ---------------------------------------------------------------
# qwen3moe: 2 layers, n_embd 256, 4 query heads / 2 KV heads of 64, 8 routed experts (top-2) of
# width 256, the built-in byte-level vocabulary of 512 tokens, F16 weights. Same seed, same bytes.
step "expertmesh synth -> $MODEL"
"$EM" synth --arch qwen3moe --layers 2 --embd 256 --heads 4 --kv-heads 2 --head-dim 64 \
  --experts 8 --top-k 2 --ff-exp 256 --vocab-size 512 --dtype f16 --seed 42 -o "$MODEL"

# ---- 2. inspect it on 2 ranks ------------------------------------------------------------------
# Every subcommand runs the same way on 1 rank or N ranks (all ranks in lockstep).
step "mpirun -np 2 expertmesh inspect $MODEL"
"${EM_MPIRUN[@]}" -np 2 "$EM" inspect "$MODEL"

# ---- 3. the placement on 2 ranks ----------------------------------------------------------------
# What each rank would hold under the default policy (ep: experts dealt, heads split), from the
# metadata alone, with the per-token traffic.
step "expertmesh plan -m $MODEL --np 2"
"$EM" plan -m "$MODEL" --np 2

# ---- 4. quantize on 2 ranks --------------------------------------------------------------------
# --pure: every quantizable tensor becomes IQ4_KS (ik_llama.cpp's type). Tensors are dealt to the
# ranks by cost and written at precomputed offsets; the file is identical to a 1-rank run.
QMODEL="$OUT/qwen3moe-tiny-IQ4_KS.gguf"
step "mpirun -np 2 expertmesh quantize --pure $MODEL $QMODEL IQ4_KS"
"${EM_MPIRUN[@]}" -np 2 "$EM" quantize --pure "$MODEL" "$QMODEL" IQ4_KS
step "expertmesh inspect --no-tensors $QMODEL"
"$EM" inspect --no-tensors "$QMODEL"

# ---- 5. generate text on 2 ranks --------------------------------------------------------------
# The weights are random, so the text is gibberish. Each rank computes its heads and experts;
# the tokens are the ones a single rank generates.
step "mpirun -np 2 expertmesh run -m $QMODEL -p 'Once upon a time' -n 32 --temp 0"
"${EM_MPIRUN[@]}" -np 2 "$EM" run -m "$QMODEL" -p "Once upon a time" -n 32 --temp 0

# ---- 6. perplexity on 2 ranks -----------------------------------------------------------------
# On wikitext-2 when ../shared is beside the repository, else on this README.
TEXT=../shared/golden/data/wiki.test.raw
[[ -f "$TEXT" ]] || TEXT=README.md
step "mpirun -np 2 expertmesh perplexity -m $QMODEL -f $TEXT -c 128 --chunks 4"
"${EM_MPIRUN[@]}" -np 2 "$EM" perplexity -m "$QMODEL" -f "$TEXT" -c 128 --chunks 4

# ---- 7. serve it on 2 ranks ------------------------------------------------------------------
# An OpenAI-compatible server (rank 0 answers HTTP, both ranks compute); --port 0 picks a free
# port and rank 0 prints it. One chat request, then SIGTERM stops every rank.
step "mpirun -np 2 expertmesh serve -m $QMODEL --port 0 --parallel 2 -c 512"
SERVE_LOG="$OUT/serve.log"
"${EM_MPIRUN[@]}" -np 2 "$EM" serve -m "$QMODEL" --port 0 --parallel 2 -c 512 2>"$SERVE_LOG" &
SERVE_PID=$!
URL=""
for _ in $(seq 1 300); do
  URL=$(sed -n 's/^serve: listening on //p' "$SERVE_LOG" | head -n 1)
  [[ -n "$URL" ]] && break
  kill -0 "$SERVE_PID" 2>/dev/null || break
  sleep 0.1
done
if [[ -z "$URL" ]]; then
  cat "$SERVE_LOG" >&2
  echo "quickstart: serve did not start" >&2
  exit 1
fi
echo "POST $URL/v1/chat/completions"
curl -sS "$URL/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":16,"temperature":0}'
echo
kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || true

step "quick start done: binary $EM, model $MODEL"
echo "next: ./launch/test.sh runs the test suite"
