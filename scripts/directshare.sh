#!/usr/bin/env bash
# scripts/directshare.sh: DirectShare on a trained model, no training
# (docs/sharing.md): match its heads, share them at a ratio, evaluate the
# original and the compact shared model on the same tokens, print the comparison.
#   bash scripts/directshare.sh MODEL 'VAL_GLOB' RATIO OUT_DIR [eval options...]
# Writes OUT_DIR/plan.json (+ plan.summary.txt, plan.png), OUT_DIR/compact (the
# compact shared model) and OUT_DIR/*.log. run.sh calls it after training.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PS="${PS:-$ROOT/build/postshare}"
[ $# -ge 4 ] || { echo "usage: $0 MODEL 'VAL_GLOB' RATIO OUT_DIR [eval options]" >&2; exit 2; }
MODEL="$1"; DATA="$2"; RATIO="$3"; OUT="$4"; shift 4
mkdir -p "$OUT"
echo "DirectShare: match $MODEL at ratio $RATIO"
"$PS" match "$MODEL" --ratio "$RATIO" -o "$OUT/plan.json" | tee "$OUT/match.log" | sed -n '1,12p'
"$PS" share "$MODEL" --plan "$OUT/plan.json" -o "$OUT/compact" > "$OUT/share.log"
"$PS" eval "$MODEL" --data "$DATA" "$@" > "$OUT/eval_original.log"
"$PS" eval "$OUT/compact" --data "$DATA" "$@" > "$OUT/eval_compact.log"

num() { grep -o "$1 [0-9.]*" "$2" | head -1 | awk '{print $NF}'; }
line() {  # NAME SHARE_ROW EVAL_LOG FILE
  awk -v n="$1" -v l="$(num 'val loss' "$3")" -v p="$(num perplexity "$3")" -v f="$4" \
    '{printf "%-16s %11s %11s %18s %10s %11s\n", n, $2, $3, f, l, p}' <<< "$2"
}
size() { stat -c %s "$1" 2>/dev/null || echo -; }
orig_file=$(size "$MODEL/model.safetensors")
echo
echo "DirectShare at ratio $RATIO ($(grep -o '[0-9]* of [0-9]* units replaced' "$OUT/match.log")):"
printf "%-16s %11s %11s %18s %10s %11s\n" model parameters attention model.safetensors "val loss" perplexity
line original "$(grep '^original ' "$OUT/share.log")" "$OUT/eval_original.log" "$orig_file"
line "compact $RATIO" "$(grep '^compact ' "$OUT/share.log")" "$OUT/eval_compact.log" \
  "$(size "$OUT/compact/model.safetensors")"
echo "(evaluated on $(grep -o '[0-9]* tokens' "$OUT/eval_compact.log") of $DATA; plan, heat map and compact model in $OUT)"
