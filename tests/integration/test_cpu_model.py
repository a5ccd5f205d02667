#!/usr/bin/env python3
"""The guest's CPU: `godwit-vmm --cpu host,-FEATURE` leaves features out of
the CPUID the guest sees (and what depends on them), the guest runs and
passes its self-check with them gone, and the CPU travels with the guest:
a save holds it (CPU_MODEL and each vCPU's CPUID section), the restored
guest gets it, not the destination's own (a save of the restored guest
still lacks the features), and `--cpu` of a bad form stops the VMM with a
clear message before it starts."""
# timeout: 300
import os
import subprocess
import time

from godwit_test import VMM_BIN, VMM, need_kvm, run_test, self_check, wait_migration
from stream_util import body_of, cpuid_entries, records

SSE4_2 = (1, 0, 3, 20)          # leaf, index, register (EAX=1 .. EDX=4), bit
INVTSC = (0x80000007, 0, 4, 8)
AVX512F = (7, 0, 2, 16)


def bit(ent, feature):
    leaf, index, reg, b = feature
    e = ent.get((leaf, index))
    return bool(e and e[reg] & (1 << b))


def saved_cpu(vm, path):
    """Save vm to path; the CPUID tables of its vCPUs, and its CPU_MODEL's
    entry count."""
    vm.qmp.cmd("migrate", uri="file:" + path)
    info = wait_migration(vm, 120)
    assert info["status"] == "completed", info
    data = open(path, "rb").read()
    recs = records(path)
    tables = [cpuid_entries(body_of(data, r)) for r in recs if r["type"] == "VCPU_STATE"]
    model = next(r for r in recs if r["type"] == "CPU_MODEL")
    assert model["cpuid_entries"] == len(tables[0]), (model, len(tables[0]))
    return tables


def main():
    need_kvm()
    p = subprocess.run([VMM_BIN, "--test-guest", "--cpu", "host,+avx"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode != 0 and "--cpu: '+avx'" in p.stderr, (p.returncode, p.stderr)
    p = subprocess.run([VMM_BIN, "--test-guest", "--cpu", "host,-avx5"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode != 0 and "unknown feature 'avx5'" in p.stderr, (p.returncode, p.stderr)
    print("bad --cpu: refused before start")

    with VMM(memory=256, vcpus=2, cmdline="workload=fpu,verify rate=500 wss=2M") as plain:
        plain.wait_serial("fpu vcpu=0 rounds=1 ok", 60)
        host = saved_cpu(plain, os.path.join(plain.dir, "plain.save"))[0]
    print("host CPU: sse4.2", bit(host, SSE4_2), "invtsc", bit(host, INVTSC),
          "avx512f", bit(host, AVX512F))

    masked = ["sse4.2", "invtsc", "avx512f"]
    with VMM(memory=256, vcpus=2, cmdline="workload=fpu,verify rate=500 wss=2M",
             extra=["--cpu", "host," + ",".join("-" + f for f in masked)]) as src:
        src.wait_serial("fpu vcpu=0 rounds=2 ok", 60)
        path = os.path.join(src.dir, "vm.save")
        tables = saved_cpu(src, path)
        for t in tables:
            for f in (SSE4_2, INVTSC, AVX512F):
                assert not bit(t, f), (f, "still shown")
            # What was not named is the host's (leaf 1: the same CPU
            # signature, the same ECX but for sse4.2 and OSXSAVE, which KVM
            # keeps in step with the guest's CR4).
            assert t[(1, 0)][1] == host[(1, 0)][1], (hex(t[(1, 0)][1]), hex(host[(1, 0)][1]))
            keep = ~((1 << 20) | (1 << 27)) & 0xffffffff
            assert t[(1, 0)][3] & keep == host[(1, 0)][3] & keep, \
                (hex(t[(1, 0)][3]), hex(host[(1, 0)][3]))
        print("saved: the vCPUs' CPUID lacks", ", ".join(masked))

        dst = VMM(memory=256, vcpus=2, incoming=True)
        try:
            dst.qmp.cmd("migrate-incoming", uri="file:" + path)
            info = wait_migration(dst, 120)
            assert info["status"] == "completed", info
            dst.wait_serial("fpu vcpu=0 rounds=", 30)
            time.sleep(1)
            self_check(dst)
            again = saved_cpu(dst, os.path.join(src.dir, "again.save"))
            for t in again:
                for f in (SSE4_2, INVTSC, AVX512F):
                    assert not bit(t, f), (f, "came back after a move")
            print("restored on a VMM without --cpu: the guest kept its CPU, and a save of it "
                  "still lacks them")
        finally:
            dst.close()


run_test(main)
