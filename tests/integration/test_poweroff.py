#!/usr/bin/env python3
"""The test guest powering itself off ends the VMM with status 0 and a
SHUTDOWN event (guest: true); so does its serial 'p' command."""
# timeout: 120
from godwit_test import VMM, need_kvm, run_test


def main():
    need_kvm()
    with VMM(memory=64, cmdline="workload=mem-invariant poweroff-after=2") as vm:
        e = vm.qmp.wait_event("SHUTDOWN", 60)
        assert e["data"]["guest"] is True, e
        assert vm.wait_exit(20) == 0
    with VMM(memory=64, vcpus=2, cmdline="workload=time,fpu") as vm:
        vm.wait_serial("started", 60)
        vm.send_serial("p")
        e = vm.qmp.wait_event("SHUTDOWN", 60)
        assert e["data"]["reason"] == "guest-shutdown", e
        assert vm.wait_exit(20) == 0


run_test(main)
