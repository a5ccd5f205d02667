#!/usr/bin/env python3
"""The operator's exit from a source job kept waiting on its destination
(`domjobabort --force-resume`, docs/migration-protocol.md "Confirm"):
  - the source daemon dies before Finish (fault src-before-finish) and the
    destination loses its record (its daemon and incoming VMM killed, its
    job file gone): the restarted source hears `unknown` and keeps its
    guest paused in perform-done (wait-peer). Plain domjobabort is refused
    and names --force-resume; --force-resume resumes the guest here (event
    Resumed Migrated, the job ended failed, its file gone), and another
    restart does not bring the job back;
  - the same decision while the domain-migrate request still waits for the
    destination (its daemon killed during Perform, its port held by a
    listener that never answers): the request's thread is taken over: it
    asks no more and acts on nothing, and its client is told why;
  - the same decision while Finish is in flight (the destination daemon
    stopped with SIGSTOP after Perform): it waits for the answer; the
    destination, continued, resumes the guest and says `running`: the
    source confirms, and the forced resume is refused, having done
    nothing (the guest runs on the destination only);
  - after a post-copy switch the source keeps its guest paused and
    --force-resume is refused, whether the job recorded the switch or only
    its VMM reports it (postcopy-started true; the job file edited to hide
    the record)."""
# timeout: 360
import json
import os
import re
import signal
import subprocess
import sys
import time

from godwit_test import need_netns, run_test, wait_until
from godwitd_test import (GODWIT, EventWatcher, MigHosts, finish_proc, heartbeats, jobinfo, pid_alive,
                          vmm_kind)

# Slow enough to converge over 1 MiB/s in a few seconds (the fake VMM's
# 4 MiB first, then a few passes); the real guest dirties no more.
GUEST = "workload=dirty wss=1M rate=100 beat-ms=500"


def main():
    need_netns()
    print("VMM:", vmm_kind())
    with MigHosts(tag="gwo") as h:
        a, b = h.a, h.b
        h.start_guest(a, cmdline=GUEST)
        forced_after_unknown(h, a, b)
        worker_taken_over(h, a, b)
        finish_in_flight(h, a, b)
        h.migrate(b, a, "vm1")  # back, for the last one
        postcopy_refused(h, a, b)


def uuid_of(d, name):
    with open(os.path.join(d.state, "domains", f"{name}.json")) as f:
        return json.load(f)["uuid"]


def job_path(d, name):
    return os.path.join(d.state, "jobs", f"{uuid_of(d, name)}.json")


def down(d):
    """The daemon killed (SIGKILL), or reaped when it exited by itself."""
    d.stop(signal.SIGKILL)


def forget(h, d, name):
    """d loses every record of `name`'s migration: its daemon and the
    incoming VMM killed, the job file gone, the daemon started again (it
    finds no VMM: the domain is shut off there)."""
    pid = d.status(name).get("pid")
    down(d)
    if pid:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10, "the incoming VMM to die")
    for f in os.listdir(os.path.join(d.state, "jobs")):
        os.unlink(os.path.join(d.state, "jobs", f))
    h.restart(d)
    assert not d.state_of(name).startswith(("running", "paused")), d.state_of(name)


def source_dies_before_finish(h, a, b, *opts, postcopy=False):
    """Migrate with the source daemon exiting after it saved perform-done,
    before Finish went out."""
    h.restart(a, env={"GODWIT_FAULT_INJECT": "src-before-finish"})
    if postcopy:
        p = h.migrate_bg(a, b, "1", "--postcopy", *opts)
        a.run("migrate-postcopy", "vm1")
        finish_proc(p, 60)
    else:
        r = h.migrate(a, b, "vm1", "--live", *opts, check=False)
        assert r.rc == 1, r
    assert "injected fault src-before-finish" in a.log_text(), a.log_text()[-3000:]
    down(a)
    with open(job_path(a, "vm1")) as f:
        job = json.load(f)
    assert job["phase"] == "perform-done" and job["postcopy_started"] == postcopy, job
    return job


