#!/usr/bin/env bash
# test_bpe_hf.sh: byte-level BPE ids equal HF tokenizers' (the Python package)
# on every text of ../shared/data/text (line by line and whole) and on the edge
# cases of tests/bpe_hf_check.py, and HF decodes our ids back to the text:
#   - Llama 3's tokenizer.json, and its tiktoken tokenizer.model (with the HF
#     files beside it, and alone: the Llama 3 special-token layout assumed);
#   - SmolLM2-135M's tokenizer, from its GGUF file (the reference tokenizer.json
#     is built from the GGUF metadata with the gguf package);
#   - the tokenizer.json that `postshare convert` writes into the HF export of the
#     SmolLM2 GGUF (HF tokenizers loads it, against our tokenizer on the GGUF),
#     and the export's config.json/generation_config.json ids (the GGUF's);
#   - the byte tokenizer's tokenizer.json (as a run's model/ gets it);
#   - the same for a Llama 3 GGUF tokenizer (llama-bpe) that
#     tests/make_gguf_tokenizer.py makes from Llama 3's tokenizer.json.
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
# the edge cases and one text, where the vocabulary and merges are those of a case
# already checked on every text (tiktoken, the tokenizer.json files we write)
ONE=()
[ -f "$DATA/text/tinystories/tinystories_val.txt" ] && ONE=(--text "$DATA/text/tinystories/tinystories_val.txt")

# the byte tokenizer's export (what a run with data.tokenizer byte writes into
# model/): HF tokenizers loads it and gives our ids (test_export.sh: the same ids
# as the byte tokenizer on valid UTF-8)
"$PS" tokenize --tokenizer byte --export "$TMP/byte" > /dev/null
"${CHECK[@]}" "${ONE[@]}" "byte-export=$TMP/byte=$TMP/byte/tokenizer.json"
check '[ $? -eq 0 ]' "the byte tokenizer's tokenizer.json differs in HF tokenizers"

if [ -f "$T3/tokenizer.json" ]; then
  "${CHECK[@]}" "${TEXTS[@]}" "llama3=$T3/tokenizer.json=$T3/tokenizer.json"
  check '[ $? -eq 0 ]' "Llama 3 tokenizer.json differs from HF tokenizers"
  # tiktoken: the edge cases and one text are enough (the merges are derived from the ranks)
  mkdir -p "$TMP/alone"
  cp "$T3/tokenizer.model" "$TMP/alone/tokenizer.model"
  "${CHECK[@]}" "${ONE[@]}" "llama3-tt=tiktoken:$T3/tokenizer.model=$T3/tokenizer.json" \
    "llama3-alone=$TMP/alone/tokenizer.model=$T3/tokenizer.json"
  check '[ $? -eq 0 ]' "Llama 3 tiktoken tokenizer.model differs from HF tokenizers on tokenizer.json"
  # a Llama 3 GGUF tokenizer (llama-bpe: the Split regex, ignore_merges), made from
  # tokenizer.json with the gguf package: the tokenizer.json that postshare writes
  # from its metadata encodes as our tokenizer on the GGUF
  "$VENV/bin/python" "$SRC/tests/make_gguf_tokenizer.py" "$T3/tokenizer.json" "$TMP/l3.gguf" > /dev/null &&
    "$PS" tokenize --tokenizer "gguf:$TMP/l3.gguf" --export "$TMP/l3" > /dev/null
  check '[ $? -eq 0 ] && [ -f "$TMP/l3/tokenizer.json" ]' "tokenize --export of a Llama 3 GGUF failed"
  "${CHECK[@]}" "${ONE[@]}" "llama3-gguf-export=gguf:$TMP/l3.gguf=$TMP/l3/tokenizer.json"
  check '[ $? -eq 0 ]' "the tokenizer.json written from a Llama 3 GGUF differs from our GGUF tokenizer"
else
  echo "SKIP: no $T3/tokenizer.json: the Llama 3 checks are skipped"
fi

if [ -f "$GGUF" ]; then
  "${CHECK[@]}" "${TEXTS[@]}" "smollm2=gguf:$GGUF=gguf:$GGUF"
  check '[ $? -eq 0 ]' "SmolLM2's tokenizer (from its GGUF file) differs from HF tokenizers"
  # the HF export of the GGUF model carries a tokenizer.json (written from the
  # metadata by postshare) that HF tokenizers loads and that encodes, and decodes,
  # as our tokenizer on the GGUF does; config.json and generation_config.json
  # carry the GGUF's special ids
  "$PS" convert "gguf:$GGUF" -o "$TMP/smol" --dtype bfloat16 > "$TMP/convert.log" 2>&1
  check '[ $? -eq 0 ] && [ -f "$TMP/smol/tokenizer.json" ] && [ -f "$TMP/smol/tokenizer_config.json" ]' \
    "convert of the SmolLM2 GGUF wrote no tokenizer: $(tail -3 "$TMP/convert.log")"
  "${CHECK[@]}" "${ONE[@]}" "smollm2-export=gguf:$GGUF=$TMP/smol/tokenizer.json"
  check '[ $? -eq 0 ]' "the exported tokenizer.json of SmolLM2 differs from our GGUF tokenizer"
  "$VENV/bin/python" - "$GGUF" "$TMP/smol" <<'PYEOF'
import json, sys
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
def meta(k):
    f = r.fields.get("tokenizer.ggml." + k)
    return None if f is None else int(f.contents())
want = {"bos_token_id": meta("bos_token_id"), "eos_token_id": meta("eos_token_id"),
        "pad_token_id": meta("padding_token_id")}
bad = 0
for name in ("config.json", "generation_config.json"):
    got = json.load(open(f"{sys.argv[2]}/{name}"))
    for k, v in want.items():
        if v is not None and got.get(k) != v:
            print(f"FAIL: {name}: {k} {got.get(k)}, the GGUF says {v}"); bad = 1
print("export ids:", want, "bad" if bad else "ok")
sys.exit(bad)
PYEOF
  check '[ $? -eq 0 ]' "the export's special ids differ from the GGUF metadata"
else
  echo "SKIP: no SmolLM2 GGUF file ($GGUF; scripts/fetch_smollm2.sh fetches it): SmolLM2 checks skipped"
fi
summary
