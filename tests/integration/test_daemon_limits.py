#!/usr/bin/env python3
"""godwitd's limits and failure paths:

- TCP connections that never finish a TLS handshake wait in a few slots of
  their own: they never lock out the unix socket;
- a definition too big to be shown or started is refused at define;
- a guest stopped before the daemon's event connection opened is seen
  paused once `start` returns;
- a start that fails after the fork (the VMM exits, or its monitor cannot
  start) leaves no VMM, no zombie and no console FIFO behind;
- a zero-length frame closes the connection (docs/daemon.md, Framing);
  `godwit event --timeout` takes a large timeout; `suspend UUID` names the
  domain by its name;
- a start that fails on the host is OperationFailed, not NoDomain;
- an event subscriber that stops reading is disconnected once its queue is
  full, rather than silently losing events."""
# timeout: 180
import json
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time

from godwit_test import run_test, wait_until
from godwitd_test import run_selected, GODWIT, Control, Daemon, godwit, make_psk

PORT = 17781


def tcp_listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_handshake_flood():
    tmp = tempfile.mkdtemp(prefix="gw-limits-")
    psk = make_psk(os.path.join(tmp, "k.psk"))
    with Daemon(listen=[f"tcp:127.0.0.1:{PORT}"], tls_psk=psk) as d:
        # the unix socket answers first: the TCP listener comes next
        wait_until(lambda: tcp_listening(PORT), 10, "the TCP listener")
        socks = []
        try:
            for _ in range(80):  # more than every client slot: never say a word
                socks.append(socket.create_connection(("127.0.0.1", PORT)))
            time.sleep(0.3)
            t0 = time.time()
            r = d.run("list", check=False, timeout=20)
            assert r.rc == 0, f"the unix socket is locked out: {r}"
            assert time.time() - t0 < 2, "the unix client waited for the handshakes"
            # the handshakes past the listener's slots are closed at once (some
            # may still wait in the listen backlog)
            closed = 0
            for s in socks:
                s.settimeout(0.05)
                try:
                    closed += s.recv(1) == b""
                except (socket.timeout, OSError):
                    pass
            assert closed >= 80 - 16 - 20, f"only {closed} of the extra handshakes were refused"
        finally:
            for s in socks:
                s.close()
        # Once they are gone a TLS client gets in.
        wait_until(lambda: godwit("list", uri=f"tcp:127.0.0.1:{PORT}", tls_psk=psk,
                                  check=False).rc == 0, 15, "a TLS client to be served")


def test_big_definition():
    with Daemon() as d:
        c = Control(d.sock)
        c.hello()
        r = c.call("domain-define", definition={"name": "big", "memory_mib": 64, "test_guest": True,
                                                "cmdline": "x" * (1024 * 1024 - 400)})
        assert r["error"]["class"] == "InvalidArgument" and "over the limit" in r["error"]["desc"], r
        r = c.call("domain-define", definition={"name": "big", "memory_mib": 64, "test_guest": True,
                                                "serial_log": "/" + "a" * 5000})
        assert r["error"]["class"] == "InvalidArgument", r
        r = c.call("domain-define", definition={"name": "big", "memory_mib": 64, "test_guest": True,
                                                "cmdline": "beat-ms=500 " + "y" * 60000})
        assert "return" in r, r
        r = c.call("domain-info", domain="big")
        assert "return" in r and len(r["return"]["definition"]["cmdline"]) > 60000
        c.close()


def test_stopped_before_events():
    with Daemon() as d:
        d.define("early", cmdline="workload=dirty wss=1M rate=10 beat-ms=500 fake-stop-at-start")
        d.run("start", "early")
        assert d.state_of("early") == "paused (unknown)", d.state_of("early")
        d.run("resume", "early")
        assert d.state_of("early") == "running (unpaused)"
        d.run("destroy", "early")


def zombies_of(pid):
    out = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as f:
                f = f.read().rsplit(")", 1)[1].split()
            if f[0] == "Z" and int(f[1]) == pid:
                out.append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    return out


def test_failed_start_cleanup():
    with Daemon() as d:
        fifo = os.path.join(d.state, "run", "bad.console")
        d.define("bad", cmdline="beat-ms=500 fake-exit-at-start")
        r = d.run("start", "bad", check=False)
        assert r.rc != 0 and "exited during start-up" in r.err, r
        assert not os.path.exists(fifo), "the console FIFO was left behind"
        assert "pid" not in d.status("bad") and d.state_of("bad") == "shut off (unknown)"
        assert not zombies_of(d.proc.pid)
    # The monitor thread cannot start: the VMM is killed and reaped, the
    # domain forgets it, a later start works.
    with Daemon(start=False) as d:
        os.environ["GODWIT_FAULT_INJECT"] = "monitor-start-fail"
        try:
            d.start()
        finally:
            del os.environ["GODWIT_FAULT_INJECT"]
        d.define("mon")
        r = d.run("start", "mon", check=False)
        assert r.rc != 0 and "monitor" in r.err, r
        assert not os.path.exists(os.path.join(d.state, "run", "mon.console"))
        st = d.status("mon")
        assert "pid" not in st and d.state_of("mon") == "shut off (unknown)", st
        wait_until(lambda: not zombies_of(d.proc.pid), 5, "no zombie VMM")
        r = d.run("dominfo", "mon")
        assert "Id:             -" in r.out, r.out


