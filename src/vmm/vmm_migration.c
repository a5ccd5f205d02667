/* Migration on the VMM's QMP socket: the QMP commands, and the VM hooks the
 * migration engine calls (struct mig_vm_ops) implemented on the machine. */
#define LOG_PREFIX "vmm-mig"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "devices/cmos.h"
#include "devices/power.h"
#include "devices/serial.h"
#include "migration/migration.h"
#include "migration/state_records.h"
#include "migration/stream_devices.h"
#include "vmm/cpu_state.h"
#include "vmm/machine.h"
#include "vmm/vmm_control_internal.h"
#include "vmm/vmm_mig_rules.h"

/* The format's device table is the VMM's devices. */
_Static_assert(sizeof(struct kvm_irqchip) == SDEV_IRQCHIP_LEN, "irqchip");
_Static_assert(sizeof(struct kvm_pit_state2) == SDEV_PIT_LEN, "pit");
_Static_assert(sizeof(((struct kvm_clock_data *)0)->clock) == SDEV_KVMCLOCK_LEN, "kvmclock");
_Static_assert(sizeof(struct serial_state) == SDEV_SERIAL0_LEN &&
                   SERIAL_STATE_VERSION == SDEV_SERIAL0_VERSION, "serial0");
_Static_assert(sizeof(struct cmos_state) == SDEV_CMOS_LEN && CMOS_STATE_VERSION == SDEV_CMOS_VERSION,
               "cmos");
_Static_assert(sizeof(struct power_state) == SDEV_POWER_LEN &&
                   POWER_STATE_VERSION == SDEV_POWER_VERSION, "power");

struct vmm_migration {
    struct vmm_control *ctl;
    struct machine *machine;
    struct migration mig;
    struct dirty_log dirty;
    /* A guest reset cancelled the outgoing migration (query-migrate says
     * so in error-desc); cleared when a new one starts. */
    bool reset_cancelled;
    /* Incoming state, applied only when the stream is complete. */
    struct vcpu_state *pending_vcpu[MACHINE_MAX_VCPUS];
    struct platform_state platform;
    struct serial_state serial;
    struct cmos_state cmos;
    struct power_state power;
    unsigned devices_seen;           /* bit per enum stream_dev */
    /* Loaded, but the PIT and kvmclock of `platform` wait for the start. */
    bool start_pending;
    /* An incoming migration began to apply its state here (KVM may have
     * refused a part of it): this VMM takes no other. */
    bool applied;
};

/* ---- hooks for the engine (migration thread) ---- */

static int vm_stop(void *opaque, struct gw_error *err)
{
    struct vmm_migration *vm = opaque;
    /* machine_pause records, under the machine's lock, whether the vCPUs
     * ran; a `stop` during the switch-over clears it. */
    /* Input arriving from now on stays with the caller (not in a FIFO whose
     * state has been sent), so no byte is lost or doubled. */
    serial_pause_input(vm->machine->serial, true);
    int r = machine_pause(vm->machine, RUNSTATE_FINISH_MIGRATE, err);
    /* Refused, or the run state changed while the vCPUs were being parked:
     * the engine sees no stop and gives nothing back (vm_resume), and the
     * guest may run on, so its input flows again. */
    if (r < 0)
        serial_pause_input(vm->machine->serial, false);
    return r;
}

static void vm_resume(void *opaque)
{
    struct vmm_migration *vm = opaque;
    machine_switchover_give_back(vm->machine);
}

static void vm_completed(void *opaque)
{
    struct vmm_migration *vm = opaque;
    struct gw_error err;
    gw_error_init(&err);
    machine_set_state(vm->machine, RUNSTATE_POSTMIGRATE, &err);
}

