"""Helpers for godwitd/godwit integration tests: start a daemon with its own
state directory, run the godwit client, speak the control protocol by hand,
and make sure every VMM a test started is gone at the end.

VMs run in their own session (so that a daemon restart does not kill them),
so the test runner's process-group kill does not reach them: Daemon.close()
kills every VMM recorded in the state directory.

Without /dev/kvm the daemon is given a fake VMM (this file run as
`godwitd_test.py fake-vmm ...`): a process that speaks the same QMP subset
(query-name, query-status, stop, cont, quit; STOP/RESUME/SHUTDOWN events),
prints a heartbeat on its serial output and powers off on the serial byte
'p'. Tests say which one they use; the real VMM runs wherever KVM exists."""
import glob
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from godwit_test import BUILD, Timeout, wait_until

GODWITD = os.path.join(BUILD, "godwitd")
GODWIT = os.path.join(BUILD, "godwit")
HERE = os.path.abspath(__file__)


def have_kvm():
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def vmm_kind():
    return "real godwit-vmm" if have_kvm() else "fake VMM (no /dev/kvm here)"


def make_fake_vmm(directory):
    """A wrapper script that runs the fake VMM; returns its path."""
    path = os.path.join(directory, "fake-vmm")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\nPYTHONPATH={os.path.dirname(HERE)} exec {sys.executable} {HERE} "
                "fake-vmm \"$@\"\n")
    os.chmod(path, 0o755)
    return path


def make_psk(path, user="godwit", key=None):
    key = key or os.urandom(32).hex()
    with open(path, "w") as f:
        f.write(f"{user}:{key}\n")
    os.chmod(path, 0o600)
    return path


def make_x509(directory, names=("server", "client"), ca="ca"):
    """A CA and certificates it signed (openssl): returns {name: (cert, key)}
    and the CA certificate under the key "ca"."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    cakey, capem = os.path.join(directory, f"{ca}.key"), os.path.join(directory, f"{ca}.pem")
    run("req", "-x509", *ec, "-keyout", cakey, "-out", capem, "-days", "2", "-subj", f"/CN=godwit test {ca}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ext = os.path.join(directory, "leaf.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth,clientAuth\n")
    out = {"ca": capem}
    for n in names:
        key, csr, pem = (os.path.join(directory, f"{ca}-{n}.{x}") for x in ("key", "csr", "pem"))
        run("req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={n}")
        run("x509", "-req", "-in", csr, "-CA", capem, "-CAkey", cakey, "-CAcreateserial", "-out", pem,
            "-days", "2", "-extfile", ext)
        out[n] = (pem, key)
    return out


class Result:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err

    def __repr__(self):
        return f"rc={self.rc} out={self.out!r} err={self.err!r}"


def godwit(*args, uri=None, tls_psk=None, tls_x509=None, timeout=60, netns=None, prefix=(),
           check=True):
    """Run the client; returns Result. check: assert exit status 0.
    tls_x509: (cert, key, ca)."""
    cmd = [GODWIT]
    if uri:
        cmd += ["-c", uri]
    if tls_psk:
        cmd += ["--tls-psk", tls_psk]
    if tls_x509:
        cmd += ["--tls-cert", tls_x509[0], "--tls-key", tls_x509[1], "--tls-ca", tls_x509[2]]
    cmd += list(args)
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    cmd = list(prefix) + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    r = Result(p.returncode, p.stdout, p.stderr)
    if check:
        assert r.rc == 0, f"godwit {' '.join(args)} failed: {r}"
    return r


class Daemon:
    """A godwitd with a state directory of its own. Tear down with close()."""

    def __init__(self, workdir=None, listen=(), tls_psk=None, insecure=False, netns=None,
                 fake=None, extra=(), start=True):
        self.dir = workdir or tempfile.mkdtemp(prefix="godwitd-test-")
        os.chmod(self.dir, 0o755)
        self.state = os.path.join(self.dir, "state")
        self.sock = os.path.join(self.dir, "godwitd.sock")
        self.uri = "unix:" + self.sock
        self.fake = (not have_kvm()) if fake is None else fake
        self.listen = ["unix:" + self.sock] + list(listen)
        self.tls_psk, self.insecure, self.netns, self.extra = tls_psk, insecure, netns, extra
        self.proc = None
        self.log_path = os.path.join(self.dir, "godwitd.log")
        if start:
            self.start()

    def command(self):
        cmd = [GODWITD, "--state-dir", self.state, "--log-level", "debug"]
        for l in self.listen:
            cmd += ["--listen", l]
        if self.tls_psk:
            cmd += ["--tls-psk", self.tls_psk]
        if self.insecure:
            cmd.append("--insecure")
        if self.fake:
            cmd += ["--vmm", make_fake_vmm(self.dir)]
        cmd += list(self.extra)
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        return cmd

    def start(self, wait=True):
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            wait_until(lambda: self._connectable() or self.proc.poll() is not None, 15,
                       "godwitd socket")
            assert self.proc.poll() is None, "godwitd exited:\n" + self.log_text()

    def _connectable(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.sock)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stop the daemon; after a clean stop (SIGTERM) check its exit
        status and that no sanitizer complained."""
        if not self.proc:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise Timeout("godwitd did not stop within %ds" % timeout)
        self.log.close()
        if sig == signal.SIGTERM:
            log = self.log_text()
            assert proc.returncode == 0 and "Sanitizer" not in log, \
                f"godwitd exited with status {proc.returncode}:\n{log[-4000:]}"

    def run(self, *args, **kw):
        kw.setdefault("uri", self.uri)
        return godwit(*args, **kw)

    def define(self, name, memory=64, vcpus=1, cmdline="workload=dirty wss=1M rate=1000 beat-ms=500",
               **extra):
        d = {"name": name, "memory_mib": memory, "vcpus": vcpus, "test_guest": True, "cmdline": cmdline}
        d.update(extra)
        path = os.path.join(self.dir, f"{name}.json")
        with open(path, "w") as f:
            json.dump(d, f)
        return self.run("define", path)

    def state_of(self, name):
        r = self.run("domstate", "--reason", name)
        return r.out.strip()

    def wait_state(self, name, want, timeout=30):
        return wait_until(lambda: self.state_of(name) == want, timeout, f"{name} to be '{want}'"
                          + f" (is '{self.state_of(name)}')", interval=0.1)

    def status(self, name):
        with open(os.path.join(self.state, "run", f"{name}.json")) as f:
            return json.load(f)

    def vmm_pids(self):
        pids = []
        for p in glob.glob(os.path.join(self.state, "run", "*.json")):
            try:
                with open(p) as f:
                    pid = json.load(f).get("pid")
                if pid:
                    pids.append(pid)
            except (OSError, ValueError):
                pass
        return pids

    def close(self):
        failure = None
        try:
            self.stop()
        except Exception as e:  # noqa: BLE001
            failure = e
        for pid in self.vmm_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        if failure:
            raise failure

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return os.path.exists(f"/proc/{pid}") and "zombie" not in open(f"/proc/{pid}/status").read()


