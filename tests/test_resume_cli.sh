#!/usr/bin/env bash
# test_resume_cli.sh: checkpoints and resume through the command line.
#   - bit-exact resume: 2N steps straight equal the same steps run in segments
#     (train.stop_after, then the same command), bitwise: final model, the
#     final checkpoint's tensors and data state, and every metrics line but the
#     wall-clock fields; for each variant in VARIANTS (plain, gradient
#     accumulation, PostShare with accumulation);
#   - the keep policy, no step-0 evaluation on resume, metrics appended;
#   - SIGINT / SIGTERM: exit status 3 after a checkpoint, then an exact resume;
#     a signal during a write; a second signal aborts (status 143) and leaves
#     the earlier checkpoints intact;
#   - damaged checkpoints: auto resume falls back past a damaged newest one;
#     an explicit damaged path, all checkpoints damaged, a changed model or
#     data, or a dir holding another history each stop with a clear message and
#     change nothing; harmless changes (more steps, logging) are allowed;
#   - postshare inspect, h5dump (standard HDF5), and checkpoints as MODEL for
#     eval, generate and model.init.
# Usage: test_resume_cli.sh POSTSHARE_BIN SOURCE_DIR
set -uo pipefail
PS="$1"; SRC="$2"
source "$SRC/tests/shlib.sh"
tiny_runs "Gen1:1-Exo40:38"
head -c 200000 "$TMP/text.txt" > "$TMP/other.txt"
"$PS" prepare --tokenizer byte --out "$TMP/other" --prefix o --val-fraction 0.1 "$TMP/other.txt" >/dev/null \
  || bad "prepare (other data) failed"

train() { "${TRAIN[@]}" "$@"; }
# a digest of every file in a run directory (to show that nothing changed)
digest() { (cd "$RUNS/$1" && find . -type f | sort | xargs md5sum | md5sum); }

# ---------------------------------------------------------------------------
# Bit-exact resume. One line per variant: "name|extra --set options". The
# PostShare variant (a `share` section with a plan, whose JSON the loop hands
# to the checkpoint) is one more line here once that section exists.
VARIANTS=(
  "plain|"
  "accum|--set train.grad_accum=3"
  "postshare|--set share.ratio=0.3 --set share.reg.weight=1 --set train.grad_accum=2"
)
COMMON=(--set train.steps=40 --set train.log_every=1 --set train.eval_every=7
        --set checkpoint.every=6 --set checkpoint.keep=2)
for v in "${VARIANTS[@]}"; do
  name="${v%%|*}"; read -r -a extra <<< "${v#*|}"
  train --set run.name="$name-straight" "${COMMON[@]}" "${extra[@]}" > "$TMP/$name-straight.log" 2>&1 \
    || { bad "$name: straight run failed"; cat "$TMP/$name-straight.log" >&2; }
  # three segments: stop after 17, stop after 29, then the same command to the end
  train --set run.name="$name-split" "${COMMON[@]}" "${extra[@]}" --set train.stop_after=17 \
    > "$TMP/$name-s1.log" 2>&1 || bad "$name: segment 1 failed"
  check 'grep -q "stopped after step 17 of 40" "$TMP/$name-s1.log"' "$name: no stop_after message"
  train --set run.name="$name-split" "${COMMON[@]}" "${extra[@]}" --set train.stop_after=29 \
    > "$TMP/$name-s2.log" 2>&1 || bad "$name: segment 2 failed"
  train --set run.name="$name-split" "${COMMON[@]}" "${extra[@]}" --set train.stop_after=17 \
    > "$TMP/$name-s3.log" 2>&1 || bad "$name: segment 3 failed"
  check 'grep -q "resume: continuing at step 29 of 40" "$TMP/$name-s3.log"' "$name: segment 3 did not resume at 29"
  check 'same_run "$name-straight" "$name-split" 40' \
    "$name: 40 steps straight and 17+12+11 resumed differ (model, metrics or final checkpoint)"
  check '[ "$(grep -c "\"step\":0," "$RUNS/$name-split/metrics.jsonl")" = 1 ]' \
    "$name: the step-0 evaluation ran again on resume"
  check '[ "$(ls "$RUNS/$name-split" | grep -c "^ckpt-.*\.h5$")" = 2 ]' "$name: checkpoint.keep=2 not applied"
