#!/usr/bin/env python3
"""The migration benchmark (like QEMU's guestperf): two godwit-vmm processes
on this host, loopback (Unix socket), the test guest as the workload.

Scenarios
  idle-1g   1 GiB guest holding 768 MiB of data, then idle
  idle-4g   4 GiB guest holding 3.8 GiB of data, then idle
  busy-1g   1 GiB guest writing a 512 MiB working set as fast as it can
  busy-1g-ac  the same with auto-converge and a 20 ms downtime limit

Reports total time, downtime seen by the VMMs and by the guest (the longest
gap between the guest's 10 ms heartbeats as the host receives them, source
then destination), bytes on the wire, rounds and throughput; a table and
JSON lines in bench/results/migrate.jsonl. Runs pause between scenarios:
freed memory returns to the outer host slowly here."""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
from godwit_test import VMM, migrate  # noqa: E402

SCENARIOS = {
    "idle-1g": dict(mem=1024, cmd="workload=dirty wss=768M passes=1 beat-ms=10", ready="pages=196608"),
    "idle-4g": dict(mem=4096, cmd="workload=dirty wss=3890M passes=1 beat-ms=10", ready="pages=995840"),
    "busy-1g": dict(mem=1024, cmd="workload=dirty wss=512M rate=0 beat-ms=10", ready="tick=50 "),
    "busy-1g-ac": dict(mem=1024, cmd="workload=dirty wss=512M rate=0 beat-ms=10", ready="tick=50 ",
                       caps=["auto-converge"], params={"downtime-limit": 20}),
}


def guest_gap_ms(src, dst, t_start):
    """Longest gap between heartbeat chunks from migration start to 1 s after."""
    times = [t for t, _ in src.serial_times if t >= t_start] + [t for t, _ in dst.serial_times]
    times.sort()
    gaps = [b - a for a, b in zip(times, times[1:])]
    return round(max(gaps) * 1000, 1) if gaps else None


def run(name, sc):
    with VMM(memory=sc["mem"], vcpus=1, cmdline=sc["cmd"]) as src, \
         VMM(memory=sc["mem"], vcpus=1, incoming=True) as dst:
        src.wait_serial(sc["ready"], 300)
        time.sleep(1)
        t0 = time.monotonic()
        info = migrate(src, dst, "unix:" + os.path.join(dst.dir, "m.sock"), caps=sc.get("caps", ()),
                       params=sc.get("params"), timeout=600)
        wall = time.monotonic() - t0
        time.sleep(1)
        ram = info["ram"]
        return {
            "bench": "migrate", "scenario": name, "memory_mib": sc["mem"],
            "total_ms": info["total-time"], "downtime_ms": info["downtime"],
            "guest_gap_ms": guest_gap_ms(src, dst, t0),
            "bytes": ram["transferred"], "rounds": ram["iteration"],
            "throughput_mb_s": round(ram["transferred"] / max(info["total-time"], 1) / 1000, 1),
            "throttle": info.get("cpu-throttle-percentage", 0), "wall_s": round(wall, 2),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    ap.add_argument("--pause", type=float, default=5)
    a = ap.parse_args()
    rows = []
    print(f"{'scenario':<12} {'total':>8} {'downtime':>9} {'guest gap':>10} {'wire MB':>9} "
          f"{'rounds':>6} {'MB/s':>7}")
    for i, name in enumerate(a.scenarios):
        if i:
            time.sleep(a.pause)
        r = run(name, SCENARIOS[name])
        rows.append(r)
        print(f"{name:<12} {r['total_ms']:>6} ms {r['downtime_ms']:>6} ms {str(r['guest_gap_ms']):>7} ms "
              f"{r['bytes'] / 1e6:>9.0f} {r['rounds']:>6} {r['throughput_mb_s']:>7}", flush=True)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "migrate.jsonl"), "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
