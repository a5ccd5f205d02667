#!/usr/bin/env python3
"""`godwit-stream` checks a whole stream as a restore does, not only each
record: every vCPU's state, every device of the format's table once, at
the version and size the table gives, nothing but COMMIT or optional
records after END_OF_STREAM. The streams are written here from
docs/stream-format.md alone (a second writer, XXH3 through libxxhash), so
this also checks that the page is enough to write a stream the reference
reader takes."""
# timeout: 60
import json
import os
import struct
import subprocess
import tempfile

from godwit_test import run_test
from stream_util import STREAM_TOOL as TOOL
from stream_util import record

HEADER, VCPU_STATE, DEVICE_STATE, PAGE_DATA = 0x1, 0x10, 0x11, 0x2
END_OF_STREAM, COMMIT, INFO, CPU_MODEL = 0x21, 0x22, 0x80000030, 0x80000012
RAM = 2 << 20

DEVICES = [("pic-master", 1, 520), ("pic-slave", 1, 520), ("ioapic", 1, 520), ("pit", 1, 112),
           ("kvmclock", 1, 8), ("serial0", 1, 36), ("cmos", 1, 144), ("power", 1, 8)]


def header(vcpus=1):
    body = struct.pack("<IIQ", 4096, vcpus, RAM) + bytes(range(16)) + b"tool-test".ljust(64, b"\0")
    return record(HEADER, body + struct.pack("<II", 1, 0) + struct.pack("<QQ", 0, RAM))


def section(tag, data):
    return struct.pack("<II", tag, len(data)) + data + b"\0" * ((8 - len(data) % 8) % 8)


def cpuid(*entries):
    """The CPUID section (tag 10): count, zero, struct kvm_cpuid_entry2 each."""
    return struct.pack("<II", len(entries), 0) + b"".join(
        struct.pack("<7I", *e) + bytes(12) for e in entries)


CPUID = cpuid((0, 0, 0, 1, 0x756e6547, 0x6c65746e, 0x49656e69), (1, 0, 0, 0x306c3, 0, 0, 0x0f8bfbff),
              (7, 0, 1, 0, 0x7ab, 4, 0), (7, 1, 1, 0x10, 0, 0, 0))


def vcpu(i, version=2, extra=(), drop=()):
    """VCPU_STATE: version 2 carries CPUID (10) and TSC_KHZ (11), version 1 not."""
    msrs = struct.pack("<II", 1, 0) + struct.pack("<IIQ", 0x10, 0, 12345)
    secs = [(1, bytes(144)), (2, bytes(312)), (3, bytes(4096)), (5, msrs), (6, bytes(1024)),
            (7, bytes(64)), (8, struct.pack("<I", 0)), (9, bytes(128))]
    if version >= 2:
        secs += [(10, CPUID), (11, struct.pack("<II", 2400000, 0))]
    secs = [s for s in secs if s[0] not in drop] + list(extra)
    return record(VCPU_STATE, struct.pack("<II", i, version) + b"".join(section(t, d) for t, d in secs))


def device(name, version, length, instance=0):
    return record(DEVICE_STATE, name.encode().ljust(32, b"\0") + struct.pack("<II", instance, version)
                  + bytes(length))


def stream(*recs):
    return b"GODWITMS" + struct.pack("<II", 1, 0) + b"".join(recs)


def complete(drop=None, extra=(), after=(), cpu=None):
    devs = [device(*d) for d in DEVICES if d[0] != drop]
    return stream(header(), cpu or vcpu(0), *devs, *extra, record(END_OF_STREAM), *after)


def check(tmp, name, data, want_error):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    p = subprocess.run([TOOL, "--json", path], capture_output=True, text=True, timeout=30)
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    if want_error is None:
        assert p.returncode == 0 and summary["valid"], (name, p.stdout[-600:], p.stderr)
    else:
        assert p.returncode == 1 and not summary["valid"], (name, p.stdout[-600:])
        assert want_error in summary["error"], (name, summary["error"])
    print(f"{name}: {'valid' if want_error is None else summary['error']}")


