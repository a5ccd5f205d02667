#!/usr/bin/env python3
"""godwitd's QMP command connection to a VMM, closed by the VMM (godwit-vmm
drops a client whose queued events pass QMP_MAX_OUTPUT, e.g. after a guest
reset itself in a loop while no command ran): the next command makes it
again and works, instead of every later suspend, resume, shutdown or
migrate failing until the daemon restarts. A command whose delivery is
uncertain (the connection closed after it was written) is sent again only
if repeating it is harmless (stop); system_powerdown gets an error, and the
next command works. And the daemon reads the events pending on that
connection while idle, so that a burst of events does not fill it.

The fake VMM plays the VMM (fake-drop-clients, fake-drop-at=CMD and
fake-emit are its test hooks), also where /dev/kvm exists."""
# timeout: 180
import os

from godwit_test import QMP, run_test
from godwitd_test import Daemon

GUEST = "workload=dirty wss=1M rate=1000 beat-ms=500"


def vmm_qmp(d, name):
    return QMP(os.path.join(d.state, "run", f"{name}.qmp"))


def start(d, name, extra=""):
    d.define(name, cmdline=(GUEST + " " + extra).strip())
    d.run("start", name)
    d.wait_state(name, "running (booted)")


def dropped_while_idle(d):
    """The VMM closed the command connection between commands: suspend,
    resume and shutdown (certainly not delivered before the close was
    seen, so sent on the new connection) all work."""
    start(d, "vm1")
    q = vmm_qmp(d, "vm1")
    try:
        assert q.cmd("fake-drop-clients", events=50) == {"dropped": 1}
        r = d.run("suspend", "vm1", check=False)
        assert r.rc == 0 and "Domain 'vm1' suspended" in r.out, r
        assert d.state_of("vm1") == "paused (user)"
        assert "connecting again to" in d.log_text()
        d.run("resume", "vm1")
        d.wait_state("vm1", "running (unpaused)")

        # A second time, then a command that must not be sent twice: it was
        # certainly not delivered, so it goes on the new connection.
        assert q.cmd("fake-drop-clients") == {"dropped": 1}
        r = d.run("shutdown", "vm1", check=False)
        assert r.rc == 0 and "is being shutdown" in r.out, r
        d.wait_state("vm1", "shut off (shutdown)", 30)
    finally:
        q.close()


def dropped_during_repeatable(d):
    """The VMM closes the connection on reading 'stop', unanswered: stop is
    sent again on a new connection, suspend works."""
    start(d, "vm2", "fake-drop-at=stop")
    r = d.run("suspend", "vm2", check=False)
    assert r.rc == 0 and "suspended" in r.out, r
    assert d.state_of("vm2") == "paused (user)"
    assert "sending 'stop' again on the new QMP connection" in d.log_text()
    d.run("destroy", "vm2")


def dropped_during_unrepeatable(d):
    """The same on system_powerdown: it may have been carried out, so it is
    not sent again and shutdown fails, saying so; the guest runs on and the
    next command works on the connection made again."""
    start(d, "vm3", "fake-drop-at=system_powerdown")
    r = d.run("shutdown", "vm3", check=False)
    assert r.rc == 1 and "may or may not have been carried out" in r.err, r
    assert d.state_of("vm3") == "running (booted)"
    r = d.run("suspend", "vm3", check=False)
    assert r.rc == 0 and "suspended" in r.out, r
    d.run("resume", "vm3")
    d.wait_state("vm3", "running (unpaused)")
    r = d.run("shutdown", "vm3", check=False)
    assert r.rc == 0, r
    d.wait_state("vm3", "shut off (shutdown)", 30)


def burst_while_idle(d):
    """A burst of events while no command runs: the daemon reads them on its
    command connection too (the fake VMM, which blocks on a full socket
    rather than dropping, would otherwise stop answering)."""
    start(d, "vm4")
    q = vmm_qmp(d, "vm4")
    try:
        q.cmd("fake-emit", event="RESET", count=3000, timeout=60)
    finally:
        q.close()
    d.run("suspend", "vm4")
    assert d.state_of("vm4") == "paused (user)"
    d.run("destroy", "vm4")


def main():
    with Daemon(fake=True) as d:
        dropped_while_idle(d)
        dropped_during_repeatable(d)
        dropped_during_unrepeatable(d)
        burst_while_idle(d)


if __name__ == "__main__":
    run_test(main)
