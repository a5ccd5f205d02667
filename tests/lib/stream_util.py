"""Migration-stream records in Python, from docs/stream-format.md alone (a
second writer for tests): framing with its XXH3-64 checksum (libxxhash
through ctypes), and rewriting one record of a stream in place."""
import ctypes
import json
import os
import struct
import subprocess

from godwit_test import BUILD

STREAM_TOOL = os.path.join(BUILD, "godwit-stream")

_xxh = ctypes.CDLL("libxxhash.so.0")
_xxh.XXH3_64bits.restype = ctypes.c_uint64
_xxh.XXH3_64bits.argtypes = (ctypes.c_char_p, ctypes.c_size_t)


def record(rtype, body=b""):
    """One record: {u32 type; u32 length} body, zero padding, XXH3-64 of it all."""
    pad = (8 - len(body) % 8) % 8
    head = struct.pack("<II", rtype, len(body)) + body + b"\0" * pad
    return head + struct.pack("<Q", _xxh.XXH3_64bits(head, len(head)))


def records(path):
    """The records of a stream file as godwit-stream --json lists them
    (offset, type, length, device, vcpu, ...); the summary line left out."""
    p = subprocess.run([STREAM_TOOL, "--json", path], capture_output=True, text=True, timeout=60)
    return [json.loads(l) for l in p.stdout.splitlines()[:-1]]


def with_body(data, rec, body):
    """`data` (a whole stream) with the record `rec` (from records()) given
    `body` (same length) and its checksum made right again."""
    off, n = rec["offset"], rec["length"]
    assert len(body) == n
    old = data[off:off + 8 + n + (8 - n % 8) % 8 + 8]
    new = record(struct.unpack_from("<I", data, off)[0], body)
    assert len(new) == len(old)
    return data[:off] + new + data[off + len(old):]


def body_of(data, rec):
    return data[rec["offset"] + 8:rec["offset"] + 8 + rec["length"]]


def vcpu_section(body, tag):
    """Offset of the data of section `tag` in a VCPU_STATE body, and its length."""
    pos = 8
    while pos < len(body):
        t, n = struct.unpack_from("<II", body, pos)
        if t == tag:
            return pos + 8, n
        pos += 8 + n + (8 - n % 8) % 8
    raise AssertionError(f"no section {tag}")


def cpuid_entries(body):
    """{(function, index): (offset of the entry, eax, ebx, ecx, edx)} of the
    CPUID section (tag 10) of a VCPU_STATE body."""
    at, n = vcpu_section(body, 10)
    count = struct.unpack_from("<I", body, at)[0]
    assert n == 8 + 40 * count, (n, count)
    out = {}
    for i in range(count):
        e = at + 8 + 40 * i
        fn, idx, _flags, a, b, c, d = struct.unpack_from("<7I", body, e)
        out[(fn, idx)] = (e, a, b, c, d)
    return out
