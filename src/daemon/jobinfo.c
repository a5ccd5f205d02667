/* Job statistics: query-migrate -> struct jobinfo -> virsh text, rawstats,
 * JSON. See jobinfo.h. */
#include "daemon/jobinfo.h"

#include <errno.h>
#include <json-c/json.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[JOBINFO_TYPE__COUNT] = {
    "None", "Bounded", "Unbounded", "Completed", "Failed", "Cancelled",
};
static const char *const type_keys[JOBINFO_TYPE__COUNT] = {
    "none", "bounded", "unbounded", "completed", "failed", "cancelled",
};
static const char *const op_names[JOBINFO_OP__COUNT] = {
    "Unknown", "Start", "Save", "Restore", "Incoming migration", "Outgoing migration",
    "Snapshot", "Snapshot revert", "Dump", "Backup",
};
static const char *const op_keys[JOBINFO_OP__COUNT] = {
    "unknown", "start", "save", "restore", "incoming-migration", "outgoing-migration",
    "snapshot", "snapshot-revert", "dump", "backup",
};

const char *jobinfo_type_name(enum jobinfo_type t)
{
    return (unsigned)t < JOBINFO_TYPE__COUNT ? type_names[t] : "unknown";
}

const char *jobinfo_op_name(enum jobinfo_op op)
{
    return (unsigned)op < JOBINFO_OP__COUNT ? op_names[op] : "unknown";
}

/* ---- the statistics table (libvirt's typed-parameter order) ---------------- */

enum when { ALWAYS, IF_NONZERO, IF_SET };

struct field {
    const char *name;
    size_t off;         /* uint64_t in struct jobinfo */
    enum when when;
    size_t set_off;     /* bool, for IF_SET */
    bool derived;       /* computed from other fields: not read back */
};

#define U(f) offsetof(struct jobinfo, f)
static const struct field fields[] = {
    { "downtime", U(downtime_ms), IF_SET, U(downtime_set), false },
    { "setup_time", U(setup_time_ms), IF_SET, U(setup_time_set), false },
    { "data_total", U(mem_total), ALWAYS, 0, true },
    { "data_processed", U(mem_processed), ALWAYS, 0, true },
    { "data_remaining", U(mem_remaining), ALWAYS, 0, true },
    { "memory_total", U(mem_total), ALWAYS, 0, false },
    { "memory_processed", U(mem_processed), ALWAYS, 0, false },
    { "memory_remaining", U(mem_remaining), ALWAYS, 0, false },
    { "memory_bps", U(mem_bps), IF_NONZERO, 0, false },
    { "memory_constant", U(mem_constant), IF_SET, U(mem_pages_set), false },
    { "memory_normal", U(mem_normal), IF_SET, U(mem_pages_set), false },
    { "memory_normal_bytes", U(mem_normal_bytes), IF_SET, U(mem_pages_set), false },
    { "memory_dirty_rate", U(mem_dirty_rate), ALWAYS, 0, false },
    { "memory_iteration", U(mem_iteration), ALWAYS, 0, false },
    { "memory_postcopy_requests", U(mem_postcopy_requests), ALWAYS, 0, false },
    { "memory_page_size", U(mem_page_size), IF_NONZERO, 0, false },
    { "switchover_retries", U(switchover_retries), IF_NONZERO, 0, false },
    { "rounds_ended_early", U(rounds_ended_early), IF_NONZERO, 0, false },
    { "switchover_deferrals", U(switchover_deferrals), IF_NONZERO, 0, false },
#define PHASE(name, i) { "downtime_" name "_us", U(downtime_phase_us[i]), IF_SET, \
                          U(downtime_phases_set), false }
    PHASE("stop", MIG_PHASE_STOP), PHASE("sync", MIG_PHASE_SYNC), PHASE("pages", MIG_PHASE_PAGES),
    PHASE("state", MIG_PHASE_STATE), PHASE("load", MIG_PHASE_LOAD),
    PHASE("resume", MIG_PHASE_RESUME),
