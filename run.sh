#!/usr/bin/env bash
# run.sh: the main job on the built-in default, from a fresh Debian machine.
# Installs what it needs, builds, prepares the King James Bible as byte-level
# token shards, and runs the whole PostShare pipeline on the CPU:
#   1. pretrain a small LLaMA (configs/default.yaml), or reuse it if present;
#   2. DirectShare it: match + share 30% of its heads with no training;
#   3. PostShare it (configs/postshare.yaml): post-train with the similarity
#      regularizer, then share the same heads;
#   4. print the results table (checkpoints/postshare/results.md).
# Extra arguments go to the pretraining run (step 1).
#
# ./run.sh smollm2 [--gpu] [--set KEY=VALUE ...]: the second job instead
# (scripts/smollm2_job.sh, docs/smollm2-job.md): SmolLM2-135M-Instruct, DirectShare,
# the best training-free method and PostShare at 10% and 30% of its KV groups, one
# results table (checkpoints/smollm2/results.md) and a plot. configs/smollm2.yaml
# (CPU budgets, under an hour on 2 cores), with --gpu configs/smollm2-gpu.yaml.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
if [ "${1:-}" = smollm2 ]; then
  shift
  CONFIG=configs/smollm2.yaml
  if [ "${1:-}" = --gpu ]; then CONFIG=configs/smollm2-gpu.yaml; shift; fi
  exec bash scripts/smollm2_job.sh "$CONFIG" "$@"
fi
PS=./build/postshare
source scripts/kjv_data.sh
kjv_data $PS
if [ -f checkpoints/default/results.json ] && [ $# -eq 0 ]; then
  echo "== 1. pretraining: reusing checkpoints/default/model (delete checkpoints/default to retrain)"
else
  echo "== 1. pretraining (configs/default.yaml)"
  $PS train configs/default.yaml "$@"
  rm -rf checkpoints/postshare  # PostShare's run was made from an older base model
fi
echo "== 2. DirectShare"
# DirectShare (docs/sharing.md): share 30% of the trained model's heads with no
# training, and compare its validation loss with the original's.
bash scripts/directshare.sh checkpoints/default/model "$DATA/kjv_val_*.bin" 0.3 \
  checkpoints/default/directshare --seq-len 128 --batch-size 16
echo "== 3. PostShare (configs/postshare.yaml; reused when it already ran on this base)"
$PS train configs/postshare.yaml
echo "== 4. results"
cat checkpoints/postshare/results.md
