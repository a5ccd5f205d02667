#!/usr/bin/env python3
"""Each phase of a migration between two daemons made to fail in turn;
afterwards the guest runs in exactly one place and the job is over on both
hosts:
  Begin refused (post-copy forbidden by the domain's policy),
  peer unreachable, Prepare refused (the name runs on the destination),
  Perform: the destination VMM killed, the operator's domjobabort, the
  source VMM killed (the guest is lost: crashed on the source, nothing on
  the destination), Finish failure (destination fault injection),
  Confirm lost (the source daemon dies right after Finish; restarted, it
  asks the destination and completes Confirm), Finish answer lost (the
  destination daemon dies after resuming the guest, before answering; the
  source keeps its copy paused, asks migration-status until the restarted
  destination, which completed Finish, says "running", then confirms)."""
# timeout: 300
import os
import signal
import subprocess

from godwit_test import need_netns, run_test, wait_until
from godwitd_test import (FILLED_GUEST, GODWIT, MigHosts, finish_proc, guest_self_check, have_kvm,
                          heartbeats, jobinfo, vmm_kind)

SLOW = "1" if not have_kvm() else "8"


def main():
    need_netns()
    print("VMM:", vmm_kind())
    with MigHosts(tag="gwf") as h:
        a, b = h.a, h.b
        h.start_guest(a, real_cmdline=FILLED_GUEST)
        begin_refused(h, a, b)
        unreachable(h, a, b)
        prepare_refused(h, a, b)
        perform_dst_vmm_killed(h, a, b)
        perform_aborted(h, a, b)
        finish_failure(h, a, b)
        confirm_lost(h, a, b)
        finish_answer_lost(h, b, a)
        perform_src_vmm_killed(h, b, a)


def only_on(here, there, state="running"):
    """The guest runs on `here` only; no job on either side."""
    assert here.state_of("vm1").startswith(state), here.state_of("vm1")
    r = there.run("domstate", "--reason", "vm1", check=False)
    assert r.rc == 1 or not r.out.strip().startswith(("running", "paused")), r
    for d in (here, there):
        r = d.run("domjobinfo", "vm1", check=False)
        assert r.rc == 1 or "Job type:         None" in r.out, r
    n = len(heartbeats(here, "vm1"))
    wait_until(lambda: len(heartbeats(here, "vm1")) > n, 20, "the guest's heartbeat")
    if not here.fake:  # and its memory is whole
        report = guest_self_check(here, "vm1")
        assert report == "REPORT ok", report


def failed_job(d):
    done = jobinfo(d, "vm1", completed=True)
    assert done["Job type"] == "Failed", done
    return done


def begin_refused(h, a, b):
    print("Begin refused: post-copy forbidden by the domain")
    a.define("strict", migration={"permit_postcopy": False})
    a.run("start", "strict")
    r = h.migrate(a, b, "strict", "--postcopy", check=False)
    assert r.rc == 1 and "not permitted" in r.err, r
    assert a.state_of("strict") == "running (booted)"
    assert "strict" not in b.run("list", "--all").out
    a.run("destroy", "strict")


def unreachable(h, a, b):
    print("peer unreachable")
    r = a.run("migrate", "--live", "vm1", f"tcp:{h.net.addr[1]}:16600", check=False)
    assert r.rc == 1 and "cannot reach the destination daemon" in r.err, r
    only_on(a, b)
    failed_job(a)


def prepare_refused(h, a, b):
    print("Prepare refused: a domain with that name runs on the destination")
    b.define("vm1")  # another UUID
    b.run("start", "vm1")
    r = h.migrate(a, b, "vm1", "--live", check=False)
    assert r.rc == 1 and "destination refused" in r.err and "already" in r.err, r
    assert a.state_of("vm1") == "running (booted)"
    assert b.state_of("vm1") == "running (booted)"
    b.run("destroy", "vm1")
    b.run("undefine", "vm1")
    only_on(a, b)


