#!/usr/bin/env python3
"""A guest KVM cannot run (fetching code from an address that is not RAM)
stops the VM with a clear log line, QMP status internal-error and an event;
the VMM stays up for inspection and answers QMP."""
# timeout: 120
import os
import shutil
import tempfile

from godwit_test import VMM, need_kvm, run_test, wait_until
from tiny_elf import jump_to, pvh_elf


def main():
    need_kvm()
    d = tempfile.mkdtemp(prefix="godwit-test-")
    kernel = os.path.join(d, "bad.elf")
    with open(kernel, "wb") as f:
        f.write(pvh_elf(jump_to(0xD0000000)))
    with VMM(memory=32, test_guest=False, extra=["--kernel", kernel, "--paused"]) as vm:
        assert vm.status() == "prelaunch"
        vm.qmp.cmd("cont")
        vm.qmp.wait_event("INTERNAL_ERROR", 60)
        wait_until(lambda: vm.status() == "internal-error", 10, "status internal-error")
        assert vm.proc.poll() is None, "VMM must stay up"
        wait_until(lambda: b"emulation failure" in vm.stderr and b"rip 0xd0000000" in vm.stderr, 10,
                   "a log line naming the failure")
        # cont is refused? QEMU allows cont from internal-error after a reset; quit works.
        vm.qmp.cmd("quit")
        assert vm.wait_exit(10) == 0
    shutil.rmtree(d, ignore_errors=True)


run_test(main)
