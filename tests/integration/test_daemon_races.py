#!/usr/bin/env python3
"""Lifecycle commands against a VMM that does not behave as the daemon hopes,
at the moment it does so (a VMM of this file's own: the fake VMM of
godwitd_test with a few vices chosen by its command line):

- `lag=S`: the VMM's events reach the daemon S seconds after the reply to
  the command that caused them (in order), as when the monitor's connection
  lags the command connection: a suspend and a resume give one event each,
  never a late STOP that pauses the domain again after the resume, and a
  pause the VMM makes by itself afterwards is not the user's;
- `die-on=CMD`: the VMM exits when it receives CMD, before answering: the
  command fails with OperationFailed (docs/daemon.md: "the VMM failed,
  timed out or vanished") and the domain is shut off (crashed), no zombie;
- `ignore-term`: the VMM ignores SIGTERM: destroy kills it (SIGKILL after
  3 s) and says destroyed, no zombie;
- `deaf`: the guest ignores the ACPI power button: shutdown returns at once
  and the domain keeps running (as under libvirt), destroy ends it;
- `slow-exit=S`: the VMM closes QMP, then takes S seconds to exit (a tracer
  holds it, as the teardown of a large guest's memory would): the domain is
  shut off once the VMM is gone, not before, and the VMM is reaped."""
# timeout: 180
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

from godwit_test import run_test, wait_until
from godwitd_test import Control, Daemon, EventWatcher, FakeVMM, pid_alive, run_selected

HERE = os.path.abspath(__file__)
LIB = os.path.join(os.path.dirname(os.path.dirname(HERE)), "lib")


class ViceVMM(FakeVMM):
    def __init__(self, argv):
        super().__init__(argv)
        self.lag = float(self.words.get("lag", "0"))
        self.late = queue.Queue()
        if self.lag:
            threading.Thread(target=self._late_events, daemon=True).start()

    def _late_events(self):
        while True:
            t, name, data = self.late.get()
            time.sleep(max(0.0, t + self.lag - time.time()))
            FakeVMM.emit(self, name, data)

    def emit(self, name, data=None):
        if self.lag and name != "SHUTDOWN":  # (SHUTDOWN goes before the exit)
            self.late.put((time.time(), name, data))
        else:
            FakeVMM.emit(self, name, data)

    def exit(self, guest, reason):
        if reason == "host-signal" and "ignore-term" in self.words_plain:
            return
        if "slow-exit" in self.words:  # QMP closed first, then a long way out
            FakeVMM.emit(self, "SHUTDOWN", {"guest": guest, "reason": reason})
            with self.elock:
                for c in self.clients:
                    c.shutdown(socket.SHUT_RDWR)
            time.sleep(0.2)
            os._exit(0)
        FakeVMM.exit(self, guest, reason)

    def run(self):
        if "slow-exit" in self.words:  # its tracer holds it in exit for that long
            subprocess.Popen([sys.executable, HERE, "tracer", str(os.getpid()), self.words["slow-exit"]],
                             env=dict(os.environ, PYTHONPATH=LIB))
            wait_until(lambda: tracer_of(os.getpid()) != 0, 10, "the tracer")
        FakeVMM.run(self)

    def q_powerdown(self, args):
        if "deaf" in self.words_plain:
            self.emit("POWERDOWN")
            return {}
        return FakeVMM.q_powerdown(self, args)

    def handle(self, c, msg):
        if msg.get("execute") and msg.get("execute") == self.words.get("die-on"):
            os._exit(3)
        FakeVMM.handle(self, c, msg)


def tracer_of(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("TracerPid:")).split()[1])


