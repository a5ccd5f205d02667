#define LOG_PREFIX "kvm"
#include "vmm/kvm_vm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/log.h"

#define KVM_TSS_ADDR      0xfffbd000UL
#define KVM_IDENTITY_ADDR 0xfffbc000UL
#define CPUID_MAX_ENTRIES 256

static int get_supported_cpuid(struct kvm_vm *vm, struct gw_error *err)
{
    size_t sz = sizeof(struct kvm_cpuid2) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2);
    vm->cpuid = calloc(1, sz);
    if (!vm->cpuid)
        return gw_error_set(err, ENOMEM, "out of memory");
    vm->cpuid->nent = CPUID_MAX_ENTRIES;
    if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, vm->cpuid) < 0)
        return gw_error_set(err, errno, "KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
    /* Kernels before 6.13 tell the TSC-deadline timer, which the in-kernel
     * LAPIC emulates, only as a capability, not in this table (QEMU adds it
     * too): a guest that came from a newer host must not be refused here
     * for a timer this KVM gives. */
    if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0)
        for (uint32_t i = 0; i < vm->cpuid->nent; i++)
            if (vm->cpuid->entries[i].function == 1)
                vm->cpuid->entries[i].ecx |= 1u << 24;
    return 0;
}

static int get_msr_list(struct kvm_vm *vm, struct gw_error *err)
{
    struct kvm_msr_list probe = { .nmsrs = 0 };
    if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
        return gw_error_set(err, errno, "KVM_GET_MSR_INDEX_LIST: %s", strerror(errno));
    vm->msr_list = calloc(1, sizeof(*vm->msr_list) + probe.nmsrs * sizeof(uint32_t));
    if (!vm->msr_list)
        return gw_error_set(err, ENOMEM, "out of memory");
    vm->msr_list->nmsrs = probe.nmsrs;
    if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, vm->msr_list) < 0)
        return gw_error_set(err, errno, "KVM_GET_MSR_INDEX_LIST: %s", strerror(errno));
    return 0;
}

static int save_reset_state(struct kvm_vm *vm, struct gw_error *err)
{
    for (int i = 0; i < 2; i++) {
        vm->reset_pic[i].chip_id = i == 0 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
        if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &vm->reset_pic[i]) < 0)
            return gw_error_set(err, errno, "KVM_GET_IRQCHIP: %s", strerror(errno));
    }
    vm->reset_ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
    if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &vm->reset_ioapic) < 0)
        return gw_error_set(err, errno, "KVM_GET_IRQCHIP: %s", strerror(errno));
    if (ioctl(vm->vm_fd, KVM_GET_PIT2, &vm->reset_pit) < 0)
        return gw_error_set(err, errno, "KVM_GET_PIT2: %s", strerror(errno));
    return 0;
}

static int create_devices(struct kvm_vm *vm, struct gw_error *err)
{
    if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR) < 0)
        return gw_error_set(err, errno, "KVM_SET_TSS_ADDR: %s", strerror(errno));
    uint64_t ident = KVM_IDENTITY_ADDR;
    if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &ident) < 0)
        return gw_error_set(err, errno, "KVM_SET_IDENTITY_MAP_ADDR: %s", strerror(errno));
    if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
        return gw_error_set(err, errno, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
        return gw_error_set(err, errno, "KVM_CREATE_PIT2: %s", strerror(errno));
    return save_reset_state(vm, err);
}

static void enable_dirty_protect(struct kvm_vm *vm)
{
    int caps = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    if (caps <= 0)
        return;
    struct kvm_enable_cap cap = {
        .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
        .args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE |
                   (caps & KVM_DIRTY_LOG_INITIALLY_SET),
    };
    if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap) == 0)
        vm->has_manual_dirty_protect = true;
}

int kvm_vm_init(struct kvm_vm *vm, struct gw_error *err)
{
    memset(vm, 0, sizeof(*vm));
    vm->vm_fd = -1;
    vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0)
        return gw_error_set(err, errno, "cannot open /dev/kvm: %s", strerror(errno));
    int api = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION) {
        gw_error_set(err, ENOTSUP, "KVM API version %d, expected %d", api, KVM_API_VERSION);
        goto err_kvm;
    }
    vm->vcpu_mmap_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (vm->vcpu_mmap_size <= 0) {
        gw_error_set(err, errno, "KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
        goto err_kvm;
    }
    if (get_supported_cpuid(vm, err) < 0 || get_msr_list(vm, err) < 0)
        goto err_kvm;
    vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    if (vm->vm_fd < 0) {
        gw_error_set(err, errno, "KVM_CREATE_VM: %s", strerror(errno));
        goto err_kvm;
    }
    if (create_devices(vm, err) < 0)
        goto err_vm;
    enable_dirty_protect(vm);
    return 0;

err_vm:
    close(vm->vm_fd);
    vm->vm_fd = -1;
err_kvm:
    close(vm->kvm_fd);
    vm->kvm_fd = -1;
    free(vm->cpuid);
    free(vm->msr_list);
    vm->cpuid = NULL;
    vm->msr_list = NULL;
    return -err->code;
}

void kvm_vm_fini(struct kvm_vm *vm)
{
    if (vm->vm_fd >= 0)
        close(vm->vm_fd);
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
    free(vm->cpuid);
    free(vm->msr_list);
    vm->cpuid = NULL;
    vm->msr_list = NULL;
    vm->vm_fd = vm->kvm_fd = -1;
}

int kvm_vm_map_ram(struct kvm_vm *vm, const struct guest_ram *ram, bool dirty_log,
                   struct gw_error *err)
{
    return guest_ram_set_kvm_slots(ram, vm->vm_fd, dirty_log, err);
}

void kvm_vm_set_irq(void *opaque_vm, unsigned gsi, int level)
{
    struct kvm_vm *vm = opaque_vm;
    struct kvm_irq_level irq = { .irq = gsi, .level = level };
    if (ioctl(vm->vm_fd, KVM_IRQ_LINE, &irq) < 0)
        log_warn("KVM_IRQ_LINE gsi %u: %s", gsi, strerror(errno));
}

int kvm_vm_reset_devices(struct kvm_vm *vm)
{
    for (int i = 0; i < 2; i++)
        if (ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &vm->reset_pic[i]) < 0)
            return -errno;
    if (ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &vm->reset_ioapic) < 0)
        return -errno;
    if (ioctl(vm->vm_fd, KVM_SET_PIT2, &vm->reset_pit) < 0)
        return -errno;
    return 0;
}

bool kvm_vm_msr_listed(const struct kvm_vm *vm, uint32_t index)
{
    for (uint32_t i = 0; i < vm->msr_list->nmsrs; i++)
        if (vm->msr_list->indices[i] == index)
            return true;
    return false;
}
