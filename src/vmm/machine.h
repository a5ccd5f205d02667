/* The machine: guest RAM, the KVM VM, vCPU threads, the port bus and the
 * legacy devices, and the run state (running, paused, ...).
 *
 * Threads: machine_* functions are called on the main (event-loop) thread
 * unless marked otherwise; vCPU threads call the device models and post
 * requests (reset, power-off, internal error) back to the main thread.
 * Returns: 0 or -errno; human-facing errors through struct gw_error. */
#ifndef GW_VMM_MACHINE_H
#define GW_VMM_MACHINE_H

#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/evloop.h"
#include "devices/bus.h"
#include "memory/guest_ram.h"
#include "vmm/kvm_vm.h"
#include "vmm/runstate.h"
#include "vmm/vcpu.h"

struct serial;
struct cmos;
struct i8042;
struct misc_ports;
struct power_port;

#define MACHINE_MAX_VCPUS 64

struct machine_config {
    const char *name;
    uint8_t uuid[16];        /* all zero: none given */
    uint64_t memory_mib;
    unsigned nr_vcpus;
    const char *kernel;      /* NULL with test_guest */
    const char *initrd;
    const char *cmdline;
    bool test_guest;
    bool incoming;           /* wait for a migration instead of booting */
    bool no_reboot;          /* a guest reset (triple fault) powers off */
    int serial_out_fd;       /* where COM1 output goes (-1: discard) */
};

/* Hooks the machine calls on the main thread. */
struct machine_ops {
    /* An event for control clients (QMP name, data owned by the callee). */
    void (*event)(void *opaque, const char *name, struct json_object *data);
    /* The guest powered off or `quit` was requested: the process should end. */
    void (*terminate)(void *opaque, int exit_status);
};

struct machine {
    struct machine_config cfg;
    char *cmdline;            /* effective guest command line (owned) */
    struct guest_ram ram;
    struct kvm_vm kvm;
    struct vcpu vcpus[MACHINE_MAX_VCPUS];
    unsigned nr_vcpus;
    struct pio_bus bus;
    struct serial *serial;
    struct cmos *cmos;
    struct i8042 *kbd;
    struct misc_ports *misc;
    struct power_port *power; /* ACPI PM1: power button, power-off (in misc) */
    struct evloop *loop;
    const struct machine_ops *ops;
    void *ops_opaque;

    pthread_mutex_t lock;     /* protects the fields below */
    pthread_cond_t cond;      /* vcpus_run, vcpus_quit, the throttle thread changed */
    pthread_cond_t parked_cond; /* vcpus_parked changed */
    enum runstate state;
    bool vcpus_run;           /* vCPU threads may enter the guest */
    bool vcpus_quit;          /* vCPU threads must exit */
    unsigned vcpus_parked;    /* threads waiting for vcpus_run */
    bool request_pending;     /* a reset/power-off request is queued */

    /* CPU throttle for auto-converge (see machine_set_throttle). */
    unsigned throttle_pct;
    bool throttle_thread_running;
    pthread_t throttle_thread;
};

int machine_init(struct machine *m, const struct machine_config *cfg, struct evloop *loop,
                 const struct machine_ops *ops, void *opaque, struct gw_error *err);
void machine_fini(struct machine *m);

/* Load the kernel (or test guest) and put the vCPUs at its entry. */
int machine_boot(struct machine *m, struct gw_error *err);
/* Start the vCPU threads (parked until machine_resume). */
int machine_start_threads(struct machine *m, struct gw_error *err);

/* Stop all vCPUs and enter `state` (emits STOP when leaving running). */
int machine_pause(struct machine *m, enum runstate state, struct gw_error *err);
/* Run the vCPUs (emits RESUME). */
int machine_resume(struct machine *m, struct gw_error *err);
/* Reset like a power cycle without power-off (emits RESET). */
int machine_reset(struct machine *m, struct gw_error *err);
enum runstate machine_state(struct machine *m);
/* Stop the vCPUs, emit SHUTDOWN {guest, reason}, ask the process to end. */
void machine_shutdown(struct machine *m, bool guest, const char *reason);
/* Change state without touching the vCPUs (checked, emits nothing). */
int machine_set_state(struct machine *m, enum runstate to, struct gw_error *err);

/* Press the ACPI power button (QMP system_powerdown): emits POWERDOWN, sets
 * PWRBTN_STS and raises the SCI if the guest enabled it. Refused while
 * waiting for an incoming migration. */
int machine_powerdown(struct machine *m, struct gw_error *err);

/* Throttle the vCPUs to (100 - pct)% of their time (0 = off), as QEMU's
 * auto-converge: every vCPU sleeps pct/(100-pct) x 10 ms per 10 ms slice. */
int machine_set_throttle(struct machine *m, unsigned pct, struct gw_error *err);
unsigned machine_throttle(struct machine *m);

/* Write `size` bytes of guest-physical memory at `gpa` to `path`. */
int machine_pmemsave(struct machine *m, uint64_t gpa, uint64_t size, const char *path,
                     struct gw_error *err);
/* Feed bytes to the guest's COM1 input; returns bytes accepted. Any thread. */
size_t machine_serial_input(struct machine *m, const uint8_t *buf, size_t len);

#endif
