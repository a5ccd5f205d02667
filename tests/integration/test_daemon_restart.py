#!/usr/bin/env python3
"""godwitd killed (SIGKILL) and restarted while VMs run: the VMs keep running
(they live in their own session), and the new daemon finds them again from
its state directory (pid alive, QMP answers query-name with the right name),
keeping their ids and paused state; a VM that died while no daemon watched
is found shut off (crashed), and one alive but unreachable on QMP is killed
and marked crashed. A damaged status file (garbage after its JSON) is
refused, kept aside as .bad, and the VMM that serves the domain's QMP
socket is found all the same. A clean daemon stop leaves VMs running too.
A state directory copied (cp -a) from a daemon whose VM runs: the copy's
daemon neither takes that VMM over nor kills it (its status names the
other daemon's QMP socket); the domain is shut off there, and the first
daemon still drives its VM. A definition given while the VM runs whose
record of the running one (run/NAME.def) cannot be written is refused
whole: after a restart the running VM still shows the definition it runs
with (the persistent one was written first, and a restart took it for the
running one)."""
# timeout: 180
import os
import signal
import subprocess

from godwit_test import run_test, wait_until
from godwitd_test import Daemon, pid_alive, vmm_kind


def main():
    print("VMM:", vmm_kind())
    with Daemon() as d:
        for name in ("keep", "paused", "lost", "mute", "damaged"):
            d.define(name)
            d.run("start", name)
        d.run("suspend", "paused")
        pids = {n: d.status(n)["pid"] for n in ("keep", "paused", "lost", "mute", "damaged")}
        ids = {n: d.status(n)["id"] for n in pids}

        d.stop(signal.SIGKILL)
        assert all(pid_alive(p) for p in pids.values()), "a VMM died with its daemon"
        os.kill(pids["lost"], signal.SIGKILL)
        wait_until(lambda: not pid_alive(pids["lost"]), 10, "the lost VMM to die")
        os.unlink(d.status("mute")["qmp"])  # alive, but no longer reachable
        status_file = os.path.join(d.state, "run", "damaged.json")
        with open(status_file, "a") as f:
            f.write(" trailing garbage")

        d.start()
        assert d.state_of("damaged") == "running (unpaused)", d.state_of("damaged")
        assert d.status("damaged")["pid"] == pids["damaged"]
        with open(status_file + ".bad") as f:
            assert f.read().endswith(" trailing garbage")
        log = d.log_text()
        assert "domain 'damaged': " in log and "unexpected data after the JSON object" in log, log
        d.run("destroy", "damaged")
        wait_until(lambda: not pid_alive(pids["damaged"]), 10, "the damaged one's VMM to exit")
        assert d.state_of("keep") == "running (booted)"
        assert d.state_of("paused") == "paused (user)"
        assert d.state_of("lost") == "shut off (crashed)"
        # An unreachable VMM is stopped, not left running unseen (a start would run it twice).
        assert d.state_of("mute") == "shut off (crashed)"
        wait_until(lambda: not pid_alive(pids["mute"]), 10, "the unreachable VMM to be killed")
        assert d.status("keep")["pid"] == pids["keep"] and d.status("keep")["id"] == ids["keep"]
        r = d.run("list")
        assert f" {ids['keep']} " in r.out and "keep" in r.out and "lost" not in r.out, r
        print(r.out)

        # Found again means driven again: resume, and events from the VMM still arrive.
        d.run("resume", "paused")
        assert d.state_of("paused") == "running (unpaused)"
        os.kill(pids["paused"], signal.SIGKILL)
        d.wait_state("paused", "shut off (crashed)")

        # A clean stop (SIGTERM) also leaves the VM running.
        d.stop()
        assert pid_alive(pids["keep"])
        d.start()
        assert d.state_of("keep") == "running (booted)"
        d.run("destroy", "keep")
        wait_until(lambda: not pid_alive(pids["keep"]), 10, "the VMM to exit")
        assert d.state_of("keep") == "shut off (destroyed)"


def copied_state():
    with Daemon() as a:
        a.define("vm1")
        a.run("start", "vm1")
        pid = a.status("vm1")["pid"]
        with Daemon(start=False) as b:
            subprocess.run(["cp", "-a", a.state, b.state], check=True)
            os.unlink(os.path.join(b.state, "godwitd.lock"))
            b.start()
            assert b.state_of("vm1") == "shut off (crashed)", b.state_of("vm1")
            assert "not this daemon's run/vm1.qmp" in b.log_text(), b.log_text()
            assert pid_alive(pid), "the copy's daemon killed the other daemon's VMM"
        assert a.state_of("vm1") == "running (booted)", a.state_of("vm1")
        a.run("suspend", "vm1")
        assert a.state_of("vm1") == "paused (user)"
        a.run("destroy", "vm1")
        wait_until(lambda: not pid_alive(pid), 10, "the VMM to exit")


def max_memory(d, name):
    info = dict(l.split(":", 1) for l in d.run("dominfo", name).out.splitlines() if ":" in l)
    return info["Max memory"].strip()


def define_while_running_cut_short():
    with Daemon() as d:
        d.define("vm1", memory=64)
        d.run("start", "vm1")
        os.mkdir(os.path.join(d.state, "run", "vm1.def"))  # its write cannot take that name
        path = os.path.join(d.dir, "vm1-new.json")
        with open(path, "w") as f:
            f.write('{"name": "vm1", "memory_mib": 128, "vcpus": 1, "test_guest": true}')
        r = d.run("define", path, check=False)
        assert r.rc == 1, r
        d.stop(signal.SIGKILL)
        os.rmdir(os.path.join(d.state, "run", "vm1.def"))
        d.start()
        assert d.state_of("vm1") == "running (booted)"
        assert max_memory(d, "vm1") == "65536 KiB", max_memory(d, "vm1")
        d.run("destroy", "vm1")
        assert max_memory(d, "vm1") == "65536 KiB", max_memory(d, "vm1")


def all_tests():
    main()
    copied_state()
    define_while_running_cut_short()


run_test(all_tests)
