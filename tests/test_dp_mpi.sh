#!/usr/bin/env bash
# test_dp_mpi.sh: data parallelism (ZeRO-1) with real MPI ranks on the CPU.
#   - test_comm (every collective, ZeRO-1's shards, norm and gather) on 2 and
#     3 ranks, and with MPI's chunked paths forced;
#   - the same job on 1 rank (grad_accum 2) and on 2 ranks (grad_accum 1), the
#     same global batch: the losses of 20 steps agree within 1e-5 relative, and
#     so do the final parameters; without and with PostShare (whose
#     regularizer gradient must be counted once, not once per rank);
#   - checkpoints cross rank counts: 2 ranks -> 1 rank and 1 rank -> 2 ranks
#     continue the uninterrupted run's loss curve (1e-5);
#   - a checkpoint written by 2 ranks holds the whole state (not a shard):
#     equal to the 1-rank checkpoint within 1e-5;
#   - killing one rank (SIGKILL) ends the job with a non-zero status and
#     leaves every checkpoint intact, and the run resumes from them;
#   - a rank that fails (bad data on rank 1 only, other weights on rank 1)
#     ends the whole job with that rank's message, changing nothing on disk;
#   - Ctrl-C to mpirun: the ranks stop after the same step with a checkpoint.
# Usage: test_dp_mpi.sh POSTSHARE_BIN SOURCE_DIR
set -uo pipefail
PS="$1"; SRC="$2"
source "$SRC/tests/shlib.sh"
if ! command -v mpirun > /dev/null; then
  echo "SKIP: no mpirun (apt-get install openmpi-bin libopenmpi-dev; scripts/setup.sh does)"
  exit 0
fi
if ! "$PS" train --keys | grep -Eq '^ *comm '; then
  bad "postshare has no comm key"
fi
# OpenMPI refuses root unless told; CI containers run as root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# 2 ranks on a 2-core machine: no binding, and let ranks yield when idle
MPI=(mpirun --oversubscribe --bind-to none -np 2)
# ---------------------------------------------------------------------------
# the MPI communicator's collectives and ZeRO-1 on 2 and 3 ranks (odd shards),
# and with tiny MPI chunks, so that the paths for buffers past MPI's int counts run
COMM_TEST="$(dirname "$PS")/test_comm"
if [ -x "$COMM_TEST" ]; then
  for np in 2 3; do
    out=$(mpirun --oversubscribe --bind-to none -np $np "$COMM_TEST" 2>&1)
    check '[ $? -eq 0 ] && [[ "$out" == *"comm mpi, $np rank(s): "*" 0 failed"* ]]' "test_comm on $np ranks: $out"
  done
  out=$(PS_COMM_TEST_CHUNK=7 mpirun --oversubscribe --bind-to none -x PS_COMM_TEST_CHUNK -np 3 "$COMM_TEST" 2>&1)
  check '[ $? -eq 0 ] && [[ "$out" == *"comm mpi, 3 rank(s): "*" 0 failed"* ]]' "test_comm, chunked: $out"
else
  bad "no test_comm binary beside $PS"
fi

tiny_runs "Gen1:1-Exo40:38"
COMMON=(--set train.steps=20 --set train.log_every=1 --set train.eval_every=10)
ONE=("${TRAIN[@]}" "${COMMON[@]}" --set train.grad_accum=2)
TWO=("${MPI[@]}" "${TRAIN[@]}" "${COMMON[@]}")
PS_ON=(--set share.ratio=0.3 --set share.reg.weight=1 --set share.reg.targets=[q,k,v,o])
compare() { "$PY" "$SRC/tests/compare_runs.py" "$@"; }

# ---------------------------------------------------------------------------
# 1 rank vs 2 ranks, the same global batch of 8 sequences
"${ONE[@]}" --set run.name=one > "$TMP/one.log" 2>&1 || bad "1-rank run failed: $(tail -3 "$TMP/one.log")"
"${TWO[@]}" --set run.name=two > "$TMP/two.log" 2>&1 || bad "2-rank run failed: $(tail -5 "$TMP/two.log")"
check 'grep -q "data parallel: 2 ranks (mpi)" "$TMP/two.log"' "the 2-rank run did not say it runs 2 ranks"
check '[ "$(grep -c "tokens/step" "$TMP/two.log")" = 1 ]' "only rank 0 logs (one header line)"
check 'grep -q " 256 tokens/step" "$TMP/one.log" && grep -q " 256 tokens/step" "$TMP/two.log"' \
  "both runs take 8 x 32 tokens per step"
out=$(compare "$RUNS/one" "$RUNS/two" --params)
echo "$out" | sed 's/^/plain 1 vs 2 ranks: /'
check '[[ "$out" == *OK ]]' "1 and 2 ranks differ: $out"
# the reduction overlapped with the backward (the default: one reduction per
# finished layer) and after it (one reduce-scatter) give the same run
"${TWO[@]}" --set run.name=two_no --set comm_overlap=false > "$TMP/two_no.log" 2>&1 \
  || bad "2-rank run without overlap failed: $(tail -5 "$TMP/two_no.log")"
