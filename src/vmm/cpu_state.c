#define LOG_PREFIX "cpustate"
#include "vmm/cpu_state.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "common/log.h"
#include "vmm/cpu_model.h"

#define MSR_IA32_TSC            0x10
#define MSR_IA32_ARCH_CAPS      0x10a
#define MSR_IA32_TSC_DEADLINE   0x6e0
/* KVM takes fewer than 256 MSRs per KVM_GET_MSRS / KVM_SET_MSRS (E2BIG). */
#define MSRS_PER_CALL 255

static int kvm_xsave_size(const struct kvm_vm *vm)
{
    int sz = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    return sz < (int)sizeof(struct kvm_xsave) ? (int)sizeof(struct kvm_xsave) : sz;
}

uint32_t cpu_state_xsave_size(const struct kvm_vm *vm)
{
    int sz = kvm_xsave_size(vm);
    return (uint32_t)(sz > CPU_STATE_XSAVE_MAX ? CPU_STATE_XSAVE_MAX : sz);
}

int cpu_state_check_host(const struct kvm_vm *vm, struct gw_error *err)
{
    uint32_t idx[CPU_STATE_MAX_MSRS + 1];
    unsigned n = cpu_state_msr_indices(vm, idx, CPU_STATE_MAX_MSRS + 1);
    if (n > CPU_STATE_MAX_MSRS)
        return gw_error_set(err, ENOTSUP,
                            "KVM here lists more than %u saveable MSRs; godwit carries at most %u",
                            CPU_STATE_MAX_MSRS, CPU_STATE_MAX_MSRS);
    if (kvm_xsave_size(vm) > CPU_STATE_XSAVE_MAX)
        return gw_error_set(err, ENOTSUP,
                            "KVM here has a %d-byte XSAVE area; godwit carries at most %d",
                            kvm_xsave_size(vm), CPU_STATE_XSAVE_MAX);
    return 0;
}

unsigned cpu_state_msr_indices(const struct kvm_vm *vm, uint32_t *out, unsigned max)
{
    unsigned n = 0;
    /* TSC first: KVM adjusts TSC-relative MSRs when it is written. */
    if (kvm_vm_msr_listed(vm, MSR_IA32_TSC) && n < max)
        out[n++] = MSR_IA32_TSC;
    for (uint32_t i = 0; i < vm->msr_list->nmsrs && n < max; i++) {
        uint32_t idx = vm->msr_list->indices[i];
        if (idx == MSR_IA32_TSC || idx == MSR_IA32_ARCH_CAPS)
            continue;
        out[n++] = idx;
    }
    return n;
}

/* Read MSRs one batch at a time; KVM stops at the first it cannot read, so
 * skip that one and go on. */
static int save_msrs(const struct kvm_vm *vm, int fd, struct vcpu_state *st)
{
    uint32_t idx[CPU_STATE_MAX_MSRS];
    unsigned n = cpu_state_msr_indices(vm, idx, CPU_STATE_MAX_MSRS);
    struct {
        struct kvm_msrs hdr;
        struct kvm_msr_entry e[MSRS_PER_CALL];
    } buf;
    st->nmsrs = 0;
    unsigned pos = 0;
    while (pos < n) {
        unsigned batch = n - pos < MSRS_PER_CALL ? n - pos : MSRS_PER_CALL;
        memset(&buf, 0, sizeof(buf));
        buf.hdr.nmsrs = batch;
        for (unsigned i = 0; i < batch; i++)
            buf.e[i].index = idx[pos + i];
        int r = ioctl(fd, KVM_GET_MSRS, &buf);
        if (r < 0)
            return -errno;
        for (int i = 0; i < r; i++)
            st->msrs[st->nmsrs++] = buf.e[i];
        pos += (unsigned)r;
        if ((unsigned)r < batch) {
            log_debug("MSR 0x%x is not readable, skipped", idx[pos]);
            pos++;
        }
    }
    return 0;
}

uint32_t cpu_state_tsc_khz(int vcpu_fd)
{
    int khz = ioctl(vcpu_fd, KVM_GET_TSC_KHZ);
    return khz > 0 ? (uint32_t)khz : 0;
}