def test_small_things():
    with Daemon() as d:
        c = Control(d.sock)
        c.hello()
        c.send_raw(struct.pack(">I", 0))
        r = c.recv()
        assert r["error"]["class"] == "ProtocolError", r
        c.sock.settimeout(5)
        assert c.recv() is None, "the connection stayed open after a zero-length frame"
        c.close()

        d.define("c1")
        p = subprocess.Popen([GODWIT, "-c", d.uri, "event", "--all", "--timeout", "3000000"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.5)
        alive = p.poll() is None
        p.kill()
        out = p.communicate()[0]
        assert alive, f"event --timeout 3000000 ended at once: {out}"

        d.run("start", "c1")
        uuid = d.status("c1")["uuid"]
        r = d.run("suspend", uuid)
        assert r.out.strip() == "Domain 'c1' suspended", r
        r = d.run("resume", "1")
        assert r.out.strip() == "Domain 'c1' resumed", r
        d.run("destroy", "c1")


def test_start_error_class():
    """A start that fails on the host is OperationFailed (docs/daemon.md),
    whatever errno the failing call gave: ENOENT is not NoDomain."""
    with Daemon() as d:
        c = Control(d.sock)
        c.hello()
        r = c.call("domain-define", definition={"name": "nolog", "memory_mib": 64, "test_guest": True,
                                                "serial_log": "/nonexistent-dir/nolog.log"})
        assert "return" in r, r
        r = c.call("domain-start", domain="nolog")
        assert r["error"]["class"] == "OperationFailed", r
        assert "/nonexistent-dir/nolog.log" in r["error"]["desc"], r
        assert c.call("domain-state", domain="nolog")["return"]["state"] == "shut off"
        c.close()
    with Daemon(fake=False, extra=("--vmm", "/nonexistent-dir/godwit-vmm")) as d:
        d.define("novmm")
        c = Control(d.sock)
        c.hello()
        r = c.call("domain-start", domain="novmm")
        assert r["error"]["class"] == "OperationFailed" and "cannot execute" in r["error"]["desc"], r
        c.close()


class Qmp:
    """A QMP connection of our own to a (fake) VMM."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.f = self.sock.makefile("rwb")
        self.f.readline()
        self.call("qmp_capabilities")

    def call(self, cmd, **args):
        self.f.write((json.dumps({"execute": cmd, "arguments": args}) + "\n").encode())
        self.f.flush()
        while True:  # events go by
            m = json.loads(self.f.readline())
            if "return" in m or "error" in m:
                return m

    def close(self):
        self.sock.close()


def read_events(c, out, quiet_s):
    """Events from subscriber c into out until it closes (True) or nothing
    comes for quiet_s (False)."""
    c.sock.settimeout(quiet_s)
    try:
        while True:
            m = c.recv()
            if m is None:
                return True
            out.append(m)
    except socket.timeout:
        return False
    except OSError:
        return True


def test_slow_subscriber():
    """A subscriber that stops reading its events never misses one without
    knowing: what it reads is every event from the first, in order, and once
    SERVER_EVENT_QUEUE are queued for it the connection closes (the oldest
    were dropped silently, and the connection went on). A subscriber that
    reads gets them all; the daemon goes on serving."""
    n = 1600  # past the queue (1024) and what the socket holds (~100 here)
    with Daemon(fake=True) as d:
        d.define("ev")
        d.run("start", "ev")
        slow, fast = Control(d.sock), Control(d.sock)
        for c in (slow, fast):
            c.hello()
            assert "return" in c.call("events-subscribe", domain="ev"), "subscribe"
        seen = []
        reader = threading.Thread(target=read_events, args=(fast, seen, 60), daemon=True)
        reader.start()
        q = Qmp(os.path.join(d.state, "run", "ev.qmp"))
        for i in range(n):  # the VMM pauses and resumes by itself, over and over
            assert "return" in q.call("fake-emit", event="STOP" if i % 2 == 0 else "RESUME")
        q.close()
        wait_until(lambda: len(seen) >= n, 120, f"{n} events for the reading subscriber")
        details = [e["data"]["event"] for e in seen]
        assert details == ["Suspended", "Resumed"] * (n // 2), "the reader lost or reordered events"
        got = []
        closed = read_events(slow, got, 3)
        print(f"the slow subscriber read {len(got)} of {n} events; its connection "
              f"{'closed' if closed else 'stayed open'}")
        assert got == seen[:len(got)], "the slow subscriber's events are not the first ones"
        assert closed or len(got) == n, f"the slow subscriber silently missed {n - len(got)} events"
        assert closed and "fell 1024 events behind" in d.log_text()
        slow.close()
        fast.close()
        assert d.state_of("ev") == "running (unpaused)"
        d.run("destroy", "ev")


TESTS = [test_handshake_flood, test_big_definition, test_stopped_before_events,
         test_failed_start_cleanup, test_small_things, test_start_error_class, test_slow_subscriber]


def main():
    run_selected(TESTS)


if __name__ == "__main__":
    run_test(main)
