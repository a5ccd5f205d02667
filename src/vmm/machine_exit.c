#define LOG_PREFIX "exit"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "common/log.h"
#include "vmm/machine_internal.h"

static void handle_io(struct machine *m, struct vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    vcpu->io_exits++;
    for (uint32_t i = 0; i < run->io.count; i++) {
        if (run->io.direction == KVM_EXIT_IO_OUT)
            pio_bus_write(&m->bus, run->io.port, data, run->io.size);
        else
            pio_bus_read(&m->bus, run->io.port, data, run->io.size);
        data += run->io.size;
    }
}

/* Nothing is memory-mapped in user space: reads see all-ones, writes drop. */
static void handle_mmio(struct machine *m, struct vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    static __thread uint64_t last_addr = ~0ULL;
    vcpu->mmio_exits++;
    if (!run->mmio.is_write)
        memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
    if (run->mmio.phys_addr != last_addr) {
        last_addr = run->mmio.phys_addr;
        log_debug("vCPU %u: unhandled MMIO %s at 0x%llx (%u bytes)", vcpu->id,
                  run->mmio.is_write ? "write" : "read", (unsigned long long)run->mmio.phys_addr,
                  run->mmio.len);
    }
}

static void describe_internal_error(struct vcpu *vcpu, char *buf, size_t len)
{
    struct kvm_run *run = vcpu->run;
    struct kvm_regs regs;
    unsigned long long rip = 0;
    if (ioctl(vcpu->fd, KVM_GET_REGS, &regs) == 0)
        rip = regs.rip;
    const char *what = "internal error";
    switch (run->internal.suberror) {
    case KVM_INTERNAL_ERROR_EMULATION: what = "emulation failure"; break;
    case KVM_INTERNAL_ERROR_SIMUL_EX: what = "exception while delivering an exception"; break;
    case KVM_INTERNAL_ERROR_DELIVERY_EV: what = "event delivery failure"; break;
    default: break;
    }
    int n = snprintf(buf, len, "KVM %s (suberror %u) at rip 0x%llx", what,
                     run->internal.suberror, rip);
    if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION && n > 0 && (size_t)n < len) {
        /* Show the instruction bytes when KVM gives them. */
        struct kvm_run *r = run;
        if (r->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) {
            n += snprintf(buf + n, len - (size_t)n, ", insn");
            for (unsigned i = 0; i < r->emulation_failure.insn_size && i < 15 && (size_t)n < len; i++)
                n += snprintf(buf + n, len - (size_t)n, " %02x", r->emulation_failure.insn_bytes[i]);
        }
    }
}

static void handle_system_event(struct machine *m, struct vcpu *vcpu)
{
    switch (vcpu->run->system_event.type) {
    case KVM_SYSTEM_EVENT_SHUTDOWN:
        machine_request(m, MACHINE_REQ_POWEROFF, vcpu->id, "system event shutdown");
        break;
    case KVM_SYSTEM_EVENT_RESET:
        machine_request(m, MACHINE_REQ_RESET, vcpu->id, "system event reset");
        break;
    default: {
        char desc[64];
        snprintf(desc, sizeof(desc), "unexpected system event %u", vcpu->run->system_event.type);
        machine_request(m, MACHINE_REQ_INTERNAL_ERROR, vcpu->id, desc);
    }
    }
}

void machine_handle_exit(struct machine *m, struct vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    char desc[256];
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        handle_io(m, vcpu);
        break;
    case KVM_EXIT_MMIO:
        handle_mmio(m, vcpu);
        break;
    case KVM_EXIT_INTR:
    case KVM_EXIT_HLT:
        break;
    case KVM_EXIT_SHUTDOWN:
        log_info("vCPU %u: triple fault, resetting", vcpu->id);
        machine_request(m, MACHINE_REQ_RESET, vcpu->id, "triple fault");
        break;
    case KVM_EXIT_SYSTEM_EVENT:
        handle_system_event(m, vcpu);
        break;
    case KVM_EXIT_INTERNAL_ERROR:
        describe_internal_error(vcpu, desc, sizeof(desc));
        machine_request(m, MACHINE_REQ_INTERNAL_ERROR, vcpu->id, desc);
        break;
    case KVM_EXIT_FAIL_ENTRY:
        snprintf(desc, sizeof(desc), "KVM entry failure, reason 0x%llx",
                 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        machine_request(m, MACHINE_REQ_INTERNAL_ERROR, vcpu->id, desc);
        break;
    default:
        snprintf(desc, sizeof(desc), "unexpected KVM exit reason %u", run->exit_reason);
        machine_request(m, MACHINE_REQ_INTERNAL_ERROR, vcpu->id, desc);
        break;
    }
}
