#!/usr/bin/env python3
"""godwit when its daemon is gone or answers garbage: every command ends
with `error: MESSAGE` and exit status 1 (docs/daemon.md, "godwit
commands"), never a crash, a hang or output made of uninitialised memory.
A fake daemon (a Python thread speaking the control protocol) gives the
answers; no godwitd, VMM or KVM is needed."""
# timeout: 120
import base64
import json
import os
import re
import socket
import struct
import subprocess
import tempfile
import threading

from godwit_test import discard_dir, run_test
from godwitd_test import GODWIT


def run(uri, *args, timeout=20):
    p = subprocess.run([GODWIT, "-c", uri] + list(args), capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


class FakeDaemon:
    """Answers hello with protocol 1 and each command with answers[command]:
    a return value, or a function(send, request) that answers itself."""

    def __init__(self, path, answers):
        self.answers = answers
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(path)
        self.lsock.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read(conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _serve(self, conn):
        def send(obj):
            data = json.dumps(obj).encode()
            conn.sendall(struct.pack(">I", len(data)) + data)
        with conn:
            while True:
                hdr = self._read(conn, 4)
                body = hdr and self._read(conn, struct.unpack(">I", hdr)[0])
                if not body:
                    return
                req = json.loads(body)
                cmd = req["command"]
                answer = {"protocol": 1, "server": "fake"} if cmd == "hello" else self.answers.get(cmd, {})
                if callable(answer):
                    answer(send, req)
                else:
                    send({"id": req["id"], "return": answer})

    def close(self):
        self.lsock.close()


# Every command that talks to the daemon, with the arguments it needs.
COMMANDS = [
    ["list", "--all"], ["define", "/dev/null"], ["undefine", "vm1"], ["start", "vm1"],
    ["shutdown", "vm1"], ["destroy", "vm1"], ["suspend", "vm1"], ["resume", "vm1"],
    ["dominfo", "vm1"], ["domstate", "vm1"], ["console", "vm1"], ["event", "--all"],
    ["migrate", "vm1", "tcp:127.0.0.1:1"], ["migrate-postcopy", "vm1"],
    ["migrate-setmaxdowntime", "vm1", "100"], ["migrate-getmaxdowntime", "vm1"],
    ["migrate-setspeed", "vm1", "10"], ["migrate-getspeed", "vm1"], ["domjobinfo", "vm1"],
    ["domjobabort", "vm1"],
]


def daemon_gone(tmp):
    """No daemon at the socket, or an address that is no address: the
    lifecycle verbs (start, destroy, ...) dereferenced a NULL error object
    and died of SIGSEGV."""
    uri = "unix:" + os.path.join(tmp, "nobody-here.sock")
    for args in COMMANDS:
        if args[0] == "define":
            continue  # reads its file first: /dev/null is no definition
        rc, out, err = run(uri, *args)
        assert rc == 1, (args, rc, out, err)
        assert err.startswith("error: failed to connect to the daemon at " + uri), (args, err)
    rc, out, err = run("bogus", "start", "vm1")
    assert rc == 1 and err.startswith("error: bad address 'bogus'"), (rc, out, err)
    # refused before anything is asked (it read the log from byte 5 on)
    rc, out, err = run(uri, "console", "vm1", "--tail=-5")
    assert rc == 1 and err.startswith("error: --tail must be a number of bytes"), (rc, out, err)


def garbage(tmp):
    path = os.path.join(tmp, "fake.sock")
    seconds = 1 << 62  # no calendar date: gmtime fails

    def subscribe(send, req):
        send({"id": req["id"], "return": {}})
        send({"event": "lifecycle", "domain": "vm1", "data": {"event": "Started", "detail": "Booted"},
              "timestamp": {"seconds": seconds, "microseconds": 5000}})

    fake = FakeDaemon(path, {
        "domain-list": {"domains": {"vm1": "running"}},  # an object, not a list
        "domain-console": {"data": "QUJD", "active": True},  # data, and no offset: for ever
        "events-subscribe": subscribe,
        "domain-define": {"updated": False},  # no name
        "domain-info": {"name": ["vm1"]},  # a name that is not a string
    })
    uri = "unix:" + path
    try:
        rc, out, err = run(uri, "list", "--all")  # was SIGABRT (json-c's assertion)
        assert rc == 1 and err.startswith("error: malformed reply from the daemon"), (rc, out, err)

        rc, out, err = run(uri, "console", "vm1", timeout=10)  # printed ABC until killed
        assert rc == 1 and err.startswith("error: malformed reply from the daemon"), (rc, out[:200], err)

        rc, out, err = run(uri, "event", "--all", "--timestamp")
        assert rc == 0, (rc, out, err)
        # a date from uninitialised memory ("109626219-01-00 ...") before
        assert out.startswith(f"{seconds}.005: event 'lifecycle' for domain 'vm1': Started Booted"), out

        definition = os.path.join(tmp, "vm1.json")
        with open(definition, "w") as f:
            f.write('{"name": "vm1", "memory_mib": 64, "test_guest": true}\n')
        rc, out, err = run(uri, "define", definition)  # was "Domain '(null)' defined"
        assert rc == 0 and out.startswith(f"Domain 'vm1' defined from {definition}"), (rc, out, err)

        rc, out, err = run(uri, "start", "vm1")  # was "Domain '[ \"vm1\" ]' started"
        assert rc == 0 and out.startswith("Domain 'vm1' started"), (rc, out, err)
        assert not re.search(r"\(null\)", out)
    finally:
        fake.close()


def growing_console(tmp):
    """console --tail N prints the last N bytes of the log as it was at the
    first answer: bytes the guest writes meanwhile come only with --follow
    (they were printed too, so --tail 10 printed 15)."""
    path = os.path.join(tmp, "grow.sock")
    log = b"0123456789" * 10

    def console(send, req):
        off = req["arguments"]["offset"]
        size = len(log) + (5 if off >= 0 else 0)  # the log grows after the first answer
        start = size + off if off < 0 else off
        data = (log + b"ABCDE")[start:size]
        send({"id": req["id"], "return": {"data": base64.b64encode(data).decode(),
                                           "offset": start + len(data), "size": size, "active": True}})

    fake = FakeDaemon(path, {"domain-console": console})
    try:
        rc, out, err = run("unix:" + path, "console", "vm1", "--tail", "10")
        assert rc == 0 and out == "0123456789", (rc, out, err)
    finally:
        fake.close()


def main():
    tmp = tempfile.mkdtemp(prefix="godwit-cli-")
    try:
        daemon_gone(tmp)
        garbage(tmp)
        growing_console(tmp)
    finally:
        discard_dir(tmp)


run_test(main)
