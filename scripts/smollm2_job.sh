#!/usr/bin/env bash
# scripts/smollm2_job.sh: the second job, `./run.sh smollm2 [--gpu]`: PostShare on
# SmolLM2-135M-Instruct against DirectShare and the best training-free method,
# ending in one results table and a plot (docs/smollm2-job.md).
#
# usage: scripts/smollm2_job.sh CONFIG [--set KEY=VALUE ...]
#   CONFIG   the PostShare job (configs/smollm2.yaml: CPU budgets;
#            configs/smollm2-gpu.yaml: real budgets). Its data.seq_len,
#            data.batch_size, eval.tasks, eval.limit, eval.test_batches, threads
#            and backend set every row's evaluation too; --set options go to the
#            PostShare runs only.
# env:
#   RATIOS      fractions of the KV groups shared (default "0.1 0.3")
#   TF          the training-free method, SELECTION:COMBINE (default measured:copy, the
#               best sharing method of experiments/smollm2/README.md); SELECTION is a
#               `match --match` function (qk, circuit, calib, importance, measured),
#               COMBINE copy, align-copy, merge or align-merge. PostShare starts from its plan.
#   VARIANTS    PostShare runs per ratio (default "knobs lmonly"): knobs = CONFIG's
#               share.reg as written; lmonly = the control: the same post-training
#               with R's weight 0 (fine-tune, then share by the plan); plain = the
#               reference's pull (0.5 LM + 0.5 l2, not
#               normalized, no ramp, one learning rate); any other NAME ([a-z0-9_]+)
#               = CONFIG with the KEY=VALUE words of the variable VARIANT_NAME, e.g.
#               VARIANTS="knobs fast" VARIANT_fast="share.reg.lr_mult=200 train.min_lr=1e-4"
#   CALIB_TOKENS (2048), IMP_TOKENS (512, TF=importance only) and DMG_TOKENS (512,
#               TF=measured only): calibration tokens
#   W           work folder (default checkpoints/CONFIG-NAME, e.g. checkpoints/smollm2);
#               results in W/results.md,
#               W/results.json, W/results.png
#   POST_TEXT   PostShare's post-training text (default wikitext): wikitext = the
#               WikiText-2 tokens after the first HOLDOUT (20480) of the test part,
#               disjoint from the test tokens (the first eval.test_batches x
#               batch_size x seq_len, at most HOLDOUT) and from the calibration
#               tokens, validated on the calibration tokens; tinystories =
#               TinyStories (train) with its own validation split
#   GGUF, WIKITEXT, TINYSTORIES: the model and texts (defaults: scripts/fetch_smollm2.sh,
#               ../shared/data/text/wikitext-2-raw/valid.txt,
#               ../shared/data/text/tinystories/tinystories_sample.txt); MODEL (an HF
#               folder) with TOKENIZER (a data.tokenizer spec) instead of GGUF: the
#               smoke test's tiny model
#   DRY_RUN=1   print the commands of the evaluations and runs instead of running them
# A rerun skips every row already in W/rows.jsonl (delete W to start over). RATIOS
# are written as Python prints floats (0.1, not 0.10).
set -euo pipefail
CONFIG=${1:?usage: scripts/smollm2_job.sh CONFIG [--set KEY=VALUE ...]}
shift
SETS=("$@")
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PS=${PS:-build/postshare}
PY=${PS_PYTHON:-/usr/bin/python3}
W=${W:-checkpoints/$(basename "$CONFIG" .yaml)}
RATIOS=${RATIOS:-0.1 0.3}
TF=${TF:-measured:copy}
VARIANTS=${VARIANTS:-knobs lmonly}
POST_TEXT=${POST_TEXT:-wikitext}
HOLDOUT=${HOLDOUT:-20480}
CALIB_TOKENS=${CALIB_TOKENS:-2048}
IMP_TOKENS=${IMP_TOKENS:-512}
DMG_TOKENS=${DMG_TOKENS:-512}
WIKITEXT=${WIKITEXT:-../shared/data/text/wikitext-2-raw/valid.txt}
TINYSTORIES=${TINYSTORIES:-../shared/data/text/tinystories/tinystories_sample.txt}
[ -f "$CONFIG" ] || { echo "smollm2 job: $CONFIG: no such config" >&2; exit 1; }
for f in "$WIKITEXT" "$TINYSTORIES"; do
  [ -f "$f" ] || { echo "smollm2 job: $f: missing (see ../shared/data/README.md)" >&2; exit 1; }
