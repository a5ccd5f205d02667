"""Helpers for godwitd/godwit integration tests: start a daemon with its own
state directory, run the godwit client, speak the control protocol by hand,
and make sure every VMM a test started is gone at the end.

VMs run in their own session (so that a daemon restart does not kill them),
so the test runner's process-group kill does not reach them: Daemon.close()
kills every VMM recorded in the state directory.

Without /dev/kvm the daemon is given a fake VMM (this file run as
`godwitd_test.py fake-vmm ...`): a process that speaks the same QMP subset
(query-name, query-status, stop, cont, quit, system_powerdown;
STOP/RESUME/SHUTDOWN/POWERDOWN events), prints a heartbeat on its serial
output and powers off on the serial byte 'p' and on the ACPI power button
(system_powerdown; pressed while paused, when it runs again). Tests say which one they use; the real VMM runs wherever KVM exists."""
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

from godwit_test import BUILD, Timeout, discard_dir, wait_until

GODWITD = os.path.join(BUILD, "godwitd")
GODWIT = os.path.join(BUILD, "godwit")
HERE = os.path.abspath(__file__)


# The real test guest writing 40 MiB once, then only its heartbeat: a first
# pass of seconds over a slow link, then nothing left to send.
FILLED_GUEST = "workload=dirty wss=40M rate=0 passes=1 beat-ms=500"
# Writing 10 MB/s over 40 MiB without end (filled after 4 s, 8 heartbeats):
# pre-copy over 8 MiB/s does not converge, over a fast link it does.
DIRTYING_GUEST = "workload=dirty wss=40M rate=2500 beat-ms=500"


def have_kvm():
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def vmm_kind():
    return "real godwit-vmm" if have_kvm() else "fake VMM (no /dev/kvm here)"


def run_selected(tests):
    """Run the test functions named on the command line (all without
    names), each announced; for files that hold several."""
    print("VMM:", vmm_kind())
    only = sys.argv[1:]
    for t in tests:
        if not only or t.__name__ in only:
            print("--", t.__name__, flush=True)
            t()


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
        with open(self.log_path, errors="replace") as f:
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
        discard_dir(self.dir)
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


# ---- two hosts for migration tests ---------------------------------------------


class MigHosts:
    """Two 'hosts' (network namespaces), a godwitd on each with a TLS (PSK)
    TCP listener on port 16509; a.peer / b.peer are their tcp: URIs. The
    fault points (GODWIT_FAULT_INJECT) are set per daemon with env_a/env_b."""

    PORT = 16509

    def __init__(self, tag="gwm", env_a=None, env_b=None, fake=None):
        self.fake = fake
        from godwit_test import NetnsPair
        self.net = NetnsPair(tag=tag)
        self.scratch = tempfile.mkdtemp(prefix="godwit-mig-")
        self.key = make_psk(os.path.join(self.scratch, "hosts.psk"), user="godwit-hosts")
        self.a = self.b = None
        try:
            self.a = self.daemon(0, env_a)
            self.b = self.daemon(1, env_b)
        except Exception:
            self.close()
            raise

    def daemon(self, i, env=None, workdir=None):
        d = Daemon(workdir=workdir, listen=[f"tcp:{self.net.addr[i]}:{self.PORT}"], tls_psk=self.key,
                   netns=self.net.ns[i], fake=self.fake, start=False)
        d.env = env
        d.peer = f"tcp:{self.net.addr[i]}:{self.PORT}"
        _start_with_env(d)
        return d

    def restart(self, d, env=None, kill=False):
        """Stop d (SIGKILL when kill) and start it again on the same state."""
        d.stop(signal.SIGKILL if kill else signal.SIGTERM)
        d.env = env
        _start_with_env(d)

    def migrate(self, src, dst, name, *opts, check=True, timeout=120):
        return src.run("migrate", *opts, name, dst.peer, check=check, timeout=timeout)

    def start_guest(self, host, name="vm1", beats=1, real_cmdline=None, **extra):
        """Define and start `name` on `host`; wait for its heartbeats.
        `real_cmdline`: the test guest's command line with a real VMM (the
        fake VMM's RAM is always full; the real guest sends only what it
        wrote: FILLED_GUEST, DIRTYING_GUEST)."""
        if real_cmdline and not host.fake:
            host.define(name, cmdline=real_cmdline, **extra)
        else:
            host.define(name, **extra)
        host.run("start", name)
        wait_until(lambda: len(heartbeats(host, name)) >= beats, 30, f"heartbeats on {name}")

    def migrate_bg(self, src, dst, bandwidth, *opts, name="vm1"):
        """`godwit migrate --live` at `bandwidth` MiB/s in the background,
        returned once the source reports the job running; finish_proc()
        collects it."""
        p = subprocess.Popen(["ip", "netns", "exec", self.net.ns[0 if src is self.a else 1], GODWIT,
                              "-c", src.uri, "migrate", "--live", "--bandwidth", bandwidth, *opts,
                              name, dst.peer],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: "Data remaining" in jobinfo(src, name), 20, "the migration to run")
        return p

    def close(self):
        for d in (self.a, self.b):
            if d:
                try:
                    d.close()
                except Exception as e:  # noqa: BLE001
                    print("teardown:", e)
        self.net.close()
        discard_dir(self.scratch)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def finish_proc(p, timeout):
    """Wait (bounded) for a background migrate; returns (status, stderr)."""
    try:
        _out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, err


