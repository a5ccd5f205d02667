#!/usr/bin/env python3
"""Post-copy and hybrid migration of the test guest between two VMM
processes (needs /dev/kvm and userfaultfd; skips visibly without them).

- A guest dirtying its RAM faster than a throttled link (max-bandwidth)
  does not converge in pre-copy; switched to post-copy by command mid-round
  it completes, and the destination's whole RAM equals the source's
  (the destination stays paused, so its RAM is the switch-over state) and
  the memory invariant holds.
- Switch at once (no pre-copy pass; the destination stopped beforehand and
  `cont` once post-copy runs, as godwitd does) and after the first pass
  (postcopy-after-precopy); both again with a destination whose RAM was
  wholly populated beforehand (--mem-prealloc): pages it lacks must fault;
  and at once with compress-zstd (push, page server and push window).
- verify, fpu and time workloads (with dirty, on 4 vCPUs) report no error across
  post-copy, and the heartbeat continues in order.
- Two hosts (network namespaces): the veth link taken down twice during
  post-copy, and migrate-pause; both sides pause, recover, finish; memory
  checked. While the first break lasts, `stop` on the destination returns
  (a vCPU waiting for a page never parks then) and `cont` after the
  recovery runs the guest again.
- The destination killed during post-copy: the source stays postcopy-paused
  and refuses cont. The source killed: the destination reports failed, is
  stopped (internal-error) and refuses pmemsave and system_reset (pages
  are missing for good); a paused destination refuses pmemsave too.
- Once post-copy handed the guest over, the source refuses cont,
  system_reset and migrate."""
# timeout: 900
import os
import time

from godwit_test import (VMM, NetnsPair, QMPError, Timeout, assert_heartbeat_continued,
                         wait_heartbeats,
                         assert_no_guest_errors,
                         check_invariant_regions, need_kvm, need_netns, ram_digest, run_test,
                         self_check, skip, start_migration, wait_migration, wait_until)


def need_uffd():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(323, 0)  # userfaultfd(2) on x86-64
    if fd < 0:
        skip("userfaultfd is not available here")
    os.close(fd)


def wait_written(vm):
    """The mem-invariant guest wrote its whole region once (one '.'): the
    post-copy that follows has every page to move, however slow the host."""
    at = vm.wait_serial("workload mem-invariant started", 60)
    vm.wait_serial(".", 180, start=at)


def start(src, dst, uri, extra_caps=(), params=None):
    start_migration(src, dst, uri, ("postcopy-ram",) + tuple(extra_caps), params)


def finish(src, dst, timeout=300):
    s = wait_migration(src, timeout)
    d = wait_migration(dst, 60)
    assert s["status"] == "completed", s
    assert d["status"] == "completed", d
    # both say it went to post-copy (a daemon trusts the source's word
    # after a crash: false would let it run the guest there again)
    assert s["postcopy-started"] is True and d["postcopy-started"] is True, (s, d)
    # no page was in memory before its data came (written outside
    # userfaultfd: it would keep the wrong data)
    assert d["postcopy-found-present"] == 0, d
    return s, d


def refused(vm, cmd, want, **args):
    """cmd is refused with an error that says `want`; the VMM still answers."""
    try:
        vm.qmp.cmd(cmd, **args)
    except QMPError as e:
        assert want in str(e), (cmd, str(e))
    else:
        raise AssertionError(f"{cmd} was accepted")
    vm.qmp.cmd("query-status")


def handed_over_source_refuses(src, dst):
    """After post-copy handed the guest over, the source's copy is stale:
    cont, system_reset, system_powerdown and a new migrate are refused
    (docs/control-api.md)."""
    assert src.status() == "postmigrate"
    for cmd, args in (("cont", {}), ("system_reset", {}), ("system_powerdown", {}),
                      ("migrate", {"uri": "unix:" + os.path.join(dst.dir, "again.sock")})):
        refused(src, cmd, "handed over to the destination by post-copy", **args)
    assert src.status() == "postmigrate"
    assert src.qmp.cmd("query-migrate")["postcopy-started"] is True


def report(tag, s, d):
    lat = d.get("postcopy-fault-latency", {})
    print(f"{tag}: total {s['total-time']} ms, downtime {s['downtime']} ms, "
          f"{s['ram']['postcopy-requests']} requests, fault p50 {lat.get('p50-us')} us "
          f"p99 {lat.get('p99-us')} us, blocked {d.get('postcopy-blocktime')} ms")


