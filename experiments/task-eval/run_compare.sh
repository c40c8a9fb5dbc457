#!/usr/bin/env bash
# experiments/task-eval/run_compare.sh: postshare eval --tasks against
# lm-evaluation-harness on the same model, data and machine (experiments/task-eval.md).
#   usage: [MODEL=stories260k|smollm2] experiments/task-eval/run_compare.sh [WORK_DIR] [LIMIT] [MMLU_LIMIT_PER_SUBJECT]
# Needs build/postshare, ../shared/data (eval data; stories260K for that model) and a
# Python with lm-eval, torch, transformers, tokenizers, sentencepiece, protobuf, gguf
# ($PY, default /work/xvenv/bin/python). The models:
#   stories260k: exported to HF (match --ratio 0 + share --materialize) with an HF
#     tokenizer made from tok512.model; both programs read that folder.
#   smollm2: SmolLM2-135M-Instruct's Q4_1 GGUF (scripts/fetch_smollm2.sh). postshare reads
#     it as gguf:FILE with its own tokenizer; lm-eval through transformers' own GGUF
#     loader (gguf_file=: its dequantization, q/k un-permutation and tokenizer), so no
#     part of the model or tokenizer is shared between the two.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
W="${1:-/tmp/task-eval}"; LIMIT="${2:-200}"; MLIM="${3:-4}"
TH="${THREADS:-1}"  # CPU threads for both (one: OpenMP barriers crawl on an overloaded machine)
PY="${PY:-/work/xvenv/bin/python}"
B=build/postshare
MODEL="${MODEL:-stories260k}"
mkdir -p "$W"
LMARGS=()
if [ "$MODEL" = smollm2 ]; then
  G="$(bash scripts/fetch_smollm2.sh)"
  M="gguf:$G"
  OURS=(--tokenizer "gguf:$G")
  LMARGS=(--model "$(dirname "$G")" --gguf "$(basename "$G")")
else
S=../shared/data/models/stories260K
M="$W/s260k_hf"
OURS=()
LMARGS=(--model "$M")
if [ ! -f "$M/tokenizer.json" ]; then
  $B match "$S/stories260K.bin" --ratio 0 --no-plot -o "$W/plan0.json" >/dev/null
  $B share "$S/stories260K.bin" --plan "$W/plan0.json" -o "$M" --materialize >/dev/null
  cp "$S/tok512.model" "$M/tokenizer.model"
  $PY experiments/task-eval/make_spm_hf_tokenizer.py "$M/tokenizer.model" "$M"
fi
fi
TASKS=piqa,arc_easy,openbookqa,boolq,hellaswag,lambada
echo "== $MODEL $(date -u +%FT%TZ) $(git rev-parse --short HEAD) $(nproc) cores; uptime: $(uptime)"
run() {  # tag, then postshare eval arguments
  local tag=$1; shift
  /usr/bin/time -f "$tag: %e s wall, %M KiB peak" $B eval "$M" "${OURS[@]}" "$@" --threads "$TH" --samples "$W/ours_$tag.jsonl" \
    --out "$W/ours_$tag" 2>"$W/ours_$tag.err" | tee "$W/ours_$tag.txt" | grep -E '^\||tok/s'
  tail -1 "$W/ours_$tag.err"
}
run main --tasks $TASKS --limit "$LIMIT"
run mmlu0 --tasks mmlu --limit "$MLIM"
run mmlu5 --tasks mmlu --limit "$MLIM" --num-fewshot 5
echo "== lm-eval; uptime: $(uptime)"
rc=0
$PY experiments/task-eval/compare_lm_eval.py "${LMARGS[@]}" --ours "$W/ours_main.jsonl" --ours-summary "$W/ours_main.json" --tasks $TASKS \
  --limit "$LIMIT" --work "$W/lm_main" --tag main --threads "$TH" 2>"$W/lm_main.err" || rc=1
$PY experiments/task-eval/compare_lm_eval.py "${LMARGS[@]}" --ours "$W/ours_mmlu0.jsonl" --ours-summary "$W/ours_mmlu0.json" --tasks mmlu \
  --limit "$MLIM" --work "$W/lm_mmlu0" --tag mmlu0 --threads "$TH" 2>"$W/lm_mmlu0.err" || rc=1
$PY experiments/task-eval/compare_lm_eval.py "${LMARGS[@]}" --ours "$W/ours_mmlu5.jsonl" --ours-summary "$W/ours_mmlu5.json" --tasks mmlu \
  --limit "$MLIM" --num-fewshot 5 --work "$W/lm_mmlu5" --tag mmlu5 --threads "$TH" 2>"$W/lm_mmlu5.err" || rc=1
# float64 reference: lm-eval with a float64 model against our fp32 log-likelihoods, on the
# tasks with the longest continuations (to tell fp32 rounding from a scoring difference)
T64="${TASKS64-piqa,hellaswag}"  # TASKS64="" skips it
if [ -n "$T64" ]; then
  $PY experiments/task-eval/compare_lm_eval.py "${LMARGS[@]}" --ours "$W/ours_main.jsonl" --ours-summary "$W/ours_main.json" --tasks "$T64" \
    --limit "$LIMIT" --work "$W/lm_f64" --tag f64 --threads "$TH" --dtype float64 2>"$W/lm_f64.err" || true
fi
echo "== done $(date -u +%FT%TZ); uptime: $(uptime)"
exit $rc