done
# the run that resumes must be the one that ran: a changed optimizer setting shows in the result
train --set run.name=lr-split "${COMMON[@]}" --set train.stop_after=17 > /dev/null 2>&1
train --set run.name=lr-split "${COMMON[@]}" --set train.lr=0.002 > "$TMP/lr.log" 2>&1
check 'grep -q "changed since the checkpoint.*train.lr 0.001 -> 0.002" "$TMP/lr.log"' "a changed lr is not reported"
check '! cmp -s "$RUNS/plain-straight/model/model.safetensors" "$RUNS/lr-split/model/model.safetensors"' \
  "a resume with another lr gave the same model (the comparison above cannot fail)"

# keep the newest K, plus every multiple of keep_every
train --set run.name=keep --set train.steps=40 --set checkpoint.every=6 --set checkpoint.keep=1 \
  --set checkpoint.keep_every=12 > "$TMP/keep.log" 2>&1 || bad "keep run failed"
check '[ "$(cd "$RUNS/keep" && ls ckpt-*.h5 | tr "\n" " ")" = "ckpt-00000012.h5 ckpt-00000024.h5 ckpt-00000036.h5 ckpt-00000040.h5 " ]' \
  "keep=1 keep_every=12 kept: $(cd "$RUNS/keep" && ls ckpt-*.h5 | tr '\n' ' ')"
check 'grep -Eq "checkpoint: wrote .*ckpt-00000040.h5 \([0-9.]+ MB\) in [0-9.]+ s \([0-9.]+ MB/s\)" "$TMP/keep.log"' \
  "no time/throughput report for checkpoint writes"

# ---------------------------------------------------------------------------
# Signals
LONG=(--set train.steps=3000 --set train.log_every=100 --set checkpoint.every=0 --set train.eval_every=1000)
train --set run.name=sig-straight "${LONG[@]}" > /dev/null 2>&1 || bad "long straight run failed"
"${TRAIN[@]}" --set run.name=sig "${LONG[@]}" > "$TMP/sig.log" 2>&1 &
pid=$!  # postshare itself (not a subshell), so that the signal reaches it
for _ in $(seq 600); do grep -q "step   100/3000" "$TMP/sig.log" 2>/dev/null && break; sleep 0.05; done
kill -INT "$pid"; wait "$pid"; rc=$?
check '[ $rc -eq 3 ] && grep -q "stopped by signal 2 after step" "$TMP/sig.log"' "SIGINT: exit $rc, expected 3"
check '[ "$(ls "$RUNS/sig" | grep -c "^ckpt-.*\.h5$")" = 1 ] && all_valid sig' "SIGINT: no valid checkpoint"
train --set run.name=sig "${LONG[@]}" > "$TMP/sig2.log" 2>&1 || bad "resume after SIGINT failed"
check 'cmp -s "$RUNS/sig-straight/model/model.safetensors" "$RUNS/sig/model/model.safetensors"' \
  "SIGINT + resume differs from the straight run"

SHORT=(--set train.steps=30 --set checkpoint.every=5 --set train.log_every=1)
train --set run.name=short-straight "${SHORT[@]}" > /dev/null 2>&1 || bad "short straight run failed"
# a signal arriving during a write: the write completes, then the run stops
POSTSHARE_TEST_SIGNAL_AT=tensors:2 train --set run.name=sigw "${SHORT[@]}" > "$TMP/sigw.log" 2>&1; rc=$?
check '[ $rc -eq 3 ] && [ -f "$(ckpt "$RUNS/sigw" 10)" ] && all_valid sigw' "signal during a write: exit $rc"
train --set run.name=sigw "${SHORT[@]}" > /dev/null 2>&1 || bad "resume after a signal during a write failed"
check 'same_run short-straight sigw 30' "signal during a write + resume differs from the straight run"
# a second signal aborts at once: killed by SIGTERM mid-write, no temp file, the earlier checkpoint intact
POSTSHARE_TEST_SIGNAL_AT=create:2,tensors:2 train --set run.name=sig2 "${SHORT[@]}" > "$TMP/sig2x.log" 2>&1; rc=$?
check '[ $rc -eq 143 ]' "second signal: exit $rc, expected 143 (killed by SIGTERM)"
check '[ "$(cd "$RUNS/sig2" && ls)" = "$(printf "ckpt-00000005.h5\nconfig.yaml\nmetrics.jsonl")" ] && all_valid sig2' \
  "second signal: the run dir holds $(cd "$RUNS/sig2" && ls | tr '\n' ' ')"
