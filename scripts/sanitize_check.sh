#!/usr/bin/env bash
# scripts/sanitize_check.sh [ctest args]: the CI's sanitizer stage (test.sh runs it
# after the plain suite). Builds build-san/ with clang, ASan + UBSan and the fuzz
# harnesses (-DPOSTSHARE_FUZZ=ON), then runs under the sanitizers the C tests of the
# input readers (the subset below; PS_SANITIZE_TESTS=all runs every cpu test, which
# takes about as long again as the plain suite) and every fuzz harness briefly
# (replaying tests/fuzz/corpus and tests/fuzz/regress, then PS_FUZZ_SECONDS of fuzzing).
# Skipped with a message when clang's fuzzer runtime is missing (scripts/setup.sh
# installs it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="$ROOT/build-san"
if ! command -v clang > /dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a > /dev/null 2>&1; then
  echo "sanitize_check: SKIP: clang or libclang_rt.fuzzer missing (apt-get install clang libclang-rt-14-dev)"
  exit 0
fi
CC=clang cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Release -DPOSTSHARE_CUDA=OFF \
  -DPOSTSHARE_FUZZ=ON -DPS_FUZZ_SECONDS="${PS_FUZZ_SECONDS:-6}" > /dev/null
cmake --build "$B" -j"$(nproc)" 2>&1 | grep -Ev '^\[ *[0-9]+%\]' || true
subset='^(test_hostile|test_checkpoint|test_hf_io|test_gguf|test_share|test_job|test_data|test_comm|test_optim|test_model_fd|fuzz_.*)$'
cd "$B"
if [ "${PS_SANITIZE_TESTS:-subset}" = all ]; then
  ctest --output-on-failure -j2 -L 'cpu|fuzz' "$@"
else
  ctest --output-on-failure -j2 -R "$subset" "$@"
fi
