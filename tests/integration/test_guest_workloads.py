#!/usr/bin/env python3
"""Every test-guest workload on 1 and 2 vCPUs: it starts, makes progress,
reports no error, answers the serial self-check; mem-invariant memory is
checked through pmemsave after `stop`."""
# timeout: 600
import re

from godwit_test import (VMM, assert_no_guest_errors, check_invariant_regions, need_kvm, run_test,
                         self_check)

CASES = [
    (1, "mem-invariant", ["vcpu0: workload mem-invariant started"], "."),
    (1, "dirty wss=8M rate=0", ["vcpu0: workload dirty started"], "heartbeat vcpu=0 tick=2 "),
    (1, "verify", ["vcpu0: workload verify started"], "verify vcpu=0 pass=1 ok"),
    (1, "fpu", ["vcpu0: workload fpu started"], "fpu vcpu=0 rounds="),
    (1, "time", ["vcpu0: workload time started"], "time vcpu=0 ticks="),
    (2, "mem-invariant,mem-invariant", ["vcpu1: workload mem-invariant started"], ".."),
    (2, "verify,fpu", ["vcpu0: workload verify started", "vcpu1: workload fpu started"], "fpu vcpu=1 rounds="),
    (2, "time,dirty rate=1000", ["vcpu0: workload time started", "vcpu1: workload dirty started"],
     "heartbeat vcpu=1 tick=2 "),
]


def run_case(vcpus, cmd, started, progress):
    memory = 256
    workload, _, params = cmd.partition(" ")
    with VMM(memory=memory, vcpus=vcpus, cmdline=f"workload={workload} {params}".strip()) as vm:
        vm.wait_serial("godwit-guest: booted", 60)
        for s in started:
            vm.wait_serial(s, 60)
        mark = vm.serial_len()
        vm.wait_serial(progress, 60, start=mark)
        self_check(vm)
        if workload == "dirty" or "dirty" in workload:
            beats = [int(m) for m in re.findall(r"heartbeat vcpu=\d+ tick=(\d+)", vm.serial_text())]
            assert beats == sorted(beats), beats
        if "mem-invariant" in workload:
            vm.qmp.cmd("stop")
            check_invariant_regions(vm, memory)
            vm.qmp.cmd("cont")
        assert_no_guest_errors(vm)
        print(f"ok: {vcpus} vCPU(s) {cmd}")


def main():
    need_kvm()
    for case in CASES:
        run_case(*case)


run_test(main)
