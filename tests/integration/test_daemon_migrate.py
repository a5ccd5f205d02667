#!/usr/bin/env python3
"""Migration between two godwitd daemons on two 'hosts' (network namespaces,
TLS with a pre-shared key), driven by the source daemon: the test guest
goes A -> B in pre-copy, B -> A in post-copy (switched by the operator's
migrate-postcopy), A -> B in hybrid (post-copy after the first pre-copy
pass). After each: the guest runs in exactly one place, its heartbeat
continues on the destination from where it was (the counter moved with the
guest), the destination checked the memory digest (fake VMM) or the guest
its self-check (real VMM: every page of its working set holds the count it
last wrote), the lifecycle events are libvirt's, and
domjobinfo shows the running job and, with --completed, the finished one.
While a job runs, start/destroy/a second migration are refused (JobActive)
on both hosts."""
# timeout: 300
import os
import re

from godwit_test import need_netns, run_test, wait_until
from godwitd_test import (DIRTYING_GUEST, EventWatcher, MigHosts, finish_proc, guest_self_check, have_kvm,
                          heartbeats, jobinfo, vmm_kind)

SLOW = "1" if not have_kvm() else "8"   # MiB/s: a first pass of several seconds


def main():
    need_netns()
    print("VMM:", vmm_kind())
    with MigHosts(tag="gwm") as h:
        a, b = h.a, h.b
        for cmd, word in (("migrate", "--postcopy-after-precopy"), ("migrate-postcopy", "domain"),
                          ("migrate-setmaxdowntime", "downtime"), ("migrate-getmaxdowntime", "domain"),
                          ("migrate-setspeed", "bandwidth"), ("migrate-getspeed", "domain"),
                          ("domjobinfo", "--completed"), ("domjobabort", "domain")):
            out = a.run(cmd, "--help").out
            assert "SYNOPSIS" in out and word in out, (cmd, out)
        # memory_prealloc: each destination VMM populates its RAM as it
        # starts (--mem-prealloc), while the stream arrives
        h.start_guest(a, beats=9, real_cmdline=DIRTYING_GUEST, memory_prealloc=True)
        precopy(h, a, b)
        postcopy(h, b, a)
        hybrid(h, a, b)


def check_moved(src, dst, before):
    """The guest left src and runs on dst, its heartbeat continuing."""
    assert src.state_of("vm1") == "shut off (migrated)", src.state_of("vm1")
    assert dst.state_of("vm1").startswith("running"), dst.state_of("vm1")
    wait_until(lambda: len(heartbeats(dst, "vm1")) > before[1] + 2, 30, "heartbeats on the destination")
    ticks = heartbeats(dst, "vm1")[before[1]:]
    assert ticks[0] >= before[0], f"the heartbeat restarted: {before[0]} then {ticks[:5]}"
    assert ticks == sorted(ticks), ticks
    serial = open(os.path.join(dst.state, "log", "vm1.log"), errors="replace").read()
    assert not re.search(r"FAIL|mismatch|panic", serial), serial[-2000:]
    vlog = open(os.path.join(dst.state, "log", "vm1.vmm.log"), errors="replace").read()
    if dst.fake:
        assert "memory digest at the switch-over verified" in vlog, vlog
    else:  # every page of the guest's working set holds what it last wrote there
        assert "preallocated" in vlog, vlog[-2000:]  # memory_prealloc reached the VMM
        report = guest_self_check(dst, "vm1")
        assert report == "REPORT ok", report
    print(f"  moved: last tick before {before[0]}, then {ticks[:3]} ...")


def snapshot(src, dst):
    beats = heartbeats(src, "vm1")
    return (beats[-1] if beats else 0, len(heartbeats(dst, "vm1")))


