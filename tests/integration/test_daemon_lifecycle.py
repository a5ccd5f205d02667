#!/usr/bin/env python3
"""godwitd + godwit: a domain's whole lifecycle as an operator meets it —
define, list, start, dominfo, suspend/resume, console, shutdown (the test
guest powers off), start again, destroy, undefine — with the lifecycle
events a subscriber sees, libvirt's states and reasons, virsh's output, and
the errors for operations that make no sense."""
# timeout: 240
import json
import os
import subprocess

from godwit_test import run_test, wait_until
from godwitd_test import GODWIT, Daemon, EventWatcher, pid_alive, vmm_kind


def check_errors(d):
    r = d.run("start", "nosuchvm", check=False)
    assert r.rc == 1 and r.err.startswith("error: ") and "nosuchvm" in r.err, r
    r = d.run("destroy", "vm1", check=False)
    assert r.rc == 1 and "not running" in r.err, r
    r = d.run("frobnicate", check=False)
    assert r.rc == 1 and "unknown command" in r.err, r
    bad = os.path.join(d.dir, "bad.json")
    with open(bad, "w") as f:
        json.dump({"name": "bad", "memory_mib": 64, "test_guest": True,
                   "migration": {"timeout_action": "explode"}}, f)
    r = d.run("define", bad, check=False)
    assert r.rc == 1 and "timeout_action" in r.err, r
    with open(bad, "w") as f:
        json.dump({"name": "bad", "memory_mib": 64, "test_guest": True, "cpu": "host,-avx5"}, f)
    r = d.run("define", bad, check=False)
    assert r.rc == 1 and "unknown feature 'avx5'" in r.err, r
    r = d.run("event", "--all", "--timeout", "1")
    assert r.out.split() == "event loop timed out events received: 0".split(), r
    r = d.run("event", "vm1", check=False)
    assert r.rc == 1 and "--all" in r.err, r
    r = d.run("event", "--event", "lifecyle", "--timeout", "1", check=False)  # virsh refuses it too
    assert r.rc == 1 and "unknown event type 'lifecyle'" in r.err, r
    for cmd in ("list", "start", "event", "domstate", "console"):
        r = d.run(cmd, "--help")
        assert "SYNOPSIS" in r.out and cmd in r.out, r


def main():
    print("VMM:", vmm_kind())
    with Daemon() as d:
        ev = EventWatcher(d)
        try:
            lifecycle(d, ev)
        finally:
            ev.close()
        print("\n".join(ev.lines))
        list_order(d)


def list_order(d):
    """`list` in virsh's order: running domains by id, then the others by
    name, whatever order they were defined in, and across a restart."""
    def names(*opts):
        return [l.split()[1] for l in d.run("list", *opts).out.splitlines()[2:] if l.strip()]
    for name in ("b2", "c3", "a1", "d4"):
        d.define(name)
    d.run("start", "c3")
    d.run("start", "b2")
    assert names("--all") == ["c3", "b2", "a1", "d4"], names("--all")
    assert names() == ["c3", "b2"], names()
    d.stop()
    d.start()
    assert names("--all") == ["c3", "b2", "a1", "d4"], names("--all")
    for name in ("c3", "b2"):
        d.run("destroy", name)


def serial_fallback(d):
    """A VMM without system_powerdown (CommandNotFound): the test guest is
    asked through its serial 'p' (the fake VMM plays such a VMM)."""
    d.define("old", cmdline="workload=dirty wss=1M rate=1000 beat-ms=500 fake-no-acpi")
    d.run("start", "old")
    d.wait_state("old", "running (booted)")
    d.run("shutdown", "old")
    d.wait_state("old", "shut off (shutdown)", 60)
    out = d.run("console", "old").out
    assert "godwit-guest: power off" in out and "power button" not in out, out[-500:]
    d.run("undefine", "old")