def forced_after_unknown(h, a, b):
    print("the destination has no record: the source waits; --force-resume resumes it here")
    source_dies_before_finish(h, a, b)
    forget(h, b, "vm1")
    h.restart(a)
    log = a.log_text()
    assert "the destination says unknown" in log, log[-3000:]
    assert re.search(r"phase perform-done, VMM alive, completed\): wait-peer", log), log[-3000:]
    assert a.state_of("vm1").startswith("paused"), a.state_of("vm1")
    r = a.run("domjobabort", "vm1", check=False)
    assert r.rc == 1 and "--force-resume" in r.err and "perform-done" in r.err, r
    assert a.state_of("vm1").startswith("paused"), a.state_of("vm1")
    ev = EventWatcher(a)
    a.run("domjobabort", "--force-resume", "vm1")
    assert a.state_of("vm1") == "running (migration canceled)", a.state_of("vm1")
    ev.wait_for("Resumed Migrated")
    ev.wait_for("job-completed")
    ev.close()
    assert re.search(r"warn.*forced the guest's resume here", a.log_text()), a.log_text()[-3000:]
    assert not os.path.exists(job_path(a, "vm1"))
    assert "None" in jobinfo(a, "vm1")["Job type"]
    done = a.run("domjobinfo", "--completed", "--anystats", "vm1").out
    assert re.search(r"Job type: +Failed", done) and \
        re.search(r"Error message: +migration given up by the operator \(domjobabort --force-resume\)",
                  done), done
    n = len(heartbeats(a, "vm1"))
    wait_until(lambda: len(heartbeats(a, "vm1")) > n, 20, "the guest's heartbeat on the source")
    r = a.run("domjobabort", "--force-resume", "vm1", check=False)
    assert r.rc == 1 and "no job is active" in r.err, r
    # a restart does not find the job again
    before = a.log_text().count("wait-peer")
    h.restart(a)
    assert a.log_text().count("wait-peer") == before, a.log_text()[-3000:]
    assert a.state_of("vm1").startswith("running"), a.state_of("vm1")
    assert "None" in jobinfo(a, "vm1")["Job type"]
    a.run("suspend", "vm1")  # the domain is free again
    a.run("resume", "vm1")
    assert not b.state_of("vm1").startswith(("running", "paused")), b.state_of("vm1")


