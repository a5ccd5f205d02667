#!/usr/bin/env python3
"""The main job: boot the test guest on godwit-vmm, show its workloads
running, ask it to check itself, and power it off. (Live migration between
two hosts joins this demo as the migration work lands.)"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
from godwit_test import VMM, need_kvm  # noqa: E402


def show(vm, since, prefix="  guest| "):
    text = vm.serial_text()[since:]
    for line in text.splitlines():
        if line.strip(".").strip():
            print(prefix + line, flush=True)
    return len(vm.serial_text())


def main():
    need_kvm()
    print("== godwit demo: a 1 GiB, 2-vCPU test guest running verify + fpu workloads")
    t0 = time.monotonic()
    with VMM(memory=1024, vcpus=2, cmdline="workload=verify,fpu", name="demo") as vm:
        vm.wait_serial("workload fpu started", 60)
        print(f"== booted to its workloads in {(time.monotonic() - t0) * 1000:.0f} ms")
        pos = show(vm, 0)
        time.sleep(5)
        pos = show(vm, pos)
        print("== QMP query-status:", vm.status())
        vm.qmp.cmd("stop")
        print("== stopped:", vm.status())
        time.sleep(1)
        vm.qmp.cmd("cont")
        print("== resumed:", vm.status())
        time.sleep(2)
        pos = show(vm, pos)
        print("== asking the guest to check itself (serial 'v')")
        start = vm.serial_len()
        vm.send_serial("v")
        vm.wait_serial("REPORT", 30, start=start)
        time.sleep(0.2)
        pos = show(vm, pos)
        vm.send_serial("p")
        vm.qmp.wait_event("SHUTDOWN", 30)
        print("== guest powered off; VMM exit status", vm.wait_exit(10))


if __name__ == "__main__":
    main()