static int vm_save_state(void *opaque, struct stream *s, struct gw_error *err)
{
    struct vmm_migration *vm = opaque;
    struct machine *m = vm->machine;
    /* The in-kernel PIT and IOAPIC go on delivering into the LAPICs while
     * the vCPUs are parked: taken first, what they deliver until the LAPICs
     * are taken is in the LAPICs' state (taken after, it was in neither). */
    struct platform_state p;
    int r = platform_state_save(&m->kvm, &p, err);
    if (r < 0)
        return r;
    struct vcpu_state *st = malloc(sizeof(*st));
    if (!st)
        return gw_error_set(err, ENOMEM, "out of memory");
    for (unsigned i = 0; i < m->nr_vcpus && r == 0; i++) {
        r = vcpu_state_save(&m->kvm, m->vcpus[i].fd, st, err);
        if (r == 0 && state_write_vcpu(s, i, st) < 0)
            r = gw_error_set(err, EIO, "%s", stream_error(s));
    }
    free(st);
    if (r < 0)
        return r;
    struct serial_state ss;
    struct cmos_state cs;
    struct power_state ps;
    serial_save(m->serial, &ss);
    cmos_save(m->cmos, &cs);
    power_save(m->power, &ps);
    const void *body[SDEV_COUNT] = {
        [SDEV_PIC_MASTER] = &p.pic_master, [SDEV_PIC_SLAVE] = &p.pic_slave,
        [SDEV_IOAPIC] = &p.ioapic,         [SDEV_PIT] = &p.pit,
        [SDEV_KVMCLOCK] = &p.clock.clock,  [SDEV_SERIAL0] = &ss,
        [SDEV_CMOS] = &cs,                 [SDEV_POWER] = &ps,
    };
    for (int i = 0; i < SDEV_COUNT; i++) {
        const struct stream_device_kind *k = &stream_device_kinds[i];
        stream_write_device(s, k->id, 0, k->version, body[i], k->len);
    }
    if (stream_get_error(s))
        return gw_error_set(err, EIO, "%s", stream_error(s));
    return 0;
}

/* CPU_MODEL, after the header: vCPU 0's CPUID (the VMM's copy: asking KVM
 * would wait for the running vCPU to exit). The copy changes only in
 * vm_load_finish, on an incoming migration, when no outgoing one can run. */
static int vm_describe(void *opaque, struct stream *s, struct gw_error *err)
{
    struct vmm_migration *vm = opaque;
    const struct kvm_cpuid2 *c = vm->machine->vcpus[0].cpuid;
    if (!c || c->nent == 0)
        return 0;
    if (stream_write_cpu_model(s, c->entries, c->nent, vm->machine->vcpus[0].tsc_khz) < 0)
        return gw_error_set(err, EIO, "%s", stream_error(s));
    return 0;
}

/* The source's CPU, before any page: refused at once if this host's KVM
 * cannot give it or its TSC rate (the checks the vCPUs' state gets at the
 * end). This VMM's vCPUs do not run: asking them does not wait. */
static int check_cpu_model(struct vmm_migration *vm, const struct stream_record *rec,
                           struct gw_error *err)
{
    struct stream_cpu_model cm;
    if (stream_parse_cpu_model(rec->body, rec->length, &cm, err) < 0)
        return -err->code;
    struct kvm_cpuid_entry2 e[GWS_MAX_CPUID];
    memcpy(e, cm.entries, cm.count * sizeof(e[0]));
    return cpu_state_check_cpu(&vm->machine->kvm, vm->machine->vcpus[0].fd, e, cm.count,
                               cm.tsc_khz, err);
}

static int load_vcpu(struct vmm_migration *vm, const struct stream_record *rec, struct gw_error *err)
{
    struct vcpu_state *st = malloc(sizeof(*st));
    if (!st)
        return gw_error_set(err, ENOMEM, "out of memory");
    uint32_t id;
    if (state_parse_vcpu(rec->body, rec->length, &id, st, err) < 0) {
        free(st);
        return -err->code;
    }
    if (id >= vm->machine->nr_vcpus || vm->pending_vcpu[id]) {
        free(st);
        return gw_error_set(err, EPROTO, "vCPU %u: no such vCPU here, or sent twice", id);
    }
    vm->pending_vcpu[id] = st;
    return 0;
}

/* A DEVICE_STATE of the format's table, kept until load_finish. */
static int load_device(struct vmm_migration *vm, const struct stream_record *rec, struct gw_error *err)
{
    struct stream_device dev;
    int rc = stream_parse_device(rec->body, rec->length, &dev, err);
    if (rc < 0)
        return rc;
    int kind = stream_device_kind_of(&dev, err);
    if (kind < 0)
        return kind;
    void *dst[SDEV_COUNT] = {
        [SDEV_PIC_MASTER] = &vm->platform.pic_master, [SDEV_PIC_SLAVE] = &vm->platform.pic_slave,
        [SDEV_IOAPIC] = &vm->platform.ioapic,         [SDEV_PIT] = &vm->platform.pit,
        [SDEV_KVMCLOCK] = &vm->platform.clock.clock,  [SDEV_SERIAL0] = &vm->serial,
        [SDEV_CMOS] = &vm->cmos,                      [SDEV_POWER] = &vm->power,
    };
    if (stream_device_see(&vm->devices_seen, kind, err) < 0)
        return -err->code;
    memcpy(dst[kind], dev.data, dev.len); /* dev.len is the table's: the size of *dst */
    return 0;
}

