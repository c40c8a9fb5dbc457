#!/usr/bin/env bash
# experiments/gpu/check.sh: the CUDA backend's whole check on a GPU machine, in
# one call of under 10 minutes, in order of importance, so that even a short or
# cut-off run yields the most important evidence first:
#   1. build (for this GPU's architecture only);
#   2. the GPU correctness tests (ctest -L gpu: every op against the CPU, one
#      training step, accumulation, determinism, 50 steps of training);
#   3. compute-sanitizer in quick mode: memcheck and racecheck of the attention
#      kernels only (test_gpu_ops attention), memcheck of one training step;
#   4. the NCCL communicator with one rank;
#   5. PostShare's training benchmark (125m, 1b);
#   6. HF transformers in PyTorch eager, then torch.compile (same shapes);
#   7. with time left: synccheck of the attention kernels, racecheck of every op.
#
# From a development machine with the device tool (nothing can be downloaded on
# the GPU machine, so its missing Debian packages travel along):
#   bash experiments/gpu/fetch_deps.sh                      # here: fills .gpudeps/
#   device run: command "bash experiments/gpu/check.sh", carry [".gpudeps"], timeout_s 600
# Results go to $OUT (the device tool returns it; default build-gpu/out):
#   env.txt status.tsv build.log tests.log sanitizer.log nccl.log bench.log
#   bench.jsonl summary.md
# status.tsv gets a row as each phase ends, and summary.md (the table, ending
# with a block to append to experiments/gpu-results.md) is rewritten after every
# phase and on exit, so a run cut short still leaves its table.
# CHECK_BUDGET_S (default 560): each phase has its own time limit, cut to the
# time left; a phase that needs more than is left is skipped and reported.
# CHECK_PHASES picks phases by name (default: all, in the order above):
#   tests memcheck-attn racecheck-attn memcheck-model nccl bench torch-eager
#   torch-compile synccheck-attn racecheck-all
# CHECK_FORCE_DEPS=1 uses the carried packages even when the image has its own
# (to test that path on a machine that has them). CHECK_ARCH overrides the
# CUDA architecture (default: nvidia-smi's compute capability, else "80;90").
# CHECK_DRY_RUN=1 walks every phase without running its command (each
# "runs" for CHECK_DRY_SLEEP seconds, default 0) and still writes status.tsv
# and summary.md: a check of the order, the budgets and the skip path on any
# machine, e.g. CHECK_DRY_RUN=1 CHECK_DRY_SLEEP=20 CHECK_BUDGET_S=200.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1
OUT="${OUT:-$ROOT/build-gpu/out}"
mkdir -p "$OUT"
BUDGET="${CHECK_BUDGET_S:-560}"
T0=$SECONDS
STATUS="$OUT/status.tsv"  # phase, result, seconds, note (read by summarize.py)
: >"$STATUS"
for f in bench.jsonl build.log tests.log nccl.log sanitizer.log bench.log; do : >"$OUT/$f"; done
BUILD="$ROOT/build-gpu"
ORIG_LD="${LD_LIBRARY_PATH:-}"

DRY="${CHECK_DRY_RUN:-}"
GPU_NAME=""

left() { echo $((BUDGET - (SECONDS - T0))); }
# The table so far, into summary.md (quietly: printed once at the end).
summarize() {
  python3 "$ROOT/experiments/gpu/summarize.py" --out "$OUT" --gpu "$GPU_NAME" \
    --total-s $((SECONDS - T0)) ${DRY:+--dry-run} >"$OUT/summary.md.tmp" 2>>"$OUT/summary.err" &&
    mv "$OUT/summary.md.tmp" "$OUT/summary.md"
}
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$STATUS"; summarize; }
# On any exit (the end, an error, or a TERM/INT from the caller's time limit):
# say which phase was cut off, and leave the table.
CURRENT="" PHASE_T=0
finish() {
  trap - EXIT INT TERM
  [ -n "$CURRENT" ] && record "$CURRENT" "cut off" $((SECONDS - PHASE_T)) "the run was stopped during this phase"
  summarize
  cat "$OUT/summary.md" 2>/dev/null
}
trap finish EXIT
trap 'exit 143' INT TERM
# run_phase NAME NEEDED_S LIMIT_S LOG CMD...: run CMD under `timeout`, logging
# to LOG, unless fewer than NEEDED_S seconds of the budget are left.
run_phase() {
  local name="$1" need="$2" limit="$3" log="$4"
  shift 4
  if [ "$(left)" -lt "$need" ]; then
    record "$name" skipped 0 "out of time ($(left)s left of ${BUDGET}s)"
    echo "== $name: skipped, out of time" | tee -a "$log"
    return 0
  fi
  [ "$limit" -gt "$(left)" ] && limit=$(left)
  echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$log"
  local t=$SECONDS rc=0
  CURRENT="$name" PHASE_T=$SECONDS
  if [ -n "$DRY" ]; then
    sleep "${CHECK_DRY_SLEEP:-0}"
  else
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1 || rc=$?
  fi
  CURRENT=""
  local dt=$((SECONDS - t)) res=ok
  [ -n "$DRY" ] && res="dry-run"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then res="timeout"; elif [ $rc -ne 0 ]; then res="FAIL (rc $rc)"; fi
  record "$name" "$res" "$dt" "limit ${limit}s"
  echo "== $name: $res in ${dt}s" | tee -a "$log"
}