class EventWatcher:
    """`godwit event --all --loop` in the background; collects lines."""

    def __init__(self, daemon, domain=None, timeout=120):
        cmd = [GODWIT, "-c", daemon.uri, "event", "--all", "--loop", "--timeout", str(timeout)]
        if domain:
            cmd.append(domain)
        subscribed = daemon.log_text().count("events-subscribe -> 0")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()
        # Subscribed when the daemon says so (its debug log), so no event is missed.
        wait_until(lambda: daemon.log_text().count("events-subscribe -> 0") > subscribed
                   or self.proc.poll() is not None, 20, "the event subscription")
        assert self.proc.poll() is None, f"godwit event failed: {self.lines}"

    def _pump(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, text, timeout=30):
        with self.cond:
            if not self.cond.wait_for(lambda: any(text in l for l in self.lines), timeout):
                raise Timeout(f"no event line with {text!r} in {timeout}s; got {self.lines}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Control:
    """The control protocol by hand (docs/daemon.md): 4-byte big-endian
    length + JSON."""

    def __init__(self, path=None, sock=None):
        self.sock = sock or socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if path:
            self.sock.connect(path)
        self.sock.settimeout(10)
        self.next_id = 1

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, obj):
        data = json.dumps(obj).encode()
        self.send_raw(struct.pack(">I", len(data)) + data)

    def recv(self):
        hdr = self._read(4)
        if hdr is None:
            return None
        (n,) = struct.unpack(">I", hdr)
        body = self._read(n)
        return json.loads(body) if body is not None else None

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def call(self, command, **args):
        i = self.next_id
        self.next_id += 1
        msg = {"id": i, "command": command}
        if args:
            msg["arguments"] = args
        self.send(msg)
        while True:
            r = self.recv()
            if r is None or "event" not in r:
                return r

    def hello(self):
        return self.call("hello", protocol=1)

    def close(self):
        self.sock.close()


# ---- the fake VMM ---------------------------------------------------------------


