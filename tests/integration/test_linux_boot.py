#!/usr/bin/env python3
"""Both Debian kernels (cloud and generic bzImages, fetched by
mk/fetch-kernels.sh) boot through the 64-bit Linux boot protocol until the
kernel prints its `Linux version` line on the serial port and finds our
ACPI tables (RSDP at 0xE0000, the SCI override). On PVM hosts the
kernel then stops on an emulation failure; that must be reported cleanly."""
# timeout: 400
import os

from godwit_test import BUILD, VMM, need_kvm, run_test, skip


def main():
    need_kvm()
    kdir = os.path.join(BUILD, "kernels")
    kernels = [os.path.join(kdir, k) for k in ("vmlinuz-cloud", "vmlinuz-generic")]
    missing = [k for k in kernels if not os.path.exists(k)]
    if missing:
        skip(f"Debian kernels not fetched ({', '.join(missing)}); run mk/fetch-kernels.sh")
    for k in kernels:
        with VMM(memory=512, test_guest=False, extra=["--kernel", k],
                 cmdline="console=ttyS0 earlyprintk=ttyS0") as vm:
            vm.wait_serial("Linux version", 150)
            vm.wait_serial("Command line: console=ttyS0", 30)
            # Our ACPI tables, found through boot_params.acpi_rsdp_addr (early
            # in setup_arch, before a PVM host's emulation failure).
            vm.wait_serial("ACPI: RSDP 0x00000000000E0000 000024 (v02 GODWIT)", 60)
            vm.wait_serial("ACPI: INT_SRC_OVR (bus 0 bus_irq 9 global_irq 9 high level)", 60)
            print(f"ok: {os.path.basename(k)}: " + vm.serial_text().split("Linux version", 1)[1][:40])


run_test(main)
