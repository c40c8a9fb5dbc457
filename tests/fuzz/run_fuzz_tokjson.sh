#!/usr/bin/env bash
# Build the tokenizer.json + byte-level BPE libFuzzer harness with clang
# (ASan + UBSan) and run it for SECONDS (default 60) from the seeds in
# tests/fuzz/tokjson_seeds/ plus, when ../shared/data is there, small excerpts
# of the real tokenizers made by make_tokjson_seeds.py (not committed).
# Not part of ctest. Usage: tests/fuzz/run_fuzz_tokjson.sh [SECONDS] [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:-60}
work=${2:-$root/build/fuzz_tokjson}
mkdir -p "$work/corpus"
cp -n "$here"/tokjson_seeds/* "$work/corpus/" 2>/dev/null || true
"${PS_PYTHON:-/usr/bin/python3}" "$here/make_tokjson_seeds.py" "$root/../shared/data" "$work/corpus" || true
src=("$root"/data/{bpe,tokjson,tiktoken,tokopen,tokgguf,tokenizer}.c "$root"/trainer/{gguf,common}.c)
clang -g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root/trainer" -I"$root/data" "$here/fuzz_tokjson.c" "${src[@]}" \
    $(pkg-config --cflags --libs libcjson libpcre2-8) -lm -o "$work/fuzz_tokjson"
cd "$work"
./fuzz_tokjson -max_total_time="$secs" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
    -dict="$here/tokjson.dict" corpus