static int vm_load_record(void *opaque, const struct stream_record *rec, struct gw_error *err)
{
    struct vmm_migration *vm = opaque;
    if (rec->type == GWS_CPU_MODEL)
        return check_cpu_model(vm, rec, err);
    return rec->type == GWS_VCPU_STATE ? load_vcpu(vm, rec, err) : load_device(vm, rec, err);
}

static void drop_pending(struct vmm_migration *vm)
{
    for (unsigned i = 0; i < MACHINE_MAX_VCPUS; i++) {
        free(vm->pending_vcpu[i]);
        vm->pending_vcpu[i] = NULL;
    }
    vm->devices_seen = 0;
}

static int vm_load_finish(void *opaque, struct gw_error *err)
{
    struct vmm_migration *vm = opaque;
    struct machine *m = vm->machine;
    int r = 0;
    for (unsigned i = 0; i < m->nr_vcpus; i++)
        if (!vm->pending_vcpu[i])
            r = gw_error_set(err, EPROTO, "the stream has no state for vCPU %u", i);
    int missing = stream_device_missing(vm->devices_seen);
    if (r == 0 && missing >= 0)
        r = gw_error_set(err, EPROTO, "the stream lacks the state of device %s",
                         stream_device_kinds[missing].id);
    /* Streams from before the power button have no "power": PM1 all zero. */
    if (!(vm->devices_seen & (1u << SDEV_POWER)))
        vm->power = (struct power_state){ .version = POWER_STATE_VERSION };
    /* Every body checked before anything is applied: what fails from here
     * on is KVM refusing a value, and marks this VMM (applied). */
    if (r == 0)
        r = platform_state_check(&vm->platform, err);
    if (r == 0)
        r = serial_state_check(&vm->serial, err);
    if (r == 0)
        r = cmos_state_check(&vm->cmos, err);
    if (r == 0)
        r = power_state_check(&vm->power, err);
    for (unsigned i = 0; i < m->nr_vcpus && r == 0; i++) {
        r = vcpu_state_check(&m->kvm, m->vcpus[i].fd, vm->pending_vcpu[i], err);
        if (r < 0)
            gw_error_prefix(err, "vCPU %u", i);
    }
    /* The guest's CPU (TSC rate, CPUID) before any register: KVM checks
     * MSRs and XSAVE against it. A refusal that changed nothing leaves
     * this VMM as it was. */
    bool changed = false;
    for (unsigned i = 0; i < m->nr_vcpus && r == 0; i++) {
        const struct vcpu_state *st = vm->pending_vcpu[i];
        r = vcpu_state_set_cpu(&m->kvm, m->vcpus[i].fd, st, &changed, err);
        if (r < 0)
            gw_error_prefix(err, "vCPU %u", i);
        else if (st->has_cpuid && vcpu_keep_cpu(&m->vcpus[i], st->cpuid, st->ncpuid) < 0)
            r = gw_error_set(err, ENOMEM, "out of memory");
    }
    if (r == 0 || changed)
        vm->applied = true;
    /* QEMU's order: the interrupt controllers and devices, then the vCPUs;
     * the PIT and kvmclock wait for the start (vm_start). */
    if (r == 0)
        r = platform_state_load(&m->kvm, &vm->platform, err);
    if (r == 0)
        r = serial_load(m->serial, &vm->serial, err);
    if (r == 0)
        r = cmos_load(m->cmos, &vm->cmos, err);
    if (r == 0)
        r = power_load(m->power, &vm->power, err);
    for (unsigned i = 0; i < m->nr_vcpus && r == 0; i++)
        r = vcpu_state_load(&m->kvm, m->vcpus[i].fd, vm->pending_vcpu[i], err);
    drop_pending(vm);
    vm->start_pending = r == 0; /* r == 0: every device was there */
    return r;
}

