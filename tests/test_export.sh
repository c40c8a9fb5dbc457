#!/usr/bin/env bash
# test_export.sh: what the HF exports carry besides the weights, and the run's
# end-of-job options:
#   - a run's model/ (byte tokenizer, from scratch): a tokenizer.json that our
#     tokenizer reads back with the byte tokenizer's ids, generation_config.json,
#     and null special ids (a byte tokenizer has none);
#   - checkpoint.final: false writes no checkpoint at the end (checkpoint.every 0),
#     the default does; a checkpoint's export follows its job (data.tokenizer);
#   - eval.test (a .txt file, and shards): results.json/md report the test set
#     beside data.val; a PostShare job with share.plan records the plan's real
#     ratio (units shared / units) and its path;
#   - convert and share --materialize of an HF folder copy its tokenizer files and
#     generation_config.json byte for byte and keep its ids (eos a list);
#   - a llama2.c model: no tokenizer (a warning) unless --tokenizer gives its
#     sentencepiece .model, which is copied (../shared/data; skipped when absent).
# Usage: test_export.sh POSTSHARE_BIN SOURCE_DIR
set -uo pipefail
PS="$1"
SRC="$2"
source "$SRC/tests/shlib.sh"
tiny_runs "Gen1:1-Gen10:32"
PYJ() { "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

# ---- a run from scratch with the byte tokenizer, no final checkpoint, a text test set
head -c 20000 "$TMP/text.txt" > "$TMP/test.txt"
"${TRAIN[@]}" --set run.name=a --set checkpoint.every=0 --set checkpoint.final=false \
  --set eval.test="$TMP/test.txt" > "$TMP/a.log" 2>&1 || { bad "run a failed"; tail "$TMP/a.log" >&2; }
A="$RUNS/a"
check '[ -z "$(ls "$A"/ckpt-*.h5 2>/dev/null)" ]' "checkpoint.final=false still wrote $(ls "$A"/ckpt-*.h5 2>/dev/null)"
check '[ -f "$A/model/model.safetensors" ] && [ -f "$A/model/tokenizer.json" ] && [ -f "$A/model/generation_config.json" ]' \
  "model/ lacks the weights, tokenizer.json or generation_config.json: $(ls "$A/model")"
check '[ "$(PYJ "$A/model/config.json" "d[\"bos_token_id\"], d[\"eos_token_id\"]")" = "(None, None)" ]' \
  "the byte tokenizer has no BOS/EOS, but config.json says $(grep _token_id "$A/model/config.json")"
"$PS" tokenize --tokenizer byte "$TMP/test.txt" > "$TMP/ids.byte" 2> /dev/null
"$PS" tokenize --tokenizer "$A/model" "$TMP/test.txt" > "$TMP/ids.exp" 2> "$TMP/tok.err"
check '[ -s "$TMP/ids.byte" ] && cmp -s "$TMP/ids.byte" "$TMP/ids.exp"' \
  "model/tokenizer.json does not encode as the byte tokenizer: $(head -c 300 "$TMP/tok.err")"
check '[ "$(PYJ "$A/results.json" "[k in d[\"models\"][0] for k in (\"val_ppl\", \"test_loss\", \"test_ppl\", \"test_tokens\")]")" = "[True, True, True, True]" ]' \
  "results.json lacks the test set: $(head -c 600 "$A/results.json")"
check 'grep -q "Test: $TMP/test.txt" "$A/results.md" && grep -q "| test loss | test ppl |" "$A/results.md"' \
  "results.md lacks the test set: $(cat "$A/results.md")"
# the default keeps a final checkpoint; its export follows the job's tokenizer
"${TRAIN[@]}" --set run.name=b --set checkpoint.every=0 --set train.steps=10 > "$TMP/b.log" 2>&1 || bad "run b failed"
CK="$(ckpt "$RUNS/b" 10)"
check '[ -f "$CK" ]' "no final checkpoint by default ($(ls "$RUNS/b"))"
"$PS" convert "$CK" -o "$TMP/fromck" > "$TMP/ck.log" 2>&1
check '[ $? -eq 0 ] && [ -f "$TMP/fromck/tokenizer.json" ] && cmp -s "$TMP/fromck/tokenizer.json" "$A/model/tokenizer.json"' \
  "convert of a checkpoint did not carry its job's tokenizer: $(tail -2 "$TMP/ck.log")"

# ---- PostShare with a plan file and shard test set: the plan's own ratio and path
"$PS" match "$A/model" --ratio 0.5 -o "$TMP/plan/plan.json" > /dev/null 2>&1 || bad "match failed"
# as a hand-edited plan may say: its "ratio" is 0, the 2 units it lists are what counts
"$PY" -c "import json,sys; p=json.load(open(sys.argv[1])); p['ratio']=0; json.dump(p, open(sys.argv[1], 'w'))" "$TMP/plan/plan.json"
cat > "$TMP/ps.yaml" <<YAML
run: {name: ps, out_dir: "$RUNS"}
model: {init: "hf:$A/model"}
data: {train: "$TMP/data/t_train_*.bin", val: "$TMP/data/t_val_*.bin", seq_len: 32, batch_size: 4, val_batches: 2}
train: {steps: 4, lr: 1.0e-3}
share: {plan: "$TMP/plan/plan.json", materialize: true}
eval: {test: "$TMP/data/t_val_*.bin", test_batches: 3}
checkpoint: {every: 0, final: false}
YAML
"$PS" train "$TMP/ps.yaml" > "$TMP/ps.log" 2>&1 || { bad "postshare run failed"; tail "$TMP/ps.log" >&2; }
P="$RUNS/ps"
n=$("$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))['shared']))" "$TMP/plan/plan.json")
check '"$PY" -c "import json,sys; s=json.load(open(sys.argv[1]))[\"share\"]; sys.exit(not (abs(s[\"ratio\"] - $n / 4) < 1e-9 and s[\"plan\"] == sys.argv[2] and s[\"units\"] == 4))" "$P/results.json" "$TMP/plan/plan.json"' \
  "results.json share: $(PYJ "$P/results.json" "d[\"share\"]") (the plan shares $n of 4 units)"
check '[ "$(PYJ "$P/results.json" "[\"test_ppl\" in m for m in d[\"models\"]]")" = "[True, True, True, True]" ]' \
  "the hand-off rows lack test_ppl"
check 'grep -q "ratio $("$PY" -c "print(f\"{$n/4:.4g}\")")" "$P/results.md" && grep -q "plan $TMP/plan/plan.json" "$P/results.md"' \
  "results.md does not give the plan's ratio and path: $(head -3 "$P/results.md")"
check 'cmp -s "$P/shared_hf/tokenizer.json" "$A/model/tokenizer.json" && cmp -s "$P/shared/tokenizer.json" "$A/model/tokenizer.json"' \
  "the hand-off's shared/ and shared_hf/ lack the run's tokenizer"

# ---- an HF folder's tokenizer files and ids, through convert and share --materialize
H="$TMP/hf"
mkdir -p "$H"
cp "$SRC/tests/fixtures/mha_untied/model.safetensors" "$H/"
"$PY" - "$SRC/tests/fixtures/mha_untied/config.json" "$H" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(bos_token_id=7, eos_token_id=[9, 11], pad_token_id=3)
json.dump(c, open(sys.argv[2] + "/config.json", "w"))
json.dump({"bos_token_id": 7, "eos_token_id": [9, 11], "temperature": 0.6, "do_sample": True},
          open(sys.argv[2] + "/generation_config.json", "w"))
EOF
cp "$A/model/tokenizer.json" "$H/tokenizer.json"
printf '{"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 64}\n' > "$H/tokenizer_config.json"
printf '{}\n' > "$H/special_tokens_map.json"
"$PS" convert "$H" -o "$TMP/conv" > "$TMP/conv.log" 2>&1 || bad "convert of an HF folder failed: $(tail -2 "$TMP/conv.log")"
"$PS" match "$H" --ratio 0.3 -o "$TMP/hplan/plan.json" > /dev/null 2>&1 || bad "match of the HF folder failed"
"$PS" share "$H" --plan "$TMP/hplan/plan.json" --materialize -o "$TMP/mat" > "$TMP/mat.log" 2>&1 ||
  bad "share --materialize failed: $(tail -2 "$TMP/mat.log")"
for out in conv mat; do
  for f in tokenizer.json tokenizer_config.json special_tokens_map.json generation_config.json; do
    check 'cmp -s "$H/$f" "$TMP/$out/$f"' "$out/$f is not the source's $f"
  done
  check '[ "$(PYJ "$TMP/$out/config.json" "d[\"bos_token_id\"], d[\"eos_token_id\"], d[\"pad_token_id\"]")" = "(7, [9, 11], 3)" ]' \
    "$out/config.json ids: $(grep _token_id "$TMP/$out/config.json" | tr -d '\n')"
done

# ---- a llama2.c model: its tokenizer is a separate file
M260="$SRC/../shared/data/models/stories260K"
if [ -f "$M260/stories260K.bin" ] && [ -f "$M260/tok512.model" ]; then
  "$PS" convert "$M260/stories260K.bin" -o "$TMP/l2c" > "$TMP/l2c.log" 2>&1
  check '[ $? -eq 0 ] && grep -q "warning: the export .* has no tokenizer" "$TMP/l2c.log" && [ ! -f "$TMP/l2c/tokenizer.model" ]' \
    "llama2.c without --tokenizer: no warning: $(cat "$TMP/l2c.log")"
  "$PS" convert "$M260/stories260K.bin" --tokenizer "$M260/tok512.model" -o "$TMP/l2c" > "$TMP/l2c.log" 2>&1
  check '[ $? -eq 0 ] && cmp -s "$M260/tok512.model" "$TMP/l2c/tokenizer.model" && grep -q LlamaTokenizer "$TMP/l2c/tokenizer_config.json"' \
    "llama2.c with --tokenizer tok512.model: $(cat "$TMP/l2c.log")"
  check '[ "$(PYJ "$TMP/l2c/config.json" "d[\"bos_token_id\"], d[\"eos_token_id\"]")" = "(1, 2)" ]' \
    "llama2.c ids: $(grep _token_id "$TMP/l2c/config.json" | tr -d '\n')"
  # the tokenizer.bin beside a .model of the same stem exports that .model
  "$PS" convert "$M260/stories260K.bin" --tokenizer "$M260/tok512.bin" -o "$TMP/l2c" > "$TMP/l2c.log" 2>&1
  check '[ $? -eq 0 ] && cmp -s "$M260/tok512.model" "$TMP/l2c/tokenizer.model"' \
    "llama2.c with --tokenizer tok512.bin: $(cat "$TMP/l2c.log")"
  expect_fail "a tokenizer larger than the model" "vocab_size" \
    "$PS" convert "$M260/stories260K.bin" --tokenizer "$SRC/../shared/data/tokenizers/llama2/tokenizer.model" -o "$TMP/l2x"
  check '[ ! -e "$TMP/l2x" ]' "a refused convert left $TMP/l2x behind"
else
  echo "SKIP: no $M260 (stories260K.bin, tok512.model): the llama2.c cases are skipped"
fi
summary
