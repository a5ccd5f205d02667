/* Domain definitions and the libvirt-style name tables. */
#include "daemon/domain_def.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- name tables ---- */

static const char *const timeout_action_names[] = {
    [DOM_TIMEOUT_ABORT] = "abort",
    [DOM_TIMEOUT_PAUSE] = "pause",
    [DOM_TIMEOUT_POSTCOPY] = "postcopy",
};

static const char *const state_names[] = {
    [DOM_STATE_NOSTATE] = "no state",   [DOM_STATE_RUNNING] = "running",
    [DOM_STATE_BLOCKED] = "idle",       [DOM_STATE_PAUSED] = "paused",
    [DOM_STATE_SHUTDOWN] = "in shutdown", [DOM_STATE_SHUTOFF] = "shut off",
    [DOM_STATE_CRASHED] = "crashed",    [DOM_STATE_PMSUSPENDED] = "pmsuspended",
};

static const char *const reason_names[] = {
    [DOM_REASON_UNKNOWN] = "unknown",
    [DOM_REASON_BOOTED] = "booted",
    [DOM_REASON_MIGRATED] = "migrated",
    [DOM_REASON_RESTORED] = "restored",
    [DOM_REASON_UNPAUSED] = "unpaused",
    [DOM_REASON_MIGRATION_CANCELED] = "migration canceled",
    [DOM_REASON_POSTCOPY] = "post-copy",
    [DOM_REASON_USER] = "user",
    [DOM_REASON_MIGRATING] = "migrating",
    [DOM_REASON_POSTCOPY_FAILED] = "post-copy failed",
    [DOM_REASON_STARTING_UP] = "starting up",
    [DOM_REASON_SHUTDOWN] = "shutdown",
    [DOM_REASON_DESTROYED] = "destroyed",
    [DOM_REASON_CRASHED] = "crashed",
    [DOM_REASON_FAILED] = "failed",
    [DOM_REASON_SAVED] = "saved",
    [DOM_REASON_DAEMON] = "daemon",
};

static const char *const event_names[] = {
    [DOM_EVENT_DEFINED] = "Defined",     [DOM_EVENT_UNDEFINED] = "Undefined",
    [DOM_EVENT_STARTED] = "Started",     [DOM_EVENT_SUSPENDED] = "Suspended",
    [DOM_EVENT_RESUMED] = "Resumed",     [DOM_EVENT_STOPPED] = "Stopped",
    [DOM_EVENT_SHUTDOWN] = "Shutdown",   [DOM_EVENT_CRASHED] = "Crashed",
};

static const char *const detail_names[] = {
    [DOM_DETAIL_ADDED] = "Added",         [DOM_DETAIL_UPDATED] = "Updated",
    [DOM_DETAIL_REMOVED] = "Removed",     [DOM_DETAIL_BOOTED] = "Booted",
    [DOM_DETAIL_MIGRATED] = "Migrated",   [DOM_DETAIL_RESTORED] = "Restored",
    [DOM_DETAIL_PAUSED] = "Paused",       [DOM_DETAIL_UNPAUSED] = "Unpaused",
    [DOM_DETAIL_POSTCOPY] = "Post-copy",  [DOM_DETAIL_POSTCOPY_ERROR] = "Post-copy Error",
    [DOM_DETAIL_API_ERROR] = "API error", [DOM_DETAIL_SHUTDOWN] = "Shutdown",
    [DOM_DETAIL_DESTROYED] = "Destroyed", [DOM_DETAIL_CRASHED] = "Crashed",
    [DOM_DETAIL_FAILED] = "Failed",       [DOM_DETAIL_FINISHED] = "Finished",
    [DOM_DETAIL_PANICKED] = "Panicked",
};

static const char *const job_names[] = {
    [DOM_JOB_NONE] = "none",
    [DOM_JOB_MODIFY] = "modify",
    [DOM_JOB_MIGRATION_OUT] = "migration out",
    [DOM_JOB_MIGRATION_IN] = "migration in",
    [DOM_JOB_UNREADABLE] = "unreadable migration record",
};

_Static_assert(ARRAY_SIZE(state_names) == DOM_STATE__COUNT, "state names");
_Static_assert(ARRAY_SIZE(reason_names) == DOM_REASON__COUNT, "reason names");
_Static_assert(ARRAY_SIZE(event_names) == DOM_EVENT__COUNT, "event names");
_Static_assert(ARRAY_SIZE(detail_names) == DOM_DETAIL__COUNT, "detail names");
_Static_assert(ARRAY_SIZE(job_names) == DOM_JOB__COUNT, "job names");
_Static_assert(ARRAY_SIZE(timeout_action_names) == DOM_TIMEOUT__COUNT, "action names");

#define NAME_OF(table, i) ((unsigned)(i) < ARRAY_SIZE(table) ? table[i] : "?")

const char *dom_timeout_action_name(enum dom_timeout_action a) { return NAME_OF(timeout_action_names, a); }
const char *dom_state_name(enum dom_state s) { return NAME_OF(state_names, s); }
const char *dom_reason_name(enum dom_reason r) { return NAME_OF(reason_names, r); }
const char *dom_event_name(enum dom_event e) { return NAME_OF(event_names, e); }
const char *dom_event_detail_name(enum dom_event_detail d) { return NAME_OF(detail_names, d); }
const char *dom_job_name(enum dom_job j) { return NAME_OF(job_names, j); }