static void vm_start(void *opaque)
{
    struct vmm_migration *vm = opaque;
    struct gw_error err;
    gw_error_init(&err);
    if (vm->start_pending) {
        vm->start_pending = false;
        if (platform_state_start(&vm->machine->kvm, &vm->platform, &err) < 0)
            log_error("starting the migrated guest: %s", err.msg);
    }
    pthread_mutex_lock(&vm->ctl->start_lock);
    if (vm->ctl->autostart)
        machine_resume(vm->machine, &err);
    else
        machine_set_state(vm->machine, RUNSTATE_PAUSED, &err);
    pthread_mutex_unlock(&vm->ctl->start_lock);
}

/* Free a half-loaded guest's memory: the VM stays waiting (inmigrate). */
static void vm_discard(void *opaque)
{
    struct vmm_migration *vm = opaque;
    struct guest_ram *ram = &vm->machine->ram;
    drop_pending(vm);
    vm->start_pending = false;
    if (fallocate(ram->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)ram->size) < 0)
        memset(ram->host, 0, ram->size);
}

static void vm_set_throttle(void *opaque, unsigned pct)
{
    struct vmm_migration *vm = opaque;
    struct gw_error err;
    gw_error_init(&err);
    machine_set_throttle(vm->machine, pct, &err);
}

static int vm_vcpu_of_tid(void *opaque, int tid)
{
    struct vmm_migration *vm = opaque;
    for (unsigned i = 0; i < vm->machine->nr_vcpus; i++)
        if (vm->machine->vcpus[i].tid == tid)
            return (int)i;
    return -1;
}

/* The source of a post-copy guest is gone: what is missing is lost. The
 * guest is stopped by an error (STOP): the vCPUs that do not wait for a
 * page stop now; those blocked on one stay blocked (userfaultfd stays open),
 * so nothing waits for them to park. */
static void vm_lost(void *opaque)
{
    struct vmm_migration *vm = opaque;
    struct gw_error err;
    gw_error_init(&err);
    if (machine_stop_nowait(vm->machine, RUNSTATE_INTERNAL_ERROR, &err) < 0)
        log_error("stopping the guest: %s", err.msg);
    log_error("the guest lost its post-copy source and cannot run on");
}

static void vm_event(void *opaque, const char *name, struct json_object *data)
{
    struct vmm_migration *vm = opaque;
    vmm_control_event(vm->ctl, name, data);
}

static const struct mig_vm_ops vm_ops = {
    .stop = vm_stop, .resume = vm_resume, .completed = vm_completed, .save_state = vm_save_state,
    .describe = vm_describe,
    .load_record = vm_load_record, .load_finish = vm_load_finish, .start = vm_start,
    .discard = vm_discard, .set_throttle = vm_set_throttle, .event = vm_event,
    .vcpu_of_tid = vm_vcpu_of_tid, .lost = vm_lost,
};

/* ---- QMP commands ---- */

static struct vmm_migration *V(void *opaque) { return ((struct vmm_control *)opaque)->mig; }

static const char *str_arg(struct json_object *args, const char *k)
{
    struct json_object *v;
    return json_object_object_get_ex(args, k, &v) ? json_object_get_string(v) : NULL;
}

static bool bool_arg(struct json_object *args, const char *k)
{
    struct json_object *v;
    return json_object_object_get_ex(args, k, &v) && json_object_get_boolean(v);
}

static int cmd_migrate(void *opaque, struct json_object *args, struct json_object **ret,
                       struct qmp_error *err)
{
    struct vmm_migration *vm = V(opaque);
    enum runstate s = machine_state(vm->machine);
    struct gw_error e;
    gw_error_init(&e);
    if (bool_arg(args, "resume")) {
        if (mig_resume(&vm->mig, str_arg(args, "uri"), &e) < 0)
            return vmm_qmp_fail(err, &e);
        return 0;
    }
    if (s == RUNSTATE_INMIGRATE || s == RUNSTATE_SHUTDOWN || s == RUNSTATE_INTERNAL_ERROR ||
        s == RUNSTATE_PRELAUNCH) {
        qmp_error_set(err, "GenericError", "Cannot migrate a VM in state %s", runstate_name(s));
        return -1;
    }
    if (vmm_migration_handed_over(opaque, err))
        return -1;
    if (mig_start_outgoing(&vm->mig, str_arg(args, "uri"), &e) < 0)
        return vmm_qmp_fail(err, &e);
    vm->reset_cancelled = false;
    return 0;
}