# ---------------------------------------------------------------- environment
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: ${PS_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  echo "dirty files: $(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap,clocks.sm,clocks.max.sm \
    --format=csv 2>&1
  nvcc --version 2>&1 | tail -2
  cmake --version 2>&1 | head -1
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>&1
  echo "cpus: $(nproc)"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
ARCH="${CHECK_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')}"
[ -n "$ARCH" ] || ARCH="80;90"

# ---------------------------------------------------------------- dependencies
# Use the image's libraries when pkg-config finds them all; else unpack the
# carried .gpudeps/*.deb under /tmp/psdeps, point pkg-config at them, and put
# only the shared libraries the image lacks on LD_LIBRARY_PATH.
deps() {
  local OMP_PC=/usr/lib/x86_64-linux-gnu/openblas-openmp/pkgconfig
  if [ -z "${CHECK_FORCE_DEPS:-}" ] && command -v pkg-config >/dev/null &&
     PKG_CONFIG_PATH="$OMP_PC:${PKG_CONFIG_PATH:-}" pkg-config --exists yaml-0.1 libcjson openblas hdf5; then
    echo "deps: the image has them"; return 0
  fi
  if ! ls "$ROOT"/.gpudeps/*.deb >/dev/null 2>&1; then
    echo "deps: missing libraries and no .gpudeps/: run experiments/gpu/fetch_deps.sh on the" \
         "development machine and carry .gpudeps"; return 1
  fi
  local D=/tmp/psdeps A=x86_64-linux-gnu
  rm -rf "$D" && mkdir -p "$D/missing"
  for f in "$ROOT"/.gpudeps/*.deb; do dpkg -x "$f" "$D" || return 1; done
  find "$D" -name '*.pc' -exec sed -E -i "s#(^|[=[:space:]]|-I|-L)/usr(/|\$)#\1$D/usr\2#g" {} +
  [ -f "$D/usr/lib/$A/pkgconfig/hdf5.pc" ] || cp "$D/usr/lib/$A/pkgconfig/hdf5-serial.pc" "$D/usr/lib/$A/pkgconfig/hdf5.pc"
  local so name
  while IFS= read -r so; do
    name="$(basename "$so")"
    ldconfig -p | grep -q "^[[:space:]]*$name " || ln -sf "$so" "$D/missing/$name"
  done < <(find "$D/usr/lib" "$D/lib" -regex '.*/lib[^/]*\.so\.[0-9]+' 2>/dev/null)  # sonames
  export LD_LIBRARY_PATH="$D/missing${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PKG_CONFIG_PATH="$D/usr/lib/$A/pkgconfig:$D/usr/lib/$A/openblas-openmp/pkgconfig:$D/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  command -v pkg-config >/dev/null || export PATH="$D/usr/bin:$PATH"
  echo "deps: unpacked $(ls "$ROOT"/.gpudeps/*.deb | wc -l) packages; the image lacks: $(ls "$D/missing" | tr '\n' ' ')"
  pkg-config --exists yaml-0.1 libcjson openblas hdf5 || { echo "deps: pkg-config still fails"; return 1; }
}
if [ -n "$DRY" ]; then record deps dry-run 0
elif deps >"$OUT/build.log" 2>&1; then record deps ok 0; else record deps FAIL 0 "see build.log"; fi
cat "$OUT/build.log"

# ---------------------------------------------------------------- build
# NCCL (comm: nccl): CMake looks beside nvcc; when it is not there, use the one
# that PyTorch's wheels ship (site-packages/nvidia/nccl), if any.
CUDA_HOME_DIR="$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")"
if [ -z "${NCCL_HOME:-}" ] && [ ! -f "$CUDA_HOME_DIR/include/nccl.h" ] && [ ! -f /usr/include/nccl.h ]; then
  P="$(LD_LIBRARY_PATH="$ORIG_LD" python3 -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null)"
  if [ -n "$P" ] && [ -f "$P/include/nccl.h" ]; then
    export NCCL_HOME="$P"
    echo "nccl: none beside nvcc; using PyTorch's: $P" | tee -a "$OUT/build.log"
  fi
