#!/usr/bin/env bash
# experiments/directshare_stories260k.sh: DirectShare (match + share, no
# training) on the pretrained stories260K (GQA: 5 layers x 4 KV groups of 2
# query heads) and its validation perplexity on TinyStories
# (tinystories_val.txt, all of it, tokenized with tok512), at sharing ratios
# 0, 0.1, 0.2, 0.3 and 0.5 (match qk), then at ratio 0.3 for every match
# function. Writes experiments/directshare-stories260k.md (the tables and the
# run's settings; rerunning replaces it) and keeps the plans, heat maps, models
# and logs under checkpoints/directshare-stories260k/.
#   bash experiments/directshare_stories260k.sh
# BUILD=dir selects the build folder (default build/); DATA=dir the shared data
# (default ../shared/data).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="${BUILD:-build}"
DATA="${DATA:-$ROOT/../shared/data}"
PS="$BUILD/postshare"
[ -x "$PS" ] || bash scripts/setup.sh
MODEL="$DATA/models/stories260K/stories260K.bin"
TOK="$DATA/models/stories260K/tok512.bin"
TEXT="$DATA/text/tinystories/tinystories_val.txt"
for f in "$MODEL" "$TOK" "$TEXT"; do
  [ -f "$f" ] || { echo "missing $f (the shared data folder): nothing to do" >&2; exit 1; }
done
W=checkpoints/directshare-stories260k
OUT=experiments/directshare-stories260k.md
mkdir -p $W
# every token of the validation text in one shard (no train/val split needed)
$PS prepare --tokenizer "$TOK" --out $W/data --prefix tsval --val-fraction 0 "$TEXT" > $W/prepare.log
SHARDS="$W/data/tsval_train_*.bin"
EVAL=(--data "$SHARDS" --seq-len 256 --batch-size 8)

# field NAME LOG: the number after NAME in a log line
field() { grep -o "$1 [0-9.]*" "$2" | head -1 | awk '{print $NF}'; }

row() {  # ratio match -> one table row (evaluates the compact model)
  local r=$1 m=$2 d=$W/${2}_r$1
  $PS match "$MODEL" --ratio "$r" --match "$m" -o $d/plan.json > $d.match.log
  $PS share "$MODEL" --plan $d/plan.json -o $d/compact > $d.share.log
  $PS eval $d/compact "${EVAL[@]}" > $d.eval.log
  local rep=$(grep -o '"replaced":[^,]*' $d/plan.json | grep -o '[0-9]*')
  local params=$(awk '/^compact /{print $2}' $d.share.log) attn=$(awk '/^compact /{print $3}' $d.share.log)
  local stb=$(stat -c %s $d/compact/model.safetensors) res=$(awk '/^compact /{print $5}' $d.share.log)
  local thr=$(grep -o 'similarity >= [0-9.]*' $d/plan.summary.txt | awk '{print $3}')
  echo "| $r | $m | $rep / 20 | ${thr:--} | $params | $attn | $stb | $res | $(field 'val loss' $d.eval.log) | $(field perplexity $d.eval.log) |"
}

$PS eval "$MODEL" "${EVAL[@]}" > $W/original.eval.log
tokens=$(grep -o '[0-9]* tokens' $W/original.eval.log | awk '{print $1}')
{
  echo "# DirectShare on stories260K: validation perplexity vs. sharing ratio"
  echo
  echo "Recorded by \`experiments/directshare_stories260k.sh\` on $(date -u +%Y-%m-%d), commit"
  echo "$(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD -- trainer 2>/dev/null || echo ' + uncommitted changes'),"
  echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))."
  echo
  echo "- Model: \`stories260K.bin\` (llama2.c; dim 64, 5 layers, 8 query heads, 4 KV heads: the"
  echo "  sharing unit is a KV group of 2 query heads + 1 K/V head, 20 units; 260,032 parameters,"
  echo "  61,440 of them in attention)."
  echo "- Data: all of \`tinystories_val.txt\` tokenized with \`tok512.bin\` (\`postshare prepare"
  echo "  --val-fraction 0\`), evaluated with \`postshare eval --seq-len 256 --batch-size 8\`:"
  echo "  $tokens target tokens, every full batch of 8 x 256."
  echo "- For each row: \`postshare match stories260K.bin --ratio R --match F -o plan.json\`,"
  echo "  \`postshare share stories260K.bin --plan plan.json -o compact\`, \`postshare eval compact\`"
  echo "  (the compact model runs compact: replaced slices are assembled one layer at a time)."
  echo "- Columns: replaced units of 20 (floor(R x 20)); the lowest similarity among the chosen"
  echo "  pairs; parameters and attention parameters of the compact model; its model.safetensors"
  echo "  bytes (fp32); its resident weight bytes (weights + one layer's assembled scratch);"
  echo "  token-level validation loss (nats) and perplexity."
  echo
  echo "Original (\`postshare eval stories260K.bin\`): val loss $(field 'val loss' $W/original.eval.log), perplexity $(field perplexity $W/original.eval.log)."
  echo
  echo "## Sharing ratio (match qk)"
  echo
  echo "| ratio | match | replaced | min similarity | parameters | attention | safetensors B | resident B | val loss | perplexity |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for r in 0 0.1 0.2 0.3 0.5; do row $r qk; done
  echo
  echo "## Match function at ratio 0.3"
  echo
  echo "| ratio | match | replaced | min similarity | parameters | attention | safetensors B | resident B | val loss | perplexity |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for m in qk q k v qkv; do row 0.3 $m; done
} > $OUT
# the materialized model of the qk 0.3 plan evaluates the same as the compact one
$PS share "$MODEL" --plan $W/qk_r0.3/plan.json -o $W/qk_r0.3/materialized --materialize > /dev/null
$PS eval $W/qk_r0.3/materialized "${EVAL[@]}" > $W/materialized.eval.log
echo >> $OUT
echo "Check: the materialized model of the qk / 0.3 plan (an ordinary HF folder) gives val loss $(field 'val loss' $W/materialized.eval.log), perplexity $(field perplexity $W/materialized.eval.log) (the compact model's row above)." >> $OUT
cat $OUT
