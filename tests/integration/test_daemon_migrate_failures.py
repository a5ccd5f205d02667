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
  destination, which completed Finish, says "running", then confirms),
  post-copy whose last message (RP_POSTCOPY_DONE) is lost with the
  connection (fake VMM only, `fake-lose-done`: the destination VMM
  completed, the source VMM stays postcopy-paused): the source's Confirm
  asks the destination, resumes the stream there and completes by itself;
  the same while the destination daemon is down (the source pauses with
  post-copy failed; the restarted destination ends its job) completes with
  `migrate --postcopy-resume`."""
# timeout: 300
import os
import re
import signal
import subprocess
import time

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
        postcopy_done_lost(h, a, b)
        postcopy_done_lost_peer_down(h, a, b)


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


LOSE_DONE = "workload=dirty wss=1M rate=1000 beat-ms=500 fake-lose-done"


def start_lose_done(h, a):
    """A domain whose destination VMM loses its last post-copy message."""
    a.define("pcdone", cmdline=LOSE_DONE)
    a.run("start", "pcdone")
    wait_until(lambda: len(heartbeats(a, "pcdone")) >= 1, 30, "heartbeats on pcdone")


def done_on(here, there):
    """pcdone migrated: it runs on `here`, the source quit its VMM, both jobs completed."""
    assert there.state_of("pcdone") == "shut off (migrated)", there.state_of("pcdone")
    wait_until(lambda: here.state_of("pcdone") == "running (migrated)", 30, "the destination's job to end")
    for d in (here, there):
        assert jobinfo(d, "pcdone", completed=True)["Job type"] == "Completed", d
        r = d.run("domjobinfo", "pcdone", check=False)
        assert r.rc == 1 or "Job type:         None" in r.out, r
    n = len(heartbeats(here, "pcdone"))
    wait_until(lambda: len(heartbeats(here, "pcdone")) > n, 20, "the guest's heartbeat")
    here.run("destroy", "pcdone")
    for d in (here, there):
        d.run("undefine", "pcdone")


def postcopy_done_lost(h, a, b):
    print("post-copy: the destination's last message is lost; the source resumes to hear it")
    if not a.fake:
        print("  skipped: the real VMM has no fault point that loses RP_POSTCOPY_DONE")
        return
    start_lose_done(h, a)
    na, nb = len(a.log_text()), len(b.log_text())
    p = h.migrate_bg(a, b, SLOW, "--postcopy", name="pcdone")
    a.run("migrate-postcopy", "pcdone")
    rc, err = finish_proc(p, 120)
    assert rc == 0, err
    log_a, log_b = a.log_text()[na:], b.log_text()[nb:]
    assert "in case only its last message was lost" in log_a, log_a[-3000:]
    assert "completed here; the source resumes to hear it" in log_b, log_b[-3000:]
    assert "post-copy failed" not in log_a, log_a[-3000:]
    done_on(b, a)


def postcopy_done_lost_peer_down(h, a, b):
    print("post-copy: the last message is lost while the destination daemon is down; "
          "--postcopy-resume completes it")
    if not a.fake:
        print("  skipped: the real VMM has no fault point that loses RP_POSTCOPY_DONE")
        return
    from godwitd_test import EventWatcher
    start_lose_done(h, a)
    ev_b = EventWatcher(b)
    p = h.migrate_bg(a, b, SLOW, "--postcopy", name="pcdone")
    a.run("migrate-postcopy", "pcdone")
    ev_b.wait_for("Resumed Post-copy", 30)
    ev_b.close()
    time.sleep(0.5)  # Finish answered: the source waits in Confirm
    b.stop(signal.SIGKILL)  # its VMM goes on, completes, and loses the last message
    rc, err = finish_proc(p, 120)
    assert rc == 1 and "post-copy" in err, err
    assert a.state_of("pcdone") == "paused (post-copy failed)", a.state_of("pcdone")
    h.restart(b)
    # its job in finish (the VMM completed meanwhile): Finish is completed
    m = re.search(r"'pcdone', phase finish, VMM alive, (\S+)\): (\S+)", b.log_text())
    assert not m or m.group(2) == "resume-incoming", m.group(0)
    print("  destination restarted:", m.group(0) if m else "its job had ended")
    wait_until(lambda: b.state_of("pcdone") == "running (migrated)", 30, "the destination's job to end")
    nb = len(b.log_text())
    r = h.migrate(a, b, "pcdone", "--postcopy-resume", check=False)
    assert r.rc == 0, r
    assert "completed here; the source resumes to hear it" in b.log_text()[nb:], b.log_text()[-3000:]
    done_on(b, a)


run_test(main)
