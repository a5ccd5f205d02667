/* Boot and reset: load the kernel or the built-in test guest and put the
 * boot vCPU at its entry; the other vCPUs wait for INIT/SIPI. */
#define LOG_PREFIX "boot"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "boot/boot.h"
#include "common/log.h"
#include "devices/acpi_tables.h"
#include "devices/power.h"
#include "vmm/machine_internal.h"

extern const uint8_t test_guest_elf[];
extern const uint8_t test_guest_elf_end[];

#define LAPIC_ADDR  0xfee00000u
#define IOAPIC_ADDR 0xfec00000u

/* The test guest takes its vCPU count from the MADT; cpus=N on its command
 * line is the fallback for a machine without ACPI tables. */
static char *effective_cmdline(const struct machine_config *cfg)
{
    const char *base = cfg->cmdline ? cfg->cmdline : "";
    char *s = NULL;
    if (cfg->test_guest) {
        if (asprintf(&s, "%s%scpus=%u", base, *base ? " " : "", cfg->nr_vcpus) < 0)
            return NULL;
        return s;
    }
    return strdup(base);
}

/* RSDP, XSDT, FADT, FACS, DSDT and MADT at BOOT_ACPI_ADDR (reserved in the
 * memory map, within the 0xE0000-0xFFFFF area that RSDP scanners search). */
static int write_acpi_tables(struct machine *m, struct gw_error *err)
{
    struct acpi_config cfg = {
        .base = BOOT_ACPI_ADDR, .nr_cpus = m->nr_vcpus, .lapic_addr = LAPIC_ADDR,
        .ioapic_addr = IOAPIC_ADDR, .pm1a_evt = POWER_PM1_BASE, .pm1a_cnt = POWER_PORT,
        .sci_irq = POWER_SCI_GSI,
    };
    uint8_t *dst = guest_ram_ptr(&m->ram, BOOT_ACPI_ADDR, BOOT_ACPI_SIZE);
    if (!dst)
        return gw_error_set(err, ENOMEM, "guest RAM too small for the ACPI tables");
    ssize_t n = acpi_tables_build(&cfg, dst, BOOT_ACPI_SIZE);
    if (n < 0)
        return gw_error_set(err, (int)-n, "cannot build the ACPI tables for %u vCPUs: %s",
                            m->nr_vcpus, strerror((int)-n));
    return 0;
}

static int load_kernel(struct machine *m, struct boot_result *res, struct gw_error *err)
{
    int r = write_acpi_tables(m, err);
    if (r < 0)
        return r;
    if (!m->cmdline) {
        m->cmdline = effective_cmdline(&m->cfg);
        if (!m->cmdline)
            return gw_error_set(err, ENOMEM, "out of memory");
    }
    struct boot_input in = {
        .kernel_path = m->cfg.kernel,
        .initrd_path = m->cfg.initrd,
        .cmdline = m->cmdline,
        .rsdp_addr = BOOT_ACPI_ADDR,
    };
    if (m->cfg.test_guest) {
        in.kernel_path = NULL;
        in.kernel_buf = test_guest_elf;
        in.kernel_len = (size_t)(test_guest_elf_end - test_guest_elf);
        if (in.kernel_len == 0)
            return gw_error_set(err, ENOENT, "this godwit-vmm was built without the test guest");
    }
    return boot_load(&m->ram, &in, res, err);
}

static int enter(struct machine *m, const struct boot_result *res, struct gw_error *err)
{
    struct vcpu *bsp = &m->vcpus[0];
    struct kvm_sregs sregs;
    if (ioctl(bsp->fd, KVM_GET_SREGS, &sregs) < 0)
        return gw_error_set(err, errno, "KVM_GET_SREGS: %s", strerror(errno));
    boot_setup_sregs(res->kind, &sregs);
    return vcpu_set_boot_state(bsp, &res->regs, &sregs, err);
}

int machine_boot(struct machine *m, struct gw_error *err)
{
    struct boot_result res;
    int r = load_kernel(m, &res, err);
    if (r < 0)
        return r;
    log_info("%s", res.desc);
    return enter(m, &res, err);
}

/* A reset that failed once the vCPUs were parked: its devices, vCPUs or
 * RAM may be half reset (the kernel is read again from its file, which may
 * be gone or changed), so the guest must not run on as if nothing
 * happened, nor stay parked with its state saying "running": internal-error
 * (STOP), from which system_reset is the way out, as after a KVM failure. */
static int reset_failed(struct machine *m, struct gw_error *err)
{
    log_error("reset failed: %s; VM stopped (state internal-error)", err->msg);
    struct gw_error e;
    gw_error_init(&e);
    if (machine_pause(m, RUNSTATE_INTERNAL_ERROR, &e) < 0)
        log_error("after the failed reset: %s", e.msg);
    return -err->code;
}

int machine_reset(struct machine *m, struct gw_error *err)
{
    if (!machine_park_vcpus(m))
        return gw_error_set(err, EAGAIN, "the VM's run state changed during the reset; "
                            "nothing was reset");
    int r = kvm_vm_reset_devices(&m->kvm);
    if (r < 0) {
        gw_error_set(err, -r, "resetting interrupt controllers: %s", strerror(-r));
        return reset_failed(m, err);
    }
    machine_devices_reset(m);
    for (unsigned i = 0; i < m->nr_vcpus; i++)
        if ((r = vcpu_reset(&m->vcpus[i], err)) < 0)
            return reset_failed(m, err);
    if (!m->cfg.incoming || m->cfg.kernel || m->cfg.test_guest) {
        if ((r = machine_boot(m, err)) < 0)
            return reset_failed(m, err);
    }
    log_info("system reset");
    if (m->ops && m->ops->event)
        m->ops->event(m->ops_opaque, "RESET", NULL);
    /* The guest runs again if its state says so now (not as it was when the
     * reset began: a pause may have come meanwhile). */
    pthread_mutex_lock(&m->lock);
    if (runstate_is_running(m->state)) {
        m->vcpus_run = true;
        pthread_cond_broadcast(&m->cond);
    }
    pthread_mutex_unlock(&m->lock);
    return 0;
}
