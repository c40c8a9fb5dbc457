#!/usr/bin/env bash
# experiments/directshare_memory.sh: measured memory of the original, compact
# and materialized forms of one model. A random MHA LLaMA whose weights are
# mostly attention (dim 1024, 8 layers, 16 heads, ffn 1024, byte vocab; 59.3M
# parameters, 33.6M in attention) is written by `postshare train` (one step),
# shared at ratios 0.25 and 0.5, and each form is evaluated on a few tokens
# under /usr/bin/time -v: the peak RSS of the whole `postshare eval` process
# (it holds the loaded weights and the model's copy of them), next to the file
# sizes and the weight bytes `share` reports. Writes experiments/directshare-memory.md.
#   bash experiments/directshare_memory.sh        (needs the KJV shards run.sh prepares)
# BUILD=dir selects the build folder (default build/).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="${BUILD:-build}"
PS="$BUILD/postshare"
[ -x "$PS" ] || bash scripts/setup.sh
source scripts/kjv_data.sh
kjv_data $PS > /dev/null
W=checkpoints/directshare-memory
OUT=experiments/directshare-memory.md
$PS train configs/tiny.yaml --set run.out_dir=$W --set run.name=big --set model.dim=1024 \
  --set model.n_layers=8 --set model.n_heads=16 --set model.n_kv_heads=16 \
  --set model.ffn_dim=1024 --set model.init_std=0.02 --set train.steps=1 \
  --set data.train="$DATA/kjv_train_*.bin" --set data.val="$DATA/kjv_val_*.bin" \
  --set data.val_batches=1 > $W.train.log 2>&1
M=$W/big/model
EV=(--data "$DATA/kjv_val_*.bin" --seq-len 32 --batch-size 1 --batches 2)

# measure NAME MODEL: one table row from /usr/bin/time -v of postshare eval
measure() {
  local log="$W/${1// /_}.eval.log"
  /usr/bin/time -v $PS eval "$2" "${EV[@]}" > "$log" 2>&1
  local params=$(grep -o '| [0-9]* parameters' "$log" | grep -o '[0-9]*')
  local wmib=$(grep -o 'weights [0-9.]* MiB' "$log" | awk '{print $2}')
  local rss=$(grep 'Maximum resident set size' "$log" | awk '{printf "%.1f", $NF/1024}')
  local st=$(stat -c %s "$2/model.safetensors")
  local loss=$(grep -o 'val loss [0-9.]*' "$log" | awk '{print $3}')
  echo "| $1 | $params | $st | $wmib | $rss | $loss |"
}
{
  echo "# DirectShare: measured memory of the original, compact and materialized models"
  echo
  echo "Recorded by \`experiments/directshare_memory.sh\` on $(date -u +%Y-%m-%d), commit"
  echo "$(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD -- trainer 2>/dev/null || echo ' + uncommitted changes'),"
  echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), fp32 CPU backend."
  echo
  echo "Model: random MHA LLaMA, dim 1024, 8 layers, 16 heads (head dim 64), ffn 1024, vocab 256,"
  echo "untied: attention is 4 x 1024^2 x 8 = 33.6M of its parameters. Each replaced head saves"
  echo "4 x 64 x 1024 = 262,144 parameters (its Wq, Wk, Wv rows and Wo columns)."
  echo "\`eval\` runs on 2 x 32 tokens (\`${EV[*]}\`), so activations are small and"
  echo "the peak RSS is dominated by the weights: the loaded weights plus the model's copy of"
  echo "them (the CPU backend's parameter buffer), plus, for the compact model, one layer's"
  echo "assembled Wq/Wk/Wv/Wo (4 x 1024^2 floats = 16 MiB). The model is random (one training"
  echo "step), so its val loss only shows that the compact and materialized forms agree."
  echo
  echo "| model | parameters | model.safetensors B | weights MiB (eval) | peak RSS MiB | val loss |"
  echo "|---|---|---|---|---|---|"
  measure original $M
  for r in 0.25 0.5; do
    $PS match $M --ratio $r --no-plot -o $W/plan$r.json > /dev/null
    $PS share $M --plan $W/plan$r.json -o $W/compact$r > $W/share$r.log
    $PS share $M --plan $W/plan$r.json -o $W/materialized$r --materialize > /dev/null
    measure "compact $r" $W/compact$r
    measure "materialized $r" $W/materialized$r
  done
  echo
  echo "\`share\`'s own report for ratio 0.5 (parameters, attention parameters, safetensors bytes,"
  echo "resident fp32 weight bytes):"
  echo
  echo '```'
  sed -n '/^model /,/^(safetensors/p' $W/share0.5.log
  echo '```'
} > $OUT
cat $OUT
