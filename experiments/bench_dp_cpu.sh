#!/usr/bin/env bash
# experiments/bench_dp_cpu.sh: data-parallel throughput on the CPU. For the
# default and the ~25M config, the same global batch three ways on this
# machine's cores: 1 rank (all cores, grad_accum 2), 2 MPI ranks (half the
# cores each) with the gradient reduction overlapped with the backward, and 2
# ranks with one reduce-scatter after it. Appends rows to experiments/dp-cpu.md.
#   bash experiments/bench_dp_cpu.sh [STEPS]     (default 30 steps per run)
# tokens/s: mean of the logged values after the first (start-up) one.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STEPS="${1:-30}"
PS=./build/postshare
[ -x $PS ] || bash scripts/setup.sh
command -v mpirun > /dev/null || { echo "bench_dp_cpu: no mpirun (apt-get install openmpi-bin)"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source scripts/kjv_data.sh
kjv_data $PS > /dev/null
OUT=experiments/dp-cpu.md
if [ ! -f $OUT ]; then
  cat > $OUT << 'HDR'
# Data-parallel throughput on the CPU

Recorded by `experiments/bench_dp_cpu.sh`: the same global batch (B x grad_accum x
ranks sequences) run as 1 rank on all cores with grad_accum 2, and as 2 MPI ranks
(`mpirun -np 2 --bind-to none`, half the cores each, grad_accum 1) with the gradient
reduction overlapped with the backward (`comm_overlap: true`) or after it. tokens/s
counts the global batch, averaged over the logged steps after the first.

| date | commit | machine | config | params | global batch | run | tokens/s | s/step |
|---|---|---|---|---|---|---|---|---|
HDR
fi
NCORES=$(nproc)
CPU="$NCORES cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
COMMIT="$(git rev-parse --short HEAD 2> /dev/null || echo none)"
HALF=$((NCORES / 2 > 0 ? NCORES / 2 : 1))
mean_tps() {
  grep '"tokens_per_s"' "$1" | tail -n +2 | grep -o '"tokens_per_s":[0-9.]*' | cut -d: -f2 |
    awk '{s+=$1; n++} END {printf "%.0f", s/n}'
}
for cfg in default 25m; do
  B=$(awk '/^  batch_size:/{print $2}' configs/$cfg.yaml)
  T=$(awk '/^  seq_len:/{print $2}' configs/$cfg.yaml)
  COMMON=(train configs/$cfg.yaml --set train.steps=$STEPS --set train.log_every=5
    --set train.eval_every=0 --set train.save_final=false --set data.val_batches=1
    --set checkpoint.every=0)
  for run in "1 rank x $NCORES threads" "2 ranks x $HALF threads, overlapped" \
    "2 ranks x $HALF threads, after backward"; do
    dir=$(mktemp -d)
    case "$run" in
      1*) $PS "${COMMON[@]}" --set run.out_dir=$dir --set threads=$NCORES --set train.grad_accum=2 \
        > $dir/log 2>&1 ;;
      *overlapped) mpirun -np 2 --bind-to none $PS "${COMMON[@]}" --set run.out_dir=$dir \
        --set threads=$HALF --set comm_overlap=true > $dir/log 2>&1 ;;
      *) mpirun -np 2 --bind-to none $PS "${COMMON[@]}" --set run.out_dir=$dir \
        --set threads=$HALF --set comm_overlap=false > $dir/log 2>&1 ;;
    esac
    params=$(grep -o '[0-9]* parameters' $dir/log | head -1 | cut -d' ' -f1)
    tps=$(mean_tps $dir/*/metrics.jsonl)
    sps=$(awk -v t="$tps" -v k="$((2 * B * T))" 'BEGIN{printf "%.3f", k/t}')
    echo "| $(date -u +%Y-%m-%d) | $COMMIT | $CPU | $cfg | $params | $((2 * B)) x $T | $run | $tps | $sps |" |
      tee -a $OUT
    rm -rf $dir
  done
done
