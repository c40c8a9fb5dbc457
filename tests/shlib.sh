# tests/shlib.sh: helpers for the shell tests, sourced after PS (the postshare
# binary) and SRC (the source tree) are set: a scratch directory $TMP removed
# on exit, pass/fail counters with `check`, the closing summary line, English
# text for training data, and helpers that compare training runs.
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# PY: the Python that has the modules setup.sh installs (CMake checks it and
# passes it to every test as PS_PYTHON); never the first python3 on PATH.
PY="${PS_PYTHON:-/usr/bin/python3}"
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() {
  fail=$((fail + 1))
  echo "FAIL: $*" >&2
}
# check 'CONDITION' 'message when it is false'
check() { if eval "$1"; then ok; else bad "$2"; fi; }
# expect_fail NAME PATTERN CMD...: CMD exits non-zero and its stderr matches PATTERN.
expect_fail() {
  local name="$1" pat="$2"
  shift 2
  "$@" > "$TMP/out" 2> "$TMP/err"
  local rc=$?
  if [ $rc -ne 0 ] && grep -Eq "$pat" "$TMP/err"; then
    ok
  else
    bad "$name (exit $rc): $(cat "$TMP/err")"
  fi
}
# The closing "N passed, N failed" line; returns the test's status.
summary() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}

# english_text OUT BOOKS: real English text: the KJV Bible's BOOKS (e.g.
# "Gen1:1-Num36:13") when bible-kjv is installed (setup.sh installs it), else
# tinyshakespeare from ../shared/data, else our own docs and sources.
english_text() {
  if command -v bible >/dev/null; then
    bible "$2" > "$1"
  elif [ -f "$SRC/../shared/data/text/tinyshakespeare/input.txt" ]; then
    cp "$SRC/../shared/data/text/tinyshakespeare/input.txt" "$1"
  else
    cat "$SRC"/docs/*.md "$SRC"/trainer/*.c > "$1"
  fi
}

# ---- training runs under $RUNS (checkpoint and resume tests)

# tiny_runs BOOKS: byte-level shards of english_text BOOKS in $TMP/data, runs
# under $RUNS, and TRAIN: the command that trains configs/tiny.yaml on them
# (append --set options). One thread: these tiny models gain nothing from
# more, and tests side by side (ctest -j2 on 2 cores) would oversubscribe
# OpenMP's spinning threads.
tiny_runs() {
  export OMP_NUM_THREADS=1
  english_text "$TMP/text.txt" "$1"
  "$PS" prepare --tokenizer byte --out "$TMP/data" --prefix t --val-fraction 0.05 "$TMP/text.txt" \
    > /dev/null || bad "prepare failed"
  RUNS="$TMP/runs"
  TRAIN=("$PS" train "$SRC/configs/tiny.yaml" --set run.out_dir="$RUNS"
    --set data.train="$TMP/data/t_train_*.bin" --set data.val="$TMP/data/t_val_*.bin")
}

# metrics.jsonl without its wall-clock fields
metrics() { sed -E 's/,"tokens_per_s":[^,}]*,"elapsed_s":[^,}]*(,"cpu_s":[^,}]*)?//' "$1"; }
# ckpt DIR STEP: the path of a run directory's checkpoint at STEP
ckpt() { printf '%s/ckpt-%08d.h5' "$1" "$2"; }
# same_run A B STEP: runs A and B are bitwise the same: the final model, every
# metrics line (but wall-clock fields), and the tensors, data position and RNG
# states of their checkpoints at STEP
same_run() {
  local a="$RUNS/$1" b="$RUNS/$2"
  cmp -s "$a/model/model.safetensors" "$b/model/model.safetensors" &&
    diff <(metrics "$a/metrics.jsonl") <(metrics "$b/metrics.jsonl") > /dev/null &&
    h5diff -q "$(ckpt "$a" "$3")" "$(ckpt "$b" "$3")" /params &&
    h5diff -q "$(ckpt "$a" "$3")" "$(ckpt "$b" "$3")" /data &&
    h5diff -q "$(ckpt "$a" "$3")" "$(ckpt "$b" "$3")" /rng
}
# all_valid NAME: every file under a checkpoint's name in run NAME reads back intact
all_valid() {
  local f
  for f in "$RUNS/$1"/ckpt-*.h5; do
    [ -e "$f" ] || continue
    "$PS" inspect "$f" > /dev/null 2>&1 || {
      echo "  not intact: $f" >&2
      return 1
    }
  done
}