#undef PHASE
};
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

static uint64_t fval(const struct jobinfo *ji, const struct field *f)
{
    return *(const uint64_t *)((const char *)ji + f->off);
}

static bool fpresent(const struct jobinfo *ji, const struct field *f)
{
    switch (f->when) {
    case IF_NONZERO: return fval(ji, f) != 0;
    case IF_SET: return *(const bool *)((const char *)ji + f->set_off);
    default: return true;
    }
}

/* ---- query-migrate ------------------------------------------------------------ */

/* A non-negative integer member: 0 absent, 1 read, -EINVAL wrong. */
static int get_u64(struct json_object *o, const char *k, uint64_t *out, struct gw_error *err)
{
    struct json_object *v;
    if (!o || !json_object_object_get_ex(o, k, &v))
        return 0;
    errno = 0;
    int64_t x = json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : -1;
    if (x < 0 || errno)
        return gw_error_set(err, EINVAL, "query-migrate: '%s' is not a non-negative integer", k);
    *out = (uint64_t)x;
    return 1;
}

static int get_mbps(struct json_object *ram, uint64_t *bps, struct gw_error *err)
{
    struct json_object *v;
    if (!ram || !json_object_object_get_ex(ram, "mbps", &v))
        return 0;
    if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
        return gw_error_set(err, EINVAL, "query-migrate: 'mbps' is not a number");
    double mbps = json_object_get_double(v);
    if (!(mbps >= 0 && mbps < 1e12))
        return gw_error_set(err, EINVAL, "query-migrate: 'mbps' is out of range");
    *bps = (uint64_t)(mbps * 125000); /* megabits/s -> bytes/s, as libvirt */
    return 0;
}

static enum jobinfo_type type_of(const char *status)
{
    if (!status[0])
        return JOBINFO_NONE;
    if (strcmp(status, "completed") == 0)
        return JOBINFO_COMPLETED;
    if (strcmp(status, "failed") == 0)
        return JOBINFO_FAILED;
    if (strcmp(status, "cancelled") == 0)
        return JOBINFO_CANCELLED;
    return JOBINFO_UNBOUNDED;
}

static int read_strings(struct jobinfo *ji, struct json_object *ret, struct gw_error *err)
{
    struct json_object *v;
    if (json_object_object_get_ex(ret, "status", &v)) {
        if (!json_object_is_type(v, json_type_string) ||
            (size_t)json_object_get_string_len(v) >= sizeof(ji->status))
            return gw_error_set(err, EINVAL, "query-migrate: bad 'status'");
        snprintf(ji->status, sizeof(ji->status), "%s", json_object_get_string(v));
    }
    if (json_object_object_get_ex(ret, "error-desc", &v)) {
        if (!json_object_is_type(v, json_type_string))
            return gw_error_set(err, EINVAL, "query-migrate: 'error-desc' is not a string");
        snprintf(ji->errmsg, sizeof(ji->errmsg), "%s", json_object_get_string(v));
    }
    if (json_object_object_get_ex(ret, "postcopy-started", &v)) {
        if (!json_object_is_type(v, json_type_boolean))
            return gw_error_set(err, EINVAL, "query-migrate: 'postcopy-started' is not a boolean");
        ji->postcopy_started = json_object_get_boolean(v);
    }
    return 0;
}

