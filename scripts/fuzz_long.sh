#!/usr/bin/env bash
# scripts/fuzz_long.sh SECONDS [PARSER...]: fuzz each harness (default: every
# tests/fuzz/fuzz_*.c) for SECONDS, one after another on one core, in the fuzzing
# build build-fuzz/ (configured here with clang: -DPOSTSHARE_FUZZ=ON; PS_FUZZ_BUILD=DIR
# uses another such build, e.g. build-san). New corpus
# inputs go to build-fuzz/fuzz/<parser>/corpus, crashes to .../artifacts (copy a
# crash into tests/fuzz/regress/<parser>/ once it is fixed). Prints one line per
# harness: runs, coverage, corpus size, and whether it crashed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs=${1:?usage: fuzz_long.sh SECONDS [PARSER...]}
shift
B="${PS_FUZZ_BUILD:-$ROOT/build-fuzz}"  # or an existing -DPOSTSHARE_FUZZ=ON build
if [ ! -f "$B/CMakeCache.txt" ]; then
  CC=clang cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Release -DPOSTSHARE_CUDA=OFF \
    -DPOSTSHARE_FUZZ=ON > /dev/null
fi
cmake --build "$B" -j"$(nproc)" > /dev/null
parsers=("$@")
if ((${#parsers[@]} == 0)); then
  for f in "$ROOT"/tests/fuzz/fuzz_*.c; do n=$(basename "$f" .c); parsers+=("${n#fuzz_}"); done
fi
for p in "${parsers[@]}"; do
  log="$B/fuzz/$p.log"
  mkdir -p "$B/fuzz"
  rc=0
  # /usr/bin/time appends the CPU seconds the harness got (wall time alone
  # overstates a run on a shared machine).
  OMP_NUM_THREADS=1 /usr/bin/time -a -o "$log" -f 'cpu_seconds: %U user %S sys, %e wall' \
    bash "$ROOT/tests/fuzz/run_fuzz.sh" "$B/fuzz_$p" "$p" "$secs" "$B/fuzz" > "$log" 2>&1 || rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}')
  cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -o 'cov: [0-9]*' || true)
  corp=$(ls "$B/fuzz/$p/corpus" | wc -l)
  cpu=$(grep -o 'cpu_seconds: .*' "$log" | tail -1 | sed 's/cpu_seconds: //')
  echo "$p: ${secs}s ($cpu), ${runs:-?} runs, ${cov:-cov: ?}, corpus $corp, $([ $rc -eq 0 ] && echo 'no crash' || echo "FAILED (rc $rc, see $log)")"
done
