#!/usr/bin/env python3
"""Two hosts (network namespaces joined by a veth pair), a godwitd on each
with a TLS (pre-shared key) TCP listener: a client on host A manages a
domain on host B over TLS — define, start, list, dominfo, events, destroy,
undefine — and host A's own daemon is unaffected. The smoke test the
migration part builds on (daemon-to-daemon traffic takes the same path)."""
# timeout: 180
import os
import subprocess

from godwit_test import NetnsPair, need_netns, run_test, wait_until
from godwitd_test import GODWIT, Daemon, godwit, make_psk, vmm_kind


def main():
    need_netns()
    print("VMM:", vmm_kind())
    with NetnsPair(tag="gwd") as net, Daemon(start=False) as scratch:
        key = make_psk(os.path.join(scratch.dir, "hosts.psk"), user="godwit-hosts")
        a = Daemon(listen=[f"tcp:{net.addr[0]}:16509"], tls_psk=key, netns=net.ns[0])
        b = Daemon(listen=[f"tcp:{net.addr[1]}:16509"], tls_psk=key, netns=net.ns[1])
        try:
            remote(net, key, a, b)
        finally:
            a.close()
            b.close()


def remote(net, key, a, b):
    uri_b = f"tcp:{net.addr[1]}:16509"

    def on_a(*args, check=True):
        return godwit(*args, uri=uri_b, tls_psk=key, netns=net.ns[0], check=check)

    path = os.path.join(b.dir, "web.json")
    with open(path, "w") as f:
        f.write('{"name": "web", "memory_mib": 64, "test_guest": true,'
                ' "cmdline": "workload=dirty wss=1M rate=1000 beat-ms=500"}')
    assert "defined" in on_a("define", path).out
    subscribed = b.log_text().count("events-subscribe -> 0")
    events = subprocess.Popen(["ip", "netns", "exec", net.ns[0], GODWIT, "-c", uri_b, "--tls-psk", key,
                               "event", "web", "--event", "lifecycle", "--timeout", "60"],
                              stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: b.log_text().count("events-subscribe -> 0") > subscribed, 20,
                   "the remote event subscription")
        assert "started" in on_a("start", "web").out
        out, _ = events.communicate(timeout=60)
    finally:
        if events.poll() is None:
            events.kill()
    assert "event 'lifecycle' for domain 'web': Started Booted" in out, out
    assert "events received: 1" in out, out
    r = on_a("list")
    assert "web" in r.out and "running" in r.out, r
    assert "Name:           web" in on_a("dominfo", "web").out
    assert "web" not in a.run("list", "--all").out  # host A's own daemon knows nothing of it
    # The peer is reachable only through TLS with the right key.
    r = godwit("list", uri=uri_b, netns=net.ns[0], check=False)
    assert r.rc == 1, r
    assert "destroyed" in on_a("destroy", "web").out
    assert b.state_of("web") == "shut off (destroyed)"
    assert "undefined" in on_a("undefine", "web").out


run_test(main)