def busy_by_command():
    mem = 1024
    with VMM(memory=mem, vcpus=1, cmdline="workload=mem-invariant") as src, \
         VMM(memory=mem, vcpus=1, incoming=True) as dst:
        # Its whole region written once: every pass has all of it to move
        # (started at the announcement, this finished in ~0.2 s with no
        # page request at all)
        wait_written(src)
        dst.qmp.cmd("stop")  # stay paused: the destination's RAM stays the switch-over state
        start(src, dst, "unix:" + os.path.join(dst.dir, "m.sock"),
              params={"max-bandwidth": 100 << 20, "downtime-limit": 20})
        wait_until(lambda: src.qmp.cmd("query-migrate")["ram"]["iteration"] >= 2, 120,
                   "a second pre-copy pass (the guest must not converge)")
        src.qmp.cmd("migrate-start-postcopy")
        s, d = finish(src, dst)
        handed_over_source_refuses(src, dst)
        report("busy 1 GiB by command", s, d)
        assert s["ram"]["postcopy-bytes"] > 0, s
        assert ram_digest(src, mem, os.path.join(src.dir, "ram")) == \
            ram_digest(dst, mem, os.path.join(dst.dir, "ram")), "RAM differs after post-copy"
        check_invariant_regions(dst, mem, announced_by=src)
        dst.qmp.cmd("cont")
        self_check(dst)


def wait_preallocated(vm, mib, timeout=120):
    """--mem-prealloc populated the whole RAM (the VMM logs it)."""
    want = f"preallocated {mib} of {mib} MiB".encode()
    wait_until(lambda: want in vm.stderr, timeout, "the preallocation to end")


def at_once_and_after_pass():
    after = ("postcopy-after-precopy",)
    for tag, caps, prealloc in (("at once", (), False),
                                ("after the first pass", after, False),
                                ("at once, destination preallocated", (), True),
                                ("after the first pass, destination preallocated", after, True),
                                ("at once, compressed", ("compress-zstd",), False)):
        at_once = not caps or caps == ("compress-zstd",)
        with VMM(memory=256, vcpus=1, cmdline="workload=mem-invariant") as src, \
             VMM(memory=256, vcpus=1, incoming=True,
                 extra=("--mem-prealloc",) if prealloc else ()) as dst:
            src.wait_serial("region vcpu0", 60)
            if "compress-zstd" in caps:
                wait_written(src)  # its whole region to move, in few bytes
            if prealloc:
                # Every page is present on the destination before the stream
                # starts: one it lacks must still fault, never read as zero.
                wait_preallocated(dst, 256)
            if at_once:
                dst.qmp.cmd("stop")  # as godwitd does: the guest runs on `cont` (Finish)
            start(src, dst, "unix:" + os.path.join(dst.dir, "m.sock"), caps,
                  params={"max-bandwidth": 50 << 20, "max-postcopy-bandwidth": 50 << 20,
                          "downtime-limit": 5})
            if at_once:
                src.qmp.cmd("migrate-start-postcopy")
                # the event, not the status: a compressed post-copy can be
                # over before a poll sees it
                dst.qmp.wait_event("MIGRATION", 60,
                                   lambda e: e["data"]["status"] == "postcopy-active")
                # MIGRATION {postcopy-active} comes before the guest is
                # started (paused here: it was stopped), as in QEMU
                wait_until(lambda: dst.status() == "paused", 10, "the destination paused")
                dst.qmp.cmd("cont")
            s, d = finish(src, dst)
            report(tag, s, d)
            assert s["ram"]["iteration"] <= 1, s
            # max-postcopy-bandwidth holds for everything sent after the
            # switch, the pages sent ahead of faults included (they went
            # unpaced once, at 2-3 times the limit).
            rate = s["ram"]["transferred"] * 1000 / max(s["total-time"], 1)
            assert rate <= 1.1 * (50 << 20), f"{rate / 1e6:.1f} MB/s over a 52.4 MB/s limit"
            time.sleep(1)
            self_check(dst)
            dst.qmp.cmd("stop")
            check_invariant_regions(dst, 256, announced_by=src)


def workloads_across_postcopy():
    # vCPU 0 dirty (the heartbeat), 1 verify, 2 fpu, 3 time
    with VMM(memory=256, vcpus=4, cmdline="workload=dirty,verify,fpu,time rate=20000 wss=16M") as src, \
         VMM(memory=256, vcpus=4, incoming=True) as dst:
        src.wait_serial("verify vcpu=1 pass=1 ok", 60)
        src.wait_serial("heartbeat vcpu=0 tick=3 ", 60)
        start(src, dst, "unix:" + os.path.join(dst.dir, "m.sock"))
        src.qmp.cmd("migrate-start-postcopy")
        finish(src, dst)
        wait_heartbeats(src, dst, 6)
        self_check(dst)
        assert_heartbeat_continued(src, dst)
        assert_no_guest_errors(dst)


