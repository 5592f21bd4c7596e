#!/usr/bin/env bash
# CPU hot path against the peer (issue 13): `expertmesh bench -p 512 -n 128 -t 2 -r 2` on the bench
# model (a scaled-down Qwen3-30B-A3B, 0.68B params) in BF16 and quantized --pure to Q8_0 Q4_0
# Q4_K IQ4_KS; with IK_BIN, the peer's `llama-bench` on the same file right after ours. Prints one
# table: type, ours / peer pp512 and their ratio, ours / peer tg128 and their ratio, our tg128
# weight traffic (GB/s, from bench's second table) and its fraction of `bench --bandwidth`.
#
#   bench/hot_path.sh [extra expertmesh bench flags, e.g. --bf16-activations]
#
# Builds nothing. Environment:
#   EXPERTMESH_BIN  our binary, or the folder holding it (default build/bin/expertmesh)
#   IK_BIN          the peer's build folder (llama-bench in it or in its bin/), or llama-bench
#                   itself; unset: ours alone
#   IK_FLAGS        extra flags for the peer's llama-bench (default none)
#   BENCH_DIR       work folder (default /tmp/expertmesh-bench); models already there are reused,
#                   each run's raw tables are kept there (ours-TYPE.md, peer-TYPE.md)
#   TYPES           default "BF16 Q8_0 Q4_0 Q4_K IQ4_KS"
#   P N T R         prompt tokens, generated tokens, threads, repetitions (default 512 128 2 2)
#   ROUNDS          rounds per type (default 1): each round measures the bandwidth, then runs ours
#                   and the peer one after the other; the table shows per column the median over
#                   the rounds (ratios and bandwidth fractions taken per round, then the median)
#                   and, with ROUNDS > 1, the lowest ratio in parentheses. These machines are
#                   shared and noisy (a pair of runs alone can move 10-20%): use ROUNDS >= 3.
set -euo pipefail
extra=("$@")
bin="${EXPERTMESH_BIN:-build/bin/expertmesh}"
[[ -d "$bin" ]] && bin="$bin/expertmesh"
[[ -x "$bin" ]] || { echo "hot_path: $bin is not an executable (set EXPERTMESH_BIN)" >&2; exit 1; }
peer=""
if [[ -n "${IK_BIN:-}" ]]; then
  for c in "$IK_BIN" "$IK_BIN/llama-bench" "$IK_BIN/bin/llama-bench"; do
    [[ -f "$c" && -x "$c" ]] && { peer="$c"; break; }
  done
  [[ -n "$peer" ]] || { echo "hot_path: no llama-bench in IK_BIN=$IK_BIN (nor in its bin/)" >&2; exit 1; }
fi
read -r -a peer_flags <<<"${IK_FLAGS:-}"
read -r -a types <<<"${TYPES:-BF16 Q8_0 Q4_0 Q4_K IQ4_KS}"
P="${P:-512}" N="${N:-128}" T="${T:-2}" R="${R:-2}" ROUNDS="${ROUNDS:-1}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "hot_path: ROUNDS=$ROUNDS is not a positive integer" >&2; exit 1; }
dir="${BENCH_DIR:-/tmp/expertmesh-bench}"
mkdir -p "$dir"

base="$dir/bm-bf16.gguf"
if [[ ! -f "$base" ]]; then
  echo "hot_path: synthesizing $base" >&2
  "$bin" synth --arch qwen3moe --embd 2048 --layers 4 --heads 32 --kv-heads 4 --head-dim 128 --experts 32 \
    --top-k 8 --ff-exp 768 -o "$dir/.bm-bf16.partial.gguf" >&2
  mv "$dir/.bm-bf16.partial.gguf" "$base"
fi
model_of() {  # TYPE -> the file (quantized --pure from the BF16 base when missing)
  if [[ "$1" == BF16 ]]; then echo "$base"; return; fi
  local f="$dir/bm-$1.gguf"
  if [[ ! -f "$f" ]]; then
    echo "hot_path: quantizing $f" >&2
    "$bin" quantize --pure "$base" "$f" "$1" >&2  # writes $f.partial, renamed when complete
  fi
  echo "$f"
}

# Mean t/s of test $2 in the llama-bench markdown table of file $1 (columns found by header
# name, so extra columns of the peer's table do not matter); "-" when absent.
ts_of() {
  awk -v want="$2" '
    function trim(s) { gsub(/^ +| +$/, "", s); return s }
    /^\|/ {
      n = split($0, f, "|")
      if (!tc) { for (i = 2; i < n; ++i) { h = trim(f[i]); if (h == "test") tc = i; if (h == "t/s") sc = i }; next }
      if (trim(f[tc]) == want) { split(trim(f[sc]), v, " "); print v[1]; found = 1; exit }
      next
    }
    tc && !/^\|/ { exit }
    END { if (!found) print "-" }' "$1"
}
# GB/s of our weight-traffic row "$2 weights" in file $1; "-" when absent.
gbps_of() {
  awk -v want="$2 weights" '
    function trim(s) { gsub(/^ +| +$/, "", s); return s }
    /^\|/ { n = split($0, f, "|"); if (trim(f[2]) == want) { print trim(f[4]); found = 1; exit } }
    END { if (!found) print "-" }' "$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'; }
