#!/usr/bin/env bash
# DirectShare on SmolLM2-135M-Instruct: WikiText-2 validation perplexity at 5,
# 10, 20 and 30% of the KV groups replaced, for random plans (3 seeds), head
# pruning, and pairs chosen by cosine (qk), by circuit, by the calibration score,
# by that score times the measured head importance, and by the loss increase
# measured with each unit sharing its calibration-best source, each applied by copy,
# merge and align + merge (align + copy once, as a check: the same as copy).
#
# usage: experiments/smollm2/run.sh          (from the repository root, after a build)
# env:   WORK (default experiments/smollm2/work), EVAL_TOKENS (default 20480: the
#        first tokens of valid.txt), CALIB_TOKENS (default 4096: the first of the
#        last 13,349 tokens of valid.txt, disjoint from the evaluated ones),
#        IMP_TOKENS (default 1024: the first calibration tokens, for head importance),
#        DMG_TOKENS (default 1024: the same, for the measured sharing damage), SEQ (512),
#        THREADS (2),
#        RATIOS ("0.05 0.1 0.2 0.3"), VARIANTS (default: all, in the order below),
#        SKIP_BASE (set: no unshared evaluation), NO_TABLE (set: no table at the end),
#        PY (optional: a Python with torch, transformers, gguf, accelerate,
#        tokenizers; set, the conversion and tokenization are cross-checked once).
# Results: WORK/results.csv (one line per evaluated variant; a variant already
# there is skipped, so an interrupted run resumes), then results.md and
# ppl.png beside this script (make_table.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
P=${P:-build/postshare}
WORK=${WORK:-experiments/smollm2/work}
EVAL_TOKENS=${EVAL_TOKENS:-20480}
CALIB_TOKENS=${CALIB_TOKENS:-4096}
IMP_TOKENS=${IMP_TOKENS:-1024}
DMG_TOKENS=${DMG_TOKENS:-1024}
SEQ=${SEQ:-512}
THREADS=${THREADS:-2}
RATIOS=${RATIOS:-0.05 0.1 0.2 0.3}
GGUF_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/postshare/smollm2
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
VALID=../shared/data/text/wikitext-2-raw/valid.txt
mkdir -p "$WORK"

# 1. The model as an fp32 HF folder and the token shards, by postshare itself:
# `convert` dequantizes the GGUF (q/k rows back in HF order), `prepare` tokenizes
# valid.txt with the GGUF's own tokenizer. --val-fraction 0.05 puts the last 5%
# (13,349 tokens) in wt2_val_*: the calibration tokens; the evaluation reads the
# first EVAL_TOKENS of wt2_train_* (253,632 tokens), so the two never overlap.
if [ ! -f "$WORK/hf/config.json" ]; then
    $P convert "gguf:$GGUF_DIR/$GGUF" -o "$WORK/hf"
fi
if [ ! -f "$WORK/data/wt2_val_000000.bin" ]; then
    $P prepare --tokenizer "gguf:$GGUF_DIR/$GGUF" --out "$WORK/data" --prefix wt2 \
        --val-fraction 0.05 "$VALID"
fi
# Optional cross-check (PY set: a Python with torch, transformers, gguf, accelerate,
# tokenizers): the same weights and token ids as transformers + tokenizers give.
if [ -n "${PY:-}" ] && [ ! -f "$WORK/crosscheck.ok" ]; then
    rm -rf "$WORK/pyref" && mkdir -p "$WORK/pyref/hf" "$WORK/pyref/data"
    "$PY" experiments/smollm2/convert_gguf.py "$GGUF_DIR" "$GGUF" "$WORK/pyref/hf"
    "$PY" experiments/smollm2/tokenize_wikitext.py "$WORK/pyref/hf" "$VALID" \
        "$WORK/pyref/data" 20480 8192
    "$PY" experiments/smollm2/crosscheck.py "$WORK" && touch "$WORK/crosscheck.ok"
fi
M=hf:$WORK/hf
EVAL=(--data "$WORK/data/wt2_train_*.bin" --seq-len "$SEQ" --batch-size 1
      --batches $((EVAL_TOKENS / SEQ)) --threads "$THREADS" --backend cpu)

