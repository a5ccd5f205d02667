#!/usr/bin/env python3
"""The main job, as an operator does it: two hosts (network namespaces
joined by a veth pair), a godwitd on each (peer traffic over TLS with a
pre-shared key), the test guest with a visible workload (its heartbeat and
memory self-checks on the serial console) defined and started on host A
with `godwit`, migrated live to host B with pre-copy, then back to A with
post-copy; the outcome of each move (downtime, time, data, post-copy page
requests and fault latency) as `godwit domjobinfo --completed` reports it.

Needs /dev/kvm: without it this machine cannot run a guest, and the demo
says so and exits with status 1. (`--fake-vmm` runs the same daemon-driven
flow with the tests' fake VMM, a stand-in with no real guest, loudly
labelled: for developing the demo itself, not a demonstration.)"""
import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
from godwit_test import need_netns, wait_until  # noqa: E402
from godwitd_test import GODWIT, MigHosts, have_kvm, heartbeats  # noqa: E402

NAME = "demo"


def say(msg):
    print(f"== {msg}", flush=True)


def show_console(d, host, since):
    """Print the serial lines of host's domain added since offset `since`."""
    path = os.path.join(d.state, "log", f"{NAME}.log")
    try:
        with open(path, errors="replace") as f:
            f.seek(since)
            text = f.read()
            end = f.tell()
    except OSError:
        return since
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    for line in lines[-8:]:
        print(f"  {host}| {line}", flush=True)
    return end


def console_size(d):
    try:
        return os.path.getsize(os.path.join(d.state, "log", f"{NAME}.log"))
    except OSError:
        return 0


def completed(d, host):
    out = d.run("domjobinfo", "--completed", NAME).out
    for line in out.splitlines():
        if line.strip():
            print(f"  {host}| {line}", flush=True)
    return {k.strip(): v.strip() for k, v in (l.split(":", 1) for l in out.splitlines() if ":" in l)}


def migrate(h, src, dst, ns, *opts, postcopy_switch=False):
    cmd = ["ip", "netns", "exec", ns, GODWIT, "-c", src.uri, "migrate", "--live", "--verbose",
           *opts, NAME, dst.peer]
    print("  $ godwit migrate --live --verbose " + " ".join(opts) + f" {NAME} {dst.peer}", flush=True)
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    if postcopy_switch:
        wait_until(lambda: "Data remaining" in src.run("domjobinfo", NAME).out or p.poll() is not None,
                   60, "the migration to start")
        print("  $ godwit migrate-postcopy " + NAME, flush=True)
        r = src.run("migrate-postcopy", NAME, check=False)
        if r.rc != 0:
            print("  " + r.err.strip(), flush=True)
    _, err = p.communicate(timeout=600)
    print("  " + err.strip().replace("\r", "\n  ").splitlines()[-1] if err.strip() else "", flush=True)
    if p.returncode != 0:
        raise SystemExit(f"demo: migration failed: {err.strip()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fake-vmm", action="store_true",
                    help="use the tests' fake VMM (no guest runs: for developing this script)")
    args = ap.parse_args()
    if not have_kvm() and not args.fake_vmm:
        print("demo: /dev/kvm is not available on this machine, so it cannot run a guest; "
              "the demo needs a host with KVM (the migration tests run here with a fake VMM).",
              file=sys.stderr)
        return 1
    if args.fake_vmm:
        say("FAKE VMM: no guest runs; the daemons, the protocol and the client are real")
    need_netns()
    say("two hosts: network namespaces joined by a veth pair (10.77.0.1 <-> 10.77.0.2), "
        "a godwitd on each (TLS, pre-shared key)")
    with MigHosts(tag="demo", fake=True if args.fake_vmm else None) as h:
        run(h, h.a, h.b)
    say("done")
    return 0


def run(h, a, b):
    say(f"host A: define and start a 1 GiB, 2-vCPU test guest (dirty 200 MB/s + verify)")
    print(f"  $ godwit define {NAME}.json && godwit start {NAME}", flush=True)
    a.define(NAME, memory=1024, vcpus=2, cmdline="workload=dirty,verify wss=256M rate=50000")
    a.run("start", NAME)
    wait_until(lambda: len(heartbeats(a, NAME)) >= 2, 60, "the guest's heartbeat on A")
    pos_a = show_console(a, "A", 0)
    say("migrating live A -> B with pre-copy")
    migrate(h, a, b, h.net.ns[0])
    info = completed(a, "A")
    say(f"pre-copy: downtime {info.get('Total downtime', '?')}, time {info.get('Time elapsed', '?')}, "
        f"data {info.get('Data processed', '?')}, {info.get('Iteration', '?')} pass(es)")
    print(f"  host A: {a.state_of(NAME)}   host B: {b.state_of(NAME)}", flush=True)
    time.sleep(2)
    pos_b = show_console(b, "B", 0)
    say("migrating live B -> A with post-copy (switched once the copy runs)")
    size_a = console_size(a)
    migrate(h, b, a, h.net.ns[1], "--postcopy", postcopy_switch=True)
    info = completed(b, "B")
    inc = completed(a, "A")
    say(f"post-copy: downtime {info.get('Total downtime', '?')}, time {info.get('Time elapsed', '?')}, "
        f"data {info.get('Data processed', '?')}, page requests {info.get('Postcopy requests', '?')}, "
        f"fault latency {inc.get('Fault latency', 'n/a')}, "
        f"async page-fault waits {inc.get('Async PF waits', 'n/a')}")
    print(f"  host A: {a.state_of(NAME)}   host B: {b.state_of(NAME)}", flush=True)
    time.sleep(2)
    show_console(a, "A", size_a)
    ticks = sorted(heartbeats(a, NAME) + heartbeats(b, NAME))
    ok = len(ticks) == len(set(ticks)) and ticks == list(range(ticks[0], ticks[0] + len(ticks)))
    serial = "".join(open(os.path.join(d.state, "log", f"{NAME}.log"), errors="replace").read()
                     for d in (a, b))
    fails = len(re.findall(r"FAIL|mismatch", serial))
    say(f"heartbeat across both moves: ticks {ticks[0]}..{ticks[-1]} "
        f"{'consecutive, none lost or doubled' if ok else 'NOT consecutive'}; "
        f"self-check failures on the console: {fails}")
    a.run("destroy", NAME)
    if not ok or fails:
        raise SystemExit("demo: the guest did not survive its moves intact")


if __name__ == "__main__":
    sys.exit(main())