def perform_dst_vmm_killed(h, a, b):
    print("Perform: the destination VMM is killed")
    p = h.migrate_bg(a, b, SLOW)
    wait_until(lambda: b.vmm_pids(), 10, "the incoming VMM")
    for pid in b.vmm_pids():
        os.kill(pid, signal.SIGKILL)
    rc, err = finish_proc(p, 90)
    assert rc == 1 and "error:" in err, err
    wait_until(lambda: "vm1" not in b.run("list", "--all").out, 20, "the destination to forget vm1")
    only_on(a, b)
    print("  source:", failed_job(a)["Error message"] if "Error message" in failed_job(a) else err.strip())


def perform_aborted(h, a, b):
    print("Perform: domjobabort")
    p = h.migrate_bg(a, b, SLOW)
    a.run("domjobabort", "vm1")
    rc, err = finish_proc(p, 90)
    assert rc == 1 and "canceled by client" in err, err
    wait_until(lambda: "vm1" not in b.run("list", "--all").out, 20, "the destination to forget vm1")
    only_on(a, b)


def finish_failure(h, a, b):
    print("Finish fails on the destination")
    h.restart(b, env={"GODWIT_FAULT_INJECT": "dst-finish-fail"})
    r = h.migrate(a, b, "vm1", "--live", check=False)
    assert r.rc == 1 and "dst-finish-fail" in r.err, r
    assert a.state_of("vm1") == "running (migration canceled)", a.state_of("vm1")
    wait_until(lambda: "vm1" not in b.run("list", "--all").out, 20, "the destination to forget vm1")
    only_on(a, b)
    h.restart(b)


def confirm_lost(h, a, b):
    print("Confirm lost: the source daemon dies after Finish; restarted, it confirms")
    h.restart(a, env={"GODWIT_FAULT_INJECT": "src-after-finish"})
    r = h.migrate(a, b, "vm1", "--live", check=False)
    assert r.rc == 1, r
    wait_until(lambda: a.proc.poll() is not None, 10, "the source daemon to die")
    assert a.proc.returncode == 99, a.proc.returncode
    a.proc = None
    a.log.close()
    assert b.state_of("vm1") == "running (migrated)", b.state_of("vm1")
    h.restart(a)
    assert "ask-peer" in a.log_text() or "kill-source" in a.log_text(), a.log_text()[-2000:]
    wait_until(lambda: a.state_of("vm1") == "shut off (migrated)", 20, "the source to confirm")
    only_on(b, a)


def finish_answer_lost(h, b, a):
    print("Finish answer lost: the destination daemon dies before answering")
    h.restart(a, env={"GODWIT_FAULT_INJECT": "dst-finish-lost"})
    mig = subprocess.Popen(["ip", "netns", "exec", h.net.ns[1], GODWIT, "-c", b.uri, "migrate",
                            "--live", "vm1", a.peer], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    wait_until(lambda: a.proc.poll() is not None, 30, "the destination daemon to die")
    assert a.proc.returncode == 99, a.proc.returncode
    a.proc = None
    a.log.close()
    assert b.state_of("vm1").startswith("paused"), b.state_of("vm1")  # never resumed on a lost answer
    h.restart(a)
    rc, err = finish_proc(mig, 90)
    assert rc == 0, err
    assert "resume-incoming" in a.log_text(), a.log_text()[-2000:]
    assert "asking the destination" in b.log_text(), b.log_text()[-2000:]
    assert b.state_of("vm1") == "shut off (migrated)", b.state_of("vm1")
    only_on(a, b)
    # back to B for the next case
    h.migrate(a, b, "vm1", "--live")


def perform_src_vmm_killed(h, b, a):
    print("Perform: the source VMM is killed (the guest is lost)")
    p = h.migrate_bg(b, a, SLOW)
    pid = b.status("vm1")["pid"]
    os.kill(pid, signal.SIGKILL)
    rc, err = finish_proc(p, 90)
    assert rc == 1, err
    wait_until(lambda: b.state_of("vm1") == "shut off (crashed)", 20, "the source to be crashed")
    wait_until(lambda: not a.state_of("vm1").startswith(("running", "paused")), 20,
               "the destination to discard its copy")
    failed_job(b)


run_test(main)
