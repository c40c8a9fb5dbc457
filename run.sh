#!/usr/bin/env bash
# run.sh: the main job on the built-in default, from a fresh Debian machine.
# Installs what it needs, builds, prepares the King James Bible as byte-level
# token shards, trains a small LLaMA on it on the CPU (configs/default.yaml),
# then applies DirectShare to it (match + share at ratio 0.3, no training) and
# compares the validation loss of the original and the compact shared model.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
PS=./build/postshare
DATA=checkpoints/data/kjv
if ! ls $DATA/kjv_train_*.bin >/dev/null 2>&1; then
  mkdir -p $DATA
  bible "Gen1:1-Rev22:21" > $DATA/kjv.txt
  $PS prepare --tokenizer byte --out $DATA --prefix kjv --val-fraction 0.05 $DATA/kjv.txt
fi
$PS train configs/default.yaml "$@"
# DirectShare (docs/sharing.md): share 30% of the trained model's heads with no
# training, and compare its validation loss with the original's.
bash scripts/directshare.sh checkpoints/default/model "$DATA/kjv_val_*.bin" 0.3 \
  checkpoints/default/directshare --seq-len 128 --batch-size 16
