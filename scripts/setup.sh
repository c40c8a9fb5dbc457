#!/usr/bin/env bash
# scripts/setup.sh: install the Debian packages PostShare needs (if missing)
# and build it with CMake into build/. Sourced by run.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKGS=(build-essential cmake pkg-config libopenblas-openmp-dev libyaml-dev libcjson-dev
      libhdf5-dev hdf5-tools libopenmpi-dev openmpi-bin
      bible-kjv gnuplot-nox python3 python3-sentencepiece python3-h5py time)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$ROOT/build" -j"$(nproc)" 2>&1 | grep -Ev '^\[ *[0-9]+%\]' || true
test -x "$ROOT/build/postshare" || { echo "setup: build failed" >&2; exit 1; }