check 'cmp -s "$RUNS/two/model/model.safetensors" "$RUNS/two_no/model/model.safetensors"' \
  "overlapped and whole-buffer reductions gave different models"
# the checkpoints hold the whole (gathered) state: master, m and v
out=$("$PY" - "$(ckpt "$RUNS/one" 20)" "$(ckpt "$RUNS/two" 20)" << 'EOF' 2>&1
import sys
try:
    import h5py
except ImportError:
    print("h5py is missing from " + sys.executable + " (PS_PYTHON; Debian: python3-h5py, which scripts/setup.sh installs)"); sys.exit(1)
a, b = h5py.File(sys.argv[1]), h5py.File(sys.argv[2])
worst = 0.0
for name in a["params"]:
    for d in ("master", "adam_m", "adam_v"):
        x, y = a["params"][name][d][...], b["params"][name][d][...]
        worst = max(worst, float(abs(x - y).max() / max(abs(x).max(), 1e-30)))
print(f"checkpoint state worst rel {worst:.3g}", "OK" if worst <= 1e-5 else "DIFFERENT")
EOF
)
echo "$out"
check '[[ "$out" == *OK* ]]' "the 2-rank checkpoint differs from the 1-rank one: $out"
check '"$PS" inspect "$(ckpt "$RUNS/two" 20)" | grep -q "written by 2 rank(s) | global batch 8 "' \
  "inspect does not show the ranks and the global batch"
check 'h5dump -a /data/world_size "$(ckpt "$RUNS/two" 20)" | grep -q "(0): 2"' \
  "the 2-rank checkpoint records world_size 2"
check 'h5dump -a /data/global_batch "$(ckpt "$RUNS/two" 20)" | grep -q "(0): 8"' \
  "the 2-rank checkpoint records the global batch 8"

# with PostShare: the regularizer's gradient counted once
"${ONE[@]}" "${PS_ON[@]}" --set run.name=ps1 > "$TMP/ps1.log" 2>&1 || bad "1-rank PostShare failed: $(tail -3 "$TMP/ps1.log")"
"${TWO[@]}" "${PS_ON[@]}" --set run.name=ps2 > "$TMP/ps2.log" 2>&1 || bad "2-rank PostShare failed: $(tail -5 "$TMP/ps2.log")"
out=$(compare "$RUNS/ps1" "$RUNS/ps2" --params)
echo "$out" | sed 's/^/PostShare 1 vs 2 ranks: /'
check '[[ "$out" == *OK ]]' "PostShare on 1 and 2 ranks differ: $out"
check 'grep -q "reg_loss" "$RUNS/ps2/metrics.jsonl" && [ -f "$RUNS/ps2/results.json" ]' \
  "the 2-rank PostShare run logs the regularizer and hands off"

# ---------------------------------------------------------------------------
# checkpoints across rank counts: stop at step 10, continue on the other count
"${TWO[@]}" --set run.name=x21 --set train.stop_after=10 > /dev/null 2>&1 || bad "2-rank first half failed"
"${ONE[@]}" --set run.name=x21 > "$TMP/x21.log" 2>&1 || bad "1-rank continuation failed: $(tail -3 "$TMP/x21.log")"
check 'grep -q "written by 2 rank(s); continuing on 1" "$TMP/x21.log"' "resume did not report 2 -> 1 ranks"
out=$(compare "$RUNS/two" "$RUNS/x21" --from-step 10 --params)
echo "$out" | sed 's/^/2 ranks -> 1 rank: /'
check '[[ "$out" == *OK ]]' "2 -> 1 ranks does not continue the loss curve: $out"

"${ONE[@]}" --set run.name=x12 --set train.stop_after=10 > /dev/null 2>&1 || bad "1-rank first half failed"
"${TWO[@]}" --set run.name=x12 > "$TMP/x12.log" 2>&1 || bad "2-rank continuation failed: $(tail -5 "$TMP/x12.log")"
out=$(compare "$RUNS/one" "$RUNS/x12" --from-step 10 --params)
echo "$out" | sed 's/^/1 rank -> 2 ranks: /'
check '[[ "$out" == *OK ]]' "1 -> 2 ranks does not continue the loss curve: $out"
# a different global batch is refused, and nothing changes
before=$(cd "$RUNS/x12" && find . -type f | sort | xargs md5sum | md5sum)
"${TWO[@]}" --set run.name=x12 --set train.grad_accum=2 --set train.steps=30 > "$TMP/gb.log" 2>&1
st=$?
check '[ $st -ne 0 ] && grep -q "global batch would change from 8" "$TMP/gb.log"' \
  "resuming with another global batch was not refused (status $st)"
check '[ "$before" = "$(cd "$RUNS/x12" && find . -type f | sort | xargs md5sum | md5sum)" ]' \
  "the refused resume changed the run directory"

# ---------------------------------------------------------------------------
# kill one rank while the job runs
LONG=("${MPI[@]}" "${TRAIN[@]}" --set run.name=kill --set train.steps=100000 --set train.log_every=100
  --set train.eval_every=0 --set checkpoint.every=25 --set checkpoint.keep=3)
