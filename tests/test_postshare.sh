#!/usr/bin/env bash
# test_postshare.sh: PostShare on the small default setup, deterministic on the CPU.
#   pretrain configs/default.yaml (shortened) on the KJV Bible, then run
#   configs/postshare.yaml (ratio 0.3) from that model, and check:
#   - the mean relative distance of the planned pairs falls by at least half;
#   - PostShare's validation loss after sharing is below DirectShare's;
#   - results.json/md, the compact shared model and its eval agree;
#   - eval.tasks (fixture piqa + mmlu data) adds task columns to every model row,
#     and `postshare eval --tasks` on the saved compact model gives the same numbers.
# Usage: test_postshare.sh POSTSHARE_BIN SOURCE_DIR
set -uo pipefail
PS="$1"; SRC="$2"
source "$SRC/tests/shlib.sh"
if ! command -v bible >/dev/null; then
  echo "SKIP: bible-kjv is not installed (scripts/setup.sh installs it)"; echo "0 passed, 0 failed, 1 skipped"; exit 0
fi
export OMP_NUM_THREADS=2
bible "Gen1:1-Rev22:21" > "$TMP/kjv.txt"
"$PS" prepare --tokenizer byte --out "$TMP/data" --prefix kjv "$TMP/kjv.txt" >/dev/null || bad "prepare failed"
DATA=(--set data.train="$TMP/data/kjv_train_*.bin" --set data.val="$TMP/data/kjv_val_*.bin")
"$PS" train "$SRC/configs/default.yaml" "${DATA[@]}" --set run.out_dir="$TMP/runs" \
  --set train.steps=300 --set train.eval_every=0 > "$TMP/pre.log" 2>&1 || { bad "pretraining failed"; tail "$TMP/pre.log" >&2; }
"$PS" train "$SRC/configs/postshare.yaml" "${DATA[@]}" --set run.out_dir="$TMP/runs" \
  --set model.init="hf:$TMP/runs/default/model" --set train.steps=200 \
  --set eval.tasks=piqa,mmlu --set eval.data_dir="$SRC/tests/fixtures/tasks" > "$TMP/ps.log" 2>&1 \
  || { bad "postshare run failed"; tail -20 "$TMP/ps.log" >&2; }
RUN="$TMP/runs/postshare"
d0=$(head -1 "$RUN/metrics.jsonl" | grep -o '"dist_mean":[0-9.e-]*' | cut -d: -f2)
d1=$(grep '"dist_mean"' "$RUN/metrics.jsonl" | tail -1 | grep -o '"dist_mean":[0-9.e-]*' | cut -d: -f2)
echo "mean pair distance: $d0 -> $d1"
check 'awk -v a="$d0" -v b="$d1" "BEGIN{exit !(a > 0 && b <= 0.5*a)}"' "mean pair distance did not halve ($d0 -> $d1)"
loss_of() { "$PY" -c "import json,sys; m={x['name']:x for x in json.load(open(sys.argv[1]))['models']}; print(m[sys.argv[2]]['val_loss'])" "$RUN/results.json" "$1"; }
ds=$(loss_of directshare); pss=$(loss_of postshare); st=$(loss_of start); pt=$(loss_of posttrained)
echo "val loss: start $st, DirectShare $ds, post-trained $pt, PostShare $pss"
check 'awk -v a="$pss" -v b="$ds" "BEGIN{exit !(a < b)}"' "PostShare ($pss) is not below DirectShare ($ds)"
check '[ -f "$RUN/results.md" ] && grep -q "| postshare |" "$RUN/results.md"' "results.md missing its table"
check '[ -f "$RUN/shared/plan.json" ] && [ -f "$RUN/shared/config.json" ]' "compact shared model not saved"
# the saved compact model evaluates to the hand-off's PostShare loss (same val batches)
ev=$("$PS" eval "$RUN/shared" --data "$TMP/data/kjv_val_*.bin" --seq-len 128 --batch-size 16 --batches 16 2>&1)
evl=$(echo "$ev" | grep -o 'val loss [0-9.]*' | awk '{print $3}')
check 'awk -v a="$evl" -v b="$pss" "BEGIN{d=a-b; if(d<0)d=-d; exit !(d < 1e-3)}"' "eval of shared/ ($evl) differs from results.json ($pss)"
check 'grep -q "lm .* reg .* pairs: cos" "$TMP/ps.log"' "no lm/reg/pair stats in the log"
# task columns: every row of results.json has piqa and mmlu; the compact model's own eval agrees
task_of() { "$PY" -c "import json,sys; m={x['name']:x for x in json.load(open(sys.argv[1]))['models']}; t={r['task']:r for r in m[sys.argv[2]]['tasks']}; print(t[sys.argv[3]][sys.argv[4]], t[sys.argv[3]]['n'])" "$@"; }
for m in start directshare posttrained postshare; do
  check 'task_of "$RUN/results.json" $m piqa acc_norm >/dev/null && task_of "$RUN/results.json" $m mmlu acc >/dev/null' "results.json: $m has no piqa/mmlu task results"
done
check 'grep -q "piqa acc_norm" "$RUN/results.md" && grep -q "mmlu acc" "$RUN/results.md"' "results.md lacks the task columns"
"$PS" eval "$RUN/shared" --tasks piqa,mmlu --tokenizer byte --data-dir "$SRC/tests/fixtures/tasks" \
  --out "$TMP/tasks" > "$TMP/tasks.log" 2>&1 || { bad "eval --tasks on shared/ failed"; tail "$TMP/tasks.log" >&2; }
for tm in "piqa acc" "piqa acc_norm" "mmlu acc"; do
  a=$(task_of "$RUN/results.json" postshare $tm)
  b=$("$PY" -c "import json,sys; t={r['task']:r for r in json.load(open(sys.argv[1]))['results']}; print(t[sys.argv[2]][sys.argv[3]], t[sys.argv[2]]['n'])" "$TMP/tasks.json" $tm)
  echo "postshare $tm (value n): hand-off $a, eval --tasks $b"
  check '[ -n "$a" ] && [ "$a" = "$b" ]' "$tm: the hand-off ($a) and eval --tasks on shared/ ($b) differ"
done
summary