# 2. Calibration Grams (one forward pass over CALIB_TOKENS tokens), head importance
# (the loss increase when each unit is removed, on the first IMP_TOKENS of them: one
# forward pass per unit of layers >= 1, 87 on SmolLM2) and the measured sharing
# damage (the same with each unit taking its calibration-best source's slices).
# A calibration file from before the damage existed is made again (same Grams).
[ -f "$WORK/calib.bin" ] && grep -q PSDMG001 "$WORK/calib.bin" ||
    $P calibrate "$M" --data "$WORK/data/wt2_val_*.bin" \
    --tokens "$CALIB_TOKENS" --importance-tokens "$IMP_TOKENS" --damage-tokens "$DMG_TOKENS" \
    --seq-len "$SEQ" --threads "$THREADS" -o "$WORK/calib.bin" 2> "$WORK/importance.log"

CSV=$WORK/results.csv
[ -f "$CSV" ] || echo "ratio,selection,combine,replaced,ppl,loss,tokens" > "$CSV"
done_already() { grep -q "^$1,$2,$3," "$CSV"; }
evaluate() {  # ratio selection combine model-spec replaced
    local out
    out=$($P eval "$4" "${EVAL[@]}" | grep '^val loss')
    local loss ppl tok
    loss=$(echo "$out" | awk '{print $3}')
    ppl=$(echo "$out" | awk '{print $6}')
    tok=$(echo "$out" | awk '{print $8}')
    echo "$1,$2,$3,$5,$ppl,$loss,$tok" >> "$CSV"
    echo "$(date +%T) ratio $1 $2 $3: replaced $5, ppl $ppl"
}

[ -n "${SKIP_BASE:-}" ] || done_already 0 none none || evaluate 0 none none "$M" 0

# One variant: SELECTION is random1..3, prune, qk, circuit, calib, importance or measured; COMBINE is
# copy, align-copy, merge, align-merge or prune.
variant() {  # ratio selection combine
    local r=$1 sel=$2 comb=$3
    done_already "$r" "$sel" "$comb" && return 0
    local d=$WORK/r$r/$sel
    mkdir -p "$d"
    if [ ! -f "$d/plan.json" ]; then
        case $sel in
        random*) $P match "$M" --ratio "$r" --select random --seed "${sel#random}" \
                     --no-plot -o "$d/plan.json" > "$d/match.log" ;;
        prune) $P match "$M" --ratio "$r" --select prune --calib "$WORK/calib.bin" \
                   --no-plot -o "$d/plan.json" > "$d/match.log" ;;
        calib | importance | measured) $P match "$M" --ratio "$r" --match "$sel" --calib "$WORK/calib.bin" \
                   -o "$d/plan.json" > "$d/match.log" ;;
        *) $P match "$M" --ratio "$r" --match "$sel" -o "$d/plan.json" > "$d/match.log" ;;
        esac
    fi
    local out=$d/model-$comb  # its own folder: runs for other RATIOS or VARIANTS can go in parallel
    local args=(--plan "$d/plan.json" -o "$out")
    case $comb in
    align-copy) args+=(--align) ;;
    merge) args+=(--combine merge --calib "$WORK/calib.bin") ;;
    align-merge) args+=(--align --combine merge --calib "$WORK/calib.bin") ;;
    prune) args+=(--combine prune) ;;
    esac
    rm -rf "$out"
    $P share "$M" "${args[@]}" > "$d/share-$comb.log"
    local n
    n=$(grep -o '"replaced":[[:space:]]*[0-9]*' "$d/plan.json" | grep -o '[0-9]*$')
    evaluate "$r" "$sel" "$comb" "$out" "$n"
    rm -rf "$out"
}

# In order of what the verdict needs first (a run cut short still answers it).
DEFAULT_VARIANTS="random1:copy prune:prune calib:copy importance:copy random2:copy random3:copy
calib:align-merge importance:align-merge calib:merge qk:copy circuit:copy importance:merge
qk:merge circuit:merge qk:align-merge circuit:align-merge calib:align-copy measured:copy
measured:merge measured:align-merge"
for v in ${VARIANTS:-$DEFAULT_VARIANTS}; do
    for r in $RATIOS; do variant "$r" "${v%%:*}" "${v##*:}"; done
done
[ -n "${NO_TABLE:-}" ] || experiments/smollm2/make_table.sh "$CSV"
