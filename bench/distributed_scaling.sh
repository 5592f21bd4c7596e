#!/usr/bin/env bash
# Distributed scaling on one host (issue 5): tg and pp of a synthetic qwen3moe model at
# np = 1 with 2 threads versus np = 2 (ep placement) with 1 thread each, the ratio np2/np1,
# and rank 0's communication time per token (bench --comm-stats).
#
#   bench/distributed_scaling.sh [BUILD_DIR] [-- extra bench flags]
#
# Environment: EM_BENCH_DIR (scratch folder, default a temp dir), MPIRUN (default mpirun),
# P / N / R (prompt tokens, generated tokens, repetitions: default 128 / 32 / 3).
set -euo pipefail
build="${1:-build}"
shift || true
[[ "${1:-}" == "--" ]] && shift
extra=("$@")
bin="$build/bin/expertmesh"
[[ -x "$bin" ]] || { echo "distributed_scaling: $bin not found (build the expertmesh target)" >&2; exit 1; }
mpirun_cmd="${MPIRUN:-mpirun} --oversubscribe"
[[ "$(id -u)" == 0 ]] && mpirun_cmd+=" --allow-run-as-root"
P="${P:-128}" N="${N:-32}" R="${R:-3}"
dir="${EM_BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$dir"
model="$dir/scaling-qwen3moe.gguf"
# 4 layers, n_embd 512, 32 experts (top-4) of 768 rows, bf16: ~310 MB, experts dominate.
[[ -f "$model" ]] || "$bin" synth --arch qwen3moe --layers 4 --embd 512 --heads 8 --kv-heads 4 --experts 32 \
  --top-k 4 --ff-exp 768 --dtype bf16 --seed 7 -o "$model" >&2

run() {  # np threads -> "pp_ts tg_ts pp_comm tg_comm" (tokens/s, ms/token)
  local out
  out=$($mpirun_cmd -np "$1" "$bin" bench -m "$model" -p "$P" -n "$N" -r "$R" -t "$2" --placement ep --comm-stats "${extra[@]}" 2>&1) || { echo "$out" >&2; return 1; }
  echo "$out" | grep -E '^\| qwen3moe|^bench: comm' >&2
  awk -v p="pp$P" -v n="tg$N" '
    $0 ~ "\\| *"p" *\\|" { split($0, f, "|"); split(f[8], v, " "); pp = v[1] }
    $0 ~ "\\| *"n" *\\|" { split($0, f, "|"); split(f[8], v, " "); tg = v[1] }
    $1 == "bench:" && $3 == p":" { pc = $4 }
    $1 == "bench:" && $3 == n":" { tc = $4 }
    END { print pp, tg, pc, tc }' <<<"$out"
}
read -r pp1 tg1 pc1 tc1 < <(run 1 2)
read -r pp2 tg2 pc2 tc2 < <(run 2 1)
printf '\n%-28s %12s %12s\n' "" "pp$P t/s" "tg$N t/s"
printf '%-28s %12.2f %12.2f\n' "np=1 x 2 threads" "$pp1" "$tg1"
printf '%-28s %12.2f %12.2f\n' "np=2 x 1 thread (ep)" "$pp2" "$tg2"
printf '%-28s %12.3f %12.3f\n' "ratio np2/np1" "$(echo "$pp2 / $pp1" | bc -l)" "$(echo "$tg2 / $tg1" | bc -l)"
printf '%-28s %12s %12s\n' "comm ms/token (np=2, rank 0)" "$pc2" "$tc2"