def tracer(pid, hold):
    """slow-exit=S: hold the VMM S seconds in its exit (PTRACE_EVENT_EXIT),
    as a VMM tearing down a large guest's memory, SIGKILLed or not, is."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    PTRACE_CONT, PTRACE_DETACH, PTRACE_SEIZE, PTRACE_O_TRACEEXIT, PTRACE_EVENT_EXIT = 7, 17, 0x4206, 0x40, 6
    if libc.ptrace(PTRACE_SEIZE, pid, None, ctypes.c_void_p(PTRACE_O_TRACEEXIT)) != 0:
        sys.exit(1)
    while True:
        _, st = os.waitpid(pid, 0x40000000)  # __WALL
        if not os.WIFSTOPPED(st):
            return
        if st >> 8 == signal.SIGTRAP | PTRACE_EVENT_EXIT << 8:
            time.sleep(hold)
            libc.ptrace(PTRACE_DETACH, pid, None, None)
            return
        libc.ptrace(PTRACE_CONT, pid, None, ctypes.c_void_p(os.WSTOPSIG(st)))  # its signal


def vice_daemon(fault=None):
    d = Daemon(fake=False, start=False)
    path = os.path.join(d.dir, "vice-vmm")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\nPYTHONPATH={LIB} exec {sys.executable} {HERE} vmm \"$@\"\n")
    os.chmod(path, 0o755)
    d.extra = ("--vmm", path)
    if fault:
        os.environ["GODWIT_FAULT_INJECT"] = fault
    try:
        d.start()
    finally:
        os.environ.pop("GODWIT_FAULT_INJECT", None)
    return d


def qmp(path, cmd, **args):
    """One command on the VMM's QMP socket, on a connection of our own."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    f = s.makefile("rwb")
    f.readline()
    for name, a in (("qmp_capabilities", {}), (cmd, args)):
        f.write((json.dumps({"execute": name, "arguments": a}) + "\n").encode())
        f.flush()
        while True:
            m = json.loads(f.readline())
            if "return" in m or "error" in m:
                break
    s.close()
    return m


def zombies_of(pid):
    out = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if fields[0] == "Z" and int(fields[1]) == pid:
                out.append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    return out


def lifecycle_lines(ev, name):
    return [l.split(": ", 1)[1] for l in ev.lines if f"for domain '{name}'" in l]


def test_late_events():
    with vice_daemon() as d:
        d.define("lag", cmdline="workload=dirty wss=1M rate=10 beat-ms=500 lag=0.3")
        d.run("start", "lag")
        ev = EventWatcher(d, domain="lag")
        try:
            c = Control(d.sock)
            c.hello()
            # Back to back, quicker than the VMM's events come.
            r1, r2 = c.call("domain-suspend", domain="lag"), c.call("domain-resume", domain="lag")
            assert "return" in r1 and "return" in r2, (r1, r2)
            assert d.state_of("lag") == "running (unpaused)"
            time.sleep(1.5)  # every late event has come
            assert d.state_of("lag") == "running (unpaused)"
            got = lifecycle_lines(ev, "lag")
            assert got == ["Suspended Paused", "Resumed Unpaused"], got

            # One at a time, each event in before the next command; then the
            # VMM pauses by itself: not the user's pause.
            d.run("suspend", "lag")
            assert d.state_of("lag") == "paused (user)"
            time.sleep(1)
            d.run("resume", "lag")
            assert d.state_of("lag") == "running (unpaused)"
            time.sleep(1)
            qmp(os.path.join(d.state, "run", "lag.qmp"), "fake-emit", event="STOP")
            wait_until(lambda: d.state_of("lag").startswith("paused"), 10, "the VMM's own pause")
            assert d.state_of("lag") == "paused (unknown)", d.state_of("lag")
            got = lifecycle_lines(ev, "lag")
            assert got == ["Suspended Paused", "Resumed Unpaused"] * 2 + ["Suspended Paused"], got
            c.close()
        finally:
            ev.close()
        d.run("destroy", "lag")


def test_vmm_dies_during_command():
    with vice_daemon() as d:
        d.define("frail", cmdline="workload=dirty wss=1M rate=10 beat-ms=500 die-on=stop")
        d.run("start", "frail")
        pid = d.status("frail")["pid"]
        c = Control(d.sock)
        c.hello()
        r = c.call("domain-suspend", domain="frail")
        assert r["error"]["class"] == "OperationFailed", r
        c.close()
        d.wait_state("frail", "shut off (crashed)")
        wait_until(lambda: not zombies_of(d.proc.pid), 10, "the VMM to be reaped")
        assert not pid_alive(pid)


