#!/usr/bin/env bash
# run.sh: the main job on the built-in default, from a fresh Debian machine.
# Installs what it needs, builds, prepares the King James Bible as byte-level
# token shards, and trains a small LLaMA on it on the CPU (configs/default.yaml).
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
