#!/usr/bin/env python3
"""The test guest powering itself off ends the VMM with status 0 and a
SHUTDOWN event (guest: true); so does its serial 'p' command; so does the
ACPI power button (QMP system_powerdown: POWERDOWN, then the guest's SCI
handler powers off), with 1 and 2 vCPUs (the MADT gives the guest exactly
--vcpus), pressed while paused (seen when the guest runs again), and on a
guest restored from a file (PWRBTN_EN travels in the device state; the
restored guest does not enable it again); a stream without the power
device's record (older godwit) restores with the button disabled."""
# timeout: 400
import os
import re
import struct
import time

from godwit_test import VMM, QMPError, need_kvm, run_test, wait_migration

BUTTON_READY = "godwit-guest: acpi power button, PM1 0x600, SCI GSI 9 level active-high"


def booted_with(vm, vcpus):
    vm.wait_serial(BUTTON_READY, 60)
    m = re.search(r"godwit-guest: booted, (\d+) cpus \((\w+)\)", vm.serial_text())
    assert m and m.groups() == (str(vcpus), "acpi"), vm.serial_text()[-800:]


def press_and_expect_off(vm, what):
    start = vm.serial_len()
    vm.qmp.cmd("system_powerdown")
    vm.qmp.wait_event("POWERDOWN", 10)
    vm.wait_serial("godwit-guest: power button", 60, start)
    e = vm.qmp.wait_event("SHUTDOWN", 60)
    assert e["data"] == {"guest": True, "reason": "guest-shutdown"}, e
    assert vm.wait_exit(20) == 0
    assert vm.serial_text().count("godwit-guest: power button") == 1, vm.serial_text()[-800:]
    print(f"{what}: POWERDOWN, 'power button', SHUTDOWN, exit 0")


def guest_poweroff():
    with VMM(memory=64, cmdline="workload=mem-invariant poweroff-after=2") as vm:
        e = vm.qmp.wait_event("SHUTDOWN", 60)
        assert e["data"]["guest"] is True, e
        assert vm.wait_exit(20) == 0
    with VMM(memory=64, vcpus=2, cmdline="workload=time,fpu") as vm:
        vm.wait_serial("started", 60)
        vm.send_serial("p")
        e = vm.qmp.wait_event("SHUTDOWN", 60)
        assert e["data"]["reason"] == "guest-shutdown", e
        assert vm.wait_exit(20) == 0


def power_button(vcpus):
    with VMM(memory=64, vcpus=vcpus, cmdline="workload=time,fpu") as vm:
        booted_with(vm, vcpus)
        vm.wait_serial("workload time started", 60)
        press_and_expect_off(vm, f"{vcpus} vCPU(s)")


def power_button_paused():
    """Pressed while paused: the status latches; the guest acts once it runs."""
    with VMM(memory=64, cmdline="workload=time") as vm:
        booted_with(vm, 1)
        vm.qmp.cmd("stop")
        vm.qmp.cmd("system_powerdown")
        vm.qmp.wait_event("POWERDOWN", 10)
        time.sleep(1)
        assert vm.proc.poll() is None and vm.status() == "paused"
        assert "godwit-guest: power button" not in vm.serial_text()
        vm.qmp.cmd("cont")
        vm.wait_serial("godwit-guest: power button", 60)
        e = vm.qmp.wait_event("SHUTDOWN", 60)
        assert e["data"]["guest"] is True, e
        assert vm.wait_exit(20) == 0
        print("paused: the press waited for cont")


def without_power_record(data):
    """The stream with its DEVICE_STATE "power" record left out, as a godwit
    from before the power button wrote it (records: stream-format.md §3)."""
    out, off, dropped = bytearray(data[:16]), 16, 0
    while off < len(data):
        rtype, length = struct.unpack_from("<II", data, off)
        size = 8 + length + (8 - length % 8) % 8 + 8
        if rtype == 0x11 and data[off + 8:off + 8 + 32].rstrip(b"\0") == b"power":
            dropped += 1
        else:
            out += data[off:off + size]
        off += size
    assert dropped == 1, dropped
    return bytes(out)


def restore(path):
    dst = VMM(memory=128, vcpus=2, incoming=True)
    dst.qmp.cmd("migrate-incoming", uri="file:" + path)
    info = wait_migration(dst, 120)
    assert info["status"] == "completed", info
    assert dst.status() == "running"
    time.sleep(0.5)
    assert "godwit-guest: booted" not in dst.serial_text()  # no new boot
    return dst


def power_button_after_restore():
    with VMM(memory=128, vcpus=2, cmdline="workload=time,fpu") as src:
        booted_with(src, 2)
        src.wait_serial("workload time started", 60)
        path = os.path.join(src.dir, "vm.save")
        src.qmp.cmd("migrate", uri="file:" + path)
        info = wait_migration(src, 120)
        assert info["status"] == "completed", info
        with VMM(memory=128, vcpus=2, incoming=True) as dst:
            try:
                dst.qmp.cmd("system_powerdown")
                raise AssertionError("system_powerdown accepted in inmigrate")
            except QMPError as e:
                assert "incoming migration" in str(e), e
        # An older stream (no "power" record) loads with PM1 at zero: the
        # button is disabled, the guest does not see it.
        old = os.path.join(src.dir, "old.save")
        with open(path, "rb") as f, open(old, "wb") as o:
            o.write(without_power_record(f.read()))
        with restore(old) as dst:
            dst.qmp.cmd("system_powerdown")
            dst.qmp.wait_event("POWERDOWN", 10)
            time.sleep(3)
            assert dst.proc.poll() is None and dst.status() == "running"
            assert "power button" not in dst.serial_text()
            print("older stream: restored, PWRBTN_EN 0, the press is not seen")
        with restore(path) as dst:
            press_and_expect_off(dst, "restored from a file")


def main():
    need_kvm()
    guest_poweroff()
    power_button(1)
    power_button(2)
    power_button_paused()
    power_button_after_restore()


run_test(main)