def lifecycle(d, ev):
    r = d.define("vm1", migration={"permit_postcopy": False, "max_downtime_ms": 100,
                                   "timeout_action": "pause"}, cpu="host,-invtsc")
    assert "Domain 'vm1' defined from" in r.out, r
    ev.wait_for("event 'lifecycle' for domain 'vm1': Defined Added")
    r = d.run("list", "--all")
    lines = r.out.splitlines()
    assert lines[0].split() == ["Id", "Name", "State"] and lines[1].startswith("---"), r
    assert lines[2].split() == ["-", "vm1", "shut", "off"], r
    assert d.state_of("vm1") == "shut off (unknown)"
    check_errors(d)

    r = d.run("start", "vm1")
    assert r.out.startswith("Domain 'vm1' started"), r
    ev.wait_for("Started Booted")
    assert d.state_of("vm1") == "running (booted)"
    r = d.run("list")
    row = r.out.splitlines()[2].split()
    assert row[1:] == ["vm1", "running"] and row[0].isdigit(), r
    info = dict(l.split(":", 1) for l in d.run("dominfo", "vm1").out.splitlines() if ":" in l)
    assert info["State"].strip() == "running" and info["CPU(s)"].strip() == "1", info
    assert info["Max memory"].strip() == "65536 KiB" and len(info["UUID"].strip()) == 36, info
    assert "Name:           vm1" in d.run("dominfo", info["UUID"].strip()).out  # lookup by uuid
    assert d.run("domstate", row[0]).out.strip() == "running"             # and by id
    r = d.run("domstate", str(int(row[0]) + 2**32), check=False)          # not another id
    assert r.rc == 1 and "Domain not found" in r.err, r
    pid = d.status("vm1")["pid"]
    assert pid_alive(pid)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    assert b"--cpu" in argv and argv[argv.index(b"--cpu") + 1] == b"host,-invtsc", argv

    r = d.run("start", "vm1", check=False)
    assert r.rc == 1 and "already running" in r.err, r
    r = d.run("undefine", "vm1", check=False)
    assert r.rc == 1 and "while it is running" in r.err, r

    assert "suspended" in d.run("suspend", "vm1").out
    ev.wait_for("Suspended Paused")
    assert d.state_of("vm1") == "paused (user)"
    assert "resumed" in d.run("resume", "vm1").out
    ev.wait_for("Resumed Unpaused")
    assert d.state_of("vm1") == "running (unpaused)"

    # The guest's own output, through the daemon: its workload runs (and reads serial input).
    wait_until(lambda: "heartbeat vcpu=0" in d.run("console", "vm1").out, 60, "a heartbeat on the console")
    r = d.run("console", "--tail", "200", "vm1")
    assert len(r.out) <= 200 and "heartbeat" in r.out, r

    follow = subprocess.Popen([GODWIT, "-c", d.uri, "console", "--follow", "vm1"], stdout=subprocess.PIPE,
                              text=True)
    by_id = EventWatcher(d, domain=row[0])  # filtered by id
    r = d.run("shutdown", "vm1")
    assert "is being shutdown" in r.out, r
    ev.wait_for("Stopped Shutdown", 60)
    by_id.wait_for("event 'lifecycle' for domain 'vm1': Stopped Shutdown")
    by_id.close()
    out, _ = follow.communicate(timeout=30)  # --follow ends when the domain stops
    assert "heartbeat vcpu=0" in out and follow.returncode == 0, out[-500:]
    assert "godwit-guest: power button" in out, out[-500:]  # system_powerdown, not serial 'p'
    d.wait_state("vm1", "shut off (shutdown)")
    wait_until(lambda: not pid_alive(pid), 10, "the VMM to exit")

    if d.fake:
        serial_fallback(d)

    d.run("start", "vm1")
    d.wait_state("vm1", "running (booted)")
    assert "destroyed" in d.run("destroy", "vm1").out
    ev.wait_for("Stopped Destroyed")
    assert d.state_of("vm1") == "shut off (destroyed)"

    # Defining an existing name updates it (its UUID stays).
    uuid = info["UUID"].strip()
    d.define("vm1", vcpus=2)
    ev.wait_for("Defined Updated")
    info = dict(l.split(":", 1) for l in d.run("dominfo", "vm1").out.splitlines() if ":" in l)
    assert info["CPU(s)"].strip() == "2" and info["UUID"].strip() == uuid, info

    # The definition survives a daemon restart; undefine removes it.
    d.stop()
    d.start()
    assert d.state_of("vm1") == "shut off (destroyed)"
    assert "has been undefined" in d.run("undefine", "vm1").out
    r = d.run("list", "--all")
    assert "vm1" not in r.out, r
    assert not os.path.exists(os.path.join(d.state, "domains", "vm1.json"))


run_test(main)