done
case $POST_TEXT in wikitext | tinystories) ;;
*) echo "smollm2 job: POST_TEXT=$POST_TEXT: must be wikitext or tinystories" >&2; exit 1 ;;
esac
TF_SEL=${TF%%:*} TF_COMB=${TF##*:}
case $TF_COMB in copy | align-copy | merge | align-merge) ;;
*) echo "smollm2 job: TF=$TF: COMBINE must be copy, align-copy, merge or align-merge" >&2; exit 1 ;;
esac
for v in $VARIANTS; do
  case $v in
  knobs | plain | lmonly) ;;
  *)
    var=VARIANT_$v
    if [[ ! $v =~ ^[a-z0-9_]+$ ]] || [ -z "${!var:-}" ]; then
      echo "smollm2 job: VARIANTS: '$v' is not knobs, lmonly, plain or a NAME with VARIANT_NAME set" >&2
      exit 1
    fi
    ;;
  esac
done

# cfg SECTION KEY: a scalar of CONFIG (two-level YAML as in configs/smollm2*.yaml;
# a --set of the same key wins)
cfg() {
  local s k=${1:+$1.}$2
  for s in "${SETS[@]}"; do
    case $s in "$k="*) echo "${s#*=}"; return ;; esac
  done
  awk -v sec="$1:" -v key="$2:" -v top="${1:-1}" '
    /^[^ #]/ { in_sec = ($1 == sec) }
    (in_sec || (top == 1 && /^[^ ]/)) && $1 == key {
      sub(/#.*/, ""); sub(/^[^:]*:[ \t]*/, ""); gsub(/["\x27 \t\[\]]/, ""); print; exit }' "$CONFIG"
}
T=$(cfg data seq_len) B=$(cfg data batch_size)
TASKS=$(cfg eval tasks) LIMIT=$(cfg eval limit) TEST_BATCHES=$(cfg eval test_batches)
THREADS=$(cfg "" threads) BACKEND=$(cfg "" backend)
THREADS=${THREADS:-0} BACKEND=${BACKEND:-auto} LIMIT=${LIMIT:-0} TEST_BATCHES=${TEST_BATCHES:-0}

run() {  # a command, or with DRY_RUN its line
  if [ -n "${DRY_RUN:-}" ]; then echo "+ $*"; else "$@"; fi
}

# 1. The model (fp32 HF folder from the GGUF) and the token shards, with its own tokenizer
mkdir -p "$W"
if [ -n "${MODEL:-}" ]; then  # another HF model folder (tests), with TOKENIZER
  M=$MODEL
  TOK=${TOKENIZER:?MODEL needs TOKENIZER}
else
  GGUF=${GGUF:-$(bash scripts/fetch_smollm2.sh)}
  M=$W/model
  TOK="gguf:$GGUF"
  [ -f "$M/config.json" ] || run $PS convert "gguf:$GGUF" -o "$M"
fi
D=$W/data
if [ ! -f "$D/wt2_val_000000.bin" ]; then
  # WikiText-2: the first 95% is the test set of every row (never trained on), the
  # last 5% the calibration tokens of the training-free methods
  run $PS prepare --tokenizer "$TOK" --out "$D" --prefix wt2 --val-fraction 0.05 "$WIKITEXT"
fi
if [ ! -f "$D/ts_val_000000.bin" ]; then
  # TinyStories: PostShare's post-training text (train) and its validation (val)
  run $PS prepare --tokenizer "$TOK" --out "$D" --prefix ts --val-fraction 0.05 "$TINYSTORIES"
fi
TEST="$D/wt2_train_*.bin"
if [ "$POST_TEXT" = wikitext ]; then
  # the test tokens are the first TEST_BATCHES x B x T of wt2_train: PostShare trains
  # on what follows the first HOLDOUT, never on them (nor on the calibration tokens)
  if [ "$TEST_BATCHES" -le 0 ] || [ $((TEST_BATCHES * B * T)) -gt "$HOLDOUT" ]; then
    echo "smollm2 job: POST_TEXT=wikitext: the test set (eval.test_batches $TEST_BATCHES x $B x $T" \
      "tokens; 0 = all) must lie within the first HOLDOUT=$HOLDOUT tokens, which are never trained on" >&2
    exit 1
  fi
  POST_TRAIN="$D/wt2post_train_*.bin" POST_VAL="$D/wt2_val_*.bin"
  [ -n "${DRY_RUN:-}" ] || [ -f "$D/wt2post_train_000000.bin" ] ||
    "$PY" - "$D/wt2_train_000000.bin" "$D/wt2post_train_000000.bin" "$HOLDOUT" <<'EOF'
# the tokens of a uint16 shard (data/shard.h: 256 int32 header, magic 20240520,
# version 1, count) after the first `skip`, as a shard of their own (the first
# shard only: WikiText-2's validation text, 267K tokens, is one)
import os, struct, sys
src, dst, skip = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(src, "rb") as f:
    hdr = list(struct.unpack("<256i", f.read(1024)))
    assert hdr[0] == 20240520 and hdr[1] == 1, src + ": not a uint16 token shard"
    toks = f.read()
n = hdr[2]
assert len(toks) == 2 * n and n > skip, f"{src}: {n} tokens, cannot skip {skip}"
hdr[2] = n - skip
with open(dst + ".tmp", "wb") as f:
    f.write(struct.pack("<256i", *hdr) + toks[2 * skip:])
os.replace(dst + ".tmp", dst)
print(f"post-training text: {dst}: tokens {skip}..{n} of {src} ({n - skip} tokens)")
EOF
else
  POST_TRAIN="$D/ts_train_*.bin" POST_VAL="$D/ts_val_*.bin"
fi
COMMON=(--threads "$THREADS" --backend "$BACKEND")

# 2. Calibration (for calib / importance / measured plans and merges)
CAL=$W/calib.bin
if [ ! -f "$CAL" ] && { [ "$TF_SEL" = calib ] || [ "$TF_SEL" = importance ] ||
  [ "$TF_SEL" = measured ] || [[ $TF_COMB == *merge ]]; }; then
  IMP=()
  [ "$TF_SEL" = importance ] && IMP=(--importance-tokens "$IMP_TOKENS")
  [ "$TF_SEL" = measured ] && IMP=(--damage-tokens "$DMG_TOKENS")
  run $PS calibrate "hf:$M" --data "$D/wt2_val_*.bin" --tokens "$CALIB_TOKENS" "${IMP[@]}" \
    --seq-len "$T" --threads "$THREADS" -o "$CAL"
fi

# 3. Rows: each is evaluated the same way (perplexity on the test set, then the tasks)
ROWS=$W/rows.jsonl
touch "$ROWS"
have_row() { grep -q "\"name\": \"$1\", \"ratio\": $2," "$ROWS"; }
# eval_row NAME RATIO MODEL PLAN(or -) WHAT
eval_row() {
  local name=$1 r=$2 model=$3 plan=$4 what=$5 out ppl loss tok tj=-
  have_row "$name" "$r" && { echo "== $name at $r: already evaluated"; return 0; }
  echo "== $name at $r: $what"
  if [ -n "${DRY_RUN:-}" ]; then
    run $PS eval "$model" --data "$TEST" --seq-len "$T" --batch-size "$B" --batches "$TEST_BATCHES" "${COMMON[@]}"
    [ -z "$TASKS" ] || run $PS eval "$model" --tasks "$TASKS" --limit "$LIMIT" --tokenizer "$TOK" "${COMMON[@]}"
    return 0
  fi
  out=$($PS eval "$model" --data "$TEST" --seq-len "$T" --batch-size "$B" --batches "$TEST_BATCHES" \
    "${COMMON[@]}" | grep '^val loss')
  loss=$(echo "$out" | awk '{print $3}') ppl=$(echo "$out" | awk '{print $6}') tok=$(echo "$out" | awk '{print $8}')
  echo "   test ppl $ppl ($tok tokens)"
  if [ -n "$TASKS" ]; then
    tj=$W/tasks/$name-$r
    mkdir -p "$W/tasks"
    $PS eval "$model" --tasks "$TASKS" --limit "$LIMIT" --tokenizer "$TOK" "${COMMON[@]}" --out "$tj" | tail -n 8
    tj=$tj.json
  fi
  "$PY" - "$ROWS" "$name" "$r" "$plan" "$what" "$ppl" "$loss" "$tok" "$tj" "$M" <<'EOF'
import json, math, os, struct, sys
rows, name, r, plan, what, ppl, loss, tok, tj, base = sys.argv[1:]
if plan != "-":
    pj = json.load(open(plan))
    params, replaced, units = pj["counts"]["params_after"], pj["replaced"], pj["units"]
else:  # the unshared model: its safetensors header
    with open(os.path.join(base, "model.safetensors"), "rb") as f:
        h = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    params = sum(math.prod(t["shape"]) for k, t in h.items() if k != "__metadata__")
    replaced = units = 0
row = {"name": name, "ratio": float(r), "what": what, "replaced": replaced, "units": units,
       "params": params,
       "bytes": 4 * params, "test_ppl": float(ppl), "test_loss": float(loss), "test_tokens": int(tok)}
if tj != "-":
    row["tasks"] = json.load(open(tj))
with open(rows, "a") as f:
    f.write(json.dumps(row) + "\n")
EOF
}

eval_row start 0.0 "hf:$M" - "SmolLM2-135M-Instruct, unshared (Q4_1 dequantized to fp32)"

for r in $RATIOS; do
  P=$W/r$r
  mkdir -p "$P"
  # DirectShare: cosine (qk) pairs, copied
  if ! have_row directshare "$r"; then
    run $PS match "hf:$M" --ratio "$r" --no-plot --threads "$THREADS" -o "$P/qk.json" > /dev/null
    run $PS share "hf:$M" --plan "$P/qk.json" -o "$P/directshare" > /dev/null
    eval_row directshare "$r" "$P/directshare" "$P/qk.json" "DirectShare: qk cosine pairs, copied"
    [ -n "${DRY_RUN:-}" ] || rm -rf "$P/directshare"
  fi
  # the training-free method
  MATCH=(--match "$TF_SEL")
  case $TF_SEL in calib | importance | measured) MATCH+=(--calib "$CAL") ;; esac
  [ -f "$P/tf.json" ] || run $PS match "hf:$M" --ratio "$r" "${MATCH[@]}" --no-plot --threads "$THREADS" \
    -o "$P/tf.json" > /dev/null
  if ! have_row "$TF" "$r"; then
    SH=()
    case $TF_COMB in
    align-copy) SH=(--align) ;;
    merge) SH=(--combine merge --calib "$CAL") ;;
    align-merge) SH=(--align --combine merge --calib "$CAL") ;;
    esac
    run $PS share "hf:$M" --plan "$P/tf.json" "${SH[@]}" -o "$P/tf" > /dev/null
    eval_row "$TF" "$r" "$P/tf" "$P/tf.json" "training-free: $TF_SEL pairs, $TF_COMB"
    [ -n "${DRY_RUN:-}" ] || rm -rf "$P/tf"
  fi
  # PostShare from the training-free plan, one run per variant. The run's hand-off also
  # evaluates its four models (start, plan on start, post-trained, PostShare) on the
  # test tokens (no tasks: the row below scores the shared model's)
  for v in $VARIANTS; do
    name=postshare-$v
    have_row "$name" "$r" && continue
    VS=()
    case $v in
    knobs) ;;
    plain) VS=(--set share.lm_weight=0.5 --set share.reg.weight=0.5 --set share.reg.normalize=false
      --set share.reg.ramp_steps=0 --set share.reg.lr_mult=1 --set share.reg.rest_lr_mult=1
      --set share.reg.pull=both) ;;
    lmonly) VS=(--set share.reg.weight=0 --set share.reg.ramp_steps=0 --set share.reg.lr_mult=1
      --set share.reg.rest_lr_mult=1 --set share.reg.pull=both) ;;
    *)
      var=VARIANT_$v
      for kv in ${!var}; do VS+=(--set "$kv"); done
      ;;
    esac
    run $PS train "$CONFIG" --set run.out_dir="$W/runs" --set run.name="$v-r$r" --set model.init="hf:$M" \
      --set data.train="$POST_TRAIN" --set data.val="$POST_VAL" --set data.tokenizer="$TOK" \
      --set share.plan="$P/tf.json" --set eval.tasks= --set eval.test="$TEST" "${SETS[@]}" "${VS[@]}" \
      > "$P/$v.log" 2>&1 || { [ -z "${DRY_RUN:-}" ] && tail -20 "$P/$v.log" >&2; exit 1; }
    [ -n "${DRY_RUN:-}" ] && cat "$P/$v.log"
    eval_row "$name" "$r" "$W/runs/$v-r$r/shared" "$W/runs/$v-r$r/shared/plan.json" \
      "PostShare ($v) from the $TF_SEL plan, then copied"
  done
done
[ -n "${DRY_RUN:-}" ] && exit 0

# 4. The table and the plot
"$PY" scripts/smollm2_table.py "$ROWS" "$W" "$CONFIG" "$TF"
cat "$W/results.md"
