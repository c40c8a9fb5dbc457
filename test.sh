#!/usr/bin/env bash
# test.sh: install what is needed, build, and run every test (ctest); then the
# sanitizer stage (scripts/sanitize_check.sh: ASan + UBSan build, the input readers'
# tests and the fuzz harnesses; PS_SANITIZE=0 skips it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT/build"
ctest --output-on-failure -j2 "$@"
if [ "${PS_SANITIZE:-1}" != 0 ] && [ $# -eq 0 ]; then
  bash "$ROOT/scripts/sanitize_check.sh"
fi
