#!/usr/bin/env bash
# experiments/bench_match.sh: time `match` (share_match + share_select) on
# random weights with Llama-2-7B attention shapes (32 layers, 32 heads of dim
# 128, dim 4096) on the CPU, and record its peak memory (/usr/bin/time -v).
# Only Wq and Wk (match qk) are allocated, per layer: 4 GiB of fp32.
# Appends one row per run to experiments/match-7b.md.
#   bash experiments/bench_match.sh [RUNS] [extra bench_match options]   (default 3 runs)
# BUILD=dir selects the build folder (default build/).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNS="${1:-3}"; shift || true
BUILD="${BUILD:-build}"
[ -x "$BUILD/bench_match" ] || bash scripts/setup.sh
OUT=experiments/match-7b.md
if [ ! -f $OUT ]; then
  cat > $OUT <<'HDR'
# Head matching at Llama-2-7B attention shapes (CPU)

Recorded by `experiments/bench_match.sh`: `bench_match` (experiments/bench_match.c)
fills 32 layers of random Wq and Wk ([4096, 4096] each, fp32: 4 GiB in all), hands
them to `share_match` as per-layer pointers (no model is built), then runs the
plan selection at ratio 0.3 (307 of 1024 heads). `match s` is the similarity
computation: 496 layer pairs x 32 x 32 head pairs, i.e. sum over layer pairs of
Xq_l Xq_l'^T + Xk_l Xk_l'^T through cblas_sgemm (1.07 TFLOP). `peak RSS` is
/usr/bin/time -v's maximum resident set size of the whole process (the 4 GiB of
weights included). Rows with options in `command` change that: `--match qkv` also
reads Wv (6 GiB, 1.61 TFLOP); `--kv-heads 8` is a GQA shape (units are 8 KV groups
of 4 query heads per layer, Wk is [1024, 4096]). The machine is shared with other
jobs, so runs of the same command vary by up to 3x; compare the fastest.

| date | commit | machine | threads | command | match s | GFLOP/s | select s | wall s | peak RSS MiB |
|---|---|---|---|---|---|---|---|---|---|
HDR
fi
CPU="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/{print $2}') GiB"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD -- trainer 2>/dev/null || echo +changes)"
CMD="bench_match $*"
for i in $(seq "$RUNS"); do
  log=$(mktemp)
  /usr/bin/time -v "$BUILD/bench_match" "$@" > "$log" 2>&1
  res=$(grep '^RESULT' "$log")
  ms=$(echo "$res" | grep -o 'match_s=[0-9.]*' | cut -d= -f2)
  gf=$(echo "$res" | grep -o 'gflops=[0-9.]*' | cut -d= -f2)
  ss=$(echo "$res" | grep -o 'select_s=[0-9.]*' | cut -d= -f2)
  th=$(grep -o '| [0-9]* threads' "$log" | grep -o '[0-9]*')
  wall=$(grep 'Elapsed (wall clock)' "$log" | awk '{print $NF}' | awk -F: '{print $(NF-1)*60+$NF}')
  rss=$(grep 'Maximum resident set size' "$log" | awk '{printf "%.0f", $NF/1024}')
  echo "| $(date -u +%Y-%m-%d) | $COMMIT | $CPU | $th | \`$CMD\` | $ms | $gf | $ss | $wall | $rss |" | tee -a $OUT
  rm -f "$log"
done
