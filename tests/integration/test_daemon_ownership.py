#!/usr/bin/env python3
"""Which VMMs a godwitd owns, and that it owns them alone:

- a daemon killed while `start` waits for the VMM's QMP leaves the VMM
  recorded as starting (pid, start time, QMP socket): the next daemon takes
  it back (running), and a second `start` is refused instead of running the
  guest twice; a VMM that serves run/NAME.qmp while the status says shut
  off is taken back too, and `start` refuses to replace something that
  answers on that socket;
- one daemon per state directory (STATE/godwitd.lock), and a daemon never
  takes over a unix socket another process answers on;
- a reused pid (another daemon's VMM of a same-named domain) is never
  killed by recovery;
- redefining a running domain keeps the live configuration (libvirt's live
  vs persistent): dominfo and the VMM agree until it stops, across a daemon
  restart; the next start uses the new definition."""
# timeout: 240
import json
import os
import signal
import socket
import subprocess
import time

from godwit_test import run_test, wait_until
from godwitd_test import run_selected, GODWIT, Daemon, pid_alive


def vmm_procs(state, name):
    """Live VMM processes whose --qmp is this state dir's socket for name."""
    qmp = os.path.join(state, "run", f"{name}.qmp").encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{d}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if b"--qmp" in argv and argv[argv.index(b"--qmp") + 1] == qmp and not zombie:
            out.append(int(d))
    return out


def test_orphan_start():
    with Daemon() as d:
        try:
            orphan_start(d)
        finally:  # a VMM the daemon lost (before the fix) is not left behind
            for name in ("orph", "slow", "plain", "squat"):
                for pid in vmm_procs(d.state, name):
                    os.kill(pid, signal.SIGKILL)