# Median of the numeric arguments ("-" ignored; "-" when none). $1 = printf format.
median() {
  local fmt="$1"
  shift
  printf '%s\n' "$@" | awk -v fmt="$fmt" '$1 != "-" { v[n++] = $1 + 0 }
    END {
      if (!n) { print "-"; exit }
      for (i = 1; i < n; ++i) for (j = i; j > 0 && v[j - 1] > v[j]; --j) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
      printf fmt "\n", n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
    }'
}
minimum() { printf '%s\n' "$@" | awk '$1 != "-" { if (!n++ || $1 + 0 < m) m = $1 + 0 } END { if (n) printf "%.2f\n", m; else print "-" }'; }
# "median" or, with ROUNDS > 1, "median (min)" of the ratios given.
ratio_cell() {
  local med
  med=$(median "%.2f" "$@")
  if ((ROUNDS > 1)) && [[ "$med" != "-" ]]; then echo "$med ($(minimum "$@"))"; else echo "$med"; fi
}

measure_bw() {
  local line
  line=$("$bin" bench --bandwidth -t "$T")
  echo "hot_path: $line" >&2
  awk '/^bandwidth:/ { print $2 }' <<<"$line"
}

rows=()
bws=()
for ty in "${types[@]}"; do
  m=$(model_of "$ty")
  o_pps=() o_tgs=() o_gbs=() p_pps=() p_tgs=() r_pps=() r_tgs=() fracs=()
  for ((round = 1; round <= ROUNDS; ++round)); do
    bw=$(measure_bw)
    bws+=("$bw")
    ours="$dir/ours-$ty.md"
    echo "hot_path: $ty (round $round/$ROUNDS): expertmesh bench ${extra[*]}" >&2
    "$bin" bench -m "$m" -p "$P" -n "$N" -t "$T" -r "$R" "${extra[@]}" >"$ours" 2>"$ours.log" \
      || { cat "$ours.log" >&2; exit 1; }
    cat "$ours" >&2
    o_pp=$(ts_of "$ours" "pp$P") o_tg=$(ts_of "$ours" "tg$N") o_gb=$(gbps_of "$ours" "tg$N")
    p_pp=- p_tg=-
    if [[ -n "$peer" ]]; then
      theirs="$dir/peer-$ty.md"
      echo "hot_path: $ty (round $round/$ROUNDS): llama-bench ${peer_flags[*]}" >&2
      "$peer" -m "$m" -p "$P" -n "$N" -t "$T" -r "$R" "${peer_flags[@]}" >"$theirs" 2>"$theirs.log" \
        || { cat "$theirs.log" >&2; exit 1; }
      cat "$theirs" >&2
      p_pp=$(ts_of "$theirs" "pp$P") p_tg=$(ts_of "$theirs" "tg$N")
    fi
    o_pps+=("$o_pp") o_tgs+=("$o_tg") o_gbs+=("$o_gb") p_pps+=("$p_pp") p_tgs+=("$p_tg")
    r_pps+=("$(ratio "$o_pp" "$p_pp")") r_tgs+=("$(ratio "$o_tg" "$p_tg")")
    fracs+=("$(awk -v g="$o_gb" -v b="$bw" 'BEGIN { if (g == "-" || b + 0 == 0) print "-"; else printf "%.1f\n", 100 * g / b }')")
  done
  frac=$(median "%.1f" "${fracs[@]}")
  [[ "$frac" != "-" ]] && frac="$frac%"
  rows+=("$(printf '| %-8s | %11s | %11s | %11s | %11s | %11s | %11s | %9s | %6s |' "$ty" \
    "$(median "%.2f" "${o_pps[@]}")" "$(median "%.2f" "${p_pps[@]}")" "$(ratio_cell "${r_pps[@]}")" \
    "$(median "%.2f" "${o_tgs[@]}")" "$(median "%.2f" "${p_tgs[@]}")" "$(ratio_cell "${r_tgs[@]}")" \
    "$(median "%.2f" "${o_gbs[@]}")" "$frac")")
done
bw=$(median "%.2f" "${bws[@]}")

echo
echo "threads $T, repetitions $R, rounds $ROUNDS, bandwidth $bw GB/s (median of ${#bws[@]}); extra flags: ${extra[*]:-none}; peer: ${peer:-none}"
echo
printf '| %-8s | %11s | %11s | %11s | %11s | %11s | %11s | %9s | %6s |\n' type "ours pp$P" "peer pp$P" ratio \
  "ours tg$N" "peer tg$N" ratio "tg GB/s" "of bw"
echo "|----------|------------:|------------:|------------:|------------:|------------:|------------:|----------:|-------:|"
printf '%s\n' "${rows[@]}"
