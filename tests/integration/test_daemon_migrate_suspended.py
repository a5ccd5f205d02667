#!/usr/bin/env python3
"""A guest paused on the source stays paused on the destination (libvirt's
VIR_MIGRATE_PAUSED): a domain its user suspended migrates and arrives
`paused (user)`, and `resume` runs it there; `migrate --suspend` leaves a
running guest paused on the destination; post-copy of a suspended domain,
or with --suspend, is refused with the reason, and the domain stays where
it was, as it was (the guest needs to run on the destination for
post-copy)."""
# timeout: 240
from godwit_test import need_netns, run_test, wait_until
from godwitd_test import MigHosts, heartbeats


def main():
    need_netns()
    with MigHosts(tag="gws", fake=True) as h:
        a, b = h.a, h.b
        h.start_guest(a)
        a.run("suspend", "vm1")
        assert a.state_of("vm1") == "paused (user)", a.state_of("vm1")

        print("post-copy of a suspended domain is refused")
        r = h.migrate(a, b, "vm1", "--live", "--postcopy", check=False)
        assert r.rc == 1 and "post-copy needs the guest to run" in r.err, r
        assert a.state_of("vm1") == "paused (user)", a.state_of("vm1")
        assert "vm1" not in b.run("list", "--all").out

        print("a suspended domain arrives paused")
        h.migrate(a, b, "vm1", "--live")
        assert a.state_of("vm1") == "shut off (migrated)", a.state_of("vm1")
        assert b.state_of("vm1") == "paused (user)", b.state_of("vm1")
        info = b.run("domjobinfo", "--completed", "vm1").out
        assert "Completed" in info, info
        b.run("resume", "vm1")
        assert b.state_of("vm1").startswith("running"), b.state_of("vm1")
        n = len(heartbeats(b, "vm1"))
        wait_until(lambda: len(heartbeats(b, "vm1")) > n, 20, "the heartbeat on the destination")

        print("--suspend: a running guest arrives paused")
        r = h.migrate(b, a, "vm1", "--live", "--postcopy", "--suspend", check=False)
        assert r.rc == 1 and "--suspend" in r.err, r
        assert b.state_of("vm1").startswith("running"), b.state_of("vm1")
        h.migrate(b, a, "vm1", "--live", "--suspend")
        assert b.state_of("vm1") == "shut off (migrated)", b.state_of("vm1")
        assert a.state_of("vm1") == "paused (user)", a.state_of("vm1")
        n = len(heartbeats(a, "vm1"))
        a.run("resume", "vm1")
        wait_until(lambda: len(heartbeats(a, "vm1")) > n, 20, "the heartbeat after resume")
        print("ok")


run_test(main)
