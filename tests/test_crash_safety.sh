#!/usr/bin/env bash
# test_crash_safety.sh: SIGKILL at many points in and around checkpoint writes.
# After every kill, each file named ckpt-*.h5 in the run directory must read
# back intact (no partial file looks valid), `train` with checkpoint.resume
# auto must continue, and the finished run must equal, bitwise, a run that was
# never killed (model, final checkpoint tensors, metrics but wall-clock fields).
#   - exact points: the writer's test hook POSTSHARE_TEST_KILL_AT=PHASE:N kills
#     the N-th write of the process at each phase (temp file created, half the
#     tensors written, closed, fsynced, renamed, pruning old checkpoints);
#   - random points: kill -9 after a random delay (up to a third of the time an
#     unkilled run takes, so the kills land all through it whatever the
#     machine's speed), again and again, on a run that checkpoints every 3
#     steps (bounded: at most MAX_KILLS kills, then it is run to the end).
# Usage: test_crash_safety.sh POSTSHARE_BIN SOURCE_DIR
set -uo pipefail
PS="$1"; SRC="$2"
source "$SRC/tests/shlib.sh"
tiny_runs "Gen1:1-Gen50:26"

# ---------------------------------------------------------------------------
# Exact points. Checkpoints at steps 4, 8, ..., 24, keeping 2: the 3rd write
# (step 12) is the first to delete an old checkpoint.
EXACT=(--set train.steps=24 --set checkpoint.every=4 --set checkpoint.keep=2
       --set train.log_every=1 --set train.eval_every=5)
"${TRAIN[@]}" --set run.name=ref "${EXACT[@]}" > /dev/null 2>&1 || bad "reference run failed"
POINTS=(create:1 tensors:1 close:1 fsync:1 rename:1
        create:3 tensors:3 close:3 fsync:3 rename:3 prune:3 prune:4 tensors:6 rename:6)
for point in "${POINTS[@]}"; do
  name="kill-${point/:/-}"
  # (the braces keep bash's "Killed" notice out of the test output)
  { POSTSHARE_TEST_KILL_AT=$point "${TRAIN[@]}" --set run.name="$name" "${EXACT[@]}" > "$TMP/$name.log" 2>&1; } 2>/dev/null
  rc=$?
  check '[ $rc -eq 137 ]' "$point: exit $rc, expected 137 (SIGKILL)"
  check 'all_valid "$name"' "$point: a file under a checkpoint name is not intact after the kill"
  "${TRAIN[@]}" --set run.name="$name" "${EXACT[@]}" > "$TMP/$name-resume.log" 2>&1 \
    || { bad "$point: resume failed"; tail -3 "$TMP/$name-resume.log" >&2; }
  check '! ls "$RUNS/$name"/*.tmp.* >/dev/null 2>&1' "$point: a temp file is left after the resume"
  check 'same_run ref "$name" 24' "$point: killed + resumed differs from the reference"
done

# ---------------------------------------------------------------------------
# Random points: kill -9 at random times, resume, repeat; then finish.
RAND=(--set train.steps=600 --set checkpoint.every=3 --set checkpoint.keep=2
      --set train.log_every=1 --set train.eval_every=50)
MAX_KILLS=10
t0=$(date +%s%N)
"${TRAIN[@]}" --set run.name=rref "${RAND[@]}" > /dev/null 2>&1 || bad "random reference run failed"
span_ms=$(( ($(date +%s%N) - t0) / 3000000 + 1 ))
RANDOM=7  # a fixed sequence of delays: a failure can be replayed
kills=0; finished=0
while [ $kills -lt $MAX_KILLS ]; do
  "${TRAIN[@]}" --set run.name=rand "${RAND[@]}" > "$TMP/rand.log" 2>&1 &
  pid=$!
  ms=$((10 + (RANDOM * 32768 + RANDOM) % span_ms))
  sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
  kill -KILL "$pid" 2>/dev/null
  { wait "$pid"; } 2>/dev/null; rc=$?
  if [ $rc -eq 0 ]; then finished=1; break; fi
  kills=$((kills+1))
  check '[ $rc -eq 137 ]' "random kill $kills: exit $rc"
  check 'all_valid rand' "random kill $kills: a file under a checkpoint name is not intact"
done
echo "random kills: $kills, up to $span_ms ms into a run (it $([ $finished = 1 ] && echo then finished on its own || echo was then run to the end))"
if [ $finished = 0 ]; then
  "${TRAIN[@]}" --set run.name=rand "${RAND[@]}" > "$TMP/rand.log" 2>&1 || bad "final resume failed"
fi
check '[ $kills -ge 2 ]' "only $kills random kills landed (the run is too short to test)"
check 'same_run rref rand 600' "randomly killed + resumed run differs from the reference"

summary