def _start_with_env(d):
    d.log = open(d.log_path, "a")
    env = dict(os.environ)
    env.pop("GODWIT_FAULT_INJECT", None)
    if d.env:
        env.update(d.env)
    d.proc = subprocess.Popen(d.command(), stdout=d.log, stderr=subprocess.STDOUT, env=env)
    wait_until(lambda: d._connectable() or d.proc.poll() is not None, 15, "godwitd socket")
    assert d.proc.poll() is None, "godwitd exited:\n" + d.log_text()


def heartbeats(d, name):
    """The heartbeat ticks on a domain's serial log."""
    import re
    try:
        with open(os.path.join(d.state, "log", f"{name}.log"), errors="replace") as f:
            text = f.read()
    except OSError:
        return []
    return [int(t) for t in re.findall(r"heartbeat vcpu=0 tick=(\d+)", text)]


def guest_self_check(d, name, timeout=60):
    """Ask the real test guest to check itself (serial 'v' through the
    domain's console FIFO) and return its REPORT line."""
    import re
    log = os.path.join(d.state, "log", f"{name}.log")
    start = os.path.getsize(log)
    fd = os.open(os.path.join(d.state, "run", f"{name}.console"), os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b"v")
    finally:
        os.close(fd)
    found = []

    def reported():
        with open(log, errors="replace") as f:
            f.seek(start)
            m = re.search(r"REPORT [^\n]*\n", f.read())
        if m:
            found.append(m.group(0).strip())
        return bool(m)
    wait_until(reported, timeout, f"the self-check report of {name}")
    return found[0]


def jobinfo(d, name, completed=False):
    """domjobinfo as a {label: value} dict."""
    args = ["domjobinfo", name] + (["--completed"] if completed else [])
    out = d.run(*args).out
    info = {}
    for line in out.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    return info


# ---- the fake VMM ---------------------------------------------------------------
#
# A process that speaks the QMP subset godwitd uses, with a fake guest whose
# state really moves when it migrates: RAM (min(memory, 4 MiB) in 4 KiB
# pages) that a "dirty" workload writes (rate= pages/s within wss=), and a
# heartbeat counter printed on the serial output. Migration goes over the
# TCP URI the daemon passes: pre-copy passes of dirty pages, switch-over
# when the rest fits the downtime limit (or the guest was paused), then the
# device state (heartbeat, RAM digest at the switch); post-copy sends the
# device state first and the destination faults missing pages in over the
# return path while the source pushes the rest. The destination checks the
# digest of the RAM as it was at the switch (and fails the migration if it
# differs). The link's speed is fake-link-pps= pages/s (cmdline) or
# max-bandwidth, whichever is lower.

PAGE = 4096
HDR = struct.Struct("<cII")  # type, index, payload length


def _send_rec(sock, lock, typ, index=0, payload=b""):
    with lock:
        sock.sendall(HDR.pack(typ, index, len(payload)) + payload)


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _recv_rec(sock):
    typ, index, n = HDR.unpack(_recv_exact(sock, HDR.size))
    return typ, index, _recv_exact(sock, n) if n else b""


def _tcp_uri(uri):
    if not uri or not uri.startswith("tcp:"):
        raise ValueError(f"unsupported migration URI '{uri}'")
    host, port = uri[4:].rsplit(":", 1)
    return host.strip("[]"), int(port)


