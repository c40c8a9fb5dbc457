#!/usr/bin/env bash
# test_task_eval.sh: task evaluation through the command line and in jobs, on the
# fixture task data (tests/fixtures/tasks: piqa and a three-subject mmlu):
#   - a PostShare job (configs/tiny.yaml, ratio 0.5) with eval.tasks scores every
#     model of its results table: results.json rows have the tasks, results.md
#     and the printed table their columns;
#   - `postshare eval --tasks` on the saved compact model (shared/) gives the same
#     numbers as the hand-off's postshare row, and writes PREFIX.json/.md and one
#     samples line per document;
#   - a run without a share section gets the tasks in its single row.
# Usage: test_task_eval.sh POSTSHARE_BIN SOURCE_DIR
set -uo pipefail
PS="$1"; SRC="$2"
source "$SRC/tests/shlib.sh"
export OMP_NUM_THREADS=1
FX="$SRC/tests/fixtures/tasks"
cat "$SRC"/trainer/*.c > "$TMP/text.txt"
"$PS" prepare --tokenizer byte --out "$TMP/data" --prefix t --val-fraction 0.1 "$TMP/text.txt" \
  > /dev/null || bad "prepare failed"
SETS=(--set run.out_dir="$TMP/runs" --set data.train="$TMP/data/t_train_*.bin"
      --set data.val="$TMP/data/t_val_*.bin" --set train.steps=20
      --set eval.tasks=piqa,mmlu --set eval.data_dir="$FX")
"$PS" train "$SRC/configs/tiny.yaml" "${SETS[@]}" --set run.name=ps --set share.ratio=0.5 \
  > "$TMP/ps.log" 2>&1 || { bad "PostShare run with eval.tasks failed"; tail "$TMP/ps.log" >&2; }
RUN="$TMP/runs/ps"
# value_of FILE MODEL|- TASK METRIC: "value n" from results.json (MODEL) or eval --out's json (-)
value_of() {
  "$PY" -c "import json,sys
j=json.load(open(sys.argv[1]))
rows=j['results'] if sys.argv[2]=='-' else {m['name']:m for m in j['models']}[sys.argv[2]]['tasks']
t={r['task']:r for r in rows}[sys.argv[3]]
print(t[sys.argv[4]], t['n'])" "$@"
}
for m in start directshare posttrained postshare; do
  check 'value_of "$RUN/results.json" $m piqa acc_norm >/dev/null 2>&1 && value_of "$RUN/results.json" $m mmlu acc >/dev/null 2>&1' \
    "results.json: $m has no piqa/mmlu results: $(cat "$RUN/results.json" 2>&1 | head -40)"
done
check 'grep -q "| piqa acc | piqa acc_norm | mmlu acc |" "$RUN/results.md" && [ "$(grep "^| postshare |" "$RUN/results.md" | grep -o " ± " | wc -l)" = 3 ]' \
  "results.md lacks the task columns: $(cat "$RUN/results.md" 2>&1)"
check 'grep -Eq "^postshare .* piqa acc_norm|piqa acc_norm .*mmlu acc" "$TMP/ps.log"' "the printed table lacks the task columns"
"$PS" eval "$RUN/shared" --tasks piqa,mmlu --tokenizer byte --data-dir "$FX" --out "$TMP/ev" \
  --samples "$TMP/ev.jsonl" > "$TMP/ev.log" 2>&1 || { bad "eval --tasks on shared/ failed"; tail "$TMP/ev.log" >&2; }
for tm in "piqa acc" "piqa acc_norm" "mmlu acc" "mmlu acc_stderr"; do
  a=$(value_of "$RUN/results.json" postshare $tm 2>&1); b=$(value_of "$TMP/ev.json" - $tm 2>&1)
  check '[ -n "$a" ] && [ "$a" = "$b" ]' "$tm (value n): the hand-off has $a, eval --tasks on shared/ $b"
done
check '[ "$(wc -l < "$TMP/ev.jsonl")" = 11 ] && grep -q "^| mmlu | 7 | 0 |" "$TMP/ev.md" && grep -q "^| - stem | 4 | 0 |" "$TMP/ev.md" && grep -q "^| - humanities | 3 | 0 |" "$TMP/ev.md"' \
  "eval --out/--samples: $(cat "$TMP/ev.md" 2>&1) $(wc -l < "$TMP/ev.jsonl" 2>&1) samples"
"$PS" train "$SRC/configs/tiny.yaml" "${SETS[@]}" --set run.name=plain > "$TMP/plain.log" 2>&1 \
  || { bad "plain run with eval.tasks failed"; tail "$TMP/plain.log" >&2; }
check 'value_of "$TMP/runs/plain/results.json" trained piqa acc >/dev/null 2>&1' \
  "a run without share: no tasks in results.json: $(cat "$TMP/runs/plain/results.json" 2>&1)"
summary
