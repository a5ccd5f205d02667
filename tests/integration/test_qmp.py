#!/usr/bin/env python3
"""The QMP control socket with a running test guest: greeting and
negotiation, ids echoed, errors for malformed JSON / unknown commands / bad
arguments (the VM keeps running), two clients at once, a client vanishing
mid-command, stop/cont with STOP/RESUME events, system_reset with RESET,
pmemsave (a refused one leaves its file as it was), migration knobs out of
range refused, quit with SHUTDOWN and exit status 0; a NUL character in a
command name or argument refused; SIGTERM with SHUTDOWN
{"reason": "host-signal"} delivered before the VMM exits. A reset whose
kernel file is gone: internal-error, and a reset with the file back boots."""
# timeout: 240
import json
import os
import shutil
import signal
import socket
import tempfile
import time

from godwit_test import BUILD, QMP, QMPError, VMM, need_kvm, run_test, wait_until


def main():
    need_kvm()
    uuid = "6f1c2a3b-0d4e-4f5a-8b6c-7d8e9fa0b1c2"
    with VMM("--uuid", uuid, memory=64, vcpus=1, cmdline="workload=mem-invariant") as vm:
        q = vm.qmp
        assert q.cmd("query-uuid") == {"UUID": uuid}
        g = q.greeting["QMP"]
        assert "version" in g and "capabilities" in g, g
        # Negotiation is required on a fresh connection.
        q2 = QMP(vm.qmp_path, negotiate=False)
        r = q2.execute("query-status")
        assert r["error"]["class"] == "CommandNotFound", r
        q2.cmd("qmp_capabilities")
        r = q2.execute("qmp_capabilities")
        assert "error" in r, r
        # id echoed, including non-integer ids.
        q2.send_raw(json.dumps({"execute": "query-status", "id": "abc"}))
        wait_until(lambda: json.dumps("abc") in q2.replies, 10, "reply with id abc")
        # Two objects in one write, one object split in two writes.
        q2.send_raw('{"execute":"query-version","id":101}{"execute":"query-status","id":102}')
        q2.send_raw('{"execute":"query-sta')
        time.sleep(0.1)
        q2.send_raw('tus","id":103}')
        wait_until(lambda: all(json.dumps(i) in q2.replies for i in (101, 102, 103)), 10, "3 replies")
        assert q2.replies[json.dumps(102)]["return"]["status"] == "running"
        # Malformed JSON, then a good command on the same connection.
        q2.send_raw('{"execute": oops}')
        r = q2.execute("query-status")
        assert r["return"]["status"] == "running", r
        # Errors that must not touch the VM.
        for name, args, cls in [("no-such-command", {}, "CommandNotFound"),
                                ("pmemsave", {"val": "x", "size": 1, "filename": "/tmp/x"}, "GenericError"),
                                ("pmemsave", {"size": 1, "filename": "/tmp/x"}, "GenericError"),
                                ("stop", {"bogus": 1}, "GenericError")]:
            r = q2.execute(name, **args)
            assert r.get("error", {}).get("class") == cls, (name, args, r)
        assert vm.status() == "running"
        # A NUL character (\u0000) is not cut off: "quit\u0000zzz" is not quit.
        q2.send_raw('{"execute":"quit\\u0000zzz","id":201}')
        wait_until(lambda: json.dumps(201) in q2.replies, 10, "reply with id 201")
        assert "NUL" in q2.replies[json.dumps(201)]["error"]["desc"], q2.replies[json.dumps(201)]
        r = q2.execute("pmemsave", val=0, size=4096, filename=os.path.join(vm.dir, "a\u0000b"))
        assert "NUL" in r.get("error", {}).get("desc", ""), r
        r = q2.execute("migrate-set-parameters", **{"no-such": "x"})
        assert r["error"]["desc"] == "Parameter 'no-such' is unexpected", r
        assert vm.status() == "running"
        cmds = {c["name"] for c in q.cmd("query-commands")}
        for c in ("query-status", "stop", "cont", "quit", "system_reset", "pmemsave", "query-version"):
            assert c in cmds, c
        v = q.cmd("query-version")
        assert "qemu" in v and "package" in v, v
        # A client that disconnects right after sending a command.
        s = socket.socket(socket.AF_UNIX)
        s.connect(vm.qmp_path)
        s.sendall(b'{"execute":"qmp_capabilities"}{"execute":"query-commands"}')
        s.close()
        time.sleep(0.2)
        assert vm.status() == "running"
        # stop/cont and their events, seen by both clients.
        q.cmd("stop")
        q.wait_event("STOP", 10)
        q2.wait_event("STOP", 10)
        assert vm.status() == "paused"
        n0 = vm.serial_len()
        time.sleep(0.5)
        q.cmd("cont")
        q.wait_event("RESUME", 10)
        assert vm.status() == "running"
        # pmemsave of a range and of an address outside RAM.
        path = os.path.join(vm.dir, "mem.bin")
        data = vm.pmemsave(0x100000, 4096 * 16, path)
        assert len(data) == 4096 * 16
        r = q.execute("pmemsave", val=0xF0000000, size=4096, filename=path)
        assert "error" in r, r
        with open(path, "rb") as f:  # refused before the file was opened (it was emptied)
            assert f.read() == data, "a refused pmemsave changed the file"
        # Migration knobs: a value past 2^63-1 is refused (json-c held it,
        # and it was cut to 2^63-1), as is a capability with an extra member.
        r = q.execute("migrate-set-parameters", **{"max-bandwidth": 18446744073709551615})
        assert "Invalid parameter type for 'max-bandwidth'" in r.get("error", {}).get("desc", ""), r
        r = q.execute("migrate-set-capabilities",
                      capabilities=[{"capability": "events", "state": True, "x": 1}])
        assert "error" in r, r
        caps = {c["capability"]: c["state"] for c in q.cmd("query-migrate-capabilities")}
        assert caps["events"] is False, caps
        # Reset: RESET event, the guest boots again.
        start = vm.serial_len()
        q.cmd("system_reset")
        q.wait_event("RESET", 10)
        vm.wait_serial("godwit-guest: booted", timeout=60, start=start)
        assert vm.status() == "running"
        # quit: SHUTDOWN event, exit status 0.
        q.cmd("quit")
        e = q2.wait_event("SHUTDOWN", 10)
        assert e["data"]["guest"] is False, e
        assert vm.wait_exit(10) == 0
        q2.close()
    # SIGTERM: SHUTDOWN {"reason": "host-signal"} reaches the clients first.
    with VMM(memory=64, vcpus=1) as vm:
        vm.proc.send_signal(signal.SIGTERM)
        e = vm.qmp.wait_event("SHUTDOWN", 10)
        assert e["data"] == {"guest": False, "reason": "host-signal"}, e
        assert vm.wait_exit(10) == 0
    reset_with_kernel_gone()


def reset_with_kernel_gone():
    """A reset reads the kernel again from its file: with the file gone it
    fails, and the VM goes to internal-error (STOP), not parked with its
    state still "running"; a reset with the file back boots it again."""
    work = tempfile.mkdtemp(prefix="godwit-test-")
    kernel = os.path.join(work, "guest.elf")
    shutil.copy(os.path.join(BUILD, "guest", "test-guest.elf"), kernel)
    with VMM("--kernel", kernel, memory=64, vcpus=1, test_guest=False) as vm:
        vm.wait_serial("godwit-guest: booted", timeout=60)
        q = vm.qmp
        os.rename(kernel, kernel + ".away")
        r = q.execute("system_reset")
        assert "guest.elf" in r.get("error", {}).get("desc", ""), r
        q.wait_event("STOP", 10)
        assert vm.status() == "internal-error", vm.status()
        r = q.execute("cont")
        assert "error" in r, r
        os.rename(kernel + ".away", kernel)
        start = vm.serial_len()
        q.cmd("system_reset")
        q.wait_event("RESET", 10)
        vm.wait_serial("godwit-guest: booted", timeout=60, start=start)
        assert vm.status() == "running", vm.status()
    shutil.rmtree(work, ignore_errors=True)


run_test(main)
