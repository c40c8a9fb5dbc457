#!/usr/bin/env bash
# experiments/cpu_vs_torch.sh: PostShare's CPU backend against PyTorch eager,
# torch.compile and transformers on this machine (experiments/cpu_vs_torch.py
# says what is measured). Results: one JSON line per measurement, on stdout and
# appended to experiments/cpu-vs-torch/results.jsonl; experiments/cpu-vs-torch.md
# records and discusses a run.
#
#   TORCH_PYTHON=/path/to/venv/bin/python bash experiments/cpu_vs_torch.sh [ARGS]
#
# TORCH_PYTHON: a Python with torch (CPU build is enough), transformers,
# safetensors and numpy; default /work/xvenv/bin/python, else python3.
# ARGS go to cpu_vs_torch.py, e.g. --what train --models 25m --threads 2
# --rounds 2 (--help lists them); --table experiments/cpu-vs-torch/results.jsonl prints
# the results as a markdown table.
# The whole default set takes about 30 minutes on 2 quiet cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${TORCH_PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x /work/xvenv/bin/python ]; then PY=/work/xvenv/bin/python; else PY=python3; fi
fi
"$PY" -c "import torch, transformers, safetensors, numpy" 2>/dev/null || {
  echo "cpu_vs_torch: $PY lacks torch/transformers/safetensors/numpy: set TORCH_PYTHON" >&2
  exit 1
}
[ -x build/postshare ] || bash scripts/setup.sh
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')," \
     "commit $(git rev-parse --short HEAD 2>/dev/null || echo none), $(date -u +%Y-%m-%dT%H:%MZ)," \
     "torch $("$PY" -c 'import torch; print(torch.__version__)')"
exec "$PY" experiments/cpu_vs_torch.py --postshare build/postshare "$@"