fi
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
rm -rf "$BUILD/CMakeCache.txt"
run_phase "configure (sm_$ARCH)" 30 120 "$OUT/build.log" \
  cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCH"
run_phase "build" 60 300 "$OUT/build.log" cmake --build "$BUILD" -j"$(nproc)"
BUILT=0  # ps_bench_gpu exists only in a build with the CUDA backend
[ -x "$BUILD/test_gpu_ops" ] && [ -x "$BUILD/ps_bench_gpu" ] && BUILT=1
[ -n "$DRY" ] && BUILT=1

# Phases in order of importance, so that running out of time drops the least
# important (see the top of this file). CHECK_PHASES picks a subset for a second
# call, e.g. CHECK_PHASES="synccheck-attn racecheck-all".
PHASES="${CHECK_PHASES:-tests memcheck-attn racecheck-attn memcheck-model nccl bench torch-eager torch-compile synccheck-attn racecheck-all}"
want() { [[ " $PHASES " == *" $1 "* ]]; }
# sanitize TOOL NEED LIMIT EXE [ARGS...]: a quick-mode run under compute-sanitizer.
sanitize() {
  local tool="$1" need="$2" limit="$3"
  shift 3
  if [ -z "$DRY" ] && ! command -v compute-sanitizer >/dev/null; then
    record "sanitizer $tool $(basename "$1")${2:+ $2}" skipped 0 "compute-sanitizer not installed"; return
  fi
  run_phase "sanitizer $tool $(basename "$1")${2:+ $2}" "$need" "$limit" "$OUT/sanitizer.log" \
    env PS_GPU_TEST_QUICK=1 compute-sanitizer --tool "$tool" --error-exitcode 1 "$@"
}
torch_bench() {  # torch_bench MODE NEEDED_S LIMIT_S: HF LlamaForCausalLM + AdamW, both presets
  for preset in 125m 1b; do
    run_phase "bench torch-$1 $preset" "$2" "$3" "$OUT/bench.log" \
      env LD_LIBRARY_PATH="$ORIG_LD" PYTHONUNBUFFERED=1 python3 "$ROOT/experiments/gpu/bench_torch.py" \
      --preset "$preset" --mode "$1" --json "$OUT/bench.jsonl"
  done
}
# The NCCL communicator with one rank: 20 steps of the default job (its model,
# batch, optimizer) with comm: single and with comm: nccl (world 1, through
# NCCL's collectives), on byte-level shards of this repository's text (no data
# to carry). The per-step losses in the two metrics.jsonl must be bitwise equal.
# With mpirun (and a build with MPI), once more under mpirun -np 1. A failure is
# a row of the table; the script goes on.
nccl_one_rank() {
  local log="$OUT/nccl.log" runs="$BUILD/nccl-runs" ps="$BUILD/postshare"
  if [ -z "$DRY" ] && ! grep -q "comm: nccl available" "$OUT/build.log"; then
    record "nccl 1-rank vs single" skipped 0 "this build has no NCCL (see build.log)"; return
  fi
  if [ "$(left)" -lt 60 ]; then
    record "nccl 1-rank vs single" skipped 0 "out of time ($(left)s left of ${BUDGET}s)"; return
  fi
  rm -rf "$runs" && mkdir -p "$runs/data"
  cat "$ROOT"/README.md "$ROOT"/docs/*.md "$ROOT"/trainer/*.c "$ROOT"/trainer/*.h >"$runs/corpus.txt"
  if [ -z "$DRY" ] && ! "$ps" prepare --tokenizer byte --out "$runs/data" --prefix repo \
       --val-fraction 0.05 "$runs/corpus.txt" >>"$log" 2>&1; then
    record "nccl 1-rank vs single" FAIL 0 "postshare prepare failed (nccl.log)"; return
  fi
  local job=(train "$ROOT/configs/default.yaml" --set backend=cuda --set train.steps=20
             --set train.log_every=1 --set train.eval_every=0 --set data.val_batches=2
             --set "data.train=$runs/data/repo_train_*.bin" --set "data.val=$runs/data/repo_val_*.bin"
             --set "run.out_dir=$runs")
  run_phase "nccl: train comm=single" 30 90 "$log" "$ps" "${job[@]}" --set comm=single --set run.name=single
  run_phase "nccl: train comm=nccl" 30 90 "$log" env NCCL_DEBUG=WARN "$ps" "${job[@]}" \
    --set comm=nccl --set run.name=nccl
  local mpi=""
  if command -v mpirun >/dev/null && { [ -n "$DRY" ] || grep -q "^-- postshare: MPI" "$OUT/build.log"; }; then
    mpi=nccl-mpi
    run_phase "nccl: mpirun -np 1 comm=nccl" 30 90 "$log" env NCCL_DEBUG=WARN \
      mpirun --allow-run-as-root -np 1 "$ps" "${job[@]}" --set comm=nccl --set run.name=nccl-mpi
  else
    record "nccl: mpirun -np 1" skipped 0 "no mpirun, or a build without MPI"
  fi
  [ -n "$DRY" ] && return
  for r in single nccl $mpi; do
    cp "$runs/$r/metrics.jsonl" "$OUT/nccl-$r.metrics.jsonl" 2>/dev/null
  done
  # one row per comparison: "nccl 1-rank vs single" (and "nccl mpirun -np 1 vs single")
  python3 - "$runs" $mpi >>"$STATUS" 2>>"$log" <<'PY' ||
import json, sys
runs, others = sys.argv[1], ["nccl"] + sys.argv[2:]
def losses(name):
    out = {}
    try:
        for line in open(f"{runs}/{name}/metrics.jsonl"):
            r = json.loads(line)
            if "loss" in r:
                out[r["step"]] = r["loss"]
    except OSError:
        pass
    return out
ref = losses("single")
for name in others:
    label = "nccl 1-rank vs single" if name == "nccl" else "nccl mpirun -np 1 vs single"
    got = losses(name)
    if not ref or set(got) != set(ref):
        print(f"{label}\tFAIL\t0\tsteps logged: single {len(ref)}, {name} {len(got)}")
        continue
    rel = max(abs(got[s] - ref[s]) / max(abs(ref[s]), 1e-30) for s in ref)
    res = "PASS" if rel == 0 else "FAIL"
    print(f"{label}\t{res}\t0\tmax rel loss diff {rel:.3g} over {len(ref)} steps "
          f"(bitwise expected; final loss {ref[max(ref)]:.6f})")
PY
    record "nccl 1-rank vs single" FAIL 0 "the comparison script failed (nccl.log)"
}

if [ $BUILT -eq 1 ]; then
  want tests && run_phase "ctest -L gpu" 60 200 "$OUT/tests.log" \
    ctest --test-dir "$BUILD" -L gpu --verbose --timeout 150
  want memcheck-attn && sanitize memcheck 40 90 "$BUILD/test_gpu_ops" attention
  want racecheck-attn && sanitize racecheck 60 120 "$BUILD/test_gpu_ops" attention
  want memcheck-model && sanitize memcheck 40 90 "$BUILD/test_gpu_model"
  want nccl && nccl_one_rank
  if want bench; then
    for preset in 125m 1b; do
      run_phase "bench postshare $preset" 45 120 "$OUT/bench.log" \
        "$BUILD/ps_bench_gpu" --preset "$preset" --json "$OUT/bench.jsonl"
    done
  fi
else
  record "tests, sanitizers, nccl, PostShare bench" skipped 0 "the build failed (build.log)"
fi
want torch-eager && torch_bench eager 60 150
want torch-compile && torch_bench compile 120 240
if [ $BUILT -eq 1 ]; then
  want synccheck-attn && sanitize synccheck 40 90 "$BUILD/test_gpu_ops" attention
  want racecheck-all && sanitize racecheck 90 150 "$BUILD/test_gpu_ops"
fi

# ---------------------------------------------------------------- summary
# (finish, on exit: the table into summary.md, printed last)
