#!/usr/bin/env python3
"""Daemon restarts in the middle of a migration, and a broken post-copy:
  - the source daemon killed during Perform and restarted: it finds the
    saved job (phase perform), resumes the guest and tells the destination,
    which discards its copy: the guest runs on the source only; first
    restarted once with the domain's definition damaged: the job file is
    kept (it was dropped); then with the job file damaged: the domain is
    held, destroy/resume/start refused (it was free to be resumed or
    destroyed); the restart after the repair recovers the job;
  - the same during the first pass of a hybrid migration (phase
    perform-postcopy: its VMM could switch by itself, but had not);
  - the destination daemon killed during Perform and restarted: it kills
    the incoming VMM (phase prepare, stream not complete), the source's
    migration fails and it resumes the guest: the guest runs on the source;
  - the source daemon stopped (SIGTERM) during Confirm's post-copy wait
    and restarted: the destination says running, the source VMM still
    serves pages (postcopy-active): it waits for completed, then quits
    the VMM (confirm-postcopy); the guest is whole on the destination;
  - the destination daemon killed while post-copy runs (its job in
    finish, the guest running there, pages still coming): the restarted
    daemon keeps the VMM and watches it again (continue) until the stream
    completes, then ends the job;
  - the source daemon dies after saving perform-done, before Finish went
    out (fault src-before-finish) of a pre-copy migration: restarted, it
    hears "prepared" and sends Finish labelled by the job's mode: the
    destination resumes the guest as migrated, not post-copy;
  - post-copy whose stream is cut (sockets destroyed with ss -K): both
    hosts pause the guest with reason "post-copy failed"; destroy is
    refused; the destination daemon killed and restarted then keeps its
    job and VMM as they were (still paused, post-copy failed, the job's
    statistics show the failure); `migrate --postcopy-resume` recovers it,
    the guest runs on the destination and its job ends there;
  - the same broken again, then given up with domjobabort on both hosts:
    the job ends, the guest stays paused, destroy discards it."""
# timeout: 420
import os
import re
import signal
import subprocess
import time

from godwit_test import need_netns, run_test, wait_until
from godwitd_test import (FILLED_GUEST, EventWatcher, MigHosts, finish_proc, guest_self_check, have_kvm,
                          heartbeats, jobinfo, pid_alive, vmm_kind)

SLOW = "1" if not have_kvm() else "8"


def main():
    need_netns()
    print("VMM:", vmm_kind())
    with MigHosts(tag="gwr") as h:
        a, b = h.a, h.b
        h.start_guest(a, real_cmdline=FILLED_GUEST)
        source_restart(h, a, b)
        hybrid_source_restart(h, a, b)
        destination_restart(h, a, b)
        source_stop_in_postcopy(h, a, b)
        h.migrate(b, a, "vm1")  # back, for the next ones
        runs_only_on(a, b)
        destination_restart_in_postcopy(h, a, b)
        source_restart_before_finish(h, b, a)
        postcopy_broken(h, a, b)
        postcopy_given_up(h, b, a)


def runs_only_on(here, there):
    wait_until(lambda: here.state_of("vm1").startswith("running"), 30, "the guest to run")
    wait_until(lambda: not there.run("domstate", "vm1", check=False).out.strip().startswith(
        ("running", "paused")), 30, "the other host to hold no guest")
    n = len(heartbeats(here, "vm1"))
    wait_until(lambda: len(heartbeats(here, "vm1")) > n, 20, "the guest's heartbeat")
    if not here.fake:  # and its memory is whole
        report = guest_self_check(here, "vm1")
        assert report == "REPORT ok", report
    for d in (here, there):
        r = d.run("domjobinfo", "vm1", check=False)
        assert r.rc == 1 or "Job type:         None" in r.out, r


