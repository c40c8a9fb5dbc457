#!/usr/bin/env bash
# Build the GGUF reader's libFuzzer harness with clang (ASan + UBSan) and run it
# for SECONDS (default 60) from the seeds in tests/fuzz/corpus/gguf/ (made by
# test_gguf: PS_GGUF_SEED_DIR=tests/fuzz/corpus/gguf build/test_gguf).
# Not part of ctest. Usage: tests/fuzz/run_fuzz_gguf.sh [SECONDS] [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:-60}
work=${2:-$root/build/fuzz_gguf}
mkdir -p "$work/corpus"
cp -n "$here"/corpus/gguf/* "$work/corpus/" 2>/dev/null || true
clang -g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root/trainer" "$here/fuzz_gguf.c" "$root/trainer/gguf.c" "$root/trainer/common.c" \
    -lm -o "$work/fuzz_gguf"
cd "$work"
./fuzz_gguf -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 corpus
