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
#include "vmm/machine_internal.h"

extern const uint8_t test_guest_elf[];
extern const uint8_t test_guest_elf_end[];

/* The test guest learns its vCPU count from the command line (no ACPI). */
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

static int load_kernel(struct machine *m, struct boot_result *res, struct gw_error *err)
{
    if (!m->cmdline) {
        m->cmdline = effective_cmdline(&m->cfg);
        if (!m->cmdline)
            return gw_error_set(err, ENOMEM, "out of memory");
    }
    struct boot_input in = {
        .kernel_path = m->cfg.kernel,
        .initrd_path = m->cfg.initrd,
        .cmdline = m->cmdline,
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

int machine_reset(struct machine *m, struct gw_error *err)
{
    pthread_mutex_lock(&m->lock);
    enum runstate state = m->state;
    pthread_mutex_unlock(&m->lock);
    machine_park_vcpus(m);
    int r = kvm_vm_reset_devices(&m->kvm);
    if (r < 0)
        return gw_error_set(err, -r, "resetting interrupt controllers: %s", strerror(-r));
    machine_devices_reset(m);
    for (unsigned i = 0; i < m->nr_vcpus; i++)
        if ((r = vcpu_reset(&m->vcpus[i], err)) < 0)
            return r;
    if (!m->cfg.incoming || m->cfg.kernel || m->cfg.test_guest) {
        if ((r = machine_boot(m, err)) < 0)
            return r;
    }
    log_info("system reset");
    if (m->ops && m->ops->event)
        m->ops->event(m->ops_opaque, "RESET", NULL);
    /* A reset restarts a stopped guest only if it was running. */
    if (runstate_is_running(state)) {
        pthread_mutex_lock(&m->lock);
        m->vcpus_run = true;
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
    }
    return 0;
}
