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
    const struct cpu_model_spec *cpu; /* features left out of the host's (NULL: none) */
};

/* What to do now with a reset or power-off the guest asked for. */
enum machine_verdict {
    MACHINE_GO,       /* act on it now */
    MACHINE_DROP,     /* forget it: the guest runs elsewhere now (handed over by a migration) */
    MACHINE_LATER,    /* ask again in MACHINE_RETRY_MS; the vCPUs stay stopped meanwhile */
};
#define MACHINE_RETRY_MS 20

/* Hooks the machine calls on the main thread. */
struct machine_ops {
    /* An event for control clients (QMP name, data owned by the callee). */
    void (*event)(void *opaque, const char *name, struct json_object *data);
    /* The guest powered off or `quit` was requested: the process should end. */
    void (*terminate)(void *opaque, int exit_status);
    /* The guest asked for a reset (reset true: triple fault, i8042, KVM) or
     * a power-off: may it happen now? NULL: always MACHINE_GO. */
    enum machine_verdict (*guest_request)(void *opaque, bool reset);
};

struct machine_request;

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
    /* Source of a migration: resume the vCPUs if the switch-over gives the
     * guest back (they ran when it stopped them and no `stop` came since). */
    bool resume_after_switchover;

    /* Main thread only: a guest request put off (MACHINE_LATER) and the
     * one-shot timer that retries it (-1: none). */
    struct machine_request *deferred;
    int deferred_timer;

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

/* Stop all vCPUs and enter `state` (emits STOP when leaving running).
 * Entering finish-migrate records whether they ran (see
 * machine_switchover_give_back). -EAGAIN if the run state changed while
 * the vCPUs were being stopped (whoever changed it owns them now). */
int machine_pause(struct machine *m, enum runstate state, struct gw_error *err);
/* QMP `stop`: running -> paused (STOP); in finish-migrate, the guest
 * stays paused if the switch-over gives it back; else nothing. */
int machine_stop(struct machine *m, struct gw_error *err);
/* Any thread: stop the vCPUs and enter `state` (STOP when leaving running)
 * without waiting for them to park: for a guest that lost the source of its
 * post-copy migration, whose vCPUs may be blocked for good on missing pages. */
int machine_stop_nowait(struct machine *m, enum runstate state, struct gw_error *err);
/* Run the vCPUs (emits RESUME). */
int machine_resume(struct machine *m, struct gw_error *err);
/* Migration thread: the switch-over gave the guest back (a failure, a
 * cancel, the switch-over guard). Only a guest still in finish-migrate is
 * touched: it runs again (RESUME) if it ran at the stop and no `stop` came
 * since, else it is paused. Another state (internal-error, shutdown, ...)
 * set meanwhile is kept. */
void machine_switchover_give_back(struct machine *m);
/* Reset like a power cycle without power-off (emits RESET). The vCPUs run
 * again if the state is running once the reset is done. -EAGAIN if the
 * run state changed while the vCPUs were being stopped. */
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
