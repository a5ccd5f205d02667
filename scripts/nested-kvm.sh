#!/bin/sh
# Run the KVM integration tests on a machine without /dev/kvm.
#
# Boots a Debian 12 "L1" machine under QEMU's software emulation (TCG), whose
# CPU model offers AMD SVM, loads kvm_amd there and runs
# `tests/run --integration PATTERN` inside it, on a copy of this tree
# (binaries included: build first). Slow (every guest instruction is
# emulated) and not a place for figures, but the guests are real KVM guests:
# the tests check behaviour, and timing-sensitive ones may need slack.
#
#   sh scripts/nested-kvm.sh [PATTERN]      default: every integration test
#   NESTED_CMD='python3 scripts/demo.py' sh scripts/nested-kvm.sh   any command
#   (NESTED_STREAM=1: its output is shown as it comes; `./run demo` does this
#   on a machine without /dev/kvm)
#
# Environment: NESTED_DIR (default build-nested: the cached root file system
# and disk image), NESTED_MEM (L1 memory, default 12G), NESTED_TIMEOUT
# (seconds, default 5400). Output and the kept logs of each test
# (GODWIT_TEST_KEEP) land in $NESTED_DIR/share. While L1 runs, an executable
# $NESTED_DIR/share/exec is run inside it (once; output in exec.out): a way
# to look at a run that seems stuck.
#
# Known limits of TCG's SVM (QEMU 7.2): AVX in the nested guest faults with
# #UD, so the L1 CPU model leaves AVX out and the test guest uses SSE.
set -e
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PATTERN=${1:-.}
DIR=${NESTED_DIR:-$ROOT/build-nested}
MEM=${NESTED_MEM:-12G}
TIMEOUT=${NESTED_TIMEOUT:-5400}
SUITE=bookworm
MIRROR=http://deb.debian.org/debian

need() {
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p" >/dev/null
        fi
    done
}
need qemu-system-x86 debootstrap e2fsprogs

mkdir -p "$DIR/share"
if [ ! -e "$DIR/rootfs/.done" ]; then
    echo "nested: debootstrap $SUITE into $DIR/rootfs (a few minutes, once)"
    rm -rf "$DIR/rootfs"
    debootstrap --variant=minbase --include=linux-image-amd64,udev,kmod,iproute2,python3,\
libjson-c5,libzstd1,liblz4-1,liblzma5,zlib1g,libxxhash0,libcmocka0,libgnutls30,zstd,xz-utils,lz4,\
procps,util-linux,initramfs-tools "$SUITE" "$DIR/rootfs" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 ||
        { tail -20 "$DIR/debootstrap.log"; exit 1; }
    touch "$DIR/rootfs/.done"
fi

cat >"$DIR/rootfs/sbin/nested-init" <<'EOF'
#!/bin/sh
# PID 1 of the L1 machine: mount, load kvm_amd, run /share/cmd, power off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys 2>/dev/null
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /run /tmp /share
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs -o size=8g tmpfs /tmp
modprobe 9pnet_virtio; modprobe 9p
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 share /share
modprobe kvm_amd
ip link set lo up
hostname l1
echo "nested: L1 up, $(uname -r), $(ls /dev/kvm 2>&1)"
( while :; do
      if [ -x /share/exec ]; then mv /share/exec /share/exec.run; /share/exec.run >/share/exec.out 2>&1; fi
      sleep 2
  done ) &
cd /work/main && /share/cmd >/share/out.log 2>&1
echo "nested: rc=$?" >>/share/out.log
sync
echo o >/proc/sysrq-trigger
EOF
chmod +x "$DIR/rootfs/sbin/nested-init"

CMD=${NESTED_CMD:-"python3 tests/run --integration '$PATTERN'"}
cat >"$DIR/share/cmd" <<EOF
#!/bin/sh
rm -rf /share/keep
GODWIT_TEST_KEEP=/share/keep exec $CMD
EOF
chmod +x "$DIR/share/cmd"
rm -f "$DIR/share/out.log" "$DIR/share/exec" "$DIR/share/exec.out"

echo "nested: copying the tree into the disk image"
rm -rf "$DIR/rootfs/work" "$DIR/root.img"
mkdir -p "$DIR/rootfs/work/main"
tar -C "$ROOT" --exclude='./build-*' --exclude=./build/nested --exclude=./.git -cf - . | tar -C "$DIR/rootfs/work/main" -xf -
truncate -s 6G "$DIR/root.img"
mkfs.ext4 -q -d "$DIR/rootfs" "$DIR/root.img"

KERNEL=$(ls "$DIR"/rootfs/boot/vmlinuz-* | tail -1)
INITRD=$(ls "$DIR"/rootfs/boot/initrd.img-* | tail -1)
echo "nested: booting L1 (TCG, $MEM) to run: $CMD; output in $DIR/share/out.log"
rc=0
tailpid=""
if [ -n "${NESTED_STREAM:-}" ]; then   # show the output as it comes
    : >"$DIR/share/out.log"
    tail -n +1 -f "$DIR/share/out.log" &
    tailpid=$!
fi
timeout "$TIMEOUT" qemu-system-x86_64 -machine q35 -accel tcg,thread=multi,tb-size=1024 \
    -cpu max,-avx,-avx2,-fma,-f16c,-vaes,-vpclmulqdq -smp 2 -m "$MEM" \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "root=/dev/vda rw console=ttyS0 init=/sbin/nested-init quiet panic=-1" \
    -drive file="$DIR/root.img",if=virtio,format=raw,cache=unsafe \
    -virtfs local,path="$DIR/share",mount_tag=share,security_model=none \
    -nographic -no-reboot >"$DIR/console.log" 2>&1 || rc=$?
if [ -n "$tailpid" ]; then
    sleep 1
    kill "$tailpid" 2>/dev/null || true
else
    cat "$DIR/share/out.log" 2>/dev/null || true
fi
if ! grep -q "^nested: rc=" "$DIR/share/out.log" 2>/dev/null; then
    echo "nested: L1 did not finish (qemu status $rc); its console:"
    tail -40 "$DIR/console.log"
    exit 1
fi
grep -q "^nested: rc=0" "$DIR/share/out.log"