static int cmd_migrate_incoming(void *opaque, struct json_object *args, struct json_object **ret,
                                struct qmp_error *err)
{
    struct vmm_migration *vm = V(opaque);
    if (machine_state(vm->machine) != RUNSTATE_INMIGRATE) {
        qmp_error_set(err, "GenericError",
                      "The incoming migration needs a VM started with --incoming");
        return -1;
    }
    if (vm->applied) {
        qmp_error_set(err, "GenericError", "This VM holds part of the state of a failed incoming "
                      "migration: start a new VMM with --incoming for another");
        return -1;
    }
    struct gw_error e;
    gw_error_init(&e);
    if (mig_start_incoming(&vm->mig, str_arg(args, "uri"), &e) < 0)
        return vmm_qmp_fail(err, &e);
    return 0;
}

static int cmd_migrate_cancel(void *opaque, struct json_object *args, struct json_object **ret,
                              struct qmp_error *err)
{
    struct gw_error e;
    gw_error_init(&e);
    if (mig_cancel(&V(opaque)->mig, &e) < 0)
        return vmm_qmp_fail(err, &e);
    return 0;
}

static int cmd_start_postcopy(void *opaque, struct json_object *args, struct json_object **ret,
                              struct qmp_error *err)
{
    struct gw_error e;
    gw_error_init(&e);
    return mig_start_postcopy(&V(opaque)->mig, &e) < 0 ? vmm_qmp_fail(err, &e) : 0;
}

static int cmd_migrate_pause(void *opaque, struct json_object *args, struct json_object **ret,
                             struct qmp_error *err)
{
    struct gw_error e;
    gw_error_init(&e);
    return mig_pause(&V(opaque)->mig, &e) < 0 ? vmm_qmp_fail(err, &e) : 0;
}

static int cmd_migrate_recover(void *opaque, struct json_object *args, struct json_object **ret,
                               struct qmp_error *err)
{
    struct gw_error e;
    gw_error_init(&e);
    return mig_recover(&V(opaque)->mig, str_arg(args, "uri"), &e) < 0 ? vmm_qmp_fail(err, &e) : 0;
}

static void add_int(struct json_object *o, const char *k, uint64_t v)
{
    json_object_object_add(o, k, json_object_new_int64((int64_t)v));
}

/* Destination: fault latency and blocked time (QEMU's postcopy-blocktime
 * and postcopy-vcpu-blocktime, in ms; the latency object is godwit's). */
static void add_postcopy_stats(struct json_object *o, const struct mig_stats *st, unsigned nvcpus)
{
    add_int(o, "postcopy-blocktime", st->blocktime_us / 1000);
    struct json_object *a = json_object_new_array();
    for (unsigned i = 0; i < nvcpus && i < MIG_MAX_VCPUS_STATS; i++)
        json_object_array_add(a, json_object_new_int64((int64_t)(st->vcpu_blocktime_us[i] / 1000)));
    json_object_object_add(o, "postcopy-vcpu-blocktime", a);
    struct json_object *nv = json_object_new_object();
    add_int(nv, "faults", st->non_vcpu_faults);
    add_int(nv, "wait-ms", st->non_vcpu_wait_us / 1000);
    json_object_object_add(o, "postcopy-non-vcpu", nv);
    add_int(o, "postcopy-found-present", st->postcopy_found_present);
    struct json_object *l = json_object_new_object();
    add_int(l, "faults", st->fault_count);
    add_int(l, "p50-us", st->fault_p50_us);
    add_int(l, "p99-us", st->fault_p99_us);
    add_int(l, "max-us", st->fault_max_us);
    json_object_object_add(o, "postcopy-fault-latency", l);
}

/* Where the downtime went (godwit; struct mig_downtime_phases). */
static void add_downtime_phases(struct json_object *o, const struct mig_downtime_phases *p)
{
    struct json_object *d = json_object_new_object();
    for (unsigned i = 0; i < MIG_NPHASES; i++) {
        char key[16];
        snprintf(key, sizeof(key), "%s-us", mig_phase_names[i]);
        add_int(d, key, p->us[i]);
    }
    json_object_object_add(o, "downtime-phases", d);
}

