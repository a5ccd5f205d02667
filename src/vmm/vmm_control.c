/* godwit-vmm's QMP commands: run control and memory access. Migration
 * commands are registered by the migration glue (vmm_migration.c). */
#define LOG_PREFIX "control"
#include "vmm/vmm_control.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "qmp/qmp_server.h"
#include "vmm/machine.h"
#include "vmm/options.h"
#include "vmm/vmm_control_internal.h"

static int cmd_query_version(void *opaque, struct json_object *args, struct json_object **ret,
                             struct qmp_error *err)
{
    *ret = json_tokener_parse("{\"qemu\": {\"major\": 0, \"minor\": 1, \"micro\": 0}, "
                              "\"package\": \"godwit " GODWIT_VERSION "\"}");
    return 0;
}

static int cmd_query_status(void *opaque, struct json_object *args, struct json_object **ret,
                            struct qmp_error *err)
{
    struct vmm_control *c = opaque;
    enum runstate s = machine_state(c->machine);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "status", json_object_new_string(runstate_name(s)));
    json_object_object_add(o, "singlestep", json_object_new_boolean(0));
    json_object_object_add(o, "running", json_object_new_boolean(runstate_is_running(s)));
    *ret = o;
    return 0;
}

static int cmd_query_name(void *opaque, struct json_object *args, struct json_object **ret,
                          struct qmp_error *err)
{
    struct vmm_control *c = opaque;
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(c->machine->cfg.name));
    *ret = o;
    return 0;
}

/* QEMU's query-uuid: {"UUID": "..."}, all zeros when none was given. */
static int cmd_query_uuid(void *opaque, struct json_object *args, struct json_object **ret,
                          struct qmp_error *err)
{
    struct vmm_control *c = opaque;
    char buf[37];
    vmm_uuid_format(c->machine->cfg.uuid, buf);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "UUID", json_object_new_string(buf));
    *ret = o;
    return 0;
}

int vmm_qmp_fail(struct qmp_error *err, const struct gw_error *e)
{
    qmp_error_set(err, "GenericError", "%s", e->msg);
    return -1;
}

static int cmd_stop(void *opaque, struct json_object *args, struct json_object **ret,
                    struct qmp_error *err)
{
    struct vmm_control *c = opaque;
    pthread_mutex_lock(&c->start_lock);
    enum runstate s = machine_state(c->machine);
    if (s == RUNSTATE_INMIGRATE)
        c->autostart = false; /* as QEMU: stay paused after the migration */
    pthread_mutex_unlock(&c->start_lock);
    if (s == RUNSTATE_INMIGRATE)
        return 0;
    /* Running: paused now. In finish-migrate: stays paused if the
     * switch-over gives the guest back (decided under the machine's lock). */
    struct gw_error e;
    gw_error_init(&e);
    struct qmp_error why;
    /* A post-copy destination: a vCPU waiting for a missing page leaves
     * KVM_RUN only when the page comes (kernels before 6.4 do not let a
     * signal interrupt that wait), never while the migration is paused:
     * waiting for it to park would hold the main loop, and migrate-recover
     * with it, for good. Paused now; such a vCPU parks when its page comes. */
    int r = s == RUNSTATE_RUNNING && vmm_migration_memory_incomplete(c, &why)
                ? machine_stop_nowait(c->machine, RUNSTATE_PAUSED, &e)
                : machine_stop(c->machine, &e);
    if (r < 0)
        return vmm_qmp_fail(err, &e);
    return 0;
}

static int cmd_cont(void *opaque, struct json_object *args, struct json_object **ret,
                    struct qmp_error *err)
{
    struct vmm_control *c = opaque;
    pthread_mutex_lock(&c->start_lock);
    enum runstate s = machine_state(c->machine);
    if (s == RUNSTATE_INMIGRATE)
        c->autostart = true;
    pthread_mutex_unlock(&c->start_lock);
    if (s == RUNSTATE_INMIGRATE)
        return 0;
    if (runstate_is_running(s))
        return 0;
    if (s == RUNSTATE_INTERNAL_ERROR || s == RUNSTATE_SHUTDOWN) {
        qmp_error_set(err, "GenericError", "Resetting the Virtual Machine is required");
        return -1;
    }
    if (!vmm_migration_incoming_postcopy(c) && vmm_control_busy(c, err))
        return -1;
    if (vmm_migration_handed_over(c, err)) /* a pre-copy one's source may run again */
        return -1;
    struct gw_error e;
    gw_error_init(&e);
    if (machine_resume(c->machine, &e) < 0)
        return vmm_qmp_fail(err, &e);
    return 0;
}

static void do_quit(void *opaque)
{
    struct vmm_control *c = opaque;
    machine_shutdown(c->machine, false, "host-qmp-quit");
}

static int cmd_quit(void *opaque, struct json_object *args, struct json_object **ret,
                    struct qmp_error *err)
{
    struct vmm_control *c = opaque;
    /* Reply first, then shut down on the next loop turn; once (a second
     * quit would raise SHUTDOWN again). */
    if (!c->quitting && evloop_post(c->loop, do_quit, c) == 0)
        c->quitting = true;
    return 0;
}

