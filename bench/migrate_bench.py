#!/usr/bin/env python3
"""The migration benchmark (like QEMU's guestperf): two godwit-vmm processes
on this host, loopback (Unix socket), the test guest as the workload.

Scenarios
  idle-1g   1 GiB guest holding 768 MiB of data, then idle
  idle-4g   4 GiB guest holding 3.8 GiB of data, then idle
  busy-1g   1 GiB guest writing a 512 MiB working set as fast as it can
  busy-1g-ac  the same with auto-converge and a 20 ms downtime limit
  busy-1g-2vcpu  the same working set written by two vCPUs (256 MiB each;
            the progress figures are vCPU 0's)
  busy-4g   a 4 GiB guest writing the same 512 MiB working set (the rest
            never written: what it costs to find that out)
  busy-1g-1gbit       the busy guest over a 1 Gbit/s cap, pre-copy only
                      (does not converge: given up after --timeout)
  busy-1g-1gbit-pc    the same, switched to post-copy when the first pass
                      ends (hybrid, as libvirt's --postcopy-after-precopy:
                      godwit by its capability of that name, QEMU 7.2,
                      which has none, by command once dirty-sync-count is 2)
  busy-1g-1gbit-pc0   the same, post-copy at once (no pre-copy pass)
  busy-1g-1gbit-pc-zstd, busy-1g-1gbit-pc0-zstd
                      the last two with compress-zstd (QEMU: its compress
                      capability)

--prealloc starts each destination with its RAM populated beforehand
(godwit --mem-prealloc, QEMU -mem-prealloc) and waits until it is.

Post-copy rows add page requests, fault latency p50/p99 (destination),
time every vCPU was blocked, and the guest's progress (pages written per
second, from its heartbeats) while post-copy held it back (until it runs at
half its earlier speed again, at most until the destination's `completed`)
against before and after.

Reports total time, downtime seen by the VMMs and by the guest (the longest
gap between the guest's 10 ms heartbeats as the host receives them, source
then destination), bytes on the wire, rounds and throughput; a table and
JSON lines in bench/results/migrate.jsonl. With --qemu each scenario also
runs on Debian's QEMU with KVM, for a ratio measured in the same run. Runs pause between scenarios:
freed memory returns to the outer host slowly here."""
import argparse
import json
import shutil
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
from godwit_test import QMP, VMM, Timeout, migrate  # noqa: E402

a_timeout = 120
a_logs = None  # --logs DIR

GUEST_ELF = os.path.join(ROOT, "build", "guest", "test-guest.elf")
QBOOT = "/usr/share/qemu/qboot.rom"


class QemuVM(VMM):
    """The same test guest on Debian's QEMU with KVM, for a side-by-side
    ratio: QEMU boots PVH kernels with qboot (SeaBIOS clears the low memory
    our guest lives in). Same serial capture and QMP client as VMM."""

    def __init__(self, memory, vcpus=1, cmdline="", incoming=False, extra=()):
        import subprocess
        import tempfile
        import threading
        self.dir = tempfile.mkdtemp(prefix="godwit-qemu-")
        self.own_dir = True
        self.qmp_path = os.path.join(self.dir, "qmp.sock")
        cmd = ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host,-arch-capabilities",
               "-m", str(memory), "-smp", str(vcpus), "-display", "none", "-serial", "stdio",
               "-monitor", "none", "-bios", QBOOT, "-no-reboot", "-nodefaults",
               "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
               "-kernel", GUEST_ELF, "-append", cmdline]
        if incoming:
            cmd += ["-incoming", "defer"]
        cmd += list(extra)
        self.cmd = cmd
        self.serial_lock = threading.Condition()
        self.serial, self.stderr, self.serial_times = b"", b"", []
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        threading.Thread(target=self._pump, args=(self.proc.stdout, "serial"), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, "stderr"), daemon=True).start()
        # -mem-prealloc populates the RAM before QMP answers
        self.qmp = QMP(self.qmp_path, timeout=120)


# --prealloc: the destination populates its RAM before the stream needs it
PREALLOC_ARGS = {"godwit": ["--mem-prealloc"], "qemu": ["-mem-prealloc"]}

