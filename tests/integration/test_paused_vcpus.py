#!/usr/bin/env python3
"""Paused vCPU threads sleep. A VMM with several vCPUs waiting for an
incoming migration, and a running guest after `stop`, spend no CPU time in
their vCPU threads (each parked thread once woke the others, which woke it
again: two paused vCPUs kept 0.6 of a core busy, on the destination for a
whole migration and on the source during its switch-over). After `cont`
the guest runs on."""
# timeout: 120
import os
import time

from godwit_test import VMM, need_kvm, run_test

WINDOW_S = 2.0
MAX_TICKS = 5  # clock ticks (1/100 s) all vCPU threads together may use in the window


def vcpu_threads(pid):
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip().startswith("vcpu"):
                    out.append(tid)
        except FileNotFoundError:
            pass
    return out


def cpu_ticks(pid, tids):
    total = 0
    for tid in tids:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def check_idle(vm, what, nr_vcpus):
    pid = vm.proc.pid
    tids = vcpu_threads(pid)
    assert len(tids) == nr_vcpus, (what, tids)
    before = cpu_ticks(pid, tids)
    time.sleep(WINDOW_S)
    used = cpu_ticks(pid, tids) - before
    print(f"{what}: {nr_vcpus} paused vCPU threads used {used} ticks in {WINDOW_S} s")
    assert used <= MAX_TICKS, f"{what}: paused vCPU threads used {used} ticks in {WINDOW_S} s"


def main():
    need_kvm()
    for n in (2, 4):
        with VMM(memory=64, vcpus=n, incoming=True) as vm:
            time.sleep(0.5)
            check_idle(vm, f"inmigrate, {n} vCPUs", n)
    with VMM(memory=64, vcpus=2, cmdline="workload=time,dirty wss=1M rate=1000 beat-ms=100") as vm:
        vm.wait_serial("heartbeat vcpu=1 tick=2 ", 60)
        vm.qmp.cmd("stop")
        assert vm.qmp.cmd("query-status")["status"] == "paused"
        check_idle(vm, "stopped guest", 2)
        start = vm.serial_len()
        vm.qmp.cmd("cont")
        vm.wait_serial("heartbeat vcpu=1 ", 30, start=start)


if __name__ == "__main__":
    run_test(main)