static int cmd_query_migrate(void *opaque, struct json_object *args, struct json_object **ret,
                             struct qmp_error *err)
{
    struct vmm_migration *vm = V(opaque);
    struct mig_stats st;
    mig_get_stats(&vm->mig, &st);
    struct json_object *o = json_object_new_object();
    *ret = o;
    if (st.status == MIG_NONE)
        return 0;
    json_object_object_add(o, "status", json_object_new_string(mig_state_name(st.status)));
    add_int(o, "total-time", st.total_ms);
    add_int(o, "setup-time", st.setup_ms);
    if (!vm->mig.incoming && (st.status == MIG_COMPLETED || mig_state_is_postcopy(st.status))) {
        add_int(o, "downtime", st.downtime_ms);
        if (st.downtime_phases.known)
            add_downtime_phases(o, &st.downtime_phases);
    }
    if (mig_state_is_active(st.status) && !vm->mig.incoming)
        add_int(o, "expected-downtime", st.expected_downtime_ms);
    if (st.status == MIG_CANCELLED && vm->reset_cancelled && !vm->mig.incoming)
        json_object_object_add(o, "error-desc",
                               json_object_new_string("migration cancelled: the guest reset itself"));
    else if ((st.status == MIG_FAILED || st.status == MIG_CANCELLED ||
              st.status == MIG_POSTCOPY_PAUSED) && st.error_desc[0])
        json_object_object_add(o, "error-desc", json_object_new_string(st.error_desc));
    json_object_object_add(o, "postcopy-started", json_object_new_boolean(st.postcopy_started));
    if (st.paused_count)
        add_int(o, "postcopy-pauses", st.paused_count);
    if (!vm->mig.incoming) {
        add_int(o, "switchover-retries", st.switchover_retries);
        add_int(o, "rounds-ended-early", st.rounds_ended_early);
        add_int(o, "switchover-deferrals", st.switchover_deferrals);
    }
    if (st.throttle_pct)
        add_int(o, "cpu-throttle-percentage", st.throttle_pct);
    struct json_object *ram = json_object_new_object();
    add_int(ram, "transferred", st.transferred);
    add_int(ram, "remaining", st.remaining);
    add_int(ram, "total", st.total);
    add_int(ram, "duplicate", st.duplicate);
    add_int(ram, "skipped", st.skipped);
    add_int(ram, "normal", st.normal);
    add_int(ram, "normal-bytes", st.normal_bytes);
    add_int(ram, "dirty-pages-rate", st.dirty_pages_rate);
    json_object_object_add(ram, "mbps", json_object_new_double((double)st.mbps_x1000 / 1000.0));
    add_int(ram, "dirty-sync-count", st.dirty_sync_count);
    add_int(ram, "page-size", GWS_PAGE_SIZE);
    add_int(ram, "iteration", st.iteration);
    add_int(ram, "postcopy-requests", st.postcopy_requests);
    add_int(ram, "postcopy-bytes", st.postcopy_bytes);
    json_object_object_add(o, "ram", ram);
    if (vm->mig.incoming && (st.fault_count || st.postcopy_bytes))
        add_postcopy_stats(o, &st, vm->machine->nr_vcpus);
    return 0;
}

static bool param_known(const char *name)
{
    struct mig_params p;
    memset(&p, 0, sizeof(p));
    for (unsigned i = 0; i < mig_params_count(); i++) {
        uint64_t v;
        const char *n = mig_params_get(&p, i, &v);
        if (n && strcmp(n, name) == 0)
            return true;
    }
    return false;
}

static int cmd_set_params(void *opaque, struct json_object *args, struct json_object **ret,
                          struct qmp_error *err)
{
    struct vmm_migration *vm = V(opaque);
    struct mig_params p;
    mig_get_params(&vm->mig, &p);
    struct gw_error e;
    gw_error_init(&e);
    json_object_object_foreach(args, key, val) {
        if (!param_known(key)) {
            qmp_error_set(err, "GenericError", "Parameter '%s' is unexpected", key);
            return -1;
        }
        /* Signed 64-bit, as QEMU's integers (json-c holds 2^63..2^64-1,
         * which get_int64 would silently cut to 2^63-1). */
        if (!json_object_is_type(val, json_type_int) ||
            (json_object_get_int64(val) == INT64_MAX && json_object_get_uint64(val) > INT64_MAX)) {
            qmp_error_set(err, "GenericError", "Invalid parameter type for '%s', expected: integer", key);
            return -1;
        }
        if (mig_params_set(&p, key, json_object_get_int64(val), &e) < 0)
            return vmm_qmp_fail(err, &e); /* nothing applied */
    }
    if (mig_set_params(&vm->mig, &p, &e) < 0)
        return vmm_qmp_fail(err, &e);
    return 0;
}

