#!/usr/bin/env python3
"""The daemon's migration policy acting on a migration that does not
converge (a 1 MiB/s link while the guest keeps dirtying its working set):
  - `--timeout 2 --timeout-suspend`: the source pauses the guest when the
    timeout expires and the migration completes offline;
  - `--postcopy --timeout 2`: the expired timeout switches to post-copy
    (pre-copy did not converge in time) and the migration completes;
  - a domain whose policy forbids post-copy and says timeout_action abort:
    `--timeout 2` cancels the migration and the guest keeps running on the
    source;
  - the operator's options are checked in Begin: --timeout-postcopy
    without --postcopy is refused before anything starts.
The policy itself is unit-tested on recorded statistics (test_mig_policy)."""
# timeout: 240
from godwit_test import need_netns, run_test, wait_until
from godwitd_test import MigHosts, jobinfo, vmm_kind

SLOW = "1"  # MiB/s


def main():
    need_netns()
    print("VMM:", vmm_kind())
    with MigHosts(tag="gwp") as h:
        a, b = h.a, h.b
        h.start_guest(a)
        print("--timeout-postcopy without --postcopy: refused in Begin")
        r = h.migrate(a, b, "vm1", "--timeout", "2", "--timeout-postcopy", check=False)
        assert r.rc == 1 and "requires --postcopy" in r.err, r
        assert a.state_of("vm1") == "running (booted)"

        print("timeout -> suspend")
        r = h.migrate(a, b, "vm1", "--live", "--bandwidth", SLOW, "--timeout", "2", "--timeout-suspend",
                      check=False)
        assert r.rc == 0, r
        assert "policy: pause" in a.log_text(), a.log_text()[-2000:]
        assert b.state_of("vm1") == "running (migrated)"
        assert a.state_of("vm1") == "shut off (migrated)"

        print("timeout -> post-copy")
        r = h.migrate(b, a, "vm1", "--live", "--postcopy", "--bandwidth", SLOW, "--timeout", "2",
                      check=False)
        assert r.rc == 0, r
        assert "policy: postcopy" in b.log_text(), b.log_text()[-2000:]
        assert a.state_of("vm1") == "running (post-copy)" or a.state_of("vm1") == "running (migrated)"
        assert b.state_of("vm1") == "shut off (migrated)"

        print("timeout -> abort (domain policy, post-copy forbidden)")
        # The destination's job ends when its watcher sees the last page in.
        wait_until(lambda: a.state_of("vm1") == "running (migrated)", 30,
                   "the end of A's incoming post-copy job")
        a.run("destroy", "vm1")
        a.define("vm1", migration={"permit_postcopy": False, "permit_auto_converge": False,
                                   "timeout_action": "abort"})
        a.run("start", "vm1")
        r = h.migrate(a, b, "vm1", "--live", "--bandwidth", SLOW, "--timeout", "2", check=False)
        assert r.rc == 1, r
        assert "policy: abort" in a.log_text(), a.log_text()[-2000:]
        assert a.state_of("vm1").startswith("running"), a.state_of("vm1")
        assert jobinfo(a, "vm1", completed=True)["Job type"] == "Failed"
        wait_until(lambda: not b.state_of("vm1").startswith(("running", "paused")), 20,
                   "the destination to discard its copy")


run_test(main)
