#!/usr/bin/env python3
"""Who may talk to godwitd. The Unix socket is mode 0600 and checks the
peer's uid (SO_PEERCRED): another user is refused with an error reply even
when the socket's mode lets them connect. A TCP listener speaks TLS: the
right pre-shared key is accepted, a wrong one (or no TLS) is refused; with
X.509 a certificate from the right CA is accepted, one from another CA is
refused; a TCP
listener without TLS is refused at start-up unless --insecure. The control
protocol itself: hello first, version checked, bad JSON and unknown
commands answered with errors, an over-length message refused before it is
read."""
# timeout: 120
import os
import shutil
import socket
import stat
import struct
import subprocess

from godwit_test import need_root, run_test, skip
from godwitd_test import GODWIT, GODWITD, Control, Daemon, godwit, make_psk, make_x509


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def as_nobody(d, *args):
    """Run a copy of the client as uid/gid 65534."""
    client = os.path.join(d.dir, "godwit-client")
    shutil.copy(GODWIT, client)
    os.chmod(client, 0o755)
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", client, "-c", d.uri] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def unix_socket(d):
    mode = stat.S_IMODE(os.stat(d.sock).st_mode)
    assert mode == 0o600, oct(mode)
    r = as_nobody(d, "list")
    assert r.returncode == 1 and "Permission denied" in r.stderr, r
    os.chmod(d.sock, 0o666)  # only the credentials check is left
    r = as_nobody(d, "list", "--all")
    assert r.returncode == 1 and "error: access denied: uid 65534" in r.stderr, r
    assert "refused a client with uid 65534" in d.log_text()
    assert d.run("list").rc == 0  # root still gets in


def protocol(d):
    c = Control(d.sock)
    r = c.call("domain-list")
    assert r["error"]["class"] == "ProtocolError" and "hello" in r["error"]["desc"], r
    r = c.call("hello", protocol=99)
    assert r["error"]["class"] == "VersionMismatch", r
    assert c.recv() is None  # closed after a version mismatch
    c = Control(d.sock)
    assert c.hello()["return"]["protocol"] == 1
    for version in (1, 2):  # once is all: another hello changes nothing
        r = c.call("hello", protocol=version)
        assert r["error"]["class"] == "ProtocolError", r
        assert r["error"]["desc"] == ("hello was already exchanged on this connection "
                                      "(control protocol version 1)"), r
    r = c.call("no-such-command")
    assert r["error"]["class"] == "CommandNotFound" and "no-such-command" in r["error"]["desc"], r
    c.send_raw(struct.pack(">I", 9) + b"{not json")
    r = c.recv()
    assert r["error"]["class"] == "ProtocolError" and r["id"] is None, r
    r = c.call("domain-state", domain=5)
    assert r["error"]["class"] == "InvalidArgument", r
    assert "return" in c.call("domain-list", all=True)  # the connection goes on
    c.send_raw(struct.pack(">I", 64 << 20))
    r = c.recv()
    assert r["error"]["class"] == "ProtocolError" and "exceeds" in r["error"]["desc"], r
    assert c.recv() is None
    c.close()


def tls(tmp):
    port = free_port()
    key = make_psk(os.path.join(tmp, "key.psk"))
    wrong = make_psk(os.path.join(tmp, "wrong.psk"))
    with Daemon(listen=[f"tcp:127.0.0.1:{port}"], tls_psk=key) as d:
        uri = f"tcp:127.0.0.1:{port}"
        r = godwit("list", "--all", uri=uri, tls_psk=key)
        assert "Id" in r.out, r
        r = godwit("list", uri=uri, tls_psk=wrong, check=False)
        assert r.rc == 1 and "TLS handshake failed" in r.err, r
        r = godwit("list", uri=uri, check=False)  # plain text to a TLS port
        assert r.rc == 1 and r.err.startswith("error: "), r
        assert "TLS handshake failed" in d.log_text()


def x509(tmp):
    if not shutil.which("openssl"):
        print("X.509 part skipped: no openssl")
        return
    certs = make_x509(tmp)
    rogue = make_x509(tmp, names=("client",), ca="rogue")
    port = free_port()
    srv = certs["server"]
    with Daemon(listen=[f"tcp:127.0.0.1:{port}"],
                extra=["--tls-cert", srv[0], "--tls-key", srv[1], "--tls-ca", certs["ca"]]) as d:
        uri = f"tcp:127.0.0.1:{port}"
        cli = certs["client"]
        r = godwit("list", "--all", uri=uri, tls_x509=(cli[0], cli[1], certs["ca"]))
        assert "Id" in r.out, r
        bad = rogue["client"]  # a certificate from another CA
        r = godwit("list", uri=uri, tls_x509=(bad[0], bad[1], certs["ca"]), check=False)
        assert r.rc == 1 and "TLS" in r.err, r  # TLS 1.3: refused after the client's handshake
        r = godwit("list", uri=uri, tls_x509=(cli[0], cli[1], rogue["ca"]), check=False)
        assert r.rc == 1 and "TLS handshake failed" in r.err, r  # the client does not trust the server


def insecure(tmp):
    port = free_port()
    state = os.path.join(tmp, "state")
    p = subprocess.run([GODWITD, "--state-dir", state, "--listen", f"unix:{tmp}/x.sock",
                        "--listen", f"tcp:127.0.0.1:{port}"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 1 and "without TLS" in p.stderr and "--insecure" in p.stderr, p
    with Daemon(listen=[f"tcp:127.0.0.1:{port}"], insecure=True) as d:
        r = godwit("list", uri=f"tcp:127.0.0.1:{port}")
        assert r.out.startswith(" Id"), r


def main():
    need_root()
    if not shutil.which("setpriv"):
        skip("needs setpriv (util-linux)")
    with Daemon() as d:
        unix_socket(d)
        protocol(d)
    with Daemon(start=False) as scratch:
        tls(scratch.dir)
        x509(scratch.dir)
        insecure(scratch.dir)


run_test(main)
