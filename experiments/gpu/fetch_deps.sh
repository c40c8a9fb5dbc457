#!/usr/bin/env bash
# experiments/gpu/fetch_deps.sh: download, on this machine (where apt works),
# the Debian packages that building and running PostShare needs and that the
# GPU machine's image may lack (nothing can be downloaded there): libyaml,
# cJSON, OpenBLAS (OpenMP build), HDF5, pkg-config and their runtime
# libraries, into .gpudeps/ (ignored by git). check.sh unpacks them under
# /tmp/psdeps and uses only what the image lacks.
#   bash experiments/gpu/fetch_deps.sh        # then carry .gpudeps in the device call
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$ROOT/.gpudeps"
# Build-time packages (headers, .pc files, .so links) ...
DEV=(libyaml-dev libcjson-dev libopenblas-openmp-dev libhdf5-dev pkgconf pkgconf-bin libpkgconf3)
# ... and the runtime libraries with their dependencies, minus what every
# glibc system with a C compiler has.
RUNTIME=(libyaml-0-2 libcjson1 libopenblas0-openmp libhdf5-103-1)
SKIP='^(libc6|libgcc-s1|gcc-[0-9]+-base|libstdc\+\+6|libgomp1|zlib1g|debconf|dpkg)$'
deps=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
         --no-replaces --no-enhances --no-pre-depends "${RUNTIME[@]}" | grep -v '^ ' | sort -u |
       grep -Ev "$SKIP")
mkdir -p "$DEST"
cd "$DEST"
rm -f ./*.deb
# shellcheck disable=SC2086
apt-get download "${DEV[@]}" $deps >/dev/null
echo "fetch_deps: $(ls ./*.deb | wc -l) packages, $(du -sh . | cut -f1) in $DEST"
