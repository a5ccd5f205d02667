#!/usr/bin/env python3
"""A migration between two daemons whose destination VMM stalls just as the
source stops the guest (SIGSTOP on the source's "Suspended Migrated"
event): the source VMM's switch-over guard gives the guest back, the
source daemon reports "Resumed Unpaused" (not a cancelled migration) and
the job goes on; once the destination runs again the migration completes,
its second stop is "Suspended Migrated" again, and the guest checks out
whole on the destination."""
# timeout: 300
import os
import signal
import subprocess
import threading

from godwit_test import need_netns, run_test, skip, wait_until
from godwitd_test import (GODWIT, EventWatcher, MigHosts, finish_proc, guest_self_check, have_kvm,
                          heartbeats)

# A working set the stop takes ~0.1-0.2 s to send over the TLS link: long
# enough for the event to reach us and the SIGSTOP to land in it.
BUSY = "workload=dirty wss=128M rate=0 beat-ms=200"


class Staller(EventWatcher):
    """Sends SIGSTOP to the destination's VMM at the first "Suspended
    Migrated" line, from the thread that reads the events."""

    def __init__(self, daemon, dst):
        self.dst = dst
        self.stopped = []
        super().__init__(daemon, "vm1")

    def _pump(self):
        for line in self.proc.stdout:
            if "Suspended Migrated" in line and not self.stopped:
                for pid in self.dst.vmm_pids():
                    os.kill(pid, signal.SIGSTOP)
                    self.stopped.append(pid)
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def resume(self):
        for pid in self.stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def main():
    need_netns()
    if not have_kvm():
        skip("the fake VMM has no switch-over guard")
    with MigHosts(tag="gwg") as h:
        a, b = h.a, h.b
        h.start_guest(a, real_cmdline=BUSY, memory=512, beats=3)
        w = Staller(a, b)
        p = subprocess.Popen(["ip", "netns", "exec", h.net.ns[0], GODWIT, "-c", a.uri, "migrate",
                              "--live", "vm1", b.peer],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            w.wait_for("Suspended Migrated", 120)
            w.wait_for("Resumed Unpaused", 30)
            assert w.stopped, "no destination VMM to stall"
            assert a.state_of("vm1") == "running (unpaused)", a.state_of("vm1")
            n = len(heartbeats(a, "vm1"))
            wait_until(lambda: len(heartbeats(a, "vm1")) > n, 20, "the guest to run on the source")
            assert p.poll() is None, "the migration ended while the destination was stalled"
        finally:
            w.resume()
        rc, err = finish_proc(p, 120)
        assert rc == 0, err
        w.close()
        text = "\n".join(w.lines)
        print(text)
        assert text.count("Suspended Migrated") == 2, text
        assert "canceled" not in text, text
        assert "Stopped Migrated" in text, text
        # The completed job on the source says the guard gave a stop up.
        info = a.run("domjobinfo", "--completed", "vm1").out
        print(info)
        assert "Switch-over retries: 1 " in info or "Switch-over retries: 2 " in info, info
        raw = a.run("domjobinfo", "--completed", "--rawstats", "vm1").out
        assert any(line in raw.splitlines() for line in ("switchover_retries: 1", "switchover_retries: 2")), raw
        b.wait_state("vm1", "running (migrated)")
        report = guest_self_check(b, "vm1")
        assert report == "REPORT ok", report


run_test(main)
