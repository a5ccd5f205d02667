"""Helpers for godwit's integration tests: start godwit-vmm processes, speak
QMP to them, read the guest's serial output, check guest memory.

Every wait is bounded. A test exits 0 on success, 77 when it must skip (KVM
or userfaultfd missing), anything else on failure."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BUILD = os.environ.get("GODWIT_BUILD") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "build")
VMM_BIN = os.path.join(BUILD, "godwit-vmm")
SKIP = 77


def discard_dir(path):
    """Remove a test's scratch directory; with GODWIT_TEST_KEEP=DIR set, copy
    it under DIR first (the logs of a run on a machine one cannot watch)."""
    keep = os.environ.get("GODWIT_TEST_KEEP")
    if keep and os.path.isdir(path):
        os.makedirs(keep, exist_ok=True)
        try:
            shutil.copytree(path, os.path.join(keep, os.path.basename(path)), symlinks=True,
                            dirs_exist_ok=True)
        except (OSError, shutil.Error):
            pass  # sockets and fifos are not copied; the logs are
    shutil.rmtree(path, ignore_errors=True)


def skip(reason):
    print(f"skipped: {reason}", flush=True)
    sys.exit(SKIP)


def need_kvm():
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        skip("needs /dev/kvm")


def need_root():
    if os.geteuid() != 0:
        skip("needs root")


def _die_with_parent():
    """In the child before exec: get SIGKILL when the test process dies."""
    import ctypes
    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


class Timeout(Exception):
    pass


def wait_until(pred, timeout, what, interval=0.02):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise Timeout(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class QMPError(Exception):
    def __init__(self, cls, desc):
        super().__init__(f"{cls}: {desc}")
        self.cls = cls
        self.desc = desc


class QMP:
    """A blocking QMP client with a receive thread."""

    def __init__(self, path, timeout=10, negotiate=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        wait_until(lambda: self._try_connect(path), timeout, f"QMP socket {path}")
        self.cond = threading.Condition()
        self.replies = {}
        self.events = []
        self.on_event = None  # called on the receive thread, for what cannot wait
        self.greeting = None
        self.closed = False
        self.next_id = 1
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()
        with self.cond:
            self.cond.wait_for(lambda: self.greeting or self.closed, timeout)
        if not self.greeting:
            raise Timeout("no QMP greeting")
        if negotiate:
            self.cmd("qmp_capabilities")

    def _try_connect(self, path):
        try:
            self.sock.connect(path)
            return True
        except OSError:
            return False

    def _reader(self):
        dec = json.JSONDecoder()
        buf = ""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self.cond:
                    self.closed = True
                    self.cond.notify_all()
                return
            buf += data.decode(errors="replace")
            while True:
                buf = buf.lstrip()
                if not buf:
                    break
                try:
                    obj, end = dec.raw_decode(buf)
                except ValueError:
                    break
                buf = buf[end:]
                with self.cond:
                    if "QMP" in obj:
                        self.greeting = obj
                    elif "event" in obj:
                        if self.on_event:
                            self.on_event(obj)
                        self.events.append(obj)
                    else:
                        self.replies[json.dumps(obj.get("id"))] = obj
                    self.cond.notify_all()

    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def execute(self, name, timeout=30, **args):
        """Returns the whole reply object ({"return"} or {"error"})."""
        i = self.next_id
        self.next_id += 1
        msg = {"execute": name, "id": i}
        if args:
            msg["arguments"] = {k.replace("_", "-") if not k.startswith("_") else k[1:]: v
                                for k, v in args.items()}
        self.send_raw(json.dumps(msg))
        key = json.dumps(i)
        with self.cond:
            ok = self.cond.wait_for(lambda: key in self.replies or self.closed, timeout)
            if key not in self.replies:
                raise Timeout(f"no reply to {name}" + (" (connection closed)" if self.closed else ""))
            return self.replies.pop(key)

    def cmd(self, name, timeout=30, **args):
        r = self.execute(name, timeout=timeout, **args)
        if "error" in r:
            raise QMPError(r["error"].get("class"), r["error"].get("desc"))
        return r["return"]

    def wait_event(self, name, timeout=30, pred=None):
        def find():
            for i, e in enumerate(self.events):
                if e["event"] == name and (pred is None or pred(e)):
                    return self.events.pop(i)
            return None
        with self.cond:
            e = self.cond.wait_for(lambda: find() if not self.closed else True, timeout)
        if e is True or e is None:
            # One more look (closed connections may still hold the event).
            with self.cond:
                e2 = find()
            if e2:
                return e2
            raise Timeout(f"no {name} event within {timeout}s")
        return e

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class VMM:
    """A godwit-vmm process. Serial output is captured into self.serial."""

    def __init__(self, *args, memory=256, vcpus=1, test_guest=True, cmdline=None, name=None,
                 incoming=False, qmp=True, workdir=None, netns=None, extra=(), serial="pipe"):
        self.dir = workdir or tempfile.mkdtemp(prefix="godwit-test-")
        self.own_dir = workdir is None
        self.qmp_path = os.path.join(self.dir, f"qmp-{os.getpid()}-{id(self)}.sock") if qmp else None
        cmd = [VMM_BIN, "--memory", str(memory), "--vcpus", str(vcpus)]
        if test_guest and not incoming:
            cmd.append("--test-guest")
        if cmdline is not None:
            cmd += ["--cmdline", cmdline]
        if name:
            cmd += ["--name", name]
        if incoming:
            cmd.append("--incoming")
        if self.qmp_path:
            cmd += ["--qmp", self.qmp_path]
        cmd += ["--serial", "stdio"]
        cmd += list(extra) + list(args)
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        self.cmd = cmd
        self.serial_lock = threading.Condition()
        self.serial = b""
        self.serial_times = []  # (monotonic time, serial length after the chunk)
        self.stderr = b""
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
        threading.Thread(target=self._pump, args=(self.proc.stdout, "serial"), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, "stderr"), daemon=True).start()
        self.qmp = QMP(self.qmp_path) if self.qmp_path else None

    def _pump(self, f, attr):
        while True:
            data = os.read(f.fileno(), 65536)
            if not data:
                return
            with self.serial_lock:
                setattr(self, attr, getattr(self, attr) + data)
                if attr == "serial":
                    self.serial_times.append((time.monotonic(), len(self.serial)))
                self.serial_lock.notify_all()

    def serial_text(self):
        with self.serial_lock:
            return self.serial.decode(errors="replace")

    def wait_serial(self, needle, timeout=60, start=0):
        """Wait until `needle` (str) appears in serial output after byte `start`."""
        n = needle.encode()
        with self.serial_lock:
            ok = self.serial_lock.wait_for(lambda: n in self.serial[start:] or self.proc.poll() is not None,
                                           timeout)
            if n in self.serial[start:]:
                return self.serial.index(n, start)
        raise Timeout(f"serial output lacks {needle!r} after {timeout}s; got:\n"
                      + self.serial_text()[-2000:] + "\nstderr:\n" + self.stderr.decode(errors="replace")[-2000:])

    def serial_len(self):
        with self.serial_lock:
            return len(self.serial)

    def send_serial(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def wait_exit(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Timeout(f"VMM did not exit within {timeout}s")

    def status(self):
        return self.qmp.cmd("query-status")["status"]

    def pmemsave(self, addr, size, path):
        self.qmp.cmd("pmemsave", val=addr, size=size, filename=path)
        with open(path, "rb") as f:
            return f.read()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        if self.qmp:
            self.qmp.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        if os.environ.get("GODWIT_TEST_KEEP"):  # kept with the directory: serial and log
            tag = os.path.join(self.dir, f"vmm-{os.getpid()}-{id(self)}")
            try:
                with self.serial_lock:
                    for ext, data in ((".serial", self.serial), (".stderr", self.stderr)):
                        with open(tag + ext, "wb") as f:
                            f.write(data)
            except OSError:
                pass  # a directory its owner already removed
        if self.own_dir:
            discard_dir(self.dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_mem_invariant(data):
    """Byte 0 of each 4 KiB page: all equal except one boundary where the
    value drops by one (mod 256) going up. Returns (ok, description)."""
    vals = data[0::4096]
    if not vals:
        return False, "empty"
    drops = []
    for i in range(1, len(vals)):
        a, b = vals[i - 1], vals[i]
        if a == b:
            continue
        if (a - 1) % 256 == b:
            drops.append(i)
        else:
            return False, f"page {i}: {b} after {a}"
    if len(drops) > 1:
        return False, f"{len(drops)} boundaries (pages {drops[:5]})"
    return True, f"{len(vals)} pages, value {vals[0]}..{vals[-1]}, boundary {drops[0] if drops else 'none'}"


def _dump_before_timeout():
    """Print every thread's stack 10 s before the test's `# timeout:` (the
    runner then kills it): a hang shows where it waits."""
    import faulthandler
    try:
        with open(sys.argv[0]) as f:
            m = re.search(r"^# timeout: (\d+)", f.read(2000), re.M)
    except OSError:
        return
    limit = int(m.group(1)) if m else 300
    if limit > 20:
        faulthandler.dump_traceback_later(limit - 10, exit=False)


def run_test(fn):
    """Run a test function; print a clean failure and exit 1 on exception."""
    _dump_before_timeout()
    try:
        fn()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        print(f"FAILED: {e}", flush=True)
        sys.exit(1)
    print("ok", flush=True)
    sys.exit(0)


MEMCHECK = os.path.join(BUILD, "godwit-memcheck")


def guest_regions(serial_text):
    """Parse 'godwit-guest: region vcpuN WORKLOAD pages A-B addr 0x...' lines.
    Returns [(vcpu, workload, addr, npages)] (regions are contiguous unless
    they cross the 3-4 GiB hole)."""
    import re
    out = []
    for m in re.finditer(r"region vcpu(\d+) (\S+) pages (\d+)-(\d+) addr 0x([0-9a-f]+)", serial_text):
        out.append((int(m.group(1)), m.group(2), int(m.group(5), 16), int(m.group(4)) - int(m.group(3))))
    return out


def memcheck(path, offset=0, length=0):
    """Run godwit-memcheck; returns (ok, output line)."""
    args = [MEMCHECK, path]
    if offset:
        args += ["--offset", str(offset)]
    if length:
        args += ["--length", str(length)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    return p.returncode == 0, (p.stdout + p.stderr).strip()


def check_invariant_regions(vm, memory_mib, announced_by=None):
    """Stop-state check: dump every mem-invariant region of `vm` and verify
    it. The regions are read from the console of `announced_by` (default:
    vm; after a migration, the source that booted the guest)."""
    regions = [r for r in guest_regions((announced_by or vm).serial_text())
               if r[1] == "mem-invariant"]
    assert regions, "no mem-invariant region announced"
    for vcpu, _, addr, npages in regions:
        end = addr + npages * 4096
        low_end = min(memory_mib << 20, 0xC0000000)
        size = min(end, low_end) - addr   # the part below the hole
        path = os.path.join(vm.dir, f"region{vcpu}.bin")
        vm.qmp.cmd("pmemsave", val=addr, size=size, filename=path, timeout=120)
        ok, msg = memcheck(path)
        os.unlink(path)
        assert ok, f"vcpu{vcpu} region 0x{addr:x}: {msg}"
    return regions


def self_check(vm, timeout=60):
    """Ask the guest to verify itself (serial 'v') and expect 'REPORT ok'."""
    start = vm.serial_len()
    vm.send_serial("v")
    at = vm.wait_serial("REPORT ", timeout, start=start)
    vm.wait_serial("\n", 10, start=at)
    line = vm.serial_text()[at:].split("REPORT ", 1)[1].split("\n", 1)[0]
    assert line.startswith("ok"), f"guest self-check: REPORT {line}\n" + "\n".join(
        l for l in vm.serial_text().splitlines() if any(e in l for e in GUEST_ERRORS))


GUEST_ERRORS = ("CORRUPT", "FPU-CORRUPT", "TIME-ERROR", "GUEST-PANIC", "REPORT FAIL")


def assert_no_guest_errors(vm):
    text = vm.serial_text()
    for e in GUEST_ERRORS:
        assert e not in text, f"guest reported {e}:\n" + text[-3000:]


def wait_heartbeats(src, dst, n, timeout=60):
    """vCPU 0's heartbeat reached tick n across a migration (source console,
    then destination), with at least one beat on the destination; bounded.
    A fixed sleep after the first beat on the destination saw too few on a
    loaded host."""
    import re

    def reached():
        ticks = re.findall(r"heartbeat vcpu=0 tick=(\d+) ", src.serial_text() + dst.serial_text())
        return "heartbeat vcpu=0 tick=" in dst.serial_text() and ticks and int(ticks[-1]) >= n
    wait_until(reached, timeout, f"heartbeat tick {n} on the destination")


def assert_heartbeat_continued(src, dst, min_ticks=6):
    """vCPU 0's heartbeat across a migration: ticks 1, 2, 3... with none
    lost or doubled (source console, then destination), every line whole."""
    import re
    text = src.serial_text() + dst.serial_text()
    ticks = [int(t) for t in re.findall(r"heartbeat vcpu=0 tick=(\d+) ", text)]
    assert ticks == list(range(1, len(ticks) + 1)), f"heartbeat ticks not consecutive: {ticks}"
    assert len(ticks) >= min_ticks, ticks
    src_text = src.serial_text()
    for line in text.splitlines():
        if line.startswith("heartbeat"):
            if not re.fullmatch(r"heartbeat vcpu=0 tick=\d+ pages=\d+", line):
                at = text.find(line)
                raise AssertionError(
                    f"mangled line {line!r}: {text[max(at - 200, 0):at + 200]!r} (the source's "
                    f"console ends at offset {len(src_text) - at} from the line: "
                    f"{src_text[-120:]!r}; the destination's begins {dst.serial_text()[:120]!r})")
    return ticks


def wait_migration(vm, timeout=180, states=("completed", "failed", "cancelled")):
    """Poll query-migrate until it reaches one of `states`; returns the info."""
    deadline = time.time() + timeout
    while True:
        info = vm.qmp.cmd("query-migrate")
        if info.get("status") in states:
            return info
        if time.time() > deadline:
            raise Timeout(f"migration still {info.get('status')} after {timeout}s: {info}")
        time.sleep(0.05)


def start_incoming(dst, uri):
    dst.qmp.cmd("migrate-incoming", uri=uri)


def start_migration(src, dst, uri, caps=(), params=None):
    """Start src -> dst over `uri` (dst must run with incoming=True), with
    `events` and `caps` on both sides and `params` on the source."""
    for vm in (src, dst):
        vm.qmp.cmd("migrate-set-capabilities",
                   capabilities=[{"capability": "events", "state": True}] +
                   [{"capability": c, "state": True} for c in caps])
    if params:
        src.qmp.cmd("migrate-set-parameters", **params)
    start_incoming(dst, uri)
    src.qmp.cmd("migrate", uri=uri)


def migrate(src, dst, uri, caps=(), params=None, timeout=180, expect="completed"):
    """Migrate src -> dst over `uri` (dst must run with incoming=True)."""
    start_migration(src, dst, uri, caps, params)
    info = wait_migration(src, timeout)
    assert info["status"] == expect, f"source: {info}"
    return info


def ram_digest(vm, memory_mib, path):
    """SHA-256 of the whole guest RAM (both sides of the 3-4 GiB hole)."""
    import hashlib
    h = hashlib.sha256()
    low = min(memory_mib << 20, 0xC0000000)
    ranges = [(0, low)]
    if (memory_mib << 20) > low:
        ranges.append((1 << 32, (memory_mib << 20) - low))
    for addr, size in ranges:
        vm.qmp.cmd("pmemsave", val=addr, size=size, filename=path, timeout=300)
        with open(path, "rb") as f:
            while True:
                b = f.read(1 << 24)
                if not b:
                    break
                h.update(b)
        os.unlink(path)
    return h.hexdigest()


class NetnsPair:
    """Two 'hosts': network namespaces joined by a veth pair,
    10.77.0.1/24 and 10.77.0.2/24. Torn down on exit."""

    def __init__(self, tag="gw"):
        self.ns = [f"{tag}{os.getpid()}a", f"{tag}{os.getpid()}b"]
        self.addr = ["10.77.0.1", "10.77.0.2"]
        veth = [f"v{os.getpid()}a", f"v{os.getpid()}b"]
        self.veth = veth

        def ip(*a):
            subprocess.run(["ip", *a], check=True, capture_output=True)
        for n in self.ns:
            ip("netns", "add", n)
        ip("link", "add", veth[0], "type", "veth", "peer", "name", veth[1])
        for i in (0, 1):
            ip("link", "set", veth[i], "netns", self.ns[i])
            ip("-n", self.ns[i], "addr", "add", f"{self.addr[i]}/24", "dev", veth[i])
            ip("-n", self.ns[i], "link", "set", veth[i], "up")
            ip("-n", self.ns[i], "link", "set", "lo", "up")

    def link(self, i, up):
        subprocess.run(["ip", "-n", self.ns[i], "link", "set", self.veth[i], "up" if up else "down"],
                       check=True)

    def close(self):
        for n in self.ns:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def need_netns():
    need_root()
    if not shutil.which("ip"):
        skip("needs iproute2 (ip)")
    r = subprocess.run(["ip", "netns", "add", f"gwprobe{os.getpid()}"], capture_output=True)
    if r.returncode != 0:
        skip("cannot create network namespaces: " + r.stderr.decode().strip())
    subprocess.run(["ip", "netns", "del", f"gwprobe{os.getpid()}"], capture_output=True)