/* The CPUID table KVM holds for the vCPU (what the guest sees, with the
 * bits KVM keeps in step with CR4 and the APIC base), and its TSC rate. */
static int save_cpu(int fd, struct vcpu_state *st)
{
    struct {
        struct kvm_cpuid2 hdr;
        struct kvm_cpuid_entry2 e[CPU_STATE_MAX_CPUID];
    } buf;
    /* Kernels before 6.4 tell the count neither on success (nent stays
     * as given) nor on E2BIG (the header is not copied back). So every
     * slot starts as an entry KVM never holds (flags all ones: only bits
     * 0..2 are defined) and the table ends at the first one left so. */
    memset(&buf, 0xff, sizeof(buf));
    buf.hdr.nent = CPU_STATE_MAX_CPUID;
    buf.hdr.padding = 0;
    if (ioctl(fd, KVM_GET_CPUID2, &buf) < 0)
        return -errno;
    uint32_t n = 0;
    while (n < buf.hdr.nent && n < CPU_STATE_MAX_CPUID && buf.e[n].flags != UINT32_MAX)
        n++;
    if (n == 0) {
        errno = ENOENT; /* no table at all: the VMM always sets one */
        return -errno;
    }
    st->has_cpuid = true;
    st->ncpuid = n;
    memcpy(st->cpuid, buf.e, n * sizeof(buf.e[0]));
    st->tsc_khz = cpu_state_tsc_khz(fd);
    return 0;
}

int vcpu_state_save(const struct kvm_vm *vm, int fd, struct vcpu_state *st, struct gw_error *err)
{
    const char *what;
    memset(&st->regs, 0, sizeof(st->regs));
    st->xsave_size = cpu_state_xsave_size(vm);
#define GET(req, ptr) do { what = #req; if (ioctl(fd, req, ptr) < 0) goto fail; } while (0)
    /* MP state first: reading it makes KVM take a pending INIT or SIPI
     * (an AP being started), which can reset the vCPU or set its CS:RIP.
     * Read after them, the registers and a latched INIT in the events
     * would be those of before, and the destination would run the AP from
     * its reset vector or INIT it again. */
    GET(KVM_GET_MP_STATE, &st->mp);
    GET(KVM_GET_REGS, &st->regs);
    GET(KVM_GET_SREGS, &st->sregs);
    if (st->xsave_size > sizeof(struct kvm_xsave))
        GET(KVM_GET_XSAVE2, st->xsave);
    else
        GET(KVM_GET_XSAVE, st->xsave);
    st->has_xcrs = ioctl(fd, KVM_GET_XCRS, &st->xcrs) == 0;
    GET(KVM_GET_LAPIC, &st->lapic);
    GET(KVM_GET_VCPU_EVENTS, &st->events);
    GET(KVM_GET_DEBUGREGS, &st->debugregs);
#undef GET
    what = "KVM_GET_MSRS";
    if (save_msrs(vm, fd, st) < 0)
        goto fail;
    what = "KVM_GET_CPUID2";
    if (save_cpu(fd, st) < 0)
        goto fail;
    return 0;
fail:
    return gw_error_set(err, errno, "saving vCPU state: %s: %s", what, strerror(errno));
}

static int load_msrs(int fd, const struct vcpu_state *st, bool deadline_only,
                     struct gw_error *err)
{
    struct {
        struct kvm_msrs hdr;
        struct kvm_msr_entry e[MSRS_PER_CALL];
    } buf;
    unsigned i = 0;
    for (;;) {
        memset(&buf.hdr, 0, sizeof(buf.hdr));
        unsigned n = 0;
        /* In order (the TSC first), a batch at a time. */
        for (; i < st->nmsrs && i < CPU_STATE_MAX_MSRS && n < MSRS_PER_CALL; i++) {
            bool is_deadline = st->msrs[i].index == MSR_IA32_TSC_DEADLINE;
            if (is_deadline == deadline_only)
                buf.e[n++] = st->msrs[i];
        }
        if (n == 0)
            return 0;
        buf.hdr.nmsrs = n;
        int r = ioctl(fd, KVM_SET_MSRS, &buf);
        if (r < 0)
            return gw_error_set(err, errno, "restoring MSRs: %s", strerror(errno));
        if ((unsigned)r != n)
            return gw_error_set(err, EINVAL, "restoring MSRs: MSR 0x%x was refused",
                                buf.e[r].index);
    }
}

