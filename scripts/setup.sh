#!/usr/bin/env bash
# scripts/setup.sh: install the Debian packages PostShare needs (if missing)
# and build it with CMake into build/. Sourced by run.sh and test.sh.
# The Python modules go into Debian's interpreter (/usr/bin/python3); CMake
# checks it imports them and hands it to every test as PS_PYTHON, whatever
# python3 comes first on PATH (pyenv, conda, a virtualenv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKGS=(build-essential cmake pkg-config libopenblas-openmp-dev libyaml-dev libcjson-dev
      libhdf5-dev hdf5-tools zlib1g-dev libpcre2-dev libopenmpi-dev openmpi-bin
      bible-kjv gnuplot-nox python3 python3-sentencepiece python3-h5py python3-numpy python3-venv python3-pip time
      clang libclang-rt-14-dev libomp-14-dev)  # clang: the sanitizer + fuzzing build
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo > /dev/null || {
      echo "setup: these Debian packages are missing: ${missing[*]}" >&2
      echo "setup: run this script as root, or install sudo, or install them yourself" >&2
      exit 1
    }
    SUDO="sudo"
  fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" > /dev/null
fi
# A build/ configured elsewhere (another clone, a copied tree, another machine)
# points CMake at the wrong sources: start that one afresh.
cache="$ROOT/build/CMakeCache.txt"
if [ -f "$cache" ] && ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$ROOT" "$cache"; then
  echo "setup: build/ was configured for another source tree: reconfiguring it from scratch"
  rm -rf "$ROOT/build/CMakeCache.txt" "$ROOT/build/CMakeFiles"
fi
# The tests' Python: Debian's, where the packages above put their modules
# (override: PS_PYTHON=/path/to/python3 ./test.sh).
PY="${PS_PYTHON:-/usr/bin/python3}"
cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release -DPS_PYTHON="$PY" > /dev/null
cmake --build "$ROOT/build" -j"$(nproc)" 2>&1 | grep -Ev '^\[ *[0-9]+%\]' || true
test -x "$ROOT/build/postshare" || { echo "setup: build failed" >&2; exit 1; }
