#!/usr/bin/env bash
# test_cli_errors.sh: bad input through the command line. Each case must exit
# non-zero with a message that names the file (or key) and the problem, and
# must not damage an earlier run's files.
# Usage: test_cli_errors.sh POSTSHARE_BIN SOURCE_DIR
set -uo pipefail
PS="$1"; SRC="$2"
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
pass=0; fail=0

# expect_fail NAME PATTERN CMD...: CMD exits non-zero and its stderr matches PATTERN.
expect_fail() {
  local name="$1" pat="$2"; shift 2
  "$@" > "$TMP/out" 2> "$TMP/err"
  local rc=$?
  if [ $rc -ne 0 ] && grep -Eq "$pat" "$TMP/err"; then
    pass=$((pass+1))
  else
    fail=$((fail+1))
    echo "FAIL: $name (exit $rc), stderr:" >&2; cat "$TMP/err" >&2
  fi
}

# A good run to protect.
head -c 60000 "$SRC/trainer/model.c" > "$TMP/text.txt"
cat "$SRC"/trainer/*.c >> "$TMP/text.txt"
"$PS" prepare --tokenizer byte --out "$TMP/data" --prefix t "$TMP/text.txt" >/dev/null
SETS=(--set run.out_dir="$TMP/runs" --set data.train="$TMP/data/t_train_*.bin"
      --set data.val="$TMP/data/t_val_*.bin" --set train.steps=3)
"$PS" train "$SRC/configs/tiny.yaml" "${SETS[@]}" >/dev/null 2>&1 || { echo "FAIL: good run" >&2; fail=$((fail+1)); }
RUN="$TMP/runs/tiny"
sum_before=$(cat "$RUN/config.yaml" "$RUN/model/model.safetensors" "$RUN/model/config.json" | md5sum)

# config errors
printf 'run:\n  name: x\ntrain:\n  lr_max: 1\n' > "$TMP/typo.yaml"
expect_fail "unknown key" "typo.yaml.*lr_max.*did you mean" "$PS" train "$TMP/typo.yaml"
printf 'train:\n  steps: abc\n' > "$TMP/type.yaml"
expect_fail "wrong type" "type.yaml.*train.steps" "$PS" train "$TMP/type.yaml"
# nesting 40,000 deep (libyaml took 53 s): refused at once by train and sweep
{ printf 'train: '; head -c 40000 /dev/zero | tr '\0' '['; head -c 40000 /dev/zero | tr '\0' ']'; } > "$TMP/deep.yaml"
expect_fail "deep YAML (train)" "deep.yaml.*nested deeper" timeout 20 "$PS" train "$TMP/deep.yaml"
expect_fail "deep YAML (sweep)" "deep.yaml.*nested deeper" timeout 20 "$PS" sweep "$TMP/deep.yaml"
printf 'run:\n  name: x\n' > "$TMP/missing.yaml"
expect_fail "missing key" "missing.yaml.*(required|missing)" "$PS" train "$TMP/missing.yaml"
printf 'train: [1, 2\n' > "$TMP/malformed.yaml"
expect_fail "malformed yaml" "malformed.yaml" "$PS" train "$TMP/malformed.yaml"
expect_fail "no such config" "nope.yaml" "$PS" train "$TMP/nope.yaml"
expect_fail "bad --set" "train.stepz" "$PS" train "$SRC/configs/tiny.yaml" --set train.stepz=3

# data errors: truncated shard, bad magic, token >= vocab (the run dir must survive)
cp "$TMP/data/t_train_000000.bin" "$TMP/trunc.bin"; truncate -s -7 "$TMP/trunc.bin"
expect_fail "truncated shard" "trunc.bin.*(truncated|size|short)" \
  "$PS" train "$SRC/configs/tiny.yaml" "${SETS[@]}" --set data.train="$TMP/trunc.bin"
cp "$TMP/data/t_train_000000.bin" "$TMP/magic.bin"; printf '\x01\x02\x03\x04' | dd of="$TMP/magic.bin" conv=notrunc 2>/dev/null
expect_fail "bad magic" "magic.bin.*magic" \
  "$PS" train "$SRC/configs/tiny.yaml" "${SETS[@]}" --set data.train="$TMP/magic.bin"
# (resume none: otherwise the good run's checkpoint is resumed, and the changed
# vocab_size is reported as a change of model; test_resume_cli.sh covers that)
expect_fail "token >= vocab" "t_train_000000.bin.*(vocab|token)|data.tokenizer .byte. has 256 ids but the model.s vocab_size is 64" \
  "$PS" train "$SRC/configs/tiny.yaml" "${SETS[@]}" --set model.vocab_size=64 --set checkpoint.resume=none
expect_fail "no shards" "nothing_\\*.bin" \
  "$PS" train "$SRC/configs/tiny.yaml" "${SETS[@]}" --set data.train="$TMP/nothing_*.bin"

# model errors: corrupt safetensors, truncated safetensors, non-LLaMA config
cp -r "$RUN/model" "$TMP/m1"; truncate -s -100 "$TMP/m1/model.safetensors"
expect_fail "truncated safetensors" "m1/model.safetensors" "$PS" eval "hf:$TMP/m1" --data "$TMP/data/t_val_*.bin"
cp -r "$RUN/model" "$TMP/m2"; printf 'XXXXXXXX' | dd of="$TMP/m2/model.safetensors" conv=notrunc 2>/dev/null
expect_fail "corrupt safetensors header" "m2/model.safetensors" "$PS" eval "hf:$TMP/m2" --data "$TMP/data/t_val_*.bin"
cp -r "$RUN/model" "$TMP/m3"; sed -i 's/"llama"/"gpt2"/; s/LlamaForCausalLM/GPT2LMHeadModel/' "$TMP/m3/config.json"
expect_fail "non-llama" "m3/config.json.*(gpt2|GPT2)" "$PS" eval "hf:$TMP/m3" --data "$TMP/data/t_val_*.bin"
printf 'model:\n  init: hf:%s/m1\ndata:\n  train: x\n  val: x\n  seq_len: 16\n  batch_size: 2\ntrain:\n  steps: 1\n' "$TMP" > "$TMP/hf.yaml"
expect_fail "model.init corrupt" "m1/model.safetensors" \
  "$PS" train "$TMP/hf.yaml" "${SETS[@]}"
# task evaluation: unknown task, few-shot where there is none, missing data, bad task config,
# and a job whose eval.tasks is wrong fails before it trains
FX="$SRC/tests/fixtures/tasks"
expect_fail "unknown task" "unknown task 'piqq'.*known tasks: piqa" \
  "$PS" eval "hf:$RUN/model" --tasks piqq --tokenizer byte --data-dir "$FX"
expect_fail "few-shot piqa" "piqa.*num-fewshot is only supported for mmlu" \
  "$PS" eval "hf:$RUN/model" --tasks piqa --num-fewshot 2 --tokenizer byte --data-dir "$FX"
expect_fail "missing task data" "arc_easy/arc_easy.jsonl.*--data-dir" \
  "$PS" eval "hf:$RUN/model" --tasks arc_easy --tokenizer byte --data-dir "$FX"
expect_fail "tasks without tokenizer" "needs --tokenizer" "$PS" eval "hf:$RUN/model" --tasks piqa --data-dir "$FX"
printf '[{"name": "x"}]' > "$TMP/tasks.json"
expect_fail "bad task config" "tasks.json: task 0 needs .name. and .file." \
  "$PS" eval "hf:$RUN/model" --tasks piqa --task-config "$TMP/tasks.json" --tokenizer byte
expect_fail "job eval.tasks" "eval.tasks: unknown task 'nope'" \
  "$PS" train "$SRC/configs/tiny.yaml" "${SETS[@]}" --set run.name=badtasks --set eval.tasks=piqa,nope --set eval.data_dir="$FX"
if [ ! -e "$TMP/runs/badtasks/metrics.jsonl" ]; then pass=$((pass+1)); else
  fail=$((fail+1)); echo "FAIL: a job with a bad eval.tasks started training" >&2; fi
# data.tokenizer must fit the model (256 ids): a tiktoken file of 300 ranks (+256 specials) does not
"$PS_PYTHON" -c 'import base64,sys; sys.stdout.write("".join(base64.b64encode(bytes([i]) if i < 256 else b"ab%d" % i).decode() + " %d\n" % i for i in range(300)))' > "$TMP/big.tiktoken"
expect_fail "tokenizer larger than the model" "data.tokenizer.*big.tiktoken.*556 ids.*vocab_size is 256" \
  "$PS" train "$SRC/configs/tiny.yaml" "${SETS[@]}" --set data.tokenizer="tiktoken:$TMP/big.tiktoken" --set checkpoint.resume=none
expect_fail "unknown command" "unknown command" "$PS" frobnicate

sum_after=$(cat "$RUN/config.yaml" "$RUN/model/model.safetensors" "$RUN/model/config.json" | md5sum)
if [ "$sum_before" = "$sum_after" ] && ! ls "$RUN"/*.tmp.* "$RUN"/model/*.tmp.* >/dev/null 2>&1; then
  pass=$((pass+1))
else
  fail=$((fail+1)); echo "FAIL: failed runs changed the earlier run directory" >&2
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
