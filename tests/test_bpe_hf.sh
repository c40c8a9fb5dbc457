#!/usr/bin/env bash
# test_bpe_hf.sh: byte-level BPE ids equal HF tokenizers' (the Python package)
# on every text of ../shared/data/text (line by line and whole) and on the edge
# cases of tests/bpe_hf_check.py, and HF decodes our ids back to the text:
#   - Llama 3's tokenizer.json, and its tiktoken tokenizer.model (with the HF
#     files beside it, and alone: the Llama 3 special-token layout assumed);
#   - SmolLM2-135M's tokenizer, from its GGUF file (the reference tokenizer.json
#     is built from the GGUF metadata with the gguf package).
# tokenizers and gguf go into a venv of this test's own under the build
# directory (kept between runs). Skips when PyPI or the data is unreachable.
set -uo pipefail
PS="$1"
SRC="$2"
source "$SRC/tests/shlib.sh"
PY="${PS_PYTHON:-/usr/bin/python3}"
DATA="$SRC/../shared/data"
T3="$DATA/tokenizers/llama3"
GGUF="${XDG_CACHE_HOME:-$HOME/.cache}/postshare/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -x "$SRC/scripts/fetch_smollm2.sh" ]; then
  GGUF="$("$SRC/scripts/fetch_smollm2.sh" 2>/dev/null | tail -1)" || GGUF=""
fi
skip() {
  echo "SKIP: $*"
  echo "0 passed, 0 failed, 1 skipped"
  exit 0
}
[ -f "$T3/tokenizer.json" ] || [ -f "$GGUF" ] ||
  skip "neither $T3/tokenizer.json nor the SmolLM2 GGUF ($GGUF) is here"

VENV="$PWD/pyvenv-tokenizers"  # the build directory (ctest's working directory)
if ! "$VENV/bin/python" -c "import tokenizers, gguf" 2>/dev/null; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" || skip "cannot make a venv with $PY (python3-venv; scripts/setup.sh installs it)"
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check tokenizers gguf > "$TMP/pip.log" 2>&1; then
    if grep -qiE "connection|resolve|network|timed out|No matching distribution|Could not find a version" \
      "$TMP/pip.log"; then
      rm -rf "$VENV"
      skip "PyPI is unreachable: pip install tokenizers gguf failed: $(tail -1 "$TMP/pip.log")"
    fi
    cat "$TMP/pip.log" >&2
    bad "pip install tokenizers gguf failed"
    summary
    exit
  fi
fi
"$VENV/bin/python" -c "import tokenizers; print('HF tokenizers', tokenizers.__version__)"

TEXTS=()
for f in "$DATA"/text/*/*.txt; do [ -f "$f" ] && TEXTS+=(--text "$f"); done
[ ${#TEXTS[@]} -gt 0 ] || echo "note: no texts in $DATA/text: edge cases only"
CHECK=("$VENV/bin/python" "$SRC/tests/bpe_hf_check.py" "$PS" "$TMP/work")

if [ -f "$T3/tokenizer.json" ]; then
  "${CHECK[@]}" "${TEXTS[@]}" "llama3=$T3/tokenizer.json=$T3/tokenizer.json"
  check '[ $? -eq 0 ]' "Llama 3 tokenizer.json differs from HF tokenizers"
  # tiktoken: the edge cases and one text are enough (the merges are derived from the ranks)
  ONE=()
  [ -f "$DATA/text/tinystories/tinystories_val.txt" ] && ONE=(--text "$DATA/text/tinystories/tinystories_val.txt")
  mkdir -p "$TMP/alone"
  cp "$T3/tokenizer.model" "$TMP/alone/tokenizer.model"
  "${CHECK[@]}" "${ONE[@]}" "llama3-tt=tiktoken:$T3/tokenizer.model=$T3/tokenizer.json" \
    "llama3-alone=$TMP/alone/tokenizer.model=$T3/tokenizer.json"
  check '[ $? -eq 0 ]' "Llama 3 tiktoken tokenizer.model differs from HF tokenizers on tokenizer.json"
else
  echo "SKIP: no $T3/tokenizer.json: the Llama 3 checks are skipped"
fi

if [ -f "$GGUF" ]; then
  "${CHECK[@]}" "${TEXTS[@]}" "smollm2=gguf:$GGUF=gguf:$GGUF"
  check '[ $? -eq 0 ]' "SmolLM2's tokenizer (from its GGUF file) differs from HF tokenizers"
else
  echo "SKIP: no SmolLM2 GGUF file ($GGUF; scripts/fetch_smollm2.sh fetches it): SmolLM2 checks skipped"
fi
summary