static int read_ram(struct jobinfo *ji, struct json_object *ram, struct gw_error *err)
{
    int n1 = 0, n2 = 0, n3 = 0, rc = 0;
    if (ram && !json_object_is_type(ram, json_type_object))
        return gw_error_set(err, EINVAL, "query-migrate: 'ram' is not an object");
    if ((rc = get_u64(ram, "transferred", &ji->mem_processed, err)) < 0 ||
        (rc = get_u64(ram, "remaining", &ji->mem_remaining, err)) < 0 ||
        (rc = get_u64(ram, "total", &ji->mem_total, err)) < 0 ||
        (n1 = get_u64(ram, "duplicate", &ji->mem_constant, err)) < 0 ||
        (n2 = get_u64(ram, "normal", &ji->mem_normal, err)) < 0 ||
        (n3 = get_u64(ram, "normal-bytes", &ji->mem_normal_bytes, err)) < 0 ||
        (rc = get_u64(ram, "dirty-pages-rate", &ji->mem_dirty_rate, err)) < 0 ||
        (rc = get_u64(ram, "dirty-sync-count", &ji->mem_iteration, err)) < 0 ||
        (rc = get_u64(ram, "page-size", &ji->mem_page_size, err)) < 0 ||
        (rc = get_u64(ram, "postcopy-requests", &ji->mem_postcopy_requests, err)) < 0)
        return n1 < 0 ? n1 : n2 < 0 ? n2 : n3 < 0 ? n3 : rc;
    /* Any of the three shows all three (and carries them to godwit). */
    ji->mem_pages_set = n1 > 0 || n2 > 0 || n3 > 0;
    return get_mbps(ram, &ji->mem_bps, err);
}

/* query-migrate's downtime-phases: NAME-us for each of mig_phase_names. */
static int read_phases(struct jobinfo *ji, struct json_object *ret, struct gw_error *err)
{
    struct json_object *ph;
    if (!json_object_object_get_ex(ret, "downtime-phases", &ph))
        return 0;
    if (!json_object_is_type(ph, json_type_object))
        return gw_error_set(err, EINVAL, "query-migrate: 'downtime-phases' is not an object");
    for (unsigned i = 0; i < MIG_NPHASES; i++) {
        char key[16];
        snprintf(key, sizeof(key), "%s-us", mig_phase_names[i]);
        int rc = get_u64(ph, key, &ji->downtime_phase_us[i], err);
        if (rc <= 0)
            return rc < 0 ? rc : gw_error_set(err, EINVAL, "query-migrate: 'downtime-phases' "
                                              "has no '%s'", key);
    }
    ji->downtime_phases_set = true;
    return 0;
}

static int read_times(struct jobinfo *ji, struct json_object *ret, struct gw_error *err)
{
    uint64_t throttle = 0;
    const char *dt = ji->type == JOBINFO_COMPLETED ? "downtime" : "expected-downtime";
    int rc = get_u64(ret, dt, &ji->downtime_ms, err);
    if (rc >= 0)
        ji->downtime_set = rc > 0;
    if (rc >= 0 && (rc = get_u64(ret, "setup-time", &ji->setup_time_ms, err)) >= 0)
        ji->setup_time_set = rc > 0;
    if (rc >= 0)
        rc = get_u64(ret, "total-time", &ji->vmm_total_time_ms, err);
    if (rc >= 0)
        rc = get_u64(ret, "switchover-retries", &ji->switchover_retries, err);
    if (rc >= 0)
        rc = get_u64(ret, "rounds-ended-early", &ji->rounds_ended_early, err);
    if (rc >= 0)
        rc = get_u64(ret, "switchover-deferrals", &ji->switchover_deferrals, err);
    if (rc >= 0)
        rc = read_phases(ji, ret, err);
    if (rc >= 0)
        rc = get_u64(ret, "cpu-throttle-percentage", &throttle, err);
    if (rc >= 0 && throttle > 100)
        rc = gw_error_set(err, EINVAL, "query-migrate: 'cpu-throttle-percentage' is out of range");
    ji->auto_converge_throttle = (int)throttle;
    return rc < 0 ? rc : 0;
}

