#!/usr/bin/env python3
"""The main job: two hosts (network namespaces joined by a veth pair), a
busy test guest running on the first, migrated live over TCP to the second
while it keeps working; then the guest checks itself on its new host.
Prints what happened. This is the VMM-only demo (no daemons): two godwit-vmm
processes driven over QMP by this script; ./run demo runs scripts/demo.py,
where two godwitd daemons do the same job."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
from godwit_test import VMM, NetnsPair, migrate, need_kvm, need_netns  # noqa: E402


def show(vm, since, host):
    text = vm.serial_text()
    for line in text[since:].splitlines():
        line = line.strip(".")
        if line.strip():
            print(f"  {host}| {line}", flush=True)
    return len(text)


def main():
    need_kvm()
    need_netns()
    print("== two hosts: network namespaces joined by a veth pair (10.77.0.1 <-> 10.77.0.2)")
    with NetnsPair("demo") as net:
        cmd = "workload=dirty,verify wss=256M rate=50000"
        with VMM(memory=1024, vcpus=2, cmdline=cmd, name="demo", netns=net.ns[0]) as src, \
             VMM(memory=1024, vcpus=2, incoming=True, name="demo", netns=net.ns[1]) as dst:
            print("== host A: booting a 1 GiB, 2-vCPU test guest (dirty 200 MB/s + verify)")
            src.wait_serial("verify vcpu=1 pass=1 ok", 60)
            src.wait_serial("heartbeat vcpu=0 tick=2 ", 60)
            pos = show(src, 0, "A")
            print("== migrating live A -> B over tcp:10.77.0.2:4444 (pre-copy)")
            info = migrate(src, dst, f"tcp:{net.addr[1]}:4444")
            ram = info["ram"]
            print(f"== completed: total {info['total-time']} ms, downtime {info['downtime']} ms, "
                  f"{ram['transferred'] / 1e6:.0f} MB sent in {ram['iteration']} round(s), "
                  f"{ram['duplicate']} zero pages, {ram['skipped']} never-written pages skipped")
            print(f"== host A: {src.status()}   host B: {dst.status()}")
            pos = show(src, pos, "A")
            time.sleep(3)
            dpos = show(dst, 0, "B")
            start = dst.serial_len()
            dst.send_serial("v")
            dst.wait_serial("REPORT", 30, start=start)
            time.sleep(0.3)
            show(dst, dpos, "B")
            ticks = [int(t) for t in re.findall(r"heartbeat vcpu=0 tick=(\d+) ",
                                                src.serial_text() + dst.serial_text())]
            ok = ticks == list(range(1, len(ticks) + 1))
            print(f"== heartbeat across the move: ticks {ticks[0]}..{ticks[-1]} "
                  f"{'consecutive, none lost or doubled' if ok else 'BROKEN'}")
            dst.qmp.cmd("quit")
    print("== done")


if __name__ == "__main__":
    main()
