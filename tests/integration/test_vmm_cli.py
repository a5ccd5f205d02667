#!/usr/bin/env python3
"""godwit-vmm command line: --help, and every bad input gives a one-line
`godwit-vmm: error: ...` and exit status 1, never a crash."""
# timeout: 120
import os
import subprocess
import tempfile

from godwit_test import VMM_BIN, need_kvm, run_test


def vmm(*args, timeout=30):
    return subprocess.run([VMM_BIN, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def expect_error(args, needle):
    p = vmm(*args)
    assert p.returncode == 1, f"{args}: status {p.returncode}, stderr {p.stderr!r}"
    lines = [l for l in p.stderr.splitlines() if l.startswith("godwit-vmm: error: ")]
    assert len(lines) == 1, f"{args}: stderr {p.stderr!r}"
    assert needle in lines[0], f"{args}: {lines[0]!r} lacks {needle!r}"


def main():
    p = vmm("--help")
    assert p.returncode == 0 and "--memory" in p.stdout and "--incoming" in p.stdout, p
    p = vmm("--version")
    assert p.returncode == 0 and p.stdout.startswith("godwit-vmm "), p
    expect_error([], "nothing to boot")
    expect_error(["--bogus"], "--bogus")
    expect_error(["--memory", "lots", "--test-guest"], "--memory")
    expect_error(["--memory", "0", "--test-guest"], "--memory")
    expect_error(["--vcpus", "0", "--test-guest"], "--vcpus")
    expect_error(["--vcpus", "1000", "--test-guest"], "--vcpus")
    expect_error(["--test-guest", "--memory"], "needs an argument")
    expect_error(["--kernel", "/nonexistent/vmlinuz"], "/nonexistent/vmlinuz")
    expect_error(["--kernel", "/etc/passwd", "--initrd", "/nonexistent"], "/nonexistent")
    need_kvm()
    with tempfile.TemporaryDirectory() as d:
        junk = os.path.join(d, "junk")
        with open(junk, "wb") as f:
            f.write(os.urandom(8192))
        expect_error(["--kernel", junk, "--serial", "none"], "junk")
        empty = os.path.join(d, "empty")
        open(empty, "wb").close()
        expect_error(["--kernel", empty, "--serial", "none"], "empty")
        trunc = os.path.join(d, "trunc")
        with open(trunc, "wb") as f:
            f.write(b"\x7fELF\x02\x01\x01" + bytes(20))
        expect_error(["--kernel", trunc, "--serial", "none"], "trunc")
    # More memory than this host has at all.
    with open("/proc/meminfo") as f:
        total_kib = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
    too_much = (total_kib // 1024) * 4 // 2 * 2
    expect_error(["--memory", str(too_much), "--test-guest", "--serial", "none"], "memory")
    expect_error(["--test-guest", "--serial", "/nonexistent-dir/x.log"], "serial")
    expect_error(["--test-guest", "--qmp", "/nonexistent-dir/q.sock", "--serial", "none"], "q.sock")


run_test(main)
