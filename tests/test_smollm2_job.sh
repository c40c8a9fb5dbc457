#!/usr/bin/env bash
# test_smollm2_job.sh: the plumbing of the second job (scripts/smollm2_job.sh, run by
# `./run.sh smollm2`) in seconds: the whole job on a tiny byte-level model (4 KV
# groups, MODEL/TOKENIZER instead of the GGUF) with tiny budgets and text from the
# repository, no tasks: prepare, calibrate (with the measured damage), match, share, PostShare runs
# (knobs, plain, lmonly, a variant) from the measured plan on the held-out WikiText-2 tokens,
# every row evaluated, then results.md/json and the plot. Also: bad TF, VARIANTS and
# POST_TEXT values and a test set beyond HOLDOUT are refused, and DRY_RUN prints the
# commands (with POST_TEXT=tinystories too).
# Usage: test_smollm2_job.sh POSTSHARE_BIN SOURCE_DIR
set -uo pipefail
PS="$1"; SRC="$2"
source "$SRC/tests/shlib.sh"
export OMP_NUM_THREADS=1 PS
cat "$SRC"/docs/*.md > "$TMP/wiki.txt"
cat "$SRC"/trainer/*.c > "$TMP/stories.txt"
# a tiny byte-level model (4 KV groups), trained for 2 steps on the text
"$PS" prepare --tokenizer byte --out "$TMP/d" --prefix t "$TMP/wiki.txt" > /dev/null || bad "prepare"
"$PS" train "$SRC/configs/tiny.yaml" --set run.out_dir="$TMP/runs" --set train.steps=2 \
  --set data.train="$TMP/d/t_train_*.bin" --set data.val="$TMP/d/t_val_*.bin" > "$TMP/tiny.log" 2>&1 \
  || { bad "tiny model"; tail "$TMP/tiny.log" >&2; }
export MODEL="$TMP/runs/tiny/model" TOKENIZER=byte WIKITEXT="$TMP/wiki.txt" TINYSTORIES="$TMP/stories.txt"
export W="$TMP/w" RATIOS="0.5" VARIANTS="knobs plain lmonly fast" TF=measured:copy CALIB_TOKENS=256 DMG_TOKENS=64
export VARIANT_fast="share.reg.lr_mult=200 train.min_lr=1e-4"
SETS=(--set train.steps=3 --set data.seq_len=32 --set data.batch_size=2 --set data.val_batches=1
  --set eval.test_batches=2 --set eval.tasks= --set threads=1)
bash "$SRC/scripts/smollm2_job.sh" "$SRC/configs/smollm2.yaml" "${SETS[@]}" > "$TMP/job.log" 2>&1 \
  || { bad "the job failed"; tail -30 "$TMP/job.log" >&2; }
check '[ -f "$W/results.md" ] && [ -f "$W/results.json" ]' "no results.md/json"
for row in "| start | none |" "| directshare | 50% (2 of 4) |" "| measured:copy | 50% (2 of 4) |" \
  "| postshare-knobs | 50% (2 of 4) |" "| postshare-plain | 50% (2 of 4) |" "| postshare-lmonly | 50% (2 of 4) |" \
  "| postshare-fast | 50% (2 of 4) |"; do
  check 'grep -qF "$row" "$W/results.md"' "results.md lacks the row '$row'"
done
check 'command -v gnuplot >/dev/null || [ -f "$W/results.png" ]' "no results.png"
check '[ -f "$W/results.png" ] || ! command -v gnuplot >/dev/null' "gnuplot is there but no results.png"
# every row on the same test tokens; the shared rows store fewer parameters
check '"$PY" - "$W/results.json" <<PYEOF
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
assert len({r["test_tokens"] for r in rows}) == 1, rows
base = [r for r in rows if r["name"] == "start"][0]
assert all(r["params"] < base["params"] for r in rows if r["name"] != "start")
assert all(r["test_ppl"] > 1 for r in rows)
PYEOF' "results.json rows inconsistent"
# the knobs run used the config's knobs, the plain one the reference pull, all from the measured plan
check 'grep -q "normalized over q,k,v,o" "$W/r0.5/knobs.log" && grep -q "lr x" "$W/r0.5/knobs.log"' "knobs run without its knobs"
check '! grep -q "normalized" "$W/r0.5/plain.log" && grep -q "loss = 0.5 \* LM + 0.5 \* R" "$W/r0.5/plain.log"' "plain run not plain"
check 'grep -q "postshare: plan $W/r0.5/tf.json" "$W/r0.5/knobs.log"' "PostShare did not start from the training-free plan"
check 'grep -q "loss = 1 \* LM + 0 \* R" "$W/r0.5/lmonly.log" && ! grep -q "lr x" "$W/r0.5/lmonly.log"' "lmonly run is not LM only"
check 'grep -qF "| knobs-r0.5 | 3 | 192 |" "$W/results.md"' "results.md lacks the knobs run's steps and tokens"
# the run's hand-off evaluated its models on the same test tokens: its PostShare
# model's test perplexity is the job's row's
check '"$PY" - "$W/results.json" "$W/runs/knobs-r0.5/results.json" <<PYEOF
import json, sys
row = [r for r in json.load(open(sys.argv[1]))["rows"] if r["name"] == "postshare-knobs"][0]
run = {m["name"]: m for m in json.load(open(sys.argv[2]))["models"]}
assert abs(run["postshare"]["test_ppl"] - row["test_ppl"]) <= 1e-3 * row["test_ppl"], (run["postshare"], row)
assert run["posttrained"]["test_ppl"] > 1
PYEOF' "the run's test perplexity of its PostShare model differs from the job's row"
# POST_TEXT=wikitext (the default): trained on the WikiText-2 tokens after the
# first HOLDOUT (the test tokens lie within them), validated on the calibration tokens
check '"$PY" - "$W/data" "$W/runs/knobs-r0.5/config.yaml" <<PYEOF
import os, re, sys
d, cfg = sys.argv[1], open(sys.argv[2]).read()
assert re.search(r"train: .*wt2post_train_\*\.bin", cfg) and re.search(r"val: .*wt2_val_\*\.bin", cfg), cfg
a = open(d + "/wt2_train_000000.bin", "rb").read(); b = open(d + "/wt2post_train_000000.bin", "rb").read()
assert b[1024:] == a[1024 + 2 * 20480:] and len(b) > 1024, (len(a), len(b))
PYEOF' "the PostShare runs did not train on the held-out WikiText-2 tokens"
check 'grep -q "lr x 200 on the paired slices" "$W/r0.5/fast.log" && grep -q "min_lr: 0.0001" "$W/runs/fast-r0.5/config.yaml"' "VARIANT_fast not applied"
# a rerun evaluates nothing again
bash "$SRC/scripts/smollm2_job.sh" "$SRC/configs/smollm2.yaml" "${SETS[@]}" > "$TMP/job2.log" 2>&1 || bad "rerun failed"
check 'grep -q "start at 0.0: already evaluated" "$TMP/job2.log" && ! grep -q "^   test ppl" "$TMP/job2.log"' "the rerun evaluated again"
# refusals and the dry run
out=$(TF=calib:blend bash "$SRC/scripts/smollm2_job.sh" "$SRC/configs/smollm2.yaml" 2>&1)
check '[ $? -ne 0 ] || true; echo "$out" | grep -q "TF=calib:blend"' "bad TF not refused: $out"
out=$(VARIANTS=slow bash "$SRC/scripts/smollm2_job.sh" "$SRC/configs/smollm2.yaml" 2>&1)
check 'echo "$out" | grep -q "VARIANTS: .slow."' "VARIANTS without VARIANT_slow not refused: $out"
out=$(POST_TEXT=news bash "$SRC/scripts/smollm2_job.sh" "$SRC/configs/smollm2.yaml" 2>&1)
check 'echo "$out" | grep -q "POST_TEXT=news"' "bad POST_TEXT not refused: $out"
out=$(W="$TMP/w" HOLDOUT=100 bash "$SRC/scripts/smollm2_job.sh" "$SRC/configs/smollm2.yaml" "${SETS[@]}" 2>&1)
check 'echo "$out" | grep -q "HOLDOUT=100"' "a test set beyond HOLDOUT not refused: $out"
out=$(W="$TMP/dryts" POST_TEXT=tinystories DRY_RUN=1 bash "$SRC/scripts/smollm2_job.sh" "$SRC/configs/smollm2.yaml" "${SETS[@]}" 2>&1)
check 'echo "$out" | grep -q "^+ .* train .*data.train=$TMP/dryts/data/ts_train_\*.bin"' "POST_TEXT=tinystories: $out"
out=$(W="$TMP/dry" DRY_RUN=1 bash "$SRC/scripts/smollm2_job.sh" "$SRC/configs/smollm2.yaml" "${SETS[@]}" 2>&1)
check 'echo "$out" | grep -q "^+ .* train .*share.plan=$TMP/dry/r0.5/tf.json" && [ ! -e "$TMP/dry/data" ]' "dry run: $out"
[ -n "${KEEP:-}" ] && cp -r "$TMP" /tmp/smoljob-keep
summary