def main():
    with tempfile.TemporaryDirectory(prefix="godwit-stream-") as tmp:
        check(tmp, "complete", complete(), None)
        check(tmp, "without-power", complete(drop="power"), None)  # older streams: optional
        check(tmp, "commit-and-info-after-end", complete(after=(record(COMMIT), record(INFO, b"hi"))),
              None)
        check(tmp, "vcpu-version-1", complete(cpu=vcpu(0, version=1)), None)  # older streams
        check(tmp, "cpuid-in-version-1", complete(cpu=vcpu(0, version=1, extra=[(10, CPUID)])),
              "section cpuid in a version 1 record")
        check(tmp, "version-2-without-cpuid", complete(cpu=vcpu(0, drop=(10,))),
              "section cpuid is missing")
        check(tmp, "version-2-without-tsc", complete(cpu=vcpu(0, drop=(11,))),
              "section tsc_khz is missing")
        dup = cpuid((1, 0, 0, 0, 0, 0, 0), (1, 0, 0, 0, 0, 0, 0))
        check(tmp, "cpuid-leaf-twice", complete(cpu=vcpu(0, drop=(10,), extra=[(10, dup)])),
              "leaf 0x1 index 0 appears twice")
        check(tmp, "tsc-khz-pad", complete(cpu=vcpu(0, drop=(11,), extra=[(11, struct.pack("<II", 1, 1))])),
              "the word after the rate is not zero")
        check(tmp, "vcpu-version-3", complete(cpu=vcpu(0, version=3)), "vCPU state version 3")
        model = record(CPU_MODEL, struct.pack("<II", 4, 2400000) + CPUID[8:])  # count, TSC kHz, entries
        check(tmp, "cpu-model", stream(header(), model, vcpu(0), *[device(*d) for d in DEVICES],
                                       record(END_OF_STREAM)), None)
        check(tmp, "cpu-model-leaf-twice", stream(header(), record(CPU_MODEL, dup), vcpu(0),
                                                  *[device(*d) for d in DEVICES], record(END_OF_STREAM)),
              "record 2 (CPU_MODEL) at offset 152: CPU_MODEL: leaf 0x1 index 0 appears twice")
        check(tmp, "no-vcpu-state", stream(header(), record(END_OF_STREAM)), "no state for vCPU 0")
        check(tmp, "one-of-two-vcpus",
              stream(header(2), vcpu(1), *[device(*d) for d in DEVICES], record(END_OF_STREAM)),
              "no state for vCPU 0")
        check(tmp, "vcpu-twice", complete(extra=(vcpu(0),)), "vCPU 0 sent twice")
        check(tmp, "no-ioapic", complete(drop="ioapic"), "lacks the state of device ioapic")
        check(tmp, "serial-twice", complete(extra=(device("serial0", 1, 36),)), "device serial0 sent twice")
        check(tmp, "serial-instance-1", complete(extra=(device("serial0", 1, 36, instance=1),)),
              "device serial0 instance 1 does not exist here")
        check(tmp, "serial-version-2", complete(drop="serial0", extra=(device("serial0", 2, 36),)),
              "version 2 is not supported")
        check(tmp, "kvmclock-16-bytes", complete(drop="kvmclock", extra=(device("kvmclock", 1, 16),)),
              "16 bytes, expected 8")
        check(tmp, "unknown-device", complete(extra=(device("hpet", 1, 8),)), "unknown device 'hpet'")
        page = record(PAGE_DATA, struct.pack("<II", 1, 0) + struct.pack("<Q", 7) + b"\x5a" * 4096)
        check(tmp, "pages-after-end", complete(after=(page,)), "after END_OF_STREAM")
        check(tmp, "truncated", complete()[:-8], "truncated")


run_test(main)