class FakeVMM:
    def __init__(self, argv):
        import argparse
        ap = argparse.ArgumentParser()
        for o in ("--name", "--memory", "--vcpus", "--qmp", "--serial", "--cmdline", "--kernel",
                  "--initrd", "--log-level"):
            ap.add_argument(o)
        for o in ("--test-guest", "--incoming", "--paused", "--no-reboot"):
            ap.add_argument(o, action="store_true")
        self.a = ap.parse_args(argv)
        self.status = "running"
        self.clients = []
        self.lock = threading.Lock()
        self.beat = 0

    def emit(self, name, data=None):
        t = time.time()
        ev = {"event": name, "timestamp": {"seconds": int(t), "microseconds": int((t % 1) * 1e6)}}
        if data is not None:
            ev["data"] = data
        line = (json.dumps(ev) + "\r\n").encode()
        with self.lock:
            for c in list(self.clients):
                try:
                    c.sendall(line)
                except OSError:
                    pass

    def exit(self, guest, reason):
        self.emit("SHUTDOWN", {"guest": guest, "reason": reason})
        time.sleep(0.05)
        try:
            os.unlink(self.a.qmp)
        except OSError:
            pass
        os._exit(0)

    def handle(self, c, msg):
        cmd, mid = msg.get("execute"), msg.get("id")
        ret = {}
        if cmd == "qmp_capabilities":
            pass
        elif cmd == "query-name":
            ret = {"name": self.a.name}
        elif cmd == "query-status":
            ret = {"status": self.status, "running": self.status == "running", "singlestep": False}
        elif cmd == "stop":
            if self.status == "running":
                self.status = "paused"
                self.emit("STOP")
        elif cmd == "cont":
            if self.status != "running":
                self.status = "running"
                self.emit("RESUME")
        elif cmd == "quit":
            c.sendall((json.dumps({"return": {}, "id": mid}) + "\r\n").encode())
            self.exit(False, "host-qmp-quit")
        else:
            err = {"class": "CommandNotFound", "desc": f"The command {cmd} has not been found"}
            c.sendall((json.dumps({"error": err, "id": mid}) + "\r\n").encode())
            return
        c.sendall((json.dumps({"return": ret, "id": mid}) + "\r\n").encode())

    def serve_client(self, c):
        greeting = {"QMP": {"version": {"qemu": {"major": 0, "minor": 1, "micro": 0},
                                        "package": "fake"}, "capabilities": []}}
        c.sendall((json.dumps(greeting) + "\r\n").encode())
        with self.lock:
            self.clients.append(c)
        dec, buf = json.JSONDecoder(), ""
        while True:
            data = c.recv(65536)
            if not data:
                break
            buf += data.decode()
            while buf.strip():
                buf = buf.lstrip()
                try:
                    obj, end = dec.raw_decode(buf)
                except ValueError:
                    break
                buf = buf[end:]
                self.handle(c, obj)
        with self.lock:
            self.clients.remove(c)

    def serial(self):
        while True:
            if self.status == "running":
                self.beat += 1
                print(f"heartbeat vcpu=0 tick={self.beat} pages={self.beat * 100}", flush=True)
            time.sleep(0.2)

    def stdin(self):
        import select
        while True:
            select.select([0], [], [])
            try:
                b = os.read(0, 1)
            except BlockingIOError:
                continue
            if not b:
                return
            if b == b"p" and self.status == "running":
                print("godwit-guest: power off", flush=True)
                self.exit(True, "guest-shutdown")

    def run(self):
        signal.signal(signal.SIGTERM, lambda *_: self.exit(False, "host-signal"))
        for word in (self.a.cmdline or "").split():  # fake-start-delay=S: a slow start
            if word.startswith("fake-start-delay="):
                time.sleep(float(word.split("=", 1)[1]))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink(self.a.qmp)
        except OSError:
            pass
        s.bind(self.a.qmp)
        os.chmod(self.a.qmp, 0o600)
        s.listen(16)
        print(f"fake-vmm: VM '{self.a.name}' started", file=sys.stderr, flush=True)
        print("godwit-guest: booted (fake)", flush=True)
        print("vcpu0: workload dirty started (fake)", flush=True)
        threading.Thread(target=self.serial, daemon=True).start()
        threading.Thread(target=self.stdin, daemon=True).start()
        while True:
            c, _ = s.accept()
            threading.Thread(target=self.serve_client, args=(c,), daemon=True).start()


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "fake-vmm":
    FakeVMM(sys.argv[2:]).run()