SCENARIOS = {
    "idle-1g": dict(mem=1024, cmd="workload=dirty wss=768M passes=1 beat-ms=10", ready="pages=196608"),
    "idle-4g": dict(mem=4096, cmd="workload=dirty wss=3890M passes=1 beat-ms=10", ready="pages=995840"),
    "busy-1g": dict(mem=1024, cmd="workload=dirty wss=512M rate=0 beat-ms=10", ready=2 * 131072),
    "busy-4g": dict(mem=4096, cmd="workload=dirty wss=512M rate=0 beat-ms=10", ready=2 * 131072),
    "busy-1g-2vcpu": dict(mem=1024, vcpus=2, cmd="workload=dirty,dirty wss=256M rate=0 beat-ms=10",
                          ready=2 * 65536),
    "busy-1g-ac": dict(mem=1024, cmd="workload=dirty wss=512M rate=0 beat-ms=10", ready=2 * 131072,
                       caps=["auto-converge"], params={"downtime-limit": 20}),
    "busy-1g-1gbit": dict(mem=1024, cmd="workload=dirty wss=512M rate=0 beat-ms=10", ready=2 * 131072,
                          bw=125 * 1000 ** 2),
    "busy-1g-1gbit-pc": dict(mem=1024, cmd="workload=dirty wss=512M rate=0 beat-ms=10",
                             ready=2 * 131072, bw=125 * 1000 ** 2, postcopy="after-pass"),
    "busy-1g-1gbit-pc0": dict(mem=1024, cmd="workload=dirty wss=512M rate=0 beat-ms=10",
                              ready=2 * 131072, bw=125 * 1000 ** 2, postcopy="at-once"),
    "busy-1g-1gbit-pc-zstd": dict(mem=1024, cmd="workload=dirty wss=512M rate=0 beat-ms=10",
                                  ready=2 * 131072, bw=125 * 1000 ** 2, postcopy="after-pass",
                                  caps=["compress-zstd"]),
    "busy-1g-1gbit-pc0-zstd": dict(mem=1024, cmd="workload=dirty wss=512M rate=0 beat-ms=10",
                                   ready=2 * 131072, bw=125 * 1000 ** 2, postcopy="at-once",
                                   caps=["compress-zstd"]),
}


# vCPU 0's heartbeat (`pages=N` is cumulative); on a 2-vCPU guest the
# other vCPU's counts are left out, so progress there is vCPU 0's.
HEARTBEAT = r"heartbeat vcpu=0 tick=\d+ pages=(\d+)\r?\n"


def wait_ready(vm, ready, timeout=300):
    """A serial marker (str), or for the busy guest a page-write count: it
    must have written its working set over twice, so that it runs at its
    steady speed (its first sweep faults its memory in, slowly, and on QEMU
    that took seconds after `tick=50`: the 'before' rate then read
    0.08 M/s against 26-38 M/s)."""
    import re
    if isinstance(ready, str):
        return vm.wait_serial(ready, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.findall(HEARTBEAT, vm.serial_text()[-4096:])
        if m and int(m[-1]) >= ready:
            return
        time.sleep(0.05)
    raise Timeout(f"the guest did not write {ready} pages within {timeout} s")


def heartbeat_counts(vm, t_from, t_to):
    """(host time, pages written) of each heartbeat received in the window;
    a count seen again (QEMU's serial arrives in pieces) keeps its first time."""
    import re
    samples = []
    text = vm.serial_text()
    for t, length in vm.serial_times:
        if t_from <= t <= t_to:
            # whole lines only: a chunk may end inside a number
            m = list(re.finditer(HEARTBEAT, text[:length]))
            if m and (not samples or int(m[-1].group(1)) != samples[-1][1]):
                samples.append((t, int(m[-1].group(1))))
    return samples


def rate_of(samples):
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return None
    return round((samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0]))


def progress_rate(vm, t_from, t_to):
    """Guest pages written per second between two host times, from the
    heartbeat lines (`pages=N` is cumulative) as the host received them:
    from the first heartbeat in the window to the last one."""
    return rate_of(heartbeat_counts(vm, t_from, t_to))


def held_progress(dst, t_switch, t_done, before):
    """The guest's progress while post-copy held it back: from its first
    heartbeat on the destination up to the first heartbeat interval in
    which it ran at half its speed before the migration or more (from then
    on it lacks none of its working set, even if the destination reports
    completion later: QEMU's did ~110 ms after, in which its guest rewrote
    its working set 25 times). Returns (pages/s, seconds from the switch)."""
    samples = heartbeat_counts(dst, t_switch, t_done)
    cut = len(samples)
    for i in range(1, len(samples)):
        (ta, ca), (tb, cb) = samples[i - 1], samples[i]
        if before and tb > ta and (cb - ca) / (tb - ta) >= before / 2:
            cut = i
            break
    held = samples[:cut]
    return rate_of(held), round((held[-1][0] if held else t_done) - t_switch, 3)