def source_restart(h, a, b):
    print("the source daemon is killed during Perform")
    p = h.migrate_bg(a, b, SLOW)
    a.stop(signal.SIGKILL)
    job = [f for f in os.listdir(os.path.join(a.state, "jobs")) if f.endswith(".json")]
    assert len(job) == 1, job
    def_file = os.path.join(a.state, "domains", "vm1.json")
    with open(def_file) as f:
        good = f.read()
    with open(def_file, "a") as f:
        f.write("damaged")
    h.restart(a)
    assert "is kept for the next start" in a.log_text(), a.log_text()[-3000:]
    assert os.path.exists(os.path.join(a.state, "jobs", job[0])), "the job file was dropped"
    a.stop(signal.SIGKILL)
    with open(def_file, "w") as f:
        f.write(good)
    # the job file damaged: the domain is held, every operation refused
    job_file = os.path.join(a.state, "jobs", job[0])
    with open(job_file) as f:
        record = f.read()
    with open(job_file, "a") as f:
        f.write("damaged")
    h.restart(a)
    for verb in ("destroy", "resume", "start"):
        r = a.run(verb, "vm1", check=False)
        assert r.rc == 1 and "job file could not be read" in r.err, (verb, r)
    a.stop(signal.SIGKILL)
    with open(job_file, "w") as f:
        f.write(record)
    h.restart(a)
    finish_proc(p, 120)
    log = a.log_text()
    assert "resume-source" in log, log[-3000:]
    runs_only_on(a, b)
    print("  ", a.state_of("vm1"))


def hybrid_source_restart(h, a, b):
    print("the source daemon is killed during the first pass of a hybrid migration")
    p = h.migrate_bg(a, b, SLOW, "--postcopy", "--postcopy-after-precopy")
    h.restart(a, kill=True)
    finish_proc(p, 120)
    log = a.log_text()
    # saved as perform-postcopy (the VMM could switch by itself), but the
    # VMM says it never handed the guest over: the source keeps it
    assert re.search(r"phase perform-postcopy, VMM alive, (active|setup)\): resume-source", log), log[-3000:]
    runs_only_on(a, b)
    print("  ", a.state_of("vm1"))


def destination_restart(h, a, b):
    print("the destination daemon is killed during Perform")
    p = h.migrate_bg(a, b, SLOW)
    h.restart(b, kill=True)
    rc, err = finish_proc(p, 120)
    assert rc == 1, err
    assert "kill-incoming" in b.log_text(), b.log_text()[-3000:]
    runs_only_on(a, b)


def source_stop_in_postcopy(h, a, b):
    print("the source daemon is stopped during Confirm's post-copy wait")
    ev_b = EventWatcher(b)
    # slow enough that post-copy still runs after the restart
    p = h.migrate_bg(a, b, "2" if have_kvm() else SLOW, "--postcopy")
    a.run("migrate-postcopy", "vm1")
    ev_b.wait_for("Resumed Post-copy", 30)
    time.sleep(0.5)  # Finish answered: the source waits in perform-done
    h.restart(a)  # SIGTERM: the phase stays, the VMMs go on
    finish_proc(p, 60)
    log = a.log_text()
    assert re.search(r"phase perform-done, VMM alive, postcopy-active\): confirm-postcopy", log), log[-3000:]
    assert "post-copy failed" not in a.state_of("vm1"), a.state_of("vm1")
    wait_until(lambda: a.state_of("vm1") == "shut off (migrated)", 120, "the source to complete Confirm")
    runs_only_on(b, a)
    ev_b.close()


def destination_restart_in_postcopy(h, a, b):
    print("the destination daemon is killed while post-copy runs")
    ev_b = EventWatcher(b)
    p = h.migrate_bg(a, b, "2" if have_kvm() else SLOW, "--postcopy")
    a.run("migrate-postcopy", "vm1")
    ev_b.wait_for("Resumed Post-copy", 30)
    ev_b.close()
    pid = b.status("vm1")["pid"]
    h.restart(b, kill=True)
    log = b.log_text()
    # not ended at once: the VMM still fetches pages from the source
    assert re.search(r"phase finish, VMM alive, postcopy-active\): continue", log), log[-3000:]
    assert b.status("vm1")["pid"] == pid and pid_alive(pid)
    rc, err = finish_proc(p, 120)
    assert rc == 0, err
    wait_until(lambda: a.state_of("vm1") == "shut off (migrated)", 120, "the source to complete Confirm")
    # the watcher ended the job when the VMM completed, as without the restart
    wait_until(lambda: "None" in jobinfo(b, "vm1")["Job type"], 30, "the destination's job to end")
    assert jobinfo(b, "vm1", completed=True)["Job type"] == "Completed"
    assert b.state_of("vm1") == "running (migrated)", b.state_of("vm1")
    assert b.status("vm1")["pid"] == pid
    runs_only_on(b, a)