def precopy(h, a, b):
    print("pre-copy A -> B, slow link: the job as it runs")
    ev_a, ev_b = EventWatcher(a), EventWatcher(b)
    before = snapshot(a, b)
    mig = h.migrate_bg(a, b, SLOW, "--verbose")
    try:
        info = jobinfo(a, "vm1")
        assert info["Job type"] == "Unbounded", info
        assert info["Operation"] == "Outgoing migration", info
        assert "Data remaining" in info, info
        # the bandwidth is measured over a first window of the pass
        wait_until(lambda: "Memory bandwidth" in jobinfo(a, "vm1"), 10, "a measured bandwidth")
        wait_until(lambda: jobinfo(b, "vm1").get("Job type") == "Unbounded", 20, "the incoming job")
        assert jobinfo(b, "vm1")["Operation"] == "Incoming migration"
        # the job slot is held on both sides
        for d, op in ((a, "destroy"), (a, "suspend"), (b, "destroy"), (b, "start")):
            r = d.run(op, "vm1", check=False)
            assert r.rc == 1 and "migration" in r.err and "job" in r.err, (op, r)
        r = h.migrate(a, b, "vm1", check=False)
        assert r.rc == 1 and "migration out job" in r.err, r
        assert a.run("migrate-getspeed", "vm1").out.strip() == SLOW
        a.run("migrate-setmaxdowntime", "vm1", "500")
        assert a.run("migrate-getmaxdowntime", "vm1").out.strip() == "500"
        r = a.run("migrate-setmaxdowntime", "vm1", "2000001", check=False)  # over downtime-limit's range
        assert r.rc == 1 and "2000000" in r.err, r
        assert a.run("migrate-getmaxdowntime", "vm1").out.strip() == "500"
        a.run("migrate-setspeed", "vm1", "1000")  # let it finish
    except BaseException:
        mig.kill()
        raise
    rc, err = finish_proc(mig, 120)
    assert rc == 0, err
    assert "Migration: [100 %]" in err, err
    check_moved(a, b, before)
    ev_a.wait_for("Suspended Migrated")
    ev_a.wait_for("Stopped Migrated")
    ev_a.wait_for("event 'job-completed'")
    ev_a.wait_for("\ttype: ")          # the completed job's statistics, one per line
    ev_a.wait_for("\toperation: ")
    ev_a.wait_for("event 'migration-iteration'")
    ev_a.wait_for("': iteration: '")    # virsh's wording
    ev_b.wait_for("Started Migrated")
    ev_b.wait_for("Resumed Migrated")
    ev_a.close()
    ev_b.close()
    done = jobinfo(a, "vm1", completed=True)
    assert done["Job type"] == "Completed" and done["Operation"] == "Outgoing migration", done
    assert "Total downtime" in done and done["Data remaining"].startswith("0"), done
    raw = a.run("domjobinfo", "--completed", "--rawstats", "vm1").out
    assert "Job type: 3" in raw and "downtime:" in raw and "memory_iteration:" in raw, raw
    assert jobinfo(b, "vm1", completed=True)["Operation"] == "Incoming migration"
    assert jobinfo(a, "vm1")["Job type"] == "None"
    print("  downtime", done["Total downtime"], "time", done["Time elapsed"], "data", done["Data processed"])


def postcopy(h, src, dst):
    print("post-copy B -> A, switched by migrate-postcopy")
    ev_s, ev_d = EventWatcher(src), EventWatcher(dst)
    before = snapshot(src, dst)
    mig = h.migrate_bg(src, dst, SLOW, "--postcopy")
    try:
        src.run("migrate-postcopy", "vm1")
        ev_s.wait_for("Suspended Post-copy", 30)
        ev_d.wait_for("Resumed Post-copy", 30)
        r = src.run("domjobabort", "vm1", check=False)  # post-copy cannot be cancelled
        assert r.rc == 1 and "post-copy" in r.err, r
        src.run("migrate-setspeed", "vm1", "1000")
    except BaseException:
        mig.kill()
        raise
    rc, err = finish_proc(mig, 120)
    assert rc == 0, err
    check_moved(src, dst, before)
    ev_s.wait_for("Stopped Migrated")
    ev_d.wait_for("event 'job-completed'")
    ev_s.close()
    ev_d.close()
    inc = jobinfo(dst, "vm1", completed=True)
    assert inc["Job type"] == "Completed" and inc["Operation"] == "Incoming migration", inc
    print("  incoming: postcopy requests", inc.get("Postcopy requests"), "fault latency",
          inc.get("Fault latency"), "async PF waits", inc.get("Async PF waits"))
    # A real guest faulted after the switch: the fault statistics reach the
    # operator (the fake VMM's guest may take no fault).
    if not dst.fake:
        assert "Fault latency" in inc and "Postcopy blocktime" in inc and "Async PF waits" in inc, inc


def hybrid(h, src, dst):
    print("hybrid A -> B: post-copy after the first pre-copy pass")
    ev_s = EventWatcher(src)
    before = snapshot(src, dst)
    r = h.migrate(src, dst, "vm1", "--live", "--postcopy", "--postcopy-after-precopy",
                  "--bandwidth", SLOW)
    assert r.rc == 0, r
    check_moved(src, dst, before)
    ev_s.wait_for("Suspended Post-copy")
    ev_s.wait_for("Stopped Migrated")
    ev_s.close()
    # the VMM switched by itself (its postcopy-after-precopy capability, so
    # that its first pass skipped what the guest wrote again), not the daemon
    log = src.log_text()
    assert "the VMM switched to post-copy after its first pass" in log, log[-3000:]
    assert "switching to post-copy (" not in log, log[-3000:]
    done = jobinfo(src, "vm1", completed=True)
    assert int(done["Iteration"]) >= 1, done
    print("  postcopy requests", done.get("Postcopy requests"), "downtime", done.get("Total downtime"))


run_test(main)