int jobinfo_from_query_migrate(struct jobinfo *out, struct json_object *ret,
                               enum jobinfo_op op, uint64_t elapsed_ms, struct gw_error *err)
{
    struct jobinfo ji = { .op = op, .time_elapsed_ms = elapsed_ms };
    struct json_object *ram = NULL;
    memset(out, 0, sizeof(*out));
    if (!json_object_is_type(ret, json_type_object))
        return gw_error_set(err, EINVAL, "query-migrate: the reply is not an object");
    int rc = read_strings(&ji, ret, err);
    if (rc < 0)
        return rc;
    ji.type = type_of(ji.status);
    json_object_object_get_ex(ret, "ram", &ram);
    if ((rc = read_ram(&ji, ram, err)) < 0 || (rc = read_times(&ji, ret, err)) < 0)
        return rc;
    *out = ji;
    return 0;
}

void jobinfo_complete(struct jobinfo *ji, bool success, const char *msg)
{
    ji->type = success ? JOBINFO_COMPLETED : JOBINFO_FAILED;
    if (success) {
        ji->mem_remaining = 0;
        ji->errmsg[0] = '\0';
    } else if (msg && !ji->errmsg[0]) {
        snprintf(ji->errmsg, sizeof(ji->errmsg), "%s", msg);
    }
}

void jobinfo_policy_sample(const struct jobinfo *ji, struct mig_sample *s)
{
    memset(s, 0, sizeof(*s));
    s->status = ji->status[0] ? ji->status : NULL;
    s->elapsed_ms = ji->vmm_total_time_ms;
    s->iteration = ji->mem_iteration;
    s->ram_total = ji->mem_total;
    s->ram_remaining = ji->mem_remaining;
    s->dirty_pages_rate = ji->mem_dirty_rate;
    s->page_size = ji->mem_page_size;
    s->bandwidth_bps = ji->mem_bps;
    s->throttle_pct = (unsigned)ji->auto_converge_throttle;
}

/* ---- virsh text -------------------------------------------------------------- */

/* virsh's vshPrettyCapacity: binary units, three decimals. */
static double pretty(uint64_t v, const char **unit)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    double x = (double)v;
    unsigned i = 0;
    while (x >= 1024 && i + 1 < sizeof(units) / sizeof(units[0])) {
        x /= 1024;
        i++;
    }
    *unit = units[i];
    return i == 0 ? (double)v : x;
}

static void put_cap(FILE *f, const char *label, uint64_t v, const char *per)
{
    const char *unit;
    double x = pretty(v, &unit);
    fprintf(f, "%-17s %-.3lf %s%s\n", label, x, unit, per);
}

static void put_num(FILE *f, const char *label, uint64_t v, const char *suffix)
{
    fprintf(f, "%-17s %-12llu%s\n", label, (unsigned long long)v, suffix);
}

static bool stats_shown(const struct jobinfo *ji, unsigned flags)
{
    if (flags & JOBINFO_FMT_ANYSTATS)
        return true;
    if (ji->type == JOBINFO_BOUNDED || ji->type == JOBINFO_UNBOUNDED)
        return true;
    return (flags & JOBINFO_FMT_COMPLETED) && ji->type == JOBINFO_COMPLETED;
}

static void text_memory(FILE *f, const struct jobinfo *ji)
{
    if (!ji->mem_total && !ji->mem_remaining && !ji->mem_processed)
        return;
    put_cap(f, "Data processed:", ji->mem_processed, "");
    put_cap(f, "Data remaining:", ji->mem_remaining, "");
    put_cap(f, "Data total:", ji->mem_total, "");
    put_cap(f, "Memory processed:", ji->mem_processed, "");
    put_cap(f, "Memory remaining:", ji->mem_remaining, "");
    put_cap(f, "Memory total:", ji->mem_total, "");
    if (ji->mem_bps)
        put_cap(f, "Memory bandwidth:", ji->mem_bps, "/s");
    put_num(f, "Dirty rate:", ji->mem_dirty_rate, " pages/s");
    if (ji->mem_page_size)
        put_num(f, "Page size:", ji->mem_page_size, " bytes");
    put_num(f, "Iteration:", ji->mem_iteration, "");
    put_num(f, "Postcopy requests:", ji->mem_postcopy_requests, "");
}