static int cmd_query_params(void *opaque, struct json_object *args, struct json_object **ret,
                            struct qmp_error *err)
{
    struct mig_params p;
    mig_get_params(&V(opaque)->mig, &p);
    struct json_object *o = json_object_new_object();
    for (unsigned i = 0; i < mig_params_count(); i++) {
        uint64_t v;
        const char *n = mig_params_get(&p, i, &v);
        add_int(o, n, v);
    }
    *ret = o;
    return 0;
}

static int cmd_set_caps(void *opaque, struct json_object *args, struct json_object **ret,
                        struct qmp_error *err)
{
    struct vmm_migration *vm = V(opaque);
    struct mig_caps c;
    mig_get_caps(&vm->mig, &c);
    struct json_object *list;
    json_object_object_get_ex(args, "capabilities", &list);
    struct gw_error e;
    gw_error_init(&e);
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        struct json_object *item = json_object_array_get_idx(list, i), *name, *state;
        if (!json_object_is_type(item, json_type_object) || json_object_object_length(item) != 2 ||
            !json_object_object_get_ex(item, "capability", &name) ||
            !json_object_object_get_ex(item, "state", &state) ||
            !json_object_is_type(name, json_type_string) ||
            !json_object_is_type(state, json_type_boolean)) {
            qmp_error_set(err, "GenericError",
                          "Each capability must be {\"capability\": NAME, \"state\": BOOL}");
            return -1;
        }
        if (mig_caps_set(&c, json_object_get_string(name), json_object_get_boolean(state), &e) < 0)
            return vmm_qmp_fail(err, &e);
    }
    if (mig_set_caps(&vm->mig, &c, &e) < 0)
        return vmm_qmp_fail(err, &e);
    return 0;
}

static int cmd_query_caps(void *opaque, struct json_object *args, struct json_object **ret,
                          struct qmp_error *err)
{
    struct mig_caps c;
    mig_get_caps(&V(opaque)->mig, &c);
    struct json_object *a = json_object_new_array();
    for (unsigned i = 0; i < mig_caps_count(); i++) {
        const char *n = mig_caps_name(i);
        if (!n)
            continue;
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "capability", json_object_new_string(n));
        json_object_object_add(o, "state", json_object_new_boolean(c.on[i]));
        json_object_array_add(a, o);
    }
    *ret = a;
    return 0;
}

static const struct qmp_command commands[] = {
    { .name = "migrate", .fn = cmd_migrate,
      .args = { { "uri", QMP_ARG_STR, true }, { "resume", QMP_ARG_BOOL, false },
                { "detach", QMP_ARG_BOOL, false }, { "blk", QMP_ARG_BOOL, false },
                { "inc", QMP_ARG_BOOL, false } } },
    { .name = "migrate-incoming", .fn = cmd_migrate_incoming, .args = { { "uri", QMP_ARG_STR, true } } },
    { .name = "migrate_cancel", .fn = cmd_migrate_cancel },
    { .name = "migrate-start-postcopy", .fn = cmd_start_postcopy },
    { .name = "migrate-pause", .fn = cmd_migrate_pause },
    { .name = "migrate-recover", .fn = cmd_migrate_recover, .args = { { "uri", QMP_ARG_STR, true } } },
    { .name = "query-migrate", .fn = cmd_query_migrate },
    { .name = "migrate-set-parameters", .fn = cmd_set_params, .allow_unknown_args = true },
    { .name = "query-migrate-parameters", .fn = cmd_query_params },
    { .name = "migrate-set-capabilities", .fn = cmd_set_caps,
      .args = { { "capabilities", QMP_ARG_ARRAY, true } } },
    { .name = "query-migrate-capabilities", .fn = cmd_query_caps },
};

bool vmm_migration_incoming_postcopy(struct vmm_control *c)
{
    if (!c->mig || !c->mig->mig.incoming)
        return false;
    struct mig_stats st;
    mig_get_stats(&c->mig->mig, &st);
    return mig_state_is_postcopy(st.status);
}