train --set run.name=sig2 "${SHORT[@]}" > /dev/null 2>&1 || bad "resume after a second signal failed"
check 'same_run short-straight sig2 30' "second signal + resume differs from the straight run"

# ---------------------------------------------------------------------------
# Damaged checkpoints and changed configs
R="$RUNS/dmg"
train --set run.name=dmg "${SHORT[@]}" --set train.stop_after=20 > /dev/null 2>&1 || bad "dmg run failed"
# flip a byte in the middle of the newest checkpoint (tensor data fill most of the file)
f20="$(ckpt "$R" 20)"; size=$(stat -c %s "$f20")
printf '\xa5' | dd of="$f20" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
"$PS" inspect "$f20" > "$TMP/inspect-bad.log" 2> "$TMP/inspect-bad.err"; rc=$?
check '[ $rc -eq 1 ] && grep -q DAMAGED "$TMP/inspect-bad.log" && grep -q "checksum mismatch" "$TMP/inspect-bad.log" && grep -q "ckpt-00000020.h5" "$TMP/inspect-bad.err"' \
  "inspect of a damaged checkpoint: exit $rc"
cp "$f20" "$TMP/damaged.h5"
# an explicit damaged path: clear error, nothing changed
before=$(digest dmg)
train --set run.name=dmg "${SHORT[@]}" --set checkpoint.resume="$TMP/damaged.h5" > "$TMP/o" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "damaged.h5.*checksum mismatch" "$TMP/e" && [ "$(digest dmg)" = "$before" ]' \
  "explicit damaged checkpoint: exit $rc, $(cat "$TMP/e")"
# a changed model, other data, a shorter schedule: clear errors, nothing changed
train --set run.name=dmg "${SHORT[@]}" --set checkpoint.resume="$(ckpt "$R" 15)" --set model.ffn_dim=96 > "$TMP/o" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "model.ffn_dim 64 -> 96" "$TMP/e" && [ "$(digest dmg)" = "$before" ]' \
  "changed model: exit $rc, $(cat "$TMP/e")"
train --set run.name=dmg "${SHORT[@]}" --set checkpoint.resume="$(ckpt "$R" 15)" \
  --set data.train="$TMP/other/o_train_*.bin" > "$TMP/o" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "training data differs" "$TMP/e" && [ "$(digest dmg)" = "$before" ]' \
  "other data: exit $rc, $(cat "$TMP/e")"
train --set run.name=dmg "${SHORT[@]}" --set checkpoint.resume="$(ckpt "$R" 10)" > "$TMP/o" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -Eq "already holds .*ckpt-000000(15|20).h5" "$TMP/e" && [ "$(digest dmg)" = "$before" ]' \
  "resuming an older checkpoint into a dir with newer ones: exit $rc, $(cat "$TMP/e")"
train --set run.name=dmg "${SHORT[@]}" --set checkpoint.resume=none > "$TMP/o" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "already holds" "$TMP/e" && [ "$(digest dmg)" = "$before" ]' \
  "resume none into a dir with checkpoints: exit $rc, $(cat "$TMP/e")"
# auto: says the newest is damaged, falls back to the previous one, keeps the damaged file aside
train --set run.name=dmg "${SHORT[@]}" > "$TMP/o" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 0 ] && grep -q "damaged checkpoint .*ckpt-00000020.h5: " "$TMP/e" && grep -q "falling back.*ckpt-00000015.h5" "$TMP/e" && grep -q "resume: read .*ckpt-00000015.h5" "$TMP/o"' \
  "auto resume past a damaged checkpoint: exit $rc, $(cat "$TMP/e")"
