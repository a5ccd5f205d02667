#!/usr/bin/env python3
"""Save to a file and restore: `migrate file:PATH` pauses the guest and writes
the stream (godwit-stream verifies it); a new VMM with --incoming and
`migrate-incoming file:PATH` restores it and the guest continues where it
stopped. A corrupted, a truncated and a wrong-version file each fail cleanly
with a clear error, leave the destination waiting with no guest, and the
good file still restores afterwards; the saved VM can be resumed. A file
whose UART state is invalid (checksums right) fails before anything is
applied, and the same VMM then restores the good file; one with an MSR
that KVM refuses fails at the vCPUs, and that VMM, which holds part of its
state, refuses another incoming migration."""
# timeout: 300
import os
import re
import shutil
import subprocess
import time

import struct

from godwit_test import (BUILD, VMM, QMPError, assert_no_guest_errors, need_kvm, run_test, self_check,
                         wait_migration)
from stream_util import body_of, records, with_body

STREAM_TOOL = os.path.join(BUILD, "godwit-stream")


def save(src, path):
    src.qmp.cmd("migrate", uri="file:" + path)
    info = wait_migration(src, 120)
    assert info["status"] == "completed", info
    assert src.status() == "postmigrate", src.status()
    return info


def restore(path, expect="completed"):
    dst = VMM(memory=256, vcpus=2, incoming=True)
    dst.qmp.cmd("migrate-incoming", uri="file:" + path)
    info = wait_migration(dst, 120)
    return dst, info


def restore_fails(dst, src, data, rec, body, name, want):
    """Restore `data` with record `rec` given `body` (checksum right) on
    dst: it fails, saying `want`, and dst waits still (inmigrate)."""
    bp = os.path.join(src.dir, name)
    with open(bp, "wb") as f:
        f.write(with_body(data, rec, bytes(body)))
    dst.qmp.cmd("migrate-incoming", uri="file:" + bp)
    info = wait_migration(dst, 120)
    assert info["status"] == "failed" and want in info["error-desc"], info
    assert dst.status() == "inmigrate", dst.status()
    print(f"{name}: failed cleanly: {info['error-desc']}")


def bad_state_bodies(src, path, data):
    recs = records(path)
    serial = next(r for r in recs if r.get("device") == "serial0")
    body = bytearray(body_of(data, serial))
    body[40 + 4] |= 0xf0  # ier: reserved bits (docs/devices.md)
    with VMM(memory=256, vcpus=2, incoming=True) as dst:
        restore_fails(dst, src, data, serial, body, "serial-ier", "serial state")
        dst.qmp.cmd("migrate-incoming", uri="file:" + path)  # nothing was applied
        info = wait_migration(dst, 120)
        assert info["status"] == "completed", info
        dst.wait_serial("heartbeat vcpu=0 tick=", 30)
        self_check(dst)
        print("the same VMM then restored the good file")

    vcpu = next(r for r in recs if r["type"] == "VCPU_STATE" and r["vcpu"] == 0)
    body = bytearray(body_of(data, vcpu))
    pos = 8
    while struct.unpack_from("<I", body, pos)[0] != 5:  # sections, to MSRS (tag 5)
        n = struct.unpack_from("<I", body, pos + 4)[0]
        pos += 8 + n + (8 - n % 8) % 8
    count = struct.unpack_from("<I", body, pos + 8)[0]
    assert count >= 2, count
    struct.pack_into("<I", body, pos + 16 + 16, 0xdeadbeef)  # the second MSR's index
    with VMM(memory=256, vcpus=2, incoming=True) as dst:
        restore_fails(dst, src, data, vcpu, body, "msr-refused", "0xdeadbeef")
        try:
            dst.qmp.cmd("migrate-incoming", uri="file:" + path)
        except QMPError as e:
            assert "holds part of the state" in str(e), str(e)
        else:
            raise AssertionError("a VMM holding part of a failed load took another")
        print("that VMM refused another incoming migration")


def main():
    need_kvm()
    with VMM(memory=256, vcpus=2, cmdline="workload=dirty,verify rate=1000 wss=4M") as src:
        src.wait_serial("heartbeat vcpu=0 tick=2 ", 60)
        path = os.path.join(src.dir, "vm.save")
        info = save(src, path)
        print("saved:", os.path.getsize(path), "bytes in", info["total-time"], "ms")
        p = subprocess.run([STREAM_TOOL, "--verify", "--quiet", path], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
        print("godwit-stream:", p.stdout.strip().splitlines()[-1])

        data = open(path, "rb").read()
        bad = {
            "corrupt": data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xff]) + data[len(data) // 2 + 1:],
            "truncated": data[:len(data) * 2 // 3],
            "version": data[:8] + (99).to_bytes(4, "little") + data[12:],
            "empty": b"",
        }
        want = {"corrupt": "checksum", "truncated": "truncated", "version": "version", "empty": "truncated"}
        for name, content in bad.items():
            bp = os.path.join(src.dir, name)
            with open(bp, "wb") as f:
                f.write(content)
            p = subprocess.run([STREAM_TOOL, "--verify", "--quiet", bp], capture_output=True, text=True)
            assert p.returncode == 1, (name, p.stdout, p.stderr)
            dst, info = restore(bp)
            assert info["status"] == "failed", (name, info)
            assert want[name] in info["error-desc"], (name, info["error-desc"])
            assert dst.status() == "inmigrate", dst.status()
            print(f"{name}: failed cleanly: {info['error-desc']}")
            dst.close()

        bad_state_bodies(src, path, data)

        # Restore the good file: the guest continues where it stopped.
        src_text = src.serial_text()
        dst, info = restore(path)
        assert info["status"] == "completed", info
        assert dst.status() == "running"
        dst.wait_serial("heartbeat vcpu=0 tick=", 30)
        time.sleep(2)
        self_check(dst)
        ticks = [int(t) for t in re.findall(r"heartbeat vcpu=0 tick=(\d+) ", src_text + dst.serial_text())]
        assert ticks == list(range(1, len(ticks) + 1)), ticks
        assert_no_guest_errors(dst)
        dst.close()
        # The saved source can go on too (as with QEMU, `cont` after the save).
        src.qmp.cmd("cont")
        time.sleep(1)
        assert src.status() == "running"


run_test(main)