bool vmm_control_busy(struct vmm_control *c, struct qmp_error *err)
{
    if (c->mig && mig_active(&c->mig->mig)) {
        struct mig_stats st;
        mig_get_stats(&c->mig->mig, &st);
        qmp_error_set(err, "GenericError", mig_state_is_postcopy(st.status) && !c->mig->mig.incoming
                      ? "Post-copy is under way: the guest's newest state is on the destination"
                      : "A migration is in progress");
        return true;
    }
    return false;
}

/* What the engine says about the last migration, read under its lock. */
static struct vmm_mig_facts facts(struct vmm_migration *vm)
{
    struct migration *mg = &vm->mig;
    pthread_mutex_lock(&mg->lock);
    struct vmm_mig_facts f = {
        .status = mg->stats.status, .incoming = mg->incoming,
        .postcopy_started = mg->stats.postcopy_started, .committing = mg->committing,
    };
    pthread_mutex_unlock(&mg->lock);
    f.uffd_held = __atomic_load_n(&vm->machine->ram.holds_uffd, __ATOMIC_ACQUIRE);
    f.run = machine_state(vm->machine);
    return f;
}

bool vmm_migration_handed_over(struct vmm_control *c, struct qmp_error *err)
{
    if (!c->mig)
        return false;
    struct vmm_mig_facts f = facts(c->mig);
    if (!vmm_mig_handed_over(&f))
        return false;
    qmp_error_set(err, "GenericError", "The guest was handed over to the destination by post-copy "
                  "(postcopy-started): it runs there, and this copy of it is out of date");
    return true;
}

bool vmm_migration_memory_incomplete(struct vmm_control *c, struct qmp_error *err)
{
    if (!c->mig)
        return false;
    struct vmm_mig_facts f = facts(c->mig);
    if (!vmm_mig_memory_incomplete(&f))
        return false;
    if (mig_state_is_active(f.status))
        qmp_error_set(err, "GenericError", "Guest memory is still arriving (incoming migration, "
                      "status %s): pages not received yet cannot be read or written",
                      mig_state_name(f.status));
    else
        qmp_error_set(err, "GenericError", "The guest lost the source of its post-copy migration: "
                      "pages never received cannot be read or written");
    return true;
}

enum machine_verdict vmm_control_guest_request(struct vmm_control *c, bool reset)
{
    struct vmm_migration *vm = c ? c->mig : NULL;
    if (!vm)
        return MACHINE_GO;
    struct vmm_mig_facts f = facts(vm);
    bool cancel;
    enum machine_verdict v = vmm_mig_guest_request(&f, reset, &cancel);
    if (cancel) {
        struct gw_error e;
        gw_error_init(&e);
        if (mig_cancel(&vm->mig, &e) == 0) {
            vm->reset_cancelled = true;
            log_warn("the guest reset itself: outgoing migration cancelled; the reset follows "
                     "its end");
        } /* else the hand-over began meanwhile: it decides, the reset waits */
    }
    if (v == MACHINE_DROP && f.incoming)
        log_warn("guest reset dropped: the guest lost its post-copy source");
    return v;
}

int vmm_migration_init(struct vmm_control *c, struct gw_error *err)
{
    struct vmm_migration *vm = calloc(1, sizeof(*vm));
    if (!vm)
        return gw_error_set(err, ENOMEM, "out of memory");
    struct machine *m = c->machine;
    vm->ctl = c;
    vm->machine = m;
    if (dirty_log_init(&vm->dirty, m->kvm.vm_fd, &m->ram, m->kvm.has_manual_dirty_protect, err) < 0) {
        free(vm);
        return -err->code;
    }
    mig_init(&vm->mig, vm, &vm_ops, &m->ram, &vm->dirty, m->cfg.name, m->cfg.uuid, m->nr_vcpus);
    c->mig = vm;
    return vmm_control_register(c, commands, sizeof(commands) / sizeof(commands[0]));
}

void vmm_migration_fini(struct vmm_control *c)
{
    struct vmm_migration *vm = c->mig;
    if (!vm)
        return;
    mig_fini(&vm->mig);
    drop_pending(vm);
    dirty_log_fini(&vm->dirty);
    free(vm);
    c->mig = NULL;
}
