#!/usr/bin/env bash
# run_fuzz.sh BIN PARSER SECONDS WORKDIR: replay tests/fuzz/corpus/PARSER and
# tests/fuzz/regress/PARSER through the harness BIN, then fuzz for SECONDS in all
# (new inputs go to WORKDIR/PARSER/corpus, crashes to WORKDIR/PARSER/artifacts).
# Fails on a crash, a sanitizer report, an input slower than 10 s or an allocation
# over 2 GiB. ctest runs it with a few seconds; scripts/fuzz_long.sh with hours.
set -euo pipefail
bin=$1 parser=$2 secs=$3 work=$4
shift 4
src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$work/$parser"
mkdir -p "$out/corpus" "$out/artifacts"
args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=3072 -malloc_limit_mb=2048
      -print_final_stats=1 -artifact_prefix="$out/artifacts/")
[ -f "$src/dict/$parser.dict" ] && args+=(-dict="$src/dict/$parser.dict")
dirs=("$out/corpus")
for d in "$src/corpus/$parser" "$src/regress/$parser"; do [ -d "$d" ] && dirs+=("$d"); done
export LSAN_OPTIONS="suppressions=$src/../sanitize/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
exec "$bin" "${args[@]}" "$@" "${dirs[@]}"
