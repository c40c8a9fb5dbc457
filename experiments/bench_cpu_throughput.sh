#!/usr/bin/env bash
# experiments/bench_cpu_throughput.sh: CPU training throughput (tokens/s) of
# the default config and of the ~25M-parameter config, on the KJV byte shards
# that run.sh prepares. Appends a row per config to experiments/cpu-throughput.md.
#   bash experiments/bench_cpu_throughput.sh [STEPS]      (default 30 steps each)
# Throughput is the mean of the logged tokens/s after the first logged step
# (which includes start-up), with evaluation and saving off.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STEPS="${1:-30}"
PS=./build/postshare
[ -x $PS ] || bash scripts/setup.sh
source scripts/kjv_data.sh
kjv_data $PS > /dev/null
OUT=experiments/cpu-throughput.md
if [ ! -f $OUT ]; then
  cat > $OUT <<'HDR'
# CPU training throughput

Recorded by `experiments/bench_cpu_throughput.sh` (fp32 CPU backend, OpenBLAS
OpenMP build, all cores). tokens/s = optimizer-step tokens (B x T x grad_accum)
per second of wall time, averaged over the logged steps after the first.

| date | commit | machine | config | params | B x T | steps | tokens/s | s/step |
|---|---|---|---|---|---|---|---|---|
HDR
fi
CPU="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo none)"
for cfg in default 25m; do
  dir=$(mktemp -d)
  $PS train configs/$cfg.yaml --set run.out_dir=$dir --set train.steps=$STEPS \
    --set train.log_every=5 --set train.eval_every=0 --set train.save_final=false \
    --set data.val_batches=1 > $dir/log 2>&1
  params=$(grep -o '[0-9]* parameters' $dir/log | head -1 | cut -d' ' -f1)
  bt=$(grep -o '"step":[0-9]*,"loss"' $dir/*/metrics.jsonl | head -1 >/dev/null; \
       awk '/^  seq_len|^  batch_size/{print $2}' $dir/*/config.yaml | paste -sd' ' | awk '{print $2" x "$1}')
  tps=$(grep '"tokens_per_s"' $dir/*/metrics.jsonl | tail -n +2 | grep -o '"tokens_per_s":[0-9.]*' \
        | cut -d: -f2 | awk '{s+=$1; n++} END {printf "%.0f", s/n}')
  tokstep=$(echo "$bt" | awk '{print $1*$3}')
  sps=$(awk -v t="$tps" -v k="$tokstep" 'BEGIN{printf "%.3f", k/t}')
  echo "| $(date -u +%Y-%m-%d) | $COMMIT | $CPU | $cfg | $params | $bt | $STEPS | $tps | $sps |" | tee -a $OUT
  rm -rf $dir
done
