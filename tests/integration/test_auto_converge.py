#!/usr/bin/env python3
"""A guest that dirties memory faster than a capped link carries it never
converges by pre-copy alone (the migration stays active round after round,
the guest keeps running); with auto-converge the vCPU throttle rises in
steps (reported in query-migrate) until it converges, and the guest is fine
on the destination."""
# timeout: 400
import os
import time

from godwit_test import (VMM, assert_no_guest_errors, migrate, need_kvm, run_test, self_check,
                         wait_migration)

CAP = {"max-bandwidth": 40 * 1000 * 1000, "downtime-limit": 100}
GUEST = "workload=dirty,time rate=20000 wss=64M"   # ~80 MB/s of dirty pages


def main():
    need_kvm()
    with VMM(memory=256, vcpus=2, cmdline=GUEST) as src:
        src.wait_serial("heartbeat vcpu=0 tick=2 ", 60)
        with VMM(memory=256, vcpus=2, incoming=True) as dst:
            src.qmp.cmd("migrate-set-parameters", **CAP)
            dst.qmp.cmd("migrate-incoming", uri="unix:" + os.path.join(dst.dir, "m.sock"))
            src.qmp.cmd("migrate", uri="unix:" + os.path.join(dst.dir, "m.sock"))
            time.sleep(12)
            info = src.qmp.cmd("query-migrate")
            assert info["status"] == "active", info
            assert info["ram"]["iteration"] >= 3, info
            assert "cpu-throttle-percentage" not in info
            print("without auto-converge after 12 s:", info["ram"]["iteration"], "rounds, remaining",
                  info["ram"]["remaining"])
            src.qmp.cmd("migrate_cancel")
            assert wait_migration(src, 30)["status"] == "cancelled"
        with VMM(memory=256, vcpus=2, incoming=True) as dst:
            seen = []
            dst.qmp.cmd("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
            src.qmp.cmd("migrate-set-capabilities",
                        capabilities=[{"capability": "auto-converge", "state": True}])
            dst.qmp.cmd("migrate-incoming", uri="unix:" + os.path.join(dst.dir, "m2.sock"))
            src.qmp.cmd("migrate", uri="unix:" + os.path.join(dst.dir, "m2.sock"))
            deadline = time.time() + 240
            while time.time() < deadline:
                info = src.qmp.cmd("query-migrate")
                if "cpu-throttle-percentage" in info:
                    seen.append(info["cpu-throttle-percentage"])
                if info["status"] in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.2)
            assert info["status"] == "completed", info
            assert seen and max(seen) >= 20, seen
            print("auto-converge: throttle steps", sorted(set(seen)), "total", info["total-time"],
                  "ms, downtime", info["downtime"], "ms")
            assert dst.status() == "running"
            time.sleep(2)
            self_check(dst)
            assert_no_guest_errors(dst)


run_test(main)