class FakeMigration:
    """One outgoing or incoming migration of the fake guest."""

    def __init__(self, vmm, incoming):
        self.vmm, self.incoming = vmm, incoming
        self.status = "setup"
        self.t0 = time.time()
        self.setup_ms = self.downtime_ms = self.expected_ms = 0
        self.transferred = self.iteration = self.requests = self.pb_bytes = 0
        self.dirty_rate = 0
        self.error = ""
        self.pauses = 0
        self.faults = []  # fault latencies (us)
        self.blocktime_us = 0
        self.done_ms = None
        self.sock = None
        self.wlock = threading.Lock()
        self.postcopy_req = False
        self.pc_started = False  # the guest was handed over for post-copy
        self.cancel_req = False
        self.missing = set()
        self.late_ls = None  # a completed destination's migrate-recover listener
        self.lost_done = False  # fake-lose-done (source): the acknowledgement was dropped once
        self.cond = threading.Condition()

    def set_status(self, st, err=""):
        if err and not self.error:
            self.error = err
        if self.status == st:
            return
        self.status = st
        if st in ("completed", "failed", "cancelled") and self.done_ms is None:
            self.done_ms = int((time.time() - self.t0) * 1000)
        if self.vmm.caps.get("events"):
            self.vmm.emit("MIGRATION", {"status": st})

    def remaining(self):
        if self.incoming:
            return len(self.missing) * PAGE
        return len(self.vmm.dirty) * PAGE

    def query(self):
        v = self.vmm
        o = {"status": self.status, "total-time": self.done_ms if self.done_ms is not None
             else int((time.time() - self.t0) * 1000), "setup-time": self.setup_ms}
        active = self.status in ("setup", "active", "device", "postcopy-active")
        if not self.incoming and self.status in ("completed", "postcopy-active", "postcopy-paused"):
            o["downtime"] = self.downtime_ms
        if not self.incoming and active:
            o["expected-downtime"] = self.expected_ms
        if self.error and self.status in ("failed", "cancelled", "postcopy-paused"):
            o["error-desc"] = self.error
        o["postcopy-started"] = self.pc_started
        if self.pauses:
            o["postcopy-pauses"] = self.pauses
        secs = max(time.time() - self.t0, 1e-3)
        o["ram"] = {"transferred": self.transferred, "remaining": self.remaining(),
                    "total": v.npages * PAGE, "duplicate": 0, "skipped": 0,
                    "normal": self.transferred // PAGE, "normal-bytes": self.transferred,
                    "dirty-pages-rate": self.dirty_rate,
                    "mbps": round(self.transferred * 8 / 1e6 / secs, 3),
                    "dirty-sync-count": self.iteration, "page-size": PAGE,
                    "iteration": self.iteration, "postcopy-requests": self.requests,
                    "postcopy-bytes": self.pb_bytes}
        if self.incoming and (self.faults or self.pb_bytes):
            lat = sorted(self.faults) or [0]
            o["postcopy-blocktime"] = self.blocktime_us // 1000
            o["postcopy-vcpu-blocktime"] = [self.blocktime_us // 1000]
            o["postcopy-fault-latency"] = {"faults": len(self.faults),
                                           "p50-us": lat[len(lat) // 2],
                                           "p99-us": lat[min(len(lat) - 1, len(lat) * 99 // 100)],
                                           "max-us": lat[-1]}
        return o

    # -- the link ------------------------------------------------------------

    def pps(self):
        v = self.vmm
        bw = v.params.get("max-bandwidth", 0)
        if self.status == "postcopy-active":
            bw = v.params.get("max-postcopy-bandwidth", 0) or bw
        pps = v.link_pps
        if bw:
            pps = min(pps, max(1, bw // PAGE))
        return pps

    def send_page(self, i, typ=b"P"):
        v = self.vmm
        with v.lock:
            data = bytes(v.ram[i * PAGE:(i + 1) * PAGE])
        _send_rec(self.sock, self.wlock, typ, i, data)
        self.transferred += PAGE
        time.sleep(1.0 / self.pps())

    # -- source --------------------------------------------------------------

    def run_source(self, uri, resume=False):
        v = self.vmm
        if resume:  # as the real VMM (mig_pc_wait_recovery): recover, then paused again
            self.error = ""
            self.set_status("postcopy-recover")
        try:
            host, port = _tcp_uri(uri)
            self.sock = socket.create_connection((host, port), timeout=10)
            self.sock.settimeout(None)
        except (OSError, ValueError) as e:
            self.sock = None
            if resume:  # src/migration/postcopy_src.c: one more pause, "recovery failed: ..."
                self.pauses += 1
                self.error = f"recovery failed: cannot reconnect to {uri}: {e}"
                self.set_status("postcopy-paused")
            else:
                self.set_status("failed", f"Failed to connect to '{uri}': {e}")
            return
        try:
            if resume:
                self.resume_source()
            else:
                self.precopy()
        except (OSError, EOFError) as e:
            self.on_broken(f"migration connection broken: {e}")

    def on_broken(self, msg):
        v = self.vmm
        if self.status in ("postcopy-active", "postcopy-recover"):
            self.pauses += 1
            self.set_status("postcopy-paused", msg)
        elif self.status not in ("completed", "cancelled", "cancelling"):
            self.set_status("failed", msg)
            if v.mig_stopped:  # the switch-over had stopped the guest: run it again
                v.mig_stopped = False
                v.set_run(True)
        elif self.status == "cancelling":
            self.set_status("cancelled")
            if v.mig_stopped:
                v.mig_stopped = False
                v.set_run(True)

    def precopy(self):
        v = self.vmm
        self.setup_ms = int((time.time() - self.t0) * 1000)
        self.set_status("active")
        with v.lock:
            v.dirty = set(range(v.npages))
        while True:
            self.iteration += 1
            v.emit("MIGRATION_PASS", {"pass": self.iteration})
            with v.lock:
                batch = sorted(v.dirty)
                v.dirty.clear()
            t_pass = time.time()
            for i in batch:
                if self.cancel_req:
                    return self.cancel()
                if self.postcopy_req:
                    with v.lock:
                        v.dirty.update(batch[batch.index(i):])
                    return self.postcopy()
                self.send_page(i)
            dt = max(time.time() - t_pass, 1e-3)
            with v.lock:
                left = len(v.dirty)
            self.dirty_rate = int(left / dt)
            self.expected_ms = int(left * 1000 / self.pps())
            if self.postcopy_req:
                return self.postcopy()
            if self.expected_ms <= v.params.get("downtime-limit", 300) or v.status != "running":
                return self.switch_over()
            if self.iteration == 1 and v.caps.get("postcopy-after-precopy") and v.caps.get("postcopy-ram"):
                return self.postcopy()  # the capability: post-copy after the first pass

    def cancel(self):
        self.set_status("cancelling")
        self.sock.close()
        self.set_status("cancelled", "migration cancelled by the user")

    def state_payload(self, postcopy):
        v = self.vmm
        return json.dumps({"beat": v.beat, "digest": v.digest(), "postcopy": postcopy,
                           "missing": sorted(v.dirty) if postcopy else []}).encode()

    def switch_over(self):
        v = self.vmm
        t = time.time()
        if v.status == "running":
            v.mig_stopped = True
            v.set_run(False)
        self.set_status("device")
        with v.lock:
            batch = sorted(v.dirty)
            v.dirty.clear()
        for i in batch:
            self.send_page(i)
        _send_rec(self.sock, self.wlock, b"S", 0, self.state_payload(False))
        typ, _, _ = _recv_rec(self.sock)  # the destination's verdict
        self.downtime_ms = int((time.time() - t) * 1000)
        if typ != b"A":
            raise EOFError("the destination refused the migration stream")
        v.runstate = "postmigrate"
        self.set_status("completed")
        self.sock.close()

    def postcopy(self):
        v = self.vmm
        t = time.time()
        if v.status == "running":
            v.mig_stopped = True
            v.set_run(False, reason_postcopy=True)
        _send_rec(self.sock, self.wlock, b"S", 0, self.state_payload(True))
        self.pc_started = True
        self.downtime_ms = int((time.time() - t) * 1000)
        self.set_status("postcopy-active")
        self.serve_postcopy()

    def serve_postcopy(self):
        """Answer page requests first, push the rest in the background."""
        v = self.vmm
        reqs = []
        rl = threading.Lock()

        def reader():
            try:
                while True:
                    typ, i, _ = _recv_rec(self.sock)
                    if typ == b"R":
                        with rl:
                            reqs.append(i)
                    elif typ == b"A" and "fake-lose-done" in v.words_plain and not self.lost_done:
                        # the connection breaks before the destination's last
                        # message is read: it completed, we pause (stream-format.md §7)
                        self.lost_done = True
                        self.sock.shutdown(socket.SHUT_RDWR)
                        raise EOFError("connection lost before the destination's acknowledgement")
                    elif typ == b"A":
                        with rl:
                            reqs.append(-1)
                        return
            except (OSError, EOFError):
                with rl:
                    reqs.append(-2)
        threading.Thread(target=reader, daemon=True).start()
        while True:
            with rl:
                r = reqs.pop(0) if reqs else None
            if r == -1:
                v.runstate = "postmigrate"
                self.set_status("completed")
                self.sock.close()
                return
            if r == -2:
                raise EOFError("the destination hung up")
            if r is not None:
                self.requests += 1
                self.pb_bytes += PAGE
                with v.lock:
                    v.dirty.discard(r)
                self.send_page(r, b"Q")
                continue
            with v.lock:
                i = min(v.dirty) if v.dirty else None
                if i is not None:
                    v.dirty.discard(i)
            if i is not None:
                self.send_page(i)
            elif v.paused_pc:
                time.sleep(0.01)
            else:
                _send_rec(self.sock, self.wlock, b"E")
                v.paused_pc = True  # all sent: wait for the acknowledgement

    def resume_source(self):
        v = self.vmm
        self.set_status("postcopy-recover")
        typ, _, payload = _recv_rec(self.sock)
        if typ == b"D":  # the destination had completed: its lost RP_POSTCOPY_DONE
            v.runstate = "postmigrate"
            self.set_status("postcopy-active")
            self.set_status("completed")
            self.sock.close()
            return
        if typ != b"M":
            raise EOFError("bad recovery handshake")
        with v.lock:
            v.dirty = set(json.loads(payload))
        v.paused_pc = False
        self.set_status("postcopy-active")
        self.serve_postcopy()

    # -- destination ---------------------------------------------------------

    def listen(self, uri):
        host, port = _tcp_uri(uri)
        ls = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((host, port))
        ls.listen(1)
        return ls

    def run_incoming(self, ls, recovering=False):
        v = self.vmm
        try:
            self.sock, _ = ls.accept()
            ls.close()
            if recovering:
                self.set_status("postcopy-recover")
                with v.lock:
                    missing = sorted(self.missing)
                _send_rec(self.sock, self.wlock, b"M", 0, json.dumps(missing).encode())
                self.set_status("postcopy-active")
            else:
                self.set_status("active")
            self.receive()
        except (OSError, EOFError) as e:
            if self.status in ("postcopy-active", "postcopy-recover"):
                self.pauses += 1
                self.set_status("postcopy-paused", f"migration connection broken: {e}")
                with self.cond:
                    self.cond.notify_all()
            elif self.status not in ("completed",):
                self.set_status("failed", f"incoming migration broken: {e}")

    def receive(self):
        v = self.vmm
        while True:
            typ, i, payload = _recv_rec(self.sock)
            if typ in (b"P", b"Q"):
                with v.lock:
                    v.ram[i * PAGE:(i + 1) * PAGE] = payload
                    self.snap[i * PAGE:(i + 1) * PAGE] = payload
                    self.transferred += PAGE
                    if typ == b"Q":
                        self.pb_bytes += PAGE
                    if i in self.missing:
                        self.missing.discard(i)
                        self.wake()
            elif typ == b"S":
                st = json.loads(payload)
                v.beat = st["beat"]
                self.want_digest = st["digest"]
                if not st["postcopy"]:
                    return self.finish_precopy()
                with v.lock:
                    self.missing = set(st["missing"])
                self.pc_started = True
                self.set_status("postcopy-active")
            elif typ == b"E":
                return self.finish_postcopy()

    def wake(self):
        with self.cond:
            self.cond.notify_all()

    def check_digest(self):
        import hashlib
        got = hashlib.sha256(bytes(self.snap)).hexdigest()
        if got != self.want_digest:
            self.set_status("failed", f"memory digest mismatch: {got} != {self.want_digest}")
            return False
        print(f"fake-vmm: memory digest at the switch-over verified ({got[:16]})",
              file=sys.stderr, flush=True)
        return True

    def finish_precopy(self):
        v = self.vmm
        ok = self.check_digest()
        _send_rec(self.sock, self.wlock, b"A" if ok else b"N")
        if ok:
            v.runstate = "paused"
            self.set_status("completed")
            if v.autostart:
                v.set_run(True)

    def finish_postcopy(self):
        if self.check_digest():
            _send_rec(self.sock, self.wlock, b"A")
            self.set_status("completed")

    def late_answer(self, ls):
        """migrate-recover on a completed post-copy destination: the resuming
        source is told that the migration completed (stream-format.md §7)."""
        try:
            c, _ = ls.accept()
            _send_rec(c, threading.Lock(), b"D")
            c.close()
        except OSError:
            pass
        finally:
            self.late_ls = None
            ls.close()

    def fault(self, i):
        """The guest touched page i on the destination: wait for it."""
        with self.vmm.lock:
            if i not in self.missing:
                return True
        t = time.time()
        try:
            _send_rec(self.sock, self.wlock, b"R", i)
        except OSError:
            pass
        with self.cond:
            while True:
                with self.vmm.lock:
                    if i not in self.missing:
                        break
                if self.status == "failed":
                    return False
                self.cond.wait(0.1)
        us = int((time.time() - t) * 1e6)
        self.faults.append(us)
        self.blocktime_us += us
        return True


class FakeVMM:
    def __init__(self, argv):
        import argparse
        ap = argparse.ArgumentParser()
        for o in ("--name", "--uuid", "--memory", "--vcpus", "--qmp", "--serial", "--cmdline", "--kernel",
                  "--initrd", "--log-level", "--cpu"):
            ap.add_argument(o)
        for o in ("--test-guest", "--incoming", "--paused", "--no-reboot", "--mem-prealloc"):
            ap.add_argument(o, action="store_true")
        self.a = ap.parse_args(argv)
        self.status = "inmigrate" if self.a.incoming else "running"
        self.runstate = self.status
        self.autostart = True
        self.clients = []
        self.lock = threading.RLock()
        self.elock = threading.Lock()
        self.beat = 0
        mib = int(self.a.memory or 64)
        self.npages = min(mib, 4) * 256
        self.ram = bytearray(self.npages * PAGE)
        self.dirty = set()
        self.caps = {}
        self.params = {"downtime-limit": 300}
        self.mig = None
        self.mig_stopped = False
        self.paused_pc = False
        self.button = False  # PWRBTN_STS: pressed, not yet seen by the guest
        words = dict(w.split("=", 1) for w in (self.a.cmdline or "").split() if "=" in w)
        self.words = words
        self.words_plain = set((self.a.cmdline or "").split())
        self.link_pps = int(words.get("fake-link-pps", "4000"))
        self.query_fails = int(words.get("fake-query-fail", "0"))
        self.rate = int(words.get("rate", "1000"))
        wss = words.get("wss", "1M")
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(wss[-1:].upper(), 1)
        wss_bytes = int(wss[:-1]) * mult if wss[-1:].upper() in "KMG" else int(wss)
        self.wss = max(1, min(self.npages, wss_bytes // PAGE))
        self.beat_ms = int(words.get("beat-ms", "500"))
        self.cmd_clients = set()  # connections that ran a command (fake-drop-clients)
        self.dropped_at = False  # fake-drop-at=CMD done

    def digest(self):
        import hashlib
        with self.lock:
            return hashlib.sha256(bytes(self.ram)).hexdigest()

    def emit(self, name, data=None):
        t = time.time()
        ev = {"event": name, "timestamp": {"seconds": int(t), "microseconds": int((t % 1) * 1e6)}}
        if data is not None:
            ev["data"] = data
        line = (json.dumps(ev) + "\r\n").encode()
        with self.elock:
            for c in list(self.clients):
                try:
                    c.sendall(line)
                except OSError:
                    pass

    def set_run(self, run, reason_postcopy=False):
        if run and self.status != "running":
            self.status = self.runstate = "running"
            self.emit("RESUME")
            if self.button:
                threading.Thread(target=self.power_button, daemon=True).start()
        elif not run and self.status == "running":
            self.status = self.runstate = "paused"
            self.emit("STOP")

    def exit(self, guest, reason):
        self.emit("SHUTDOWN", {"guest": guest, "reason": reason})
        time.sleep(0.05)
        try:
            os.unlink(self.a.qmp)
        except OSError:
            pass
        os._exit(0)

    def power_button(self):
        """The fake guest's SCI handler (a thread: the command's reply goes
        first): it powers off, as the test guest does."""
        time.sleep(0.1)
        print("godwit-guest: power button", flush=True)
        self.exit(True, "guest-shutdown")

    # -- QMP -----------------------------------------------------------------

    def q_powerdown(self, args):
        if self.status == "inmigrate":
            raise QmpError("The VM is waiting for an incoming migration")
        self.emit("POWERDOWN")
        self.button = True
        if self.status == "running":
            threading.Thread(target=self.power_button, daemon=True).start()
        return {}

    def q_migrate(self, args):
        if args.get("resume"):
            m = self.mig
            if not m or m.status != "postcopy-paused":
                raise QmpError("migrate resume needs a migration in postcopy-paused")
            threading.Thread(target=m.run_source, args=(args.get("uri"), True), daemon=True).start()
            return {}
        if self.status == "inmigrate" or self.runstate == "postmigrate":
            raise QmpError(f"Cannot migrate a VM in state {self.runstate}")
        if self.mig and self.mig.status in ("setup", "active", "device", "postcopy-active",
                                            "postcopy-paused", "cancelling"):
            raise QmpError("There's a migration process in progress")
        _tcp_uri(args.get("uri"))
        self.mig = FakeMigration(self, False)
        self.paused_pc = False
        if self.caps.get("events"):
            self.emit("MIGRATION", {"status": "setup"})
        threading.Thread(target=self.mig.run_source, args=(args["uri"],), daemon=True).start()
        return {}

    def q_incoming(self, args):
        if self.status != "inmigrate":
            raise QmpError("The incoming migration needs a VM started with --incoming")
        m = FakeMigration(self, True)
        m.snap = bytearray(self.npages * PAGE)
        try:
            ls = m.listen(args.get("uri"))
        except (OSError, ValueError) as e:
            raise QmpError(f"Failed to listen on '{args.get('uri')}': {e}")
        self.mig = m
        threading.Thread(target=m.run_incoming, args=(ls,), daemon=True).start()
        return {}

    def q_recover(self, args):
        m = self.mig
        if m and m.incoming and m.status == "completed" and m.pc_started:
            if m.late_ls:
                raise QmpError("a recovery is already under way")
            try:
                m.late_ls = m.listen(args.get("uri"))
            except (OSError, ValueError) as e:
                raise QmpError(f"Failed to listen on '{args.get('uri')}': {e}")
            threading.Thread(target=m.late_answer, args=(m.late_ls,), daemon=True).start()
            return {}
        if not m or not m.incoming or m.status != "postcopy-paused":
            raise QmpError("Migrate recover can only be run when postcopy is paused.")
        try:
            ls = m.listen(args.get("uri"))
        except (OSError, ValueError) as e:
            raise QmpError(f"Failed to listen on '{args.get('uri')}': {e}")
        threading.Thread(target=m.run_incoming, args=(ls, True), daemon=True).start()
        return {}

    def q_start_postcopy(self, args):
        m = self.mig
        if not m or m.incoming or m.status not in ("active", "setup"):
            raise QmpError("Postcopy must be started after migration has been started")
        if not self.caps.get("postcopy-ram"):
            raise QmpError("Enable postcopy with migrate_set_capability before the start of migration")
        m.postcopy_req = True
        return {}

    def q_cancel(self, args):
        m = self.mig
        if m and m.status in ("postcopy-active", "postcopy-paused", "postcopy-recover"):
            raise QmpError("Postcopy migration cannot be cancelled")
        if m and not m.incoming and m.status in ("setup", "active", "device"):
            m.cancel_req = True
        return {}

    def q_pause(self, args):
        m = self.mig
        if m and m.incoming and m.status == "completed" and m.late_ls:
            m.late_ls.shutdown(socket.SHUT_RDWR)  # ends the late answer's wait
            return {}
        if not m or m.status != "postcopy-active":
            raise QmpError("migrate-pause is only supported in postcopy-active")
        try:
            m.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return {}

    def handle_cmd(self, cmd, args):
        if cmd == "qmp_capabilities":
            return {}
        if cmd == "query-name":
            return {"name": self.a.name}
        if cmd == "query-uuid":
            return {"UUID": self.a.uuid or "00000000-0000-0000-0000-000000000000"}
        if cmd == "query-status":
            return {"status": self.runstate, "running": self.status == "running", "singlestep": False}
        if cmd == "stop":
            if self.status == "inmigrate" and os.environ.get("GODWIT_FAKE_STOP_DELAY_MS"):
                # a slow incoming VMM: Prepare is still at work meanwhile
                time.sleep(int(os.environ["GODWIT_FAKE_STOP_DELAY_MS"]) / 1000)
            if self.status == "inmigrate" and os.environ.get("GODWIT_FAKE_STOP_FAILS"):
                # (an incoming VMM has no command line: the daemon's environment says it)
                raise QmpError("stop refused (GODWIT_FAKE_STOP_FAILS)")
            if self.status == "inmigrate":
                self.autostart = False
            else:
                self.set_run(False)
            return {}
        if cmd == "cont":
            if self.status == "inmigrate" and not (self.mig and self.mig.status in (
                    "completed", "postcopy-active")):
                raise QmpError("guest state not received yet (inmigrate)")
            if self.mig and self.mig.incoming and self.mig.status == "postcopy-paused":
                raise QmpError("post-copy is paused")
            if self.mig and not self.mig.incoming and self.mig.pc_started:
                # as godwit-vmm: the guest runs on the destination now
                raise QmpError("The guest was handed over to the destination by post-copy "
                               "(postcopy-started): it runs there, and this copy of it is out of date")
            self.set_run(True)
            return {}
        if cmd == "migrate-set-capabilities":
            if self.mig and self.mig.status in ("setup", "active", "device", "postcopy-active"):
                raise QmpError("There's a migration process in progress")
            for c in args.get("capabilities", []):
                self.caps[c["capability"]] = bool(c["state"])
            return {}
        if cmd == "migrate-set-parameters":
            self.params.update({k: v for k, v in args.items()})
            return {}
        if cmd == "query-migrate-parameters":
            return dict(self.params)
        if cmd == "query-migrate":
            if self.mig and not self.mig.incoming and self.query_fails > 0:
                self.query_fails -= 1  # fake-query-fail=N: N failures once the migration runs
                raise QmpError("query-migrate failed (fake-query-fail)")
            return self.mig.query() if self.mig else {}
        table = {"migrate": self.q_migrate, "migrate-incoming": self.q_incoming,
                 "migrate-recover": self.q_recover, "migrate-start-postcopy": self.q_start_postcopy,
                 "migrate_cancel": self.q_cancel, "migrate-pause": self.q_pause,
                 "system_powerdown": self.q_powerdown}
        if "fake-no-acpi" in (self.a.cmdline or "").split():  # a VMM without a power button
            del table["system_powerdown"]
        if cmd in table:
            return table[cmd](args)
        raise QmpError(f"The command {cmd} has not been found", "CommandNotFound")

    def drop_clients(self, c, mid, args):
        """fake-drop-clients (tests): after `events` RESET events, close every
        connection that ran a command (the daemon's command connection, not
        its event one), except the asker's, as godwit-vmm drops a client whose
        output queue is full."""
        for _ in range(int(args.get("events", 0))):
            self.emit("RESET", {"guest": True, "reason": "guest-reset"})
        with self.elock:
            victims = [x for x in self.cmd_clients if x is not c and x in self.clients]
        for x in victims:
            self.cmd_clients.discard(x)
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        c.sendall((json.dumps({"return": {"dropped": len(victims)}, "id": mid}) + "\r\n").encode())

    def handle(self, c, msg):
        cmd, mid = msg.get("execute"), msg.get("id")
        if cmd == "fake-drop-clients":
            return self.drop_clients(c, mid, msg.get("arguments") or {})
        if cmd == "fake-emit":  # fake-emit (tests): `count` events named `event`
            a = msg.get("arguments") or {}
            for _ in range(int(a.get("count", 1))):
                self.emit(a.get("event", "RESET"))
            return c.sendall((json.dumps({"return": {}, "id": mid}) + "\r\n").encode())
        if cmd == self.words.get("fake-drop-at") and not self.dropped_at:
            self.dropped_at = True  # fake-drop-at=CMD: CMD's connection closed once, unanswered
            self.cmd_clients.discard(c)
            return c.shutdown(socket.SHUT_RDWR)
        if cmd != "qmp_capabilities":
            self.cmd_clients.add(c)
        if cmd == "quit":
            c.sendall((json.dumps({"return": {}, "id": mid}) + "\r\n").encode())
            self.exit(False, "host-qmp-quit")
        try:
            ret = self.handle_cmd(cmd, msg.get("arguments") or {})
            reply = {"return": ret, "id": mid}
        except QmpError as e:
            reply = {"error": {"class": e.cls, "desc": str(e)}, "id": mid}
        c.sendall((json.dumps(reply) + "\r\n").encode())

    def serve_client(self, c):
        greeting = {"QMP": {"version": {"qemu": {"major": 0, "minor": 1, "micro": 0},
                                        "package": "fake"}, "capabilities": []}}
        c.sendall((json.dumps(greeting) + "\r\n").encode())
        with self.elock:
            self.clients.append(c)
        dec, buf = json.JSONDecoder(), ""
        while True:
            try:
                data = c.recv(65536)
            except OSError:
                break
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
        with self.elock:
            self.clients.remove(c)

    # -- the fake guest --------------------------------------------------------

    def touch(self, i):
        """The workload writes page i (faulting it in on a post-copy destination)."""
        m = self.mig
        if m and m.incoming and m.status in ("postcopy-active", "postcopy-paused", "postcopy-recover"):
            if not m.fault(i):
                return
        with self.lock:
            off = i * PAGE
            n = int.from_bytes(self.ram[off:off + 8], "little") + 1
            self.ram[off:off + 8] = n.to_bytes(8, "little")
            self.dirty.add(i)

    def workload(self):
        tick = 0.05
        carry, nxt, last_beat = 0.0, 0, time.time()
        while True:
            time.sleep(tick)
            if self.status != "running":
                last_beat = time.time()
                continue
            carry += self.rate * tick
            while carry >= 1:
                carry -= 1
                self.touch(nxt)
                nxt = (nxt + 1) % self.wss
            if time.time() - last_beat >= self.beat_ms / 1000:
                last_beat = time.time()
                self.beat += 1
                print(f"heartbeat vcpu=0 tick={self.beat} pages={self.beat * 100}", flush=True)

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
        if "fake-stop-at-start" in self.words_plain:  # the guest stopped before anyone listens
            self.set_run(False)
        if "fake-exit-at-start" in self.words_plain:  # a VMM that fails before it answers QMP
            print("fake-vmm: failing at start (fake-exit-at-start)", file=sys.stderr, flush=True)
            os._exit(1)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink(self.a.qmp)
        except OSError:
            pass
        s.bind(self.a.qmp)
        os.chmod(self.a.qmp, 0o600)
        s.listen(16)
        print(f"fake-vmm: VM '{self.a.name}' started{' (incoming)' if self.a.incoming else ''}",
              file=sys.stderr, flush=True)
        if not self.a.incoming:
            print("godwit-guest: booted (fake)", flush=True)
            print("vcpu0: workload dirty started (fake)", flush=True)
        threading.Thread(target=self.workload, daemon=True).start()
        threading.Thread(target=self.stdin, daemon=True).start()
        while True:
            c, _ = s.accept()
            threading.Thread(target=self.serve_client, args=(c,), daemon=True).start()


class QmpError(Exception):
    def __init__(self, msg, cls="GenericError"):
        super().__init__(msg)
        self.cls = cls


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "fake-vmm":
    FakeVMM(sys.argv[2:]).run()