static int cmd_system_reset(void *opaque, struct json_object *args, struct json_object **ret,
                            struct qmp_error *err)
{
    struct vmm_control *c = opaque;
    enum runstate s = machine_state(c->machine);
    if (s == RUNSTATE_INMIGRATE || vmm_control_busy(c, err)) {
        if (s == RUNSTATE_INMIGRATE)
            qmp_error_set(err, "GenericError", "The VM is waiting for an incoming migration");
        return -1;
    }
    /* A reset rewrites guest memory: not a copy handed over, nor one with
     * pages missing (the write would wait for ever for a page). */
    if (vmm_migration_handed_over(c, err) || vmm_migration_memory_incomplete(c, err))
        return -1;
    struct gw_error e;
    gw_error_init(&e);
    if (machine_reset(c->machine, &e) < 0)
        return vmm_qmp_fail(err, &e);
    if (s == RUNSTATE_INTERNAL_ERROR || s == RUNSTATE_SHUTDOWN)
        machine_resume(c->machine, &e);
    return 0;
}

/* QEMU's system_powerdown: the ACPI power button, and the POWERDOWN event.
 * The guest decides what to do (the test guest and Linux power off). Not
 * on a source whose guest post-copy handed over: it would press a button
 * of a copy that never runs again. */
static int cmd_system_powerdown(void *opaque, struct json_object *args, struct json_object **ret,
                                struct qmp_error *err)
{
    struct vmm_control *c = opaque;
    if (vmm_migration_handed_over(c, err))
        return -1;
    struct gw_error e;
    gw_error_init(&e);
    if (machine_powerdown(c->machine, &e) < 0)
        return vmm_qmp_fail(err, &e);
    return 0;
}

static int cmd_pmemsave(void *opaque, struct json_object *args, struct json_object **ret,
                        struct qmp_error *err)
{
    struct vmm_control *c = opaque;
    struct json_object *v;
    json_object_object_get_ex(args, "val", &v);
    int64_t val = json_object_get_int64(v);
    json_object_object_get_ex(args, "size", &v);
    int64_t size = json_object_get_int64(v);
    json_object_object_get_ex(args, "filename", &v);
    const char *path = json_object_get_string(v);
    if (val < 0 || size < 0) {
        qmp_error_set(err, "GenericError", "Parameters 'val' and 'size' must not be negative");
        return -1;
    }
    if (vmm_migration_memory_incomplete(c, err)) /* reading a missing page would block */
        return -1;
    struct gw_error e;
    gw_error_init(&e);
    if (machine_pmemsave(c->machine, (uint64_t)val, (uint64_t)size, path, &e) < 0)
        return vmm_qmp_fail(err, &e);
    return 0;
}

static const struct qmp_command commands[] = {
    { .name = "query-version", .fn = cmd_query_version },
    { .name = "query-status", .fn = cmd_query_status },
    { .name = "query-name", .fn = cmd_query_name },
    { .name = "query-uuid", .fn = cmd_query_uuid },
    { .name = "stop", .fn = cmd_stop },
    { .name = "cont", .fn = cmd_cont },
    { .name = "quit", .fn = cmd_quit },
    { .name = "system_reset", .fn = cmd_system_reset },
    { .name = "system_powerdown", .fn = cmd_system_powerdown },
    { .name = "pmemsave", .fn = cmd_pmemsave,
      .args = { { "val", QMP_ARG_INT, true }, { "size", QMP_ARG_INT, true },
                { "filename", QMP_ARG_STR, true }, { "cpu-index", QMP_ARG_INT, false } } },
};

int vmm_control_register(struct vmm_control *c, const struct qmp_command *cmds, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        struct qmp_command cmd = cmds[i];
        cmd.opaque = c;
        int r = qmp_server_register(c->qmp, &cmd);
        if (r < 0)
            return r;
    }
    return 0;
}

struct vmm_control *vmm_control_new(struct evloop *loop, struct machine *m, struct gw_error *err)
{
    struct vmm_control *c = calloc(1, sizeof(*c));
    if (!c) {
        gw_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    c->loop = loop;
    c->machine = m;
    c->autostart = true;
    pthread_mutex_init(&c->start_lock, NULL);
    struct qmp_version ver = { 0, 1, 0, "godwit " GODWIT_VERSION };
    c->qmp = qmp_server_new(loop, &ver);
    if (!c->qmp ||
        vmm_control_register(c, commands, sizeof(commands) / sizeof(commands[0])) < 0 ||
        vmm_migration_init(c, err) < 0) {
        if (!gw_error_is_set(err))
            gw_error_set(err, ENOMEM, "cannot set up the control socket");
        vmm_control_free(c);
        return NULL;
    }
    return c;
}

void vmm_control_free(struct vmm_control *c)
{
    if (!c)
        return;
    vmm_migration_fini(c);
    qmp_server_free(c->qmp);
    pthread_mutex_destroy(&c->start_lock);
    free(c);
}

int vmm_control_listen(struct vmm_control *c, const char *path, struct gw_error *err)
{
    return qmp_server_listen(c->qmp, path, err);
}

void vmm_control_event(struct vmm_control *c, const char *name, struct json_object *data)
{
    if (!c) {
        json_object_put(data);
        return;
    }
    qmp_server_emit(c->qmp, name, data);
}
