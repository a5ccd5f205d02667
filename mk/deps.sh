#!/bin/sh
# Install the Debian 12 packages godwit needs, only those missing.
set -e
PKGS="build-essential clang libjson-c-dev libzstd-dev liblz4-dev liblzma-dev zlib1g-dev
libxxhash-dev libcmocka-dev libgnutls28-dev python3 iproute2 zstd xz-utils lz4 binutils
util-linux procps"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    if [ "$(id -u)" != 0 ]; then echo "deps: need root to apt-get install" >&2; exit 1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || true
    apt-get install -y -q $missing
fi