/* cpu_model_tsc_plan with this vCPU's rate (*host_khz gets it) and KVM's
 * scaling. */
static enum cpu_tsc_plan tsc_plan(const struct kvm_vm *vm, int vcpu_fd, uint32_t guest_khz,
                                  bool invtsc, uint32_t *host_khz)
{
    *host_khz = cpu_state_tsc_khz(vcpu_fd);
    bool can_scale = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_CONTROL) > 0;
    return cpu_model_tsc_plan(guest_khz, *host_khz, can_scale, invtsc);
}

int cpu_state_check_cpu(const struct kvm_vm *vm, int vcpu_fd, const struct kvm_cpuid_entry2 *e,
                        uint32_t n, uint32_t tsc_khz, struct gw_error *err)
{
    if (cpu_model_check(e, n, vm->cpuid->entries, vm->cpuid->nent, err) < 0)
        return -err->code;
    uint32_t host;
    if (tsc_plan(vm, vcpu_fd, tsc_khz, cpu_model_invtsc(e, n), &host) == CPU_TSC_REFUSE)
        return cpu_model_tsc_refusal(tsc_khz, host, err);
    return 0;
}

int vcpu_state_check(const struct kvm_vm *vm, int fd, const struct vcpu_state *st,
                     struct gw_error *err)
{
    /* The CPU first: a missing feature names what the guest lacks here,
     * an XSAVE area that does not fit only that it does not. */
    if (st->has_cpuid && cpu_state_check_cpu(vm, fd, st->cpuid, st->ncpuid, st->tsc_khz, err) < 0)
        return -err->code;
    if (st->xsave_size > cpu_state_xsave_size(vm) || st->nmsrs > CPU_STATE_MAX_MSRS ||
        st->ncpuid > CPU_STATE_MAX_CPUID)
        return gw_error_set(err, EINVAL,
                            "vCPU state does not fit this host (xsave %u bytes, here %u)",
                            st->xsave_size, cpu_state_xsave_size(vm));
    return 0;
}

/* The guest's TSC rate, by the plan vcpu_state_check made. Set also when
 * it is this host's within KVM's tolerance: the vCPU then reports, and a
 * later migration carries on, the rate the guest calibrated to, not one
 * that drifts by a host's tolerance at every move. */
static int set_tsc_khz(const struct kvm_vm *vm, int fd, const struct vcpu_state *st,
                       bool *changed, struct gw_error *err)
{
    uint32_t host;
    enum cpu_tsc_plan plan = tsc_plan(vm, fd, st->tsc_khz,
                                      cpu_model_invtsc(st->cpuid, st->ncpuid), &host);
    switch (plan) {
    case CPU_TSC_KEEP:
        return 0;
    case CPU_TSC_REFUSE: /* checked before; nothing changed yet */
        return cpu_model_tsc_refusal(st->tsc_khz, host, err);
    case CPU_TSC_WARN:
        log_warn("the guest's TSC ran at %u kHz, this host's runs at %u kHz and KVM here cannot "
                 "scale it: the guest's TSC changes rate (it keeps time by kvmclock, which "
                 "follows)", st->tsc_khz, host);
        return 0;
    case CPU_TSC_SET:
        break;
    }
    /* Even refused, the call may have changed the rate the vCPU reports. */
    *changed = true;
    if (ioctl(fd, KVM_SET_TSC_KHZ, (unsigned long)st->tsc_khz) < 0)
        return gw_error_set(err, errno, "setting the guest's TSC rate (%u kHz, this host's %u "
                            "kHz): %s", st->tsc_khz, host, strerror(errno));
    if (!cpu_model_tsc_same(st->tsc_khz, host))
        log_info("TSC at the guest's %u kHz (this host's: %u kHz, scaled)", st->tsc_khz, host);
    return 0;
}

