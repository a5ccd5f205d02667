#!/usr/bin/env python3
"""A domain's job slot: while one lifecycle operation holds it (a slow
start), `dominfo` shows the job and a second operation waits for the first
to finish instead of interleaving with it; operations on other domains are
not held up. (Refusal while an asynchronous migration job holds the slot is
unit-tested in test_daemon_domain and exercised by the migration tests.)
Uses the fake VMM whatever the host, for its adjustable start-up delay."""
# timeout: 120
import subprocess
import time

from godwit_test import run_test, wait_until
from godwitd_test import GODWIT, Daemon


def main():
    with Daemon(fake=True) as d:
        d.define("slow", cmdline="fake-start-delay=3")
        d.define("quick")
        t0 = time.time()
        start = subprocess.Popen([GODWIT, "-c", d.uri, "start", "slow"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        wait_until(lambda: "Job:            modify" in d.run("dominfo", "slow").out, 10,
                   "the start to hold the job slot")
        assert d.state_of("slow") == "shut off (unknown)"
        d.run("start", "quick")  # another domain is not held up
        assert time.time() - t0 < 2.5, "a start on another domain waited"
        r = d.run("suspend", "slow")  # waits for the start, then runs
        assert "suspended" in r.out, r
        out, err = start.communicate(timeout=30)
        assert start.returncode == 0 and "started" in out, (out, err)
        assert time.time() - t0 >= 3
        assert d.state_of("slow") == "paused (user)"
        assert "Job:            none" in d.run("dominfo", "slow").out
        for name in ("slow", "quick"):
            d.run("destroy", name)


run_test(main)
