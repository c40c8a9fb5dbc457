#!/usr/bin/env bash
# test_train.sh: end-to-end through the CLI on real English text.
#   prepare (byte tokenizer) -> train configs/tiny.yaml -> the validation loss
#   must fall by at least 25%; the run directory holds config.yaml,
#   metrics.jsonl and an HF model that `postshare eval` reloads to the same
#   validation loss; the resolved config.yaml re-runs as a config.
# Usage: test_train.sh POSTSHARE_BIN SOURCE_DIR
set -uo pipefail
PS="$1"; SRC="$2"
source "$SRC/tests/shlib.sh"

english_text "$TMP/text.txt" "Gen1:1-Num36:13"
"$PS" prepare --tokenizer byte --out "$TMP/data" --prefix t --val-fraction 0.05 "$TMP/text.txt" >/dev/null \
  || bad "prepare failed"

"$PS" train "$SRC/configs/tiny.yaml" --set run.out_dir="$TMP/runs" --set run.name=tiny \
  --set data.train="$TMP/data/t_train_*.bin" --set data.val="$TMP/data/t_val_*.bin" \
  --set train.steps=150 --set train.eval_every=50 > "$TMP/train.log" 2>&1 \
  || { bad "train exited non-zero"; cat "$TMP/train.log" >&2; }
RUN="$TMP/runs/tiny"
check '[ -f "$RUN/config.yaml" ] && [ -f "$RUN/metrics.jsonl" ] && [ -f "$RUN/model/config.json" ] && [ -f "$RUN/model/model.safetensors" ]' \
  "run directory is missing files"
check 'grep -q "ETA" "$TMP/train.log" && grep -q "tok/s" "$TMP/train.log"' "progress lines lack tok/s or ETA"
first=$(grep -o '"val_loss":[0-9.]*' "$RUN/metrics.jsonl" | head -1 | cut -d: -f2)
last=$(grep -o '"val_loss":[0-9.]*' "$RUN/metrics.jsonl" | tail -1 | cut -d: -f2)
echo "val loss: $first -> $last"
check 'awk -v a="$first" -v b="$last" "BEGIN{exit !(b < 0.75*a)}"' "val loss did not fall by 25% ($first -> $last)"

# The saved HF model reloads to the same validation loss (same batches: B=4, T=32, 2 batches).
ev=$("$PS" eval "hf:$RUN/model" --data "$TMP/data/t_val_*.bin" --seq-len 32 --batch-size 4 --batches 2 2>&1)
echo "$ev" | tail -1
evloss=$(echo "$ev" | grep -o 'val loss [0-9.]*' | awk '{print $3}')
check 'awk -v a="$evloss" -v b="$last" "BEGIN{d=a-b; if(d<0)d=-d; exit !(d < 1e-3)}"' \
  "eval of the saved model ($evloss) differs from the run's final val loss ($last)"

# The resolved config is itself a valid config.
"$PS" train "$RUN/config.yaml" --set train.steps=2 --set run.name=again > "$TMP/again.log" 2>&1
check '[ $? -eq 0 ] && [ -f "$TMP/runs/again/model/config.json" ]' "resolved config.yaml does not re-run"

summary