def source_restart_before_finish(h, src, dst):
    print("the source daemon dies before Finish of a pre-copy migration")
    ev = EventWatcher(dst)
    h.restart(src, env={"GODWIT_FAULT_INJECT": "src-before-finish"})
    r = h.migrate(src, dst, "vm1", check=False)
    assert r.rc == 1, r
    assert "injected fault src-before-finish" in src.log_text()
    h.restart(src, kill=True)  # it exited; start it again without the fault
    log = src.log_text()
    assert re.search(r"phase perform-done, VMM alive, completed\): continue", log), log[-3000:]
    wait_until(lambda: src.state_of("vm1") == "shut off (migrated)", 60, "the source to complete Confirm")
    # Finish (sent again) said pre-copy: resumed as migrated, never post-copy
    ev.wait_for("Resumed Migrated", 30)
    assert not any("Post-copy" in l for l in ev.lines), ev.lines
    assert dst.state_of("vm1") == "running (migrated)", dst.state_of("vm1")
    ev.close()
    runs_only_on(dst, src)


def cut_stream(h):
    for ns in h.net.ns:
        subprocess.run(["ip", "netns", "exec", ns, "ss", "-K", "( sport >= :49152 and sport <= :49215 )"],
                       capture_output=True)
        subprocess.run(["ip", "netns", "exec", ns, "ss", "-K", "( dport >= :49152 and dport <= :49215 )"],
                       capture_output=True)


def postcopy_broken(h, a, b):
    print("post-copy broken, then recovered with --postcopy-resume")
    ev_a, ev_b = EventWatcher(a), EventWatcher(b)
    p = h.migrate_bg(a, b, SLOW, "--postcopy")
    a.run("migrate-postcopy", "vm1")
    ev_b.wait_for("Resumed Post-copy", 30)
    time.sleep(0.3)
    cut_stream(h)
    rc, err = finish_proc(p, 120)
    assert rc == 1 and "post-copy" in err, err
    for d in (a, b):
        wait_until(lambda d=d: d.state_of("vm1") == "paused (post-copy failed)", 30,
                   "both hosts to pause with post-copy failed")
    ev_a.wait_for("Suspended Post-copy Error")
    ev_b.wait_for("Suspended Post-copy Error")
    ev_b.close()
    r = a.run("destroy", "vm1", check=False)
    assert r.rc == 1 and "job" in r.err, r
    # the destination daemon restarted meanwhile: the same job, VMM and state
    pid, before = b.status("vm1")["pid"], jobinfo(b, "vm1")
    h.restart(b, kill=True)
    log = b.log_text()
    assert re.search(r"phase postcopy-failed, VMM alive, postcopy-paused\): continue", log), log[-3000:]
    assert b.status("vm1")["pid"] == pid and pid_alive(pid)
    assert b.state_of("vm1") == "paused (post-copy failed)", b.state_of("vm1")
    after = jobinfo(b, "vm1")
    assert after["Job type"] == "Unbounded" and after.get("Error message") == before.get("Error message"), \
        (before, after)
    assert after.get("Error message"), after
    r = b.run("destroy", "vm1", check=False)
    assert r.rc == 1 and "job" in r.err, r
    ev_b = EventWatcher(b)
    a.run("migrate-setspeed", "vm1", "1000")
    r = h.migrate(a, b, "vm1", "--postcopy-resume", check=False)
    assert r.rc == 0, r
    assert "post-copy recovery over" in a.log_text()
    ev_b.wait_for("Resumed Post-copy")
    assert a.state_of("vm1") == "shut off (migrated)", a.state_of("vm1")
    # the restarted destination's watcher ends its job when the VMM completes
    wait_until(lambda: "None" in jobinfo(b, "vm1")["Job type"], 30, "the destination's job to end")
    runs_only_on(b, a)
    ev_a.close()
    ev_b.close()


def postcopy_given_up(h, b, a):
    print("post-copy broken again, then given up")
    p = h.migrate_bg(b, a, SLOW, "--postcopy")
    b.run("migrate-postcopy", "vm1")
    wait_until(lambda: a.state_of("vm1") == "running (post-copy)", 30, "post-copy to run")
    time.sleep(0.3)
    cut_stream(h)
    rc, err = finish_proc(p, 120)
    assert rc == 1, err
    for d in (a, b):
        wait_until(lambda d=d: d.state_of("vm1") == "paused (post-copy failed)", 30,
                   "both hosts to pause with post-copy failed")
        d.run("domjobabort", "vm1")
        assert d.state_of("vm1") == "paused (post-copy failed)"
        assert jobinfo(d, "vm1", completed=True)["Job type"] == "Failed"
        d.run("destroy", "vm1")
        assert d.state_of("vm1") == "shut off (destroyed)", d.state_of("vm1")


run_test(main)
