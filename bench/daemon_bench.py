#!/usr/bin/env python3
"""Migrations as an operator runs them: two godwitd daemons on two 'hosts'
(network namespaces joined by a veth pair, peer traffic over TLS), the test
guest with a real godwit-vmm, `godwit migrate` A -> B and back. Reports what
`godwit domjobinfo --completed --rawstats` says of each move: total time,
downtime, bytes, post-copy page requests.

Scenarios
  hybrid-1g-1gbit   1 GiB guest writing a 512 MiB working set at full
                    speed, --postcopy --postcopy-after-precopy over
                    --bandwidth 119 MiB/s (1 Gbit/s)
  precopy-idle-1g   1 GiB guest holding 768 MiB, then idle; pre-copy,
                    bandwidth unlimited

Needs /dev/kvm, root (namespaces) and a build. `--repeat N` moves the guest
N times each way. Appends JSON lines to bench/results/daemon_migrate.jsonl."""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
from godwitd_test import MigHosts, have_kvm  # noqa: E402

SCENARIOS = {
    "hybrid-1g-1gbit": dict(cmd="workload=dirty wss=512M rate=0 beat-ms=10", warm_s=4,
                            opts=["--postcopy", "--postcopy-after-precopy", "--bandwidth", "119"]),
    "precopy-idle-1g": dict(cmd="workload=dirty wss=768M passes=1 beat-ms=10", warm_s=6, opts=[]),
}


def rawstats(d, name):
    out = d.run("domjobinfo", "--completed", "--rawstats", name).out
    stats = {}
    for line in out.splitlines():
        k, sep, v = line.partition(":")
        if sep and v.strip().lstrip("-").isdigit():
            stats[k.strip()] = int(v.strip())
    return stats


def run(name, sc, repeat, results):
    with MigHosts(tag="gwb") as h:
        h.start_guest(h.a, beats=5, real_cmdline=sc["cmd"], memory=1024)
        time.sleep(sc["warm_s"])
        src, dst = h.a, h.b
        for i in range(2 * repeat):
            r = h.migrate(src, dst, "vm1", "--live", *sc["opts"], check=False, timeout=300)
            if r.rc != 0:
                print(f"{name:<16} move {i + 1}: failed: {r.err.strip()}", flush=True)
                return
            st = rawstats(src, "vm1")
            row = {"bench": "daemon_migrate", "scenario": name, "move": i + 1,
                   "total_ms": st.get("time_elapsed"), "downtime_ms": st.get("downtime"),
                   "bytes": st.get("memory_processed"),
                   "postcopy_requests": st.get("memory_postcopy_requests"),
                   "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            results.append(row)
            print(f"{name:<16} move {i + 1}: {row['total_ms']} ms, downtime {row['downtime_ms']} ms, "
                  f"{(row['bytes'] or 0) / 1e6:.0f} MB, {row['postcopy_requests']} post-copy requests",
                  flush=True)
            src, dst = dst, src
            time.sleep(5)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    if not have_kvm():
        sys.exit("daemon_bench: needs /dev/kvm (the fake VMM's figures mean nothing)")
    results = []
    for name in a.scenarios:
        if name not in SCENARIOS:
            sys.exit(f"unknown scenario {name}; known: {', '.join(SCENARIOS)}")
        run(name, SCENARIOS[name], a.repeat, results)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "daemon_migrate.jsonl"), "a") as f:
        for row in results:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
