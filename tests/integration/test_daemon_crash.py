#!/usr/bin/env python3
"""A domain's VMM killed behind the daemon's back: the domain becomes
`shut off (crashed)` with the event `Stopped Failed`, the daemon carries on
serving (other domains keep running, the crashed one starts again)."""
# timeout: 180
import os
import signal

from godwit_test import run_test, wait_until
from godwitd_test import Daemon, EventWatcher, pid_alive, vmm_kind


def main():
    print("VMM:", vmm_kind())
    with Daemon() as d:
        ev = EventWatcher(d)
        try:
            d.define("victim")
            d.define("bystander")
            d.run("start", "victim")
            d.run("start", "bystander")
            victim = d.status("victim")["pid"]
            bystander = d.status("bystander")["pid"]

            os.kill(victim, signal.SIGKILL)
            ev.wait_for("event 'lifecycle' for domain 'victim': Stopped Failed", 30)
            assert d.state_of("victim") == "shut off (crashed)"
            wait_until(lambda: not pid_alive(victim), 10, "the VMM to be reaped")

            # The daemon still serves, the other domain is untouched.
            assert d.state_of("bystander") == "running (booted)"
            assert pid_alive(bystander)
            r = d.run("list", "--all")
            assert "victim" in r.out and "shut off" in r.out, r

            # The crashed domain can start again.
            d.run("start", "victim")
            d.wait_state("victim", "running (booted)")
            for name in ("victim", "bystander"):
                d.run("destroy", name)
                assert d.state_of(name) == "shut off (destroyed)"
        finally:
            ev.close()
        print("\n".join(ev.lines))


run_test(main)
