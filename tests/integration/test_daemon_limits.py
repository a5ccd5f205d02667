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
  domain by its name."""
# timeout: 180
import os
import socket
import struct
import subprocess
import tempfile
import time

from godwit_test import run_test, wait_until
from godwitd_test import run_selected, GODWIT, Control, Daemon, godwit, make_psk

PORT = 17781


def test_handshake_flood():
    tmp = tempfile.mkdtemp(prefix="gw-limits-")
    psk = make_psk(os.path.join(tmp, "k.psk"))
    with Daemon(listen=[f"tcp:127.0.0.1:{PORT}"], tls_psk=psk) as d:
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


TESTS = [test_handshake_flood, test_big_definition, test_stopped_before_events,
         test_failed_start_cleanup, test_small_things]


def main():
    run_selected(TESTS)


if __name__ == "__main__":
    run_test(main)