def orphan_start(d):
    # The daemon dies while the VMM is still starting; the next one comes
    # after the VMM answers QMP.
    d.define("orph", cmdline="workload=dirty wss=1M rate=10 beat-ms=500 fake-start-delay=2")
    p = subprocess.Popen([GODWIT, "-c", d.uri, "start", "orph"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    wait_until(lambda: vmm_procs(d.state, "orph"), 10, "the VMM to be spawned")
    time.sleep(0.5)
    d.stop(signal.SIGKILL)
    p.communicate(timeout=10)
    (pid,) = vmm_procs(d.state, "orph")
    time.sleep(3)  # the VMM binds its QMP socket
    d.start()
    assert d.state_of("orph") == "running (booted)", d.state_of("orph")
    assert d.status("orph")["pid"] == pid, d.status("orph")
    r = d.run("start", "orph", check=False)
    assert r.rc != 0 and "already running" in r.err, r
    assert vmm_procs(d.state, "orph") == [pid], vmm_procs(d.state, "orph")

    # Restarted at once: the VMM is still starting; the status written
    # right after the fork names it, the daemon waits for it.
    d.run("destroy", "orph")
    d.define("slow", cmdline="workload=dirty wss=1M rate=10 beat-ms=500 fake-start-delay=4")
    p = subprocess.Popen([GODWIT, "-c", d.uri, "start", "slow"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    wait_until(lambda: vmm_procs(d.state, "slow"), 10, "the VMM to be spawned")
    time.sleep(0.3)
    d.stop(signal.SIGKILL)
    p.communicate(timeout=10)
    (pid,) = vmm_procs(d.state, "slow")
    st = d.status("slow")
    assert st.get("starting") is True and st.get("pid") == pid, st
    d.start()
    assert d.state_of("slow") == "running (booted)", d.state_of("slow")
    assert d.status("slow")["pid"] == pid and "starting" not in d.status("slow")
    d.run("destroy", "slow")

    # A status from before that record (shut off, no pid): the VMM that
    # serves run/NAME.qmp is found all the same.
    d.define("plain")
    d.run("start", "plain")
    pid = d.status("plain")["pid"]
    d.stop(signal.SIGKILL)
    uuid = d.status("plain")["uuid"]
    with open(os.path.join(d.state, "run", "plain.json"), "w") as f:
        json.dump({"uuid": uuid, "state": "shut off", "reason": "unknown"}, f)
    d.start()
    assert d.state_of("plain").startswith("running"), d.state_of("plain")
    assert d.status("plain")["pid"] == pid
    d.run("destroy", "plain")
    wait_until(lambda: not pid_alive(pid), 10, "the VMM to exit")

    # Something that is not our VMM answers on the socket: never adopted,
    # never replaced.
    d.define("squat")
    path = os.path.join(d.state, "run", "squat.qmp")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(4)
    try:
        d.stop(signal.SIGKILL)
        d.start()
        assert d.state_of("squat") == "shut off (unknown)", d.state_of("squat")
        r = d.run("start", "squat", check=False)
        assert r.rc != 0 and "already serves the QMP socket" in r.err, r
        assert os.path.exists(path), "the live socket was unlinked"
        assert not vmm_procs(d.state, "squat")
    finally:
        s.close()
    os.unlink(path)
    d.run("start", "squat")
    d.run("destroy", "squat")


def test_two_daemons():
    with Daemon() as a:
        a.define("dup")
        a.run("start", "dup")
        # Same state directory, another socket: refused (the lock).
        sock2 = os.path.join(a.dir, "b.sock")
        cmd = [c if c != "unix:" + a.sock else "unix:" + sock2 for c in a.command()]
        b = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        assert b.returncode != 0 and "another godwitd" in b.stderr and "is using the state directory" in b.stderr, b
        assert not os.path.exists(sock2)
        # Another state directory, the same socket: refused, the socket kept.
        cmd = a.command()
        cmd[cmd.index("--state-dir") + 1] = os.path.join(a.dir, "state2")
        b = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        assert b.returncode != 0 and "is in use" in b.stderr, b
        assert a.state_of("dup") == "running (booted)"
        a.run("destroy", "dup")
        # A killed daemon's lock goes with it: the next one starts.
        a.stop(signal.SIGKILL)
        a.start()
        assert a.state_of("dup") == "shut off (destroyed)"


def test_pid_reuse():
    with Daemon() as a, Daemon() as b:
        a.define("twin")
        a.run("start", "twin")
        apid = a.status("twin")["pid"]
        b.define("twin")
        for keep_start_time in (True, False):
            b.run("start", "twin")
            bpid = b.status("twin")["pid"]
            b.stop(signal.SIGKILL)
            os.kill(bpid, signal.SIGKILL)
            wait_until(lambda: not pid_alive(bpid), 10, "B's VMM to die")
            st = b.status("twin")
            st["pid"] = apid  # what a pid reuse looks like to B
            if not keep_start_time:
                st.pop("pid_start", None)  # a status of an older daemon
            with open(os.path.join(b.state, "run", "twin.json"), "w") as f:
                json.dump(st, f)
            b.start()
            assert b.state_of("twin") == "shut off (crashed)", b.state_of("twin")
            assert pid_alive(apid), "B killed A's VMM"
            assert a.state_of("twin") == "running (booted)"
        a.run("destroy", "twin")


def dominfo(d, name):
    out = d.run("dominfo", name).out
    return {l.split(":", 1)[0].strip(): l.split(":", 1)[1].strip() for l in out.splitlines() if ":" in l}


def vmm_argv(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        a = f.read().decode().split("\0")
    return {"memory": a[a.index("--memory") + 1], "vcpus": a[a.index("--vcpus") + 1]}


def test_redefine_running():
    with Daemon() as d:
        d.define("rd", memory=64, vcpus=1)
        d.run("start", "rd")
        d.define("rd", memory=128, vcpus=4)
        pid = d.status("rd")["pid"]
        assert vmm_argv(pid) == {"memory": "64", "vcpus": "1"}
        info = dominfo(d, "rd")
        assert info["CPU(s)"] == "1" and info["Max memory"].startswith("65536"), info
        with open(os.path.join(d.state, "domains", "rd.json")) as f:
            saved = json.load(f)
        assert saved["memory_mib"] == 128 and saved["vcpus"] == 4, saved
        # A restarted daemon still knows what the VMM runs with.
        d.stop(signal.SIGKILL)
        d.start()
        info = dominfo(d, "rd")
        assert info["CPU(s)"] == "1" and info["Max memory"].startswith("65536"), info
        d.run("destroy", "rd")
        info = dominfo(d, "rd")
        assert info["CPU(s)"] == "4" and info["Max memory"].startswith("131072"), info
        assert not os.path.exists(os.path.join(d.state, "run", "rd.def"))
        d.run("start", "rd")
        assert vmm_argv(d.status("rd")["pid"]) == {"memory": "128", "vcpus": "4"}
        d.run("destroy", "rd")


TESTS = [test_orphan_start, test_two_daemons, test_pid_reuse, test_redefine_running]


def main():
    run_selected(TESTS)


if __name__ == "__main__":
    run_test(main)