static void text_rest(FILE *f, const struct jobinfo *ji)
{
    if (ji->mem_pages_set) {
        put_num(f, "Constant pages:", ji->mem_constant, "");
        put_num(f, "Normal pages:", ji->mem_normal, "");
        put_cap(f, "Normal data:", ji->mem_normal_bytes, "");
    }
    if (ji->downtime_set)
        put_num(f, ji->type == JOBINFO_COMPLETED ? "Total downtime:" : "Expected downtime:",
                ji->downtime_ms, " ms");
    if (ji->setup_time_set)
        put_num(f, "Setup time:", ji->setup_time_ms, " ms");
    if (ji->auto_converge_throttle)
        fprintf(f, "%-17s %-13d\n", "Auto converge throttle:", ji->auto_converge_throttle);
    if (ji->switchover_retries)
        put_num(f, "Switch-over retries:", ji->switchover_retries, "");
    if (ji->rounds_ended_early)
        put_num(f, "Rounds ended early:", ji->rounds_ended_early, "");
    if (ji->switchover_deferrals)
        put_num(f, "Switch-over deferrals:", ji->switchover_deferrals, "");
    if (ji->downtime_phases_set) {
        char text[MIG_NPHASES * 40]; /* ", resume 18446744073709551615 us" fits 40 */
        fprintf(f, "%-17s %s\n", "Downtime phases:",
                mig_phases_text(ji->downtime_phase_us, text, sizeof(text)));
    }
    if (ji->errmsg[0])
        fprintf(f, "%-17s %s\n", "Error message:", ji->errmsg);
}

/* Close a memstream; its buffer is only valid after fclose. */
static char *finish_stream(FILE *f, char **buf)
{
    if (fclose(f) != 0) {
        free(*buf);
        return NULL;
    }
    return *buf;
}

char *jobinfo_format_text(const struct jobinfo *ji, unsigned flags)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    fprintf(f, "%-17s %-12s\n", "Job type:", jobinfo_type_name(ji->type));
    if (ji->type != JOBINFO_NONE) {
        fprintf(f, "%-17s %-12s\n", "Operation:", jobinfo_op_name(ji->op));
        if (stats_shown(ji, flags)) {
            put_num(f, "Time elapsed:", ji->time_elapsed_ms, " ms");
            text_memory(f, ji);
            text_rest(f, ji);
        }
    }
    return finish_stream(f, &buf);
}

/* ---- rawstats ------------------------------------------------------------------ */

char *jobinfo_format_raw(const struct jobinfo *ji)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    fprintf(f, "Job type: %d\n\n", (int)ji->type);
    if (ji->type != JOBINFO_NONE) {
        fprintf(f, "operation: %d\n", (int)ji->op);
        fprintf(f, "time_elapsed: %llu\n", (unsigned long long)ji->time_elapsed_ms);
        for (size_t i = 0; i < NFIELDS; i++) {
            if (fpresent(ji, &fields[i]))
                fprintf(f, "%s: %llu\n", fields[i].name, (unsigned long long)fval(ji, &fields[i]));
            if (strcmp(fields[i].name, "memory_page_size") == 0)
                fputs("disk_total: 0\ndisk_processed: 0\ndisk_remaining: 0\n", f);
        }
        if (ji->auto_converge_throttle)
            fprintf(f, "auto_converge_throttle: %d\n", ji->auto_converge_throttle);
        if (ji->errmsg[0])
            fprintf(f, "errmsg: %s\n", ji->errmsg);
    }
    return finish_stream(f, &buf);
}

/* ---- JSON ---------------------------------------------------------------------- */