"${LONG[@]}" > "$TMP/kill.log" 2>&1 &
job=$!
for _ in $(seq 1 600); do  # until two checkpoints exist (at most 60 s)
  [ "$(ls "$RUNS/kill"/ckpt-*.h5 2> /dev/null | wc -l)" -ge 2 ] && break
  sleep 0.1
done
# rank 1: the process whose environment says OMPI_COMM_WORLD_RANK=1
victim=""
for p in $(pgrep -f "run.name=kill"); do
  if tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then
    victim=$p
  fi
done
check '[ -n "$victim" ]' "could not find rank 1's process"
[ -n "$victim" ] && kill -9 "$victim"
st=0
wait $job || st=$?
check '[ $st -ne 0 ]' "killing rank 1 did not end the job with a non-zero status"
check '! pgrep -f "run.name=kill" > /dev/null' "ranks of the killed job are still running"
check 'all_valid kill' "a checkpoint was damaged by the kill"
n_ck=$(ls "$RUNS/kill"/ckpt-*.h5 2> /dev/null | wc -l)
check '[ "$n_ck" -ge 2 ]' "the killed job left $n_ck checkpoints"
last=$(ls "$RUNS/kill"/ckpt-*.h5 | tail -1 | sed -E 's/.*ckpt-0*([0-9]+)\.h5/\1/')
# it resumes (on 2 ranks) from its newest checkpoint and finishes a few steps more
"${MPI[@]}" "${TRAIN[@]}" --set run.name=kill --set train.steps=$((last + 5)) --set train.log_every=1 \
  --set train.eval_every=0 --set checkpoint.every=25 --set checkpoint.keep=3 > "$TMP/kill2.log" 2>&1 \
  || bad "resuming the killed job failed: $(tail -5 "$TMP/kill2.log")"
check 'grep -q "continuing at step $last" "$TMP/kill2.log"' "the killed job did not resume at step $last"
echo "kill: rank 1 killed, mpirun status $st, $n_ck checkpoints intact, resumed at step $last"

# ---------------------------------------------------------------------------
# Ctrl-C to mpirun: it forwards SIGTERM; the ranks agree on the step, write one
# checkpoint and exit 3
"${MPI[@]}" "${TRAIN[@]}" --set run.name=sig --set train.steps=100000 --set train.log_every=1000 \
  --set train.eval_every=0 > "$TMP/sig.log" 2>&1 &
job=$!
for _ in $(seq 1 300); do  # until training runs (the first log line)
  grep -q "^step  *1/" "$TMP/sig.log" 2> /dev/null && break
  sleep 0.1
done
sleep 0.5
kill -INT $job
st=0
wait $job || st=$?
check '[ $st -ne 0 ] && grep -q "stopped by signal 15 after step" "$TMP/sig.log"' \
  "Ctrl-C to mpirun did not stop the ranks with a checkpoint (status $st)"
sig_step=$(sed -nE 's/.*stopped by signal 15 after step ([0-9]+) .*/\1/p' "$TMP/sig.log")
check '[ -n "$sig_step" ] && [ -f "$(ckpt "$RUNS/sig" "${sig_step:-0}")" ] && all_valid sig' \
  "no intact checkpoint at the step the ranks stopped at ($sig_step)"

# ---------------------------------------------------------------------------
# one rank fails: its message, a non-zero status, nothing changed
head -c 1001 "$TMP/data/t_train_000000.bin" > "$TMP/truncated.bin"
before=$(cd "$RUNS/x21" && find . -type f | sort | xargs md5sum | md5sum)
R0=("${TRAIN[@]}" "${COMMON[@]}" --set run.name=x21 --set train.steps=30)
mpirun --oversubscribe --bind-to none -np 1 "${R0[@]}" : -np 1 "${R0[@]}" \
  --set data.train="$TMP/truncated.bin" > "$TMP/fail.log" 2>&1
st=$?
check '[ $st -ne 0 ]' "a failing rank 1 did not fail the job"
check 'grep -q "\[rank 1\] postshare: error: data.train: .*truncated.bin" "$TMP/fail.log"' \
  "rank 1's message is missing: $(grep -m2 error "$TMP/fail.log")"
check '[ "$before" = "$(cd "$RUNS/x21" && find . -type f | sort | xargs md5sum | md5sum)" ]' \
  "a failing rank changed the run directory"
# a rank whose starting weights differ (another seed): refused before training
mpirun --oversubscribe --bind-to none -np 1 "${R0[@]}" --set run.name=seed : -np 1 "${R0[@]}" \
  --set run.name=seed --set run.seed=7 > "$TMP/seed.log" 2>&1
st=$?
check '[ $st -ne 0 ] && grep -q "starting weights differ from rank 0" "$TMP/seed.log"' \
  "ranks with different starting weights were not refused (status $st)"
check '[ ! -e "$RUNS/seed" ]' "the refused job created its run directory"

summary