def hold_port(h, i):
    """A listener on host i's daemon port that accepts nothing: a peer that
    connects there waits for its whole connect deadline."""
    code = ("import socket, time\n"
            "s = socket.socket()\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(({h.net.addr[i]!r}, {h.PORT}))\n"
            "s.listen(64)\n"
            "print('listening', flush=True)\n"
            "time.sleep(600)\n")
    p = subprocess.Popen(["ip", "netns", "exec", h.net.ns[i], sys.executable, "-c", code],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "listening"
    return p


def worker_taken_over(h, a, b):
    print("--force-resume while domain-migrate still asks the destination")
    p = h.migrate_bg(a, b, "1")
    down(b)  # during Perform: the VMMs stream on, Finish gets no answer
    holder = hold_port(h, 1)
    try:
        try:
            wait_until(lambda: "asking the destination" in a.log_text(), 60, "Finish to go unanswered")
        except Exception:
            print(a.log_text()[-6000:])
            raise
        assert a.state_of("vm1").startswith("paused"), a.state_of("vm1")
        t0 = time.time()
        a.run("domjobabort", "--force-resume", "vm1")
        assert time.time() - t0 < 5  # the request's thread was not sending Finish: no wait
        assert a.state_of("vm1") == "running (migration canceled)", a.state_of("vm1")
        rc, err = finish_proc(p, 30)  # its next look sees the job taken over
        assert rc == 1 and "--force-resume" in err, (rc, err)
        log = a.log_text()
        assert "stops asking the destination" in log, log[-3000:]
        assert not os.path.exists(job_path(a, "vm1"))
    finally:
        holder.kill()
        holder.wait()
    forget(h, b, "vm1")
    time.sleep(2)  # nothing acts on the job any more
    assert a.state_of("vm1") == "running (migration canceled)", a.state_of("vm1")
    assert "None" in jobinfo(a, "vm1")["Job type"]
    assert jobinfo(a, "vm1", completed=True)["Job type"] == "Failed"


def finish_in_flight(h, a, b):
    print("--force-resume while Finish is in flight waits for its answer")
    sent, forced = (a.log_text().count(t) for t in ("perform -> perform-done", "forced the guest's resume"))
    p = h.migrate_bg(a, b, "1")
    pid = b.proc.pid
    with open(f"/proc/{pid}/comm") as f:
        assert f.read().strip() == "godwitd"
    os.kill(pid, signal.SIGSTOP)  # Finish will wait for its answer
    try:
        wait_until(lambda: a.log_text().count("perform -> perform-done") > sent, 60, "Finish to be sent")
        time.sleep(0.5)
        force = subprocess.Popen(["ip", "netns", "exec", h.net.ns[0], GODWIT, "-c", a.uri, "domjobabort",
                                  "--force-resume", "vm1"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert force.poll() is None, "the forced resume did not wait for Finish"
        assert a.state_of("vm1").startswith("paused"), a.state_of("vm1")
    finally:
        os.kill(pid, signal.SIGCONT)  # the destination resumes the guest and answers running
    rc, err = finish_proc(force, 60)
    assert rc == 1 and ("ended meanwhile" in err or "phase confirm" in err), (rc, err)
    print("  ", err.strip())
    rc, err = finish_proc(p, 60)
    assert rc == 0, err
    assert a.log_text().count("forced the guest's resume") == forced, a.log_text()[-3000:]
    assert a.state_of("vm1") == "shut off (migrated)", a.state_of("vm1")
    assert b.state_of("vm1") == "running (migrated)", b.state_of("vm1")
    n = len(heartbeats(b, "vm1"))
    wait_until(lambda: len(heartbeats(b, "vm1")) > n, 20, "the guest's heartbeat on the destination")


def refused_paused(a, why):
    r = a.run("domjobabort", "--force-resume", "vm1", check=False)
    assert r.rc == 1 and why in r.err, r
    assert a.state_of("vm1").startswith("paused"), a.state_of("vm1")
    assert os.path.exists(job_path(a, "vm1"))
    n = len(heartbeats(a, "vm1"))
    time.sleep(1.5)
    assert len(heartbeats(a, "vm1")) == n, "the guest runs on the source"
    return r


def postcopy_refused(h, a, b):
    print("after a post-copy switch --force-resume is refused")
    job = source_dies_before_finish(h, a, b, postcopy=True)
    down(b)  # unreachable: the source keeps the job in perform-done (wait-peer)
    # the job's record hidden: only the VMM says it handed the guest over
    job["postcopy_started"] = False
    with open(job_path(a, "vm1"), "w") as f:
        json.dump(job, f)
    h.restart(a)
    assert re.search(r"phase perform-done, VMM alive, [a-z-]+\): wait-peer", a.log_text()), \
        a.log_text()[-3000:]
    r = a.run("domjobabort", "vm1", check=False)
    assert r.rc == 1 and "--force-resume" in r.err, r
    refused_paused(a, "postcopy-started: true")
    # the job's record
    a.stop()
    job["postcopy_started"] = True
    with open(job_path(a, "vm1"), "w") as f:
        json.dump(job, f)
    h.restart(a)
    r = a.run("domjobabort", "vm1", check=False)
    assert r.rc == 1 and "--force-resume" not in r.err, r
    refused_paused(a, "handed the guest over to the destination by post-copy")


if __name__ == "__main__":
    run_test(main)
