#!/usr/bin/env bash
# Installs everything mnova-tvm needs on a fresh Debian machine (as root): the ARM cross
# compilers and iproute2 (for the emulated edge cluster), then the package itself.
#   bash scripts/install.sh          # the toolkit
#   bash scripts/install.sh --test   # plus the test extras (pytest, onnxruntime, hypothesis)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=""
    for pkg in gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf iproute2; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
    done
    if [ -n "$need" ]; then
        echo "installing Debian packages:$need"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
    fi
else
    echo "not root or no apt-get: install gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf iproute2 yourself for ARM builds"
fi
python3 -m pip install -q --disable-pip-version-check -e ".$extras"
