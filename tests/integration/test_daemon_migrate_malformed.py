#!/usr/bin/env python3
"""A Finish answer that is neither a return nor an error (the destination
daemon's fault point `dst-finish-malformed`: Finish resumed the guest there,
then its reply lost its `return`) is no word, never an error answer: the
source does not resume its copy (that would run the guest twice), asks
migration-status, hears `running`, and confirms. Afterwards the guest runs
on the destination only."""
# timeout: 180
from godwit_test import need_netns, run_test, wait_until
from godwitd_test import MigHosts, heartbeats, vmm_kind


def main():
    need_netns()
    print("VMM:", vmm_kind())
    with MigHosts(tag="gwx", env_b={"GODWIT_FAULT_INJECT": "dst-finish-malformed"}) as h:
        a, b = h.a, h.b
        h.start_guest(a)
        r = h.migrate(a, b, "vm1", "--live", check=False)
        assert "injected fault dst-finish-malformed" in b.log_text(), b.log_text()[-3000:]
        assert r.rc == 0, (r, a.log_text()[-3000:])
        assert "asking the destination" in a.log_text(), a.log_text()[-3000:]
        assert a.state_of("vm1") == "shut off (migrated)", a.state_of("vm1")
        assert b.state_of("vm1") == "running (migrated)", b.state_of("vm1")
        n = len(heartbeats(b, "vm1"))
        wait_until(lambda: len(heartbeats(b, "vm1")) > n, 20, "the guest's heartbeat on B")


if __name__ == "__main__":
    run_test(main)
