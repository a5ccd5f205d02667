#!/usr/bin/env python3
"""Guards against losing or duplicating the guest (fake VMM, which has the
fault words; skipped visibly with the real VMM):
  a few failed query-migrate samples during Perform are retried, not taken
  for a failed migration (`fake-query-fail=3`: the migration completes);
  a destination VMM that refuses `stop` during inmigrate
  (GODWIT_FAKE_STOP_FAILS in the destination daemon's environment) fails Prepare (it
  would start the guest when the stream completes, before Finish): the
  guest stays on the source, nothing on the destination;
  a restarted daemon whose VMM does not answer QMP while a migration job
  holds the domain keeps the VMM (never SIGKILLed: it may be a post-copy
  guest's only copy) and the job."""
# timeout: 240
import json
import os
import signal
import time

from godwit_test import need_netns, run_test, skip, wait_until
from godwitd_test import Daemon, MigHosts, heartbeats, have_kvm, pid_alive

BASE = "workload=dirty wss=1M rate=1000 beat-ms=500"


def main():
    if have_kvm():
        skip("these fault words exist in the fake VMM only")
    vmm_unreachable_kept()
    need_netns()
    with MigHosts(tag="gwg", fake=True) as h:
        query_failures_retried(h, h.a, h.b)
        stop_refused_fails_prepare(h, h.b, h.a)


def query_failures_retried(h, a, b):
    print("Perform: three failed query-migrate samples are retried")
    h.start_guest(a, cmdline=BASE + " fake-query-fail=3")
    r = h.migrate(a, b, "vm1", "--live", check=False)
    assert r.rc == 0, (r, a.log_text()[-3000:])
    assert b.state_of("vm1").startswith("running"), b.state_of("vm1")
    assert "query-migrate failed (1 in a row)" in a.log_text(), a.log_text()[-3000:]


def stop_refused_fails_prepare(h, a, b):
    print("Prepare: the incoming VMM refuses stop")
    h.start_guest(a, name="vm2")
    h.restart(b, env={"GODWIT_FAKE_STOP_FAILS": "1"})  # its incoming VMMs refuse stop
    r = h.migrate(a, b, "vm2", "--live", check=False)
    h.restart(b)
    assert r.rc == 1 and "stop during inmigrate" in r.err, r
    assert a.state_of("vm2").startswith("running"), a.state_of("vm2")
    wait_until(lambda: "vm2" not in b.run("list", "--all").out, 20, "the destination to forget vm2")
    n = len(heartbeats(a, "vm2"))
    wait_until(lambda: len(heartbeats(a, "vm2")) > n, 20, "the guest's heartbeat on the source")


def vmm_unreachable_kept():
    print("Restart: a VMM that does not answer QMP under a migration job is kept")
    with Daemon(fake=True) as d:
        d.define("vm1")
        d.run("start", "vm1")
        st = json.load(open(os.path.join(d.state, "run", "vm1.json")))
        pid = st["pid"]
        uuid = json.load(open(os.path.join(d.state, "domains", "vm1.json")))["uuid"]
        d.stop()
        now = int(time.time() * 1000)
        job = {"version": 1, "id": "m-1-1-1", "kind": "migration-out", "phase": "perform-done",
               "uuid": uuid, "name": "vm1", "peer_uri": "tcp:127.0.0.1:1", "migrate_uri": "",
               "flags": ["live", "postcopy"], "postcopy_started": True, "vmm_pid": pid,
               "started_ms": now, "phase_ms": now, "error": ""}
        os.makedirs(os.path.join(d.state, "jobs"), mode=0o700, exist_ok=True)
        with open(os.path.join(d.state, "jobs", f"{uuid}.json"), "w") as f:
            json.dump(job, f)
        os.kill(pid, signal.SIGSTOP)  # answers no QMP
        try:
            d.start()
            time.sleep(1)
            assert pid_alive(pid), "the VMM was killed:\n" + d.log_text()[-3000:]
            assert "a migration job holds the domain" in d.log_text(), d.log_text()[-3000:]
            assert os.path.exists(os.path.join(d.state, "jobs", f"{uuid}.json"))
            r = d.run("start", "vm1", check=False)
            assert r.rc != 0, r
        finally:
            os.kill(pid, signal.SIGCONT)


if __name__ == "__main__":
    run_test(main)
