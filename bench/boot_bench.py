#!/usr/bin/env python3
"""Boot benchmark: time from starting godwit-vmm to the test guest's first
workload output line, and the VMM's memory high-water mark (VmHWM).
Prints a table and appends JSON lines to bench/results/boot.jsonl."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VMM = os.path.join(ROOT, "build", "godwit-vmm")


def one_run(memory, vcpus):
    t0 = time.monotonic()
    p = subprocess.Popen([VMM, "--test-guest", "--memory", str(memory), "--vcpus", str(vcpus),
                          "--serial", "stdio", "--log-level", "error",
                          "--cmdline", "workload=dirty wss=1M rate=100"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    buf = b""
    while b"workload dirty started" not in buf:
        chunk = os.read(p.stdout.fileno(), 4096)
        if not chunk:
            raise RuntimeError("VMM exited before the workload started")
        buf += chunk
    elapsed = time.monotonic() - t0
    with open(f"/proc/{p.pid}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
    p.kill()
    p.wait()
    return elapsed, hwm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--memory", type=int, default=256)
    ap.add_argument("--vcpus", type=int, default=1)
    a = ap.parse_args()
    times, hwms = [], []
    for _ in range(a.runs):
        t, h = one_run(a.memory, a.vcpus)
        times.append(t)
        hwms.append(h)
        time.sleep(0.3)
    res = {"bench": "boot", "memory_mib": a.memory, "vcpus": a.vcpus, "runs": a.runs,
           "median_ms": round(statistics.median(times) * 1000, 1),
           "min_ms": round(min(times) * 1000, 1), "max_ms": round(max(times) * 1000, 1),
           "vmm_hwm_kib": max(hwms), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    print(f"{'guest':>14} {'median':>9} {'min':>9} {'max':>9} {'VMM HWM':>10}")
    print(f"{a.memory:>6} MiB x{a.vcpus:<3} {res['median_ms']:>7} ms {res['min_ms']:>6} ms "
          f"{res['max_ms']:>6} ms {res['vmm_hwm_kib'] / 1024:>7.1f} MiB")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "boot.jsonl"), "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    sys.exit(main())