def dst_done_time(dst):
    """When the destination reported `completed` (its MIGRATION event's
    timestamp, on our monotonic clock). The source's completion is seen
    later, by polling every 50 ms, and the guest rewrites its working set
    in ~5 ms once it lacks nothing: progress measured up to then measured
    that tail (0.3-1.6 M pages/s) instead of the post-copy phase."""
    offset = time.time() - time.monotonic()
    for e in dst.qmp.events:
        if e.get("event") == "MIGRATION" and e.get("data", {}).get("status") == "completed":
            ts = e.get("timestamp", {})
            return ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6 - offset
    return None


def wait_preallocated(dst, mib, hv):
    """QEMU's -mem-prealloc is done before its QMP answers; godwit's runs in
    the background and logs its end."""
    if hv == "godwit":
        from godwit_test import wait_until
        want = f"preallocated {mib} of {mib} MiB".encode()
        wait_until(lambda: want in dst.stderr, 300, "the destination's preallocation")


def run_postcopy(src, dst, sc, uri, timeout, hv):
    """Start, switch to post-copy (at once, or once pass 1 ends: godwit by
    its postcopy-after-precopy capability, QEMU 7.2, which has none, by
    command as libvirt does), wait for the end; returns (src info, dst info,
    switch time)."""
    from godwit_test import start_migration, wait_migration, wait_until
    caps = ("postcopy-ram", *sc.get("caps", ()))
    by_cap = sc["postcopy"] == "after-pass" and hv == "godwit"
    start_migration(src, dst, uri, caps + (("postcopy-after-precopy",) if by_cap else ()),
                    {"max-bandwidth": sc["bw"], "max-postcopy-bandwidth": sc["bw"]})
    if by_cap:
        wait_until(lambda: src.qmp.cmd("query-migrate")["status"] not in ("setup", "active"),
                   timeout, "the switch to post-copy", interval=0.01)
    elif sc["postcopy"] == "after-pass":
        wait_until(lambda: src.qmp.cmd("query-migrate").get("ram", {}).get("dirty-sync-count", 0) >= 2,
                   timeout, "the end of the first pass")
    if not by_cap:
        src.qmp.cmd("migrate-start-postcopy")
    t_switch = time.monotonic()
    s = wait_migration(src, timeout)
    d = dst.qmp.cmd("query-migrate")
    return s, d, t_switch


def guest_gap_ms(src, dst, t_start):
    """Longest gap between heartbeat chunks from migration start to 1 s after."""
    times = [t for t, _ in src.serial_times if t >= t_start] + [t for t, _ in dst.serial_times]
    times.sort()
    gaps = [b - a for a, b in zip(times, times[1:])]
    return round(max(gaps) * 1000, 1) if gaps else None


# godwit's capability names that QEMU 7.2 spells otherwise: its page
# compression is the `compress` capability (zlib threads).
QEMU_CAPS = {"compress-zstd": "compress"}


