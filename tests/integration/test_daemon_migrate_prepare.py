#!/usr/bin/env python3
"""Prepare on the destination, driven by hand over the control socket
(fake VMM; one daemon, no source):
  a migration-abort that comes while Prepare is still starting its
  incoming VMM (GODWIT_FAKE_STOP_DELAY_MS: the VMM's `stop` during
  inmigrate is slow) waits for Prepare, then discards the job: nothing is
  left (no domain, no job file, no VMM), and the daemon runs on;
  a local domain NAMED like the incoming UUID is not the domain coming
  back: Prepare defines the incoming one beside it and leaves it alone;
  an inactive domain with the incoming UUID under another name is refused
  (its definition unchanged, no second file with that UUID);
  an inactive domain coming back (same UUID and name) whose Prepare fails
  (GODWIT_FAKE_STOP_FAILS) or is aborted gets its own definition back."""
# timeout: 120
import json
import os
import threading
import time

from godwit_test import run_test, skip, wait_until
from godwitd_test import Control, Daemon, _start_with_env, have_kvm, pid_alive

UUID = "5a1e0f0d-0000-4000-8000-00000000c0de"


def begin(job, uuid=UUID, name="vm1", memory=64):
    dom = {"name": name, "uuid": uuid, "memory_mib": memory, "vcpus": 1, "test_guest": True,
           "cmdline": "workload=dirty wss=1M rate=1000 beat-ms=500"}
    return {"version": 1, "job": job, "uuid": uuid, "dest_host": "127.0.0.1",
            "cookie": {"host": {"name": "src"}, "domain": dom,
                       "memory": {"size": memory << 20, "page_size": 4096},
                       "features": {"postcopy": False, "stream_version": 1}, "flags": ["live"]}}


def control(d):
    c = Control(d.sock)
    c.sock.settimeout(40)
    assert c.hello()["return"]["protocol"] == 1
    return c


def defs(d):
    out = {}
    for f in os.listdir(os.path.join(d.state, "domains")):
        if f.endswith(".json"):
            out[f] = json.load(open(os.path.join(d.state, "domains", f)))
    return out


def main():
    if have_kvm():
        skip("GODWIT_FAKE_STOP_DELAY_MS exists in the fake VMM only")
    abort_during_prepare()
    name_like_uuid()
    uuid_under_other_name()
    failed_prepare_restores_def()


def abort_during_prepare():
    print("migration-abort while Prepare is still starting the incoming VMM")
    d = Daemon(fake=True, start=False)
    d.env = {"GODWIT_FAKE_STOP_DELAY_MS": "3000"}
    _start_with_env(d)
    with d:
        res = {}

        def prepare():
            res["prepare"] = control(d).call("migration-prepare", **begin("m-1-1-1"))

        t = threading.Thread(target=prepare)
        t.start()
        wait_until(lambda: os.path.exists(os.path.join(d.state, "jobs", UUID + ".json")), 10,
                   "Prepare to save its job")
        time.sleep(0.5)  # Prepare is inside its VMM's slow stop
        t0 = time.time()
        r = control(d).call("migration-abort", version=1, job="m-1-1-1", uuid=UUID)
        t.join(30)
        assert not t.is_alive()
        assert "error" not in r, (r, d.log_text()[-3000:])
        assert time.time() - t0 >= 1.5, "the abort did not wait for Prepare"
        assert "return" in res["prepare"], res
        assert d.proc.poll() is None, d.log_text()[-3000:]
        wait_until(lambda: "vm1" not in d.run("list", "--all").out, 20, "vm1 to be forgotten")
        time.sleep(1)  # a late save by Prepare would show now
        assert not os.path.exists(os.path.join(d.state, "jobs", UUID + ".json")), \
            open(os.path.join(d.state, "jobs", UUID + ".json")).read()
        assert "vm1" not in d.run("list", "--all").out
        assert not d.vmm_pids(), d.vmm_pids()
        assert d.run("list", "--all").rc == 0


def name_like_uuid():
    print("a domain named like the incoming UUID is not taken by Prepare")
    with Daemon(fake=True) as d:
        d.define(UUID)
        before = defs(d)[UUID + ".json"]
        assert before["uuid"] != UUID
        r = control(d).call("migration-prepare", **begin("m-2-1-1"))
        assert "return" in r, (r, d.log_text()[-3000:])
        after = defs(d)
        assert after[UUID + ".json"] == before, after
        assert after["vm1.json"]["uuid"] == UUID, after
        r = control(d).call("migration-abort", version=1, job="m-2-1-1", uuid=UUID)
        assert "error" not in r, r
        wait_until(lambda: "vm1" not in d.run("list", "--all").out, 20, "vm1 to be forgotten")
        assert defs(d)[UUID + ".json"] == before
        assert UUID in d.run("list", "--all").out


def uuid_under_other_name():
    print("an inactive domain with the incoming UUID under another name: refused")
    with Daemon(fake=True) as d:
        d.define("old")
        uuid = defs(d)["old.json"]["uuid"]
        before = defs(d)
        r = control(d).call("migration-prepare", **begin("m-3-1-1", uuid=uuid, name="vm1"))
        assert r.get("error", {}).get("class") == "OperationInvalid", r
        assert "'old'" in r["error"]["desc"] and uuid in r["error"]["desc"], r
        assert defs(d) == before, defs(d)
        assert not os.path.exists(os.path.join(d.state, "jobs", uuid + ".json"))
        assert "old" in d.run("list", "--all").out and "vm1" not in d.run("list", "--all").out


def failed_prepare_restores_def():
    print("a failed or aborted Prepare puts the old definition back")
    d = Daemon(fake=True, start=False)
    d.env = {"GODWIT_FAKE_STOP_FAILS": "1"}
    _start_with_env(d)
    with d:
        d.define("vm1", memory=64)
        before = defs(d)
        uuid = before["vm1.json"]["uuid"]
        r = control(d).call("migration-prepare", **begin("m-4-1-1", uuid=uuid, memory=128))
        assert "stop during inmigrate" in r.get("error", {}).get("desc", ""), r
        wait_until(lambda: defs(d) == before, 10, f"vm1's definition to be restored ({defs(d)})")
        info = d.run("dominfo", "vm1").out  # the daemon's own copy, not only the file
        assert "65536 KiB" in info, info
    with Daemon(fake=True) as d:
        d.define("vm1", memory=64)
        before = defs(d)
        uuid = before["vm1.json"]["uuid"]
        r = control(d).call("migration-prepare", **begin("m-5-1-1", uuid=uuid, memory=128))
        assert "return" in r, (r, d.log_text()[-3000:])
        assert defs(d)["vm1.json"]["memory_mib"] == 128
        r = control(d).call("migration-abort", version=1, job="m-5-1-1", uuid=uuid)
        assert "error" not in r, r
        wait_until(lambda: defs(d) == before, 20, f"vm1's definition to be restored ({defs(d)})")
        assert "vm1" in d.run("list", "--all").out


if __name__ == "__main__":
    run_test(main)