def wait_status(vm, status, timeout):
    last = {}

    def reached():
        last.clear()
        last.update(vm.qmp.cmd("query-migrate"))
        return last.get("status") == status
    try:
        wait_until(reached, timeout, f"{status} on {vm.cmd[0]}")
    except Timeout:
        raise Timeout(f"not {status} after {timeout}s: {last}") from None


def recover(net, src, dst, port):
    uri = f"tcp:{net.addr[1]}:{port}"
    dst.qmp.cmd("migrate-recover", uri=uri)
    src.qmp.cmd("migrate", uri=uri, resume=True)


def broken_links_recover():
    mem = 512
    with NetnsPair() as net:
        with VMM(memory=mem, vcpus=1, cmdline="workload=mem-invariant", netns=net.ns[0]) as src, \
             VMM(memory=mem, vcpus=1, incoming=True, netns=net.ns[1]) as dst:
            wait_written(src)
            start(src, dst, f"tcp:{net.addr[1]}:4500",
                  params={"max-postcopy-bandwidth": 8 << 20})
            src.qmp.cmd("migrate-start-postcopy")
            for i in range(2):  # the cable cut twice
                wait_status(dst, "postcopy-active", 60)
                time.sleep(1)
                net.link(0, False)
                wait_status(src, "postcopy-paused", 30)
                wait_status(dst, "postcopy-paused", 30)
                try:
                    src.qmp.cmd("cont")
                    raise AssertionError("the source ran the guest during post-copy")
                except QMPError:
                    pass
                # pages are missing on the destination: reading them would
                # block its main thread (and QMP) until the link is back
                refused(dst, "pmemsave", "Guest memory is still arriving", val=0, size=mem << 20,
                        filename=os.path.join(dst.dir, "paused.ram"))
                refused(dst, "system_reset", "A migration is in progress")
                if i == 0:
                    # a vCPU waiting for a page would never park: stop
                    # must not wait for it (it held QMP for good)
                    dst.qmp.cmd("stop")
                    assert dst.status() == "paused", dst.status()
                net.link(0, True)
                recover(net, src, dst, 4501 + i)
                if i == 0:
                    wait_status(dst, "postcopy-active", 60)
                    dst.qmp.cmd("cont")
                    assert dst.status() == "running", dst.status()
            wait_status(dst, "postcopy-active", 60)
            dst.qmp.cmd("migrate-pause")  # and on purpose
            wait_status(src, "postcopy-paused", 30)
            recover(net, src, dst, 4510)
            s, d = finish(src, dst)
            assert s["postcopy-pauses"] == 3, s
            report("three breaks", s, d)
            self_check(dst)
            dst.qmp.cmd("stop")
            check_invariant_regions(dst, mem, announced_by=src)


def killed_in_postcopy(victim, watcher_role):
    """Start a post-copy migration and kill one side once it runs; returns
    the other side's query-migrate."""
    with VMM(memory=512, vcpus=1, cmdline="workload=mem-invariant") as src, \
         VMM(memory=512, vcpus=1, incoming=True) as dst:
        wait_written(src)
        start(src, dst, "unix:" + os.path.join(dst.dir, "m.sock"),
              params={"max-postcopy-bandwidth": 4 << 20})
        src.qmp.cmd("migrate-start-postcopy")
        vms = {"src": src, "dst": dst}
        wait_status(vms[watcher_role], "postcopy-active", 60)
        vms[victim].kill()
        if watcher_role == "src":
            wait_status(src, "postcopy-paused", 30)
            time.sleep(1)
            info = src.qmp.cmd("query-migrate")
            assert info["status"] == "postcopy-paused" and info.get("error-desc"), info
            assert info["postcopy-started"] is True, info  # never to be resumed here
            assert src.status() != "running"
            return info
        info = wait_migration(dst, 30, states=("failed",))
        # the guest lost pages with its source: stopped (STOP), and
        # nothing may touch its memory (that would block QMP for good)
        wait_until(lambda: dst.status() == "internal-error", 10, "internal-error")
        assert dst.qmp.cmd("query-status")["running"] is False
        dst.qmp.wait_event("STOP", 10)
        refused(dst, "pmemsave", "lost the source of its post-copy migration", val=0,
                size=512 << 20, filename=os.path.join(dst.dir, "lost.ram"))
        refused(dst, "system_reset", "lost the source of its post-copy migration")
        return info


def peer_killed():
    info = killed_in_postcopy("dst", "src")
    print("destination killed; the source says:", info["error-desc"])
    info = killed_in_postcopy("src", "dst")
    assert "exited" in info["error-desc"], info
    print("source killed; the destination says:", info["error-desc"])


def main():
    need_kvm()
    need_uffd()
    at_once_and_after_pass()
    busy_by_command()
    workloads_across_postcopy()
    peer_killed()
    need_netns()
    broken_links_recover()


run_test(main)