def run(name, sc, hv="godwit", prealloc=False):
    """One scenario on one hypervisor; a scenario it refuses (QEMU 7.2 does
    not compress in post-copy) gives a row saying why."""
    from godwit_test import QMPError
    if hv == "qemu" and sc.get("caps"):
        sc = dict(sc, caps=[QEMU_CAPS.get(c, c) for c in sc["caps"]])
    try:
        return run_one(name, sc, hv, prealloc)
    except QMPError as e:
        return {"bench": "migrate", "hypervisor": hv, "scenario": name, "memory_mib": sc["mem"],
                "converged": False, "refused": str(e), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def keep_logs(name, src, dst):
    """--logs: the two godwit VMMs' debug logs, for a run to be explained."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for role, vm in (("src", src), ("dst", dst)):
        with open(os.path.join(a_logs, f"{stamp}-{name}-{role}.log"), "wb") as f:
            f.write(vm.stderr)


def run_one(name, sc, hv, prealloc):
    make = QemuVM if hv == "qemu" else VMM
    debug = ["--log-level", "debug"] if a_logs and hv == "godwit" else []
    vcpus = sc.get("vcpus", 1)
    with make(memory=sc["mem"], vcpus=vcpus, cmdline=sc["cmd"], extra=debug) as src, \
         make(memory=sc["mem"], vcpus=vcpus, incoming=True,
              extra=(PREALLOC_ARGS[hv] if prealloc else []) + debug) as dst:
        try:
            return measure(name, sc, hv, prealloc, src, dst)
        finally:
            if debug:
                keep_logs(name, src, dst)


def measure(name, sc, hv, prealloc, src, dst):
    wait_ready(src, sc["ready"])
    if prealloc:
        wait_preallocated(dst, sc["mem"], hv)
    time.sleep(1)
    t0 = time.monotonic()
    if sc.get("postcopy"):
        return run_pc(name, sc, hv, src, dst, t0)
    # Bandwidth unlimited on both (QEMU's default cap is 128 MiB/s).
    params = dict(sc.get("params") or {}, **{"max-bandwidth": sc.get("bw", 100 * 1000 ** 3)})
    try:
        info = migrate(src, dst, "unix:" + os.path.join(dst.dir, "m.sock"),
                       caps=sc.get("caps", ()), params=params, timeout=a_timeout)
    except Timeout:
        src.qmp.cmd("migrate_cancel")
        return {"bench": "migrate", "hypervisor": hv, "scenario": name, "memory_mib": sc["mem"],
                "converged": False, "gave_up_after_s": a_timeout,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    wall = time.monotonic() - t0
    time.sleep(1)
    ram = info["ram"]
    # The guest's own progress while it ran during the migration (up to the
    # stop), against just before: a guest that runs faster dirties more, and
    # costs more bytes.
    live_s = max(((info["total-time"] or wall * 1000) - (info["downtime"] or 0)) / 1000, 0)
    return {
        "bench": "migrate", "hypervisor": hv, "scenario": name, "memory_mib": sc["mem"],
        "converged": True, "total_ms": info["total-time"] or round(wall * 1000), "downtime_ms": info["downtime"],
        "guest_gap_ms": guest_gap_ms(src, dst, t0),
        "bytes": ram["transferred"], "rounds": ram.get("iteration", ram.get("dirty-sync-count")),
        "throughput_mb_s": round(ram["transferred"] / max(info["total-time"], 1) / 1000, 1),
        "throttle": info.get("cpu-throttle-percentage", 0), "wall_s": round(wall, 2),
        "switchover_retries": info.get("switchover-retries", 0),
        "rounds_ended_early": info.get("rounds-ended-early", 0),
        "switchover_deferrals": info.get("switchover-deferrals", 0),
        "downtime_phases_us": info.get("downtime-phases"),
        "progress_before_pages_s": progress_rate(src, t0 - 2, t0),
        "progress_during_pages_s": progress_rate(src, t0, t0 + live_s),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def run_pc(name, sc, hv, src, dst, t0):
    s, d, t_switch = run_postcopy(src, dst, sc, "unix:" + os.path.join(dst.dir, "m.sock"), a_timeout,
                                  hv)
    t_end = time.monotonic()
    time.sleep(1)
    t_done = dst_done_time(dst) or t_end
    before = progress_rate(src, t0 - 2, t0)
    held = held_progress(dst, t_switch, t_done, before)
    ram = s["ram"]
    lat = d.get("postcopy-fault-latency", {})
    return {
        "bench": "migrate", "hypervisor": hv, "scenario": name, "memory_mib": sc["mem"],
        "converged": s["status"] == "completed",
        # QEMU 7.2 now and then answers total-time 0 once completed: our clock then
        "total_ms": s["total-time"] or round((t_end - t0) * 1000),
        "downtime_ms": s.get("downtime"), "guest_gap_ms": guest_gap_ms(src, dst, t0),
        "downtime_phases_us": s.get("downtime-phases"),
        "bytes": ram["transferred"], "rounds": ram.get("iteration", ram.get("dirty-sync-count")),
        "throughput_mb_s": round(ram["transferred"] / max(s["total-time"], 1) / 1000, 1),
        "postcopy_requests": ram.get("postcopy-requests"),
        "fault_p50_us": lat.get("p50-us"), "fault_p99_us": lat.get("p99-us"),
        "fault_max_us": lat.get("max-us"), "blocktime_ms": d.get("postcopy-blocktime"),
        "non_vcpu_faults": d.get("postcopy-non-vcpu", {}).get("faults"),
        "non_vcpu_wait_ms": d.get("postcopy-non-vcpu", {}).get("wait-ms"),
        "progress_before_pages_s": before,
        "progress_postcopy_pages_s": held[0], "guest_held_s": held[1],
        "progress_after_pages_s": progress_rate(dst, t_done, t_done + 1),
        "postcopy_s": round(t_done - t_switch, 2), "throttle": 0,
        "wall_s": round(t_end - t0, 2), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    ap.add_argument("--pause", type=float, default=5)
    ap.add_argument("--timeout", type=int, default=120, help="give a migration up after S seconds")
    ap.add_argument("--logs", metavar="DIR", help="run godwit's VMMs with --log-level debug and keep "
                    "their logs in DIR (one pair of files per run)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each scenario N times; with --qemu the order alternates (QEMU first on "
                    "even repeats: a destination started moments after another run's exit gets warm "
                    "memory here)")
    ap.add_argument("--prealloc", action="store_true",
                    help="start each destination with its RAM populated beforehand (godwit "
                    "--mem-prealloc, QEMU -mem-prealloc), waiting until it is")
    ap.add_argument("--qemu", action="store_true",
                    help="also run each scenario on Debian's QEMU (qemu-system-x86) for a ratio")
    a = ap.parse_args()
    global a_timeout, a_logs
    a_timeout = a.timeout
    if a.logs:
        os.makedirs(a.logs, exist_ok=True)
        a_logs = a.logs
    hvs = ["godwit"]
    if a.qemu:
        if not (shutil.which("qemu-system-x86_64") and os.path.exists(QBOOT)):
            sys.exit("--qemu needs Debian's qemu-system-x86 (with qboot.rom) installed")
        hvs.append("qemu")
    rows = []
    print(f"{'scenario':<12} {'hv':<7} {'total':>8} {'downtime':>9} {'guest gap':>10} {'wire MB':>9} "
          f"{'rounds':>6} {'MB/s':>7}")
    for i, name in enumerate(a.scenarios * a.repeat):
        order = hvs if (i // len(a.scenarios)) % 2 == 0 else hvs[::-1]
        for hv in order:
            if rows:
                time.sleep(a.pause)
            r = run(name, SCENARIOS[name], hv, a.prealloc)
            r["prealloc"] = a.prealloc
            rows.append(r)
            if r.get("refused"):
                print(f"{name:<12} {hv:<7} refused: {r['refused']}", flush=True)
                continue
            if not r["converged"]:
                print(f"{name:<12} {hv:<7} did not converge in {a_timeout} s (cancelled)", flush=True)
                continue
            print(f"{name:<12} {hv:<7} {r['total_ms']:>6} ms {r['downtime_ms']:>6} ms "
                  f"{str(r['guest_gap_ms']):>7} ms {r['bytes'] / 1e6:>9.0f} {r['rounds']:>6} "
                  f"{r['throughput_mb_s']:>7}", flush=True)
            ph = r.get("downtime_phases_us")
            if ph:
                print(f"{'':<12} {'':<7} downtime phases: stop {ph['stop-us']} us, sync {ph['sync-us']} us, pages "
                      f"{ph['pages-us']} us, state {ph['state-us']} us, load {ph['load-us']} us, "
                      f"resume {ph['resume-us']} us", flush=True)
            if "postcopy_requests" in r:
                print(f"{'':<12} {'':<7} post-copy {r['postcopy_s']} s: {r['postcopy_requests']} "
                      f"requests, fault p50 {r['fault_p50_us']} us p99 {r['fault_p99_us']} us, "
                      f"all vCPUs blocked {r['blocktime_ms']} ms (+ {r['non_vcpu_faults']} faults in "
                      f"async-PF workers, {r['non_vcpu_wait_ms']} ms), guest held back {r['guest_held_s']} s, progress "
                      f"{r['progress_postcopy_pages_s']} pages/s (before: "
                      f"{r['progress_before_pages_s']}, after: {r['progress_after_pages_s']})", flush=True)
        if a.qemu and rows[-1]["converged"] and rows[-2]["converged"]:
            g, q = (rows[-2], rows[-1]) if rows[-2]["hypervisor"] == "godwit" else (rows[-1], rows[-2])
            print(f"{'':<12} {'ratio':<7} {q['total_ms'] / max(g['total_ms'], 1):>6.1f}x faster, "
                  f"downtime {q['downtime_ms']} -> {g['downtime_ms']} ms, bytes "
                  f"{g['bytes'] / max(q['bytes'], 1):.2f}x QEMU's", flush=True)
            if g.get("progress_during_pages_s") and q.get("progress_during_pages_s"):
                print(f"{'':<12} {'':<7} guest progress while migrating "
                      f"{g['progress_during_pages_s'] / q['progress_during_pages_s']:.2f}x QEMU's "
                      f"({g['progress_during_pages_s']} / {q['progress_during_pages_s']} pages/s; "
                      f"before: {g['progress_before_pages_s']} / {q['progress_before_pages_s']})",
                      flush=True)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "migrate.jsonl"), "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
