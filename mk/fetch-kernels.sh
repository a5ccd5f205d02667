#!/bin/sh
# Fetch Debian's kernels (cloud and generic flavours) without installing
# them: download the packages with apt-get and extract boot/vmlinuz-*.
# Usage: mk/fetch-kernels.sh DIR   -> DIR/vmlinuz-cloud, DIR/vmlinuz-generic
# Idempotent: a kernel already present is kept. `apt-get update` runs only
# when the package cannot be resolved or downloaded with the current lists.
set -e
DIR=${1:-build/kernels}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# The metapackage depends on the versioned image package.
real_package() {
    apt-cache depends "$1" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

fetch() {
    meta=$1 out=$2
    [ -s "$DIR/$out" ] && return 0
    pkg=$(real_package "$meta")
    if [ -z "$pkg" ]; then
        apt-get update -q >/dev/null 2>&1 || true
        pkg=$(real_package "$meta")
    fi
    [ -n "$pkg" ] || { echo "fetch-kernels: cannot resolve $meta" >&2; return 1; }
    (cd "$TMP" && apt-get download -q "$pkg" >/dev/null 2>&1) ||
        { apt-get update -q >/dev/null 2>&1 || true; (cd "$TMP" && apt-get download -q "$pkg" >/dev/null); }
    deb=$(ls "$TMP"/"$pkg"_*.deb | head -n1)
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$TMP" --wildcards './boot/vmlinuz-*'
    # Copy then rename inside DIR: an interrupted run leaves no partial kernel.
    cp "$TMP"/boot/vmlinuz-* "$DIR/.$out.tmp"
    mv "$DIR/.$out.tmp" "$DIR/$out"
    rm -rf "$TMP"/boot "$deb"
    echo "fetch-kernels: $out from $pkg"
}

fetch linux-image-cloud-amd64 vmlinuz-cloud
fetch linux-image-amd64 vmlinuz-generic