def test_destroy_ignores_sigterm():
    with vice_daemon() as d:
        d.define("stubborn", cmdline="workload=dirty wss=1M rate=10 beat-ms=500 ignore-term")
        d.run("start", "stubborn")
        pid = d.status("stubborn")["pid"]
        t0 = time.time()
        r = d.run("destroy", "stubborn")
        assert "destroyed" in r.out, r
        assert time.time() - t0 >= 2.5, "the VMM was not given its chance to exit on SIGTERM"
        assert d.state_of("stubborn") == "shut off (destroyed)"
        assert not pid_alive(pid) and not zombies_of(d.proc.pid)
        assert "ignored SIGTERM" in d.log_text()


def test_shutdown_ignored():
    with vice_daemon() as d:
        d.define("deaf", cmdline="workload=dirty wss=1M rate=10 beat-ms=500 deaf")
        d.run("start", "deaf")
        t0 = time.time()
        r = d.run("shutdown", "deaf")
        assert "is being shutdown" in r.out and time.time() - t0 < 5, r
        time.sleep(2)
        assert d.state_of("deaf") == "running (booted)"
        d.run("destroy", "deaf")
        assert d.state_of("deaf") == "shut off (destroyed)"


def test_slow_exit():
    """The VMM closes QMP, then takes 12 s to exit (its tracer holds it):
    the domain is not shut off while the VMM is still there, and once it
    exits it is reaped (the monitor gave up after 5 s + SIGKILL + 5 s,
    marked the domain shut off with the VMM still there, and left its
    zombie for good)."""
    with vice_daemon() as d:
        d.define("slow", cmdline="workload=dirty wss=1M rate=10 beat-ms=500 slow-exit=12")
        d.run("start", "slow")
        pid = d.status("slow")["pid"]
        assert tracer_of(pid) != 0, "the VMM has no tracer"
        t0 = time.time()
        d.run("shutdown", "slow")
        while not d.state_of("slow").startswith("shut off"):
            assert time.time() - t0 < 60, "the domain did not stop"
            time.sleep(0.2)
        gone = not pid_alive(pid)
        print(f"shut off after {time.time() - t0:.1f} s; the VMM {'was gone' if gone else 'still ran'}")
        assert gone, "the domain was shut off while its VMM was still there"
        assert d.state_of("slow") == "shut off (shutdown)", d.state_of("slow")
        wait_until(lambda: not zombies_of(d.proc.pid), 10, "the VMM to be reaped")


def test_slow_exit_failed_start():
    """A start that fails after the fork (here its monitor cannot start)
    SIGKILLs the VMM, which takes 12 s to exit: it is reaped all the same
    (the start gave up after 10 s and left a zombie for good)."""
    with vice_daemon(fault="monitor-start-fail") as d:
        d.define("slow", cmdline="workload=dirty wss=1M rate=10 beat-ms=500 slow-exit=12")
        r = d.run("start", "slow", check=False)
        assert r.rc != 0 and "monitor" in r.err, r
        t0 = time.time()
        qmp_path = os.path.join(d.state, "run", "slow.qmp")
        vmms = lambda: [p for p in os.listdir("/proc") if p.isdigit() and vmm_of(p, qmp_path)]
        wait_until(lambda: not vmms(), 30, "the VMM to exit")
        wait_until(lambda: not zombies_of(d.proc.pid), 10, "the VMM to be reaped")
        print(f"the VMM was gone and reaped {time.time() - t0:.1f} s after the start failed")


def vmm_of(pid, qmp_path):
    """Whether process pid is the VMM (alive, not a zombie) serving qmp_path."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        return qmp_path.encode() in argv and b"vmm" in argv and pid_alive(int(pid))
    except (OSError, ValueError):
        return False


TESTS = [test_late_events, test_vmm_dies_during_command, test_destroy_ignores_sigterm,
         test_shutdown_ignored, test_slow_exit, test_slow_exit_failed_start]


def main():
    run_selected(TESTS)


if __name__ == "__main__":
    if sys.argv[1:2] == ["vmm"]:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        ViceVMM(sys.argv[2:]).run()
    elif sys.argv[1:2] == ["tracer"]:
        tracer(int(sys.argv[2]), float(sys.argv[3]))
    else:
        run_test(main)