static int lookup(const char *const *table, size_t n, const char *s)
{
    for (size_t i = 0; s && i < n; i++)
        if (strcmp(table[i], s) == 0)
            return (int)i;
    return -1;
}

int dom_state_from_name(const char *s) { return lookup(state_names, ARRAY_SIZE(state_names), s); }
int dom_reason_from_name(const char *s) { return lookup(reason_names, ARRAY_SIZE(reason_names), s); }

bool dom_state_active(enum dom_state s)
{
    return s == DOM_STATE_RUNNING || s == DOM_STATE_BLOCKED || s == DOM_STATE_PAUSED ||
           s == DOM_STATE_SHUTDOWN || s == DOM_STATE_PMSUSPENDED;
}

bool dom_transition_ok(enum dom_state from, enum dom_state to)
{
    if (from == to)
        return true;
    if (!dom_state_active(from)) /* shut off / crashed / no state: only a start */
        return to == DOM_STATE_RUNNING || to == DOM_STATE_PAUSED || !dom_state_active(to);
    return true; /* an active domain may pause, resume or stop */
}

/* ---- jobs ---- */

int dom_job_check(enum dom_job held, const char *name, const char *what, struct gw_error *err)
{
    switch (held) {
    case DOM_JOB_NONE:
        return 0;
    case DOM_JOB_MODIFY:
        return -EAGAIN;
    case DOM_JOB_UNREADABLE:
        return gw_error_set(err, EBUSY,
                            "cannot %s domain '%s': its migration job file could not be read at "
                            "start (the daemon's log says why), and it may say that the guest "
                            "runs on another host; repair or remove STATE/jobs/UUID.json, then "
                            "restart the daemon", what, name);
    default:
        return gw_error_set(err, EBUSY,
                            "cannot %s domain '%s': a %s job is running on it "
                            "(wait for it to end or abort it with domjobabort)",
                            what, name, dom_job_name(held));
    }
}

/* ---- exits ---- */

void dom_exit_classify(const struct dom_exit_facts *f, enum dom_reason *reason,
                       enum dom_event_detail *detail)
{
    if (f->migrated) {
        *reason = DOM_REASON_MIGRATED;
        *detail = DOM_DETAIL_MIGRATED;
    } else if (f->migration_failed) {
        *reason = DOM_REASON_FAILED;
        *detail = DOM_DETAIL_FAILED;
    } else if (f->destroy_requested) {
        *reason = DOM_REASON_DESTROYED;
        *detail = DOM_DETAIL_DESTROYED;
    } else if (f->shutdown_event &&
               (!f->status_known || (WIFEXITED(f->wait_status) && WEXITSTATUS(f->wait_status) == 0))) {
        *reason = DOM_REASON_SHUTDOWN;
        *detail = DOM_DETAIL_SHUTDOWN;
    } else {
        *reason = DOM_REASON_CRASHED;
        *detail = DOM_DETAIL_FAILED;
    }
}

/* ---- names and UUIDs ---- */

bool dom_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > DOM_NAME_MAX || name[0] == '.' || name[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("-_.", name[i]))
            return false;
    return true;
}

bool dom_uuid_parse(const char *s, char *out)
{
    if (strlen(s) != DOM_UUID_LEN)
        return false;
    for (int i = 0; i < DOM_UUID_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return false;
        out[i] = (char)tolower((unsigned char)s[i]);
    }
    out[DOM_UUID_LEN] = '\0';
    return true;
}

void dom_uuid_generate(char *out)
{
    uint8_t b[16] = { 0 };
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        for (size_t i = 0; i < sizeof(b); i++)
            b[i] = (uint8_t)rand();
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* variant 1 */
    snprintf(out, DOM_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

void dom_policy_default(struct dom_policy *p)
{
    p->permit_postcopy = true;
    p->permit_auto_converge = true;
    p->max_downtime_ms = 300;
    p->bandwidth_mib_s = 0;
    p->completion_timeout_s = 800;
    p->timeout_action = DOM_TIMEOUT_ABORT;
    p->switchover_retries = 2;
}

void dom_def_fini(struct dom_def *def)
{
    free(def->kernel);
    free(def->initrd);
    free(def->cmdline);
    free(def->serial_log);
    free(def->cpu);
    def->kernel = def->initrd = def->cmdline = def->serial_log = def->cpu = NULL;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int dom_def_copy(struct dom_def *dst, const struct dom_def *src)
{
    *dst = *src;
    dst->kernel = dup_or_null(src->kernel);
    dst->initrd = dup_or_null(src->initrd);
    dst->cmdline = dup_or_null(src->cmdline);
    dst->serial_log = dup_or_null(src->serial_log);
    dst->cpu = dup_or_null(src->cpu);
    if ((src->kernel && !dst->kernel) || (src->initrd && !dst->initrd) ||
        (src->cmdline && !dst->cmdline) || (src->serial_log && !dst->serial_log) ||
        (src->cpu && !dst->cpu)) {
        dom_def_fini(dst);
        return -ENOMEM;
    }
    return 0;
}