int vcpu_state_set_cpu(const struct kvm_vm *vm, int fd, const struct vcpu_state *st,
                       bool *changed, struct gw_error *err)
{
    if (!st->has_cpuid)
        return 0;
    if (set_tsc_khz(vm, fd, st, changed, err) < 0)
        return -err->code;
    struct {
        struct kvm_cpuid2 hdr;
        struct kvm_cpuid_entry2 e[CPU_STATE_MAX_CPUID];
    } buf;
    memset(&buf.hdr, 0, sizeof(buf.hdr));
    buf.hdr.nent = st->ncpuid;
    memcpy(buf.e, st->cpuid, st->ncpuid * sizeof(buf.e[0]));
    *changed = true;
    if (ioctl(fd, KVM_SET_CPUID2, &buf) < 0)
        return gw_error_set(err, errno, "giving the vCPU the guest's CPUID: %s", strerror(errno));
    return 0;
}

int vcpu_state_load(const struct kvm_vm *vm, int fd, const struct vcpu_state *st,
                    struct gw_error *err)
{
    const char *what;
#define SET(req, ptr) do { what = #req; if (ioctl(fd, req, ptr) < 0) goto fail; } while (0)
    SET(KVM_SET_SREGS, &st->sregs);
    SET(KVM_SET_REGS, &st->regs);
    SET(KVM_SET_XSAVE, st->xsave);
    if (st->has_xcrs)
        SET(KVM_SET_XCRS, &st->xcrs);
#undef SET
    if (load_msrs(fd, st, false, err) < 0)
        return -err->code;
#define SET(req, ptr) do { what = #req; if (ioctl(fd, req, ptr) < 0) goto fail; } while (0)
    SET(KVM_SET_MP_STATE, &st->mp);
    SET(KVM_SET_LAPIC, &st->lapic);
    SET(KVM_SET_VCPU_EVENTS, &st->events);
    SET(KVM_SET_DEBUGREGS, &st->debugregs);
#undef SET
    /* The TSC deadline is only meaningful once the LAPIC is in place. */
    return load_msrs(fd, st, true, err);
fail:
    return gw_error_set(err, errno, "restoring vCPU state: %s: %s", what, strerror(errno));
}

int platform_state_save(const struct kvm_vm *vm, struct platform_state *st, struct gw_error *err)
{
    memset(st, 0, sizeof(*st));
    st->pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
    st->pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
    st->ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
    if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &st->pic_master) < 0 ||
        ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &st->pic_slave) < 0 ||
        ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &st->ioapic) < 0)
        return gw_error_set(err, errno, "saving interrupt controllers: %s", strerror(errno));
    if (ioctl(vm->vm_fd, KVM_GET_PIT2, &st->pit) < 0)
        return gw_error_set(err, errno, "saving the PIT: %s", strerror(errno));
    if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &st->clock) < 0)
        return gw_error_set(err, errno, "saving kvmclock: %s", strerror(errno));
    return 0;
}

int platform_state_check(const struct platform_state *st, struct gw_error *err)
{
    if (st->pic_master.chip_id != KVM_IRQCHIP_PIC_MASTER ||
        st->pic_slave.chip_id != KVM_IRQCHIP_PIC_SLAVE || st->ioapic.chip_id != KVM_IRQCHIP_IOAPIC)
        return gw_error_set(err, EINVAL, "interrupt controller state is inconsistent");
    return 0;
}

int platform_state_load(const struct kvm_vm *vm, const struct platform_state *st,
                        struct gw_error *err)
{
    if (platform_state_check(st, err) < 0)
        return -err->code;
    if (ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &st->pic_master) < 0 ||
        ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &st->pic_slave) < 0 ||
        ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &st->ioapic) < 0)
        return gw_error_set(err, errno, "restoring interrupt controllers: %s", strerror(errno));
    return 0;
}

int platform_state_start(const struct kvm_vm *vm, const struct platform_state *st,
                         struct gw_error *err)
{
    if (ioctl(vm->vm_fd, KVM_SET_PIT2, &st->pit) < 0)
        return gw_error_set(err, errno, "restoring the PIT: %s", strerror(errno));
    /* Guest time continues from the saved value: it neither jumps by the
     * migration's downtime nor runs backwards. */
    struct kvm_clock_data c = { .clock = st->clock.clock };
    if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &c) < 0)
        return gw_error_set(err, errno, "restoring kvmclock: %s", strerror(errno));
    return 0;
}