struct json_object *jobinfo_to_json(const struct jobinfo *ji)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    unsigned t = (unsigned)ji->type < JOBINFO_TYPE__COUNT ? ji->type : JOBINFO_NONE;
    unsigned op = (unsigned)ji->op < JOBINFO_OP__COUNT ? ji->op : JOBINFO_OP_UNKNOWN;
    json_object_object_add(o, "type", json_object_new_string(type_keys[t]));
    json_object_object_add(o, "operation", json_object_new_string(op_keys[op]));
    json_object_object_add(o, "status", json_object_new_string(ji->status));
    json_object_object_add(o, "time_elapsed", json_object_new_int64((int64_t)ji->time_elapsed_ms));
    json_object_object_add(o, "vmm_total_time", json_object_new_int64((int64_t)ji->vmm_total_time_ms));
    for (size_t i = 0; i < NFIELDS; i++)
        if (fpresent(ji, &fields[i]))
            json_object_object_add(o, fields[i].name,
                                   json_object_new_int64((int64_t)fval(ji, &fields[i])));
    if (ji->auto_converge_throttle)
        json_object_object_add(o, "auto_converge_throttle", json_object_new_int(ji->auto_converge_throttle));
    if (ji->errmsg[0])
        json_object_object_add(o, "errmsg", json_object_new_string(ji->errmsg));
    return o;
}

static int key_index(const char *const *keys, unsigned n, struct json_object *o, const char *k,
                     struct gw_error *err)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_string))
        return gw_error_set(err, EINVAL, "job info: '%s' is missing or not a string", k);
    for (unsigned i = 0; i < n; i++)
        if (strcmp(keys[i], json_object_get_string(v)) == 0)
            return (int)i;
    return gw_error_set(err, EINVAL, "job info: unknown %s '%.32s'", k, json_object_get_string(v));
}

static int json_numbers(struct jobinfo *ji, struct json_object *o, struct gw_error *err)
{
    uint64_t throttle = 0;
    int rc = get_u64(o, "time_elapsed", &ji->time_elapsed_ms, err);
    if (rc >= 0)
        rc = get_u64(o, "vmm_total_time", &ji->vmm_total_time_ms, err);
    for (size_t i = 0; rc >= 0 && i < NFIELDS; i++) {
        if (fields[i].derived)
            continue;
        rc = get_u64(o, fields[i].name, (uint64_t *)((char *)ji + fields[i].off), err);
        if (rc > 0 && fields[i].when == IF_SET)
            *(bool *)((char *)ji + fields[i].set_off) = true;
    }
    if (rc >= 0)
        rc = get_u64(o, "auto_converge_throttle", &throttle, err);
    if (rc >= 0 && throttle > 100)
        rc = gw_error_set(err, EINVAL, "job info: 'auto_converge_throttle' is out of range");
    ji->auto_converge_throttle = (int)throttle;
    return rc < 0 ? rc : 0;
}

int jobinfo_from_json(struct jobinfo *out, struct json_object *o, struct gw_error *err)
{
    struct jobinfo ji;
    memset(&ji, 0, sizeof(ji));
    memset(out, 0, sizeof(*out));
    if (!json_object_is_type(o, json_type_object))
        return gw_error_set(err, EINVAL, "job info: not an object");
    int t = key_index(type_keys, JOBINFO_TYPE__COUNT, o, "type", err);
    int op = t < 0 ? t : key_index(op_keys, JOBINFO_OP__COUNT, o, "operation", err);
    if (op < 0)
        return op;
    ji.type = (enum jobinfo_type)t;
    ji.op = (enum jobinfo_op)op;
    int rc = read_strings(&ji, o, err); /* "status" */
    if (rc == 0) {
        struct json_object *v = NULL;
        if (json_object_object_get_ex(o, "errmsg", &v) && !json_object_is_type(v, json_type_string))
            return gw_error_set(err, EINVAL, "job info: 'errmsg' is not a string");
        if (v)
            snprintf(ji.errmsg, sizeof(ji.errmsg), "%s", json_object_get_string(v));
        rc = json_numbers(&ji, o, err);
    }
    if (rc == 0)
        *out = ji;
    return rc;
}