check '[ -f "$f20.damaged" ] && ! ls "$R"/*.tmp.* >/dev/null 2>&1' "the damaged checkpoint was not kept aside"
check 'same_run short-straight dmg 30' "resume after falling back differs from the straight run"
# a complete run: nothing to do; more steps and other logging: allowed
train --set run.name=dmg "${SHORT[@]}" > "$TMP/o" 2>&1
check 'grep -q "the run is complete, nothing to train" "$TMP/o" && ! grep -q "saved" "$TMP/o"' "re-running a complete run"
train --set run.name=dmg "${SHORT[@]}" --set train.steps=35 --set train.log_every=3 > "$TMP/o" 2>&1; rc=$?
check '[ $rc -eq 0 ] && grep -q "train.steps 30 -> 35" "$TMP/o" && [ -f "$(ckpt "$R" 35)" ]' "more steps: exit $rc"
# every checkpoint damaged: a clear error, nothing changed
cp -r "$R" "$RUNS/dmg-all"
for f in "$RUNS/dmg-all"/ckpt-*.h5; do truncate -s 20000 "$f"; done
before=$(digest dmg-all)
train --set run.name=dmg-all "${SHORT[@]}" --set train.steps=35 > "$TMP/o" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "is truncated" "$TMP/e" && grep -q "none of the 3 checkpoint" "$TMP/e" && [ "$(digest dmg-all)" = "$before" ]' \
  "all checkpoints damaged: exit $rc, $(cat "$TMP/e")"

# ---------------------------------------------------------------------------
# inspect, h5dump, checkpoints as models
F="$(ckpt "$R" 35)"
"$PS" inspect "$F" > "$TMP/inspect.log" 2>&1; rc=$?
check '[ $rc -eq 0 ] && grep -q "^step 35 |" "$TMP/inspect.log" && grep -q "^config: run dmg" "$TMP/inspect.log" && grep -q "^plan: none" "$TMP/inspect.log" && grep -q "model.layers.1.mlp.down_proj.weight .* ok" "$TMP/inspect.log" && grep -q "^verified: 63 datasets, every checksum ok" "$TMP/inspect.log"' \
  "inspect: exit $rc"
"$PS" inspect "$F" --config > "$TMP/inspect-c.log" 2>&1
check 'grep -q "^---- config ----" "$TMP/inspect-c.log" && grep -q "^  steps: 35" "$TMP/inspect-c.log"' "inspect --config"
if command -v h5dump >/dev/null; then
  check 'h5dump "$F" > /dev/null' "h5dump cannot read a checkpoint"
  check 'h5dump -a /step "$F" | grep "(0): 35" >/dev/null' "h5dump: /step"
  check 'h5dump -d /config "$F" | grep "steps: 35" >/dev/null' "h5dump: /config text"
  check 'h5dump -p -d /params/model.norm.weight/master "$F" | grep "CHECKSUM FLETCHER32" >/dev/null' "h5dump: Fletcher32"
  check 'h5dump -a /data/sample "$F" | grep "(0): 140" >/dev/null' "h5dump: /data/sample"
else
  bad "h5dump is not installed (hdf5-tools; scripts/setup.sh installs it)"
fi
ev() { "$PS" eval "$1" --data "$TMP/data/t_val_*.bin" --seq-len 32 --batch-size 4 --batches 2 2>&1 | grep -o 'val loss [0-9.]*'; }
check '[ -n "$(ev "hf:$R/model")" ] && [ "$(ev "ckpt:$F")" = "$(ev "hf:$R/model")" ] && [ "$(ev "$F")" = "$(ev "hf:$R/model")" ]' \
  "eval of the final checkpoint differs from eval of the saved model"
check '"$PS" generate "$F" --tokenizer byte --steps 5 > /dev/null 2>&1' "generate cannot load a checkpoint"
# a new run from a checkpoint's weights (model.init: ckpt:PATH): its step-0 loss is the checkpoint's
printf 'run:\n  name: fromckpt\n  out_dir: %s\nmodel:\n  init: ckpt:%s\ndata:\n  train: %s\n  val: %s\n  seq_len: 32\n  batch_size: 4\n  val_batches: 2\ntrain:\n  steps: 3\n' \
  "$RUNS" "$F" "$TMP/data/t_train_*.bin" "$TMP/data/t_val_*.bin" > "$TMP/fromckpt.yaml"
"$PS" train "$TMP/fromckpt.yaml" > "$TMP/o" 2>&1; rc=$?
check '[ $rc -eq 0 ] && grep -q "step     0/3 | $(ev "$F")" "$TMP/o"' \
  "model.init: ckpt:PATH does not start from the checkpoint's weights (exit $rc)"

summary
