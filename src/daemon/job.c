/* Migration and other long jobs: phases, transitions, persistence and
 * restart recovery. See job.h and docs/migration-protocol.md. */
#include "daemon/job.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/json_text.h"
#include "daemon/domain_store.h"

#define JOB_FILE_VERSION 1

/* ---- names ------------------------------------------------------------------ */

static const char *const kind_names[JOB_KIND__COUNT] = {
    [JOB_KIND_NONE] = "none",
    [JOB_KIND_MIGRATION_OUT] = "migration-out",
    [JOB_KIND_MIGRATION_IN] = "migration-in",
    [JOB_KIND_MODIFY] = "modify",
};

static const char *const phase_names[JOB_PHASE__COUNT] = {
    [JOB_PHASE_NONE] = "none",
    [JOB_PHASE_BEGIN] = "begin",
    [JOB_PHASE_PERFORM] = "perform",
    [JOB_PHASE_PERFORM_POSTCOPY] = "perform-postcopy",
    [JOB_PHASE_PERFORM_DONE] = "perform-done",
    [JOB_PHASE_CONFIRM] = "confirm",
    [JOB_PHASE_CONFIRM_CANCELLED] = "confirm-cancelled",
    [JOB_PHASE_PREPARE] = "prepare",
    [JOB_PHASE_FINISH] = "finish",
    [JOB_PHASE_POSTCOPY_FAILED] = "postcopy-failed",
    [JOB_PHASE_DONE] = "done",
    [JOB_PHASE_FAILED] = "failed",
};

static const char *const recovery_names[JOB_RECOVER__COUNT] = {
    [JOB_RECOVER_NOTHING] = "nothing",
    [JOB_RECOVER_RESUME_SOURCE] = "resume-source",
    [JOB_RECOVER_KILL_SOURCE] = "kill-source",
    [JOB_RECOVER_KILL_INCOMING] = "kill-incoming",
    [JOB_RECOVER_RESUME_INCOMING] = "resume-incoming",
    [JOB_RECOVER_CONTINUE] = "continue",
    [JOB_RECOVER_POSTCOPY_FAILED] = "postcopy-failed",
    [JOB_RECOVER_ASK_PEER] = "ask-peer",
    [JOB_RECOVER_WAIT_PEER] = "wait-peer",
    [JOB_RECOVER_CRASHED] = "crashed",
    [JOB_RECOVER_CONFIRM_POSTCOPY] = "confirm-postcopy",
};

static const char *const peer_names[JOB_PEER__COUNT] = {
    [JOB_PEER_UNREACHABLE] = "unreachable",
    [JOB_PEER_UNKNOWN] = "unknown",
    [JOB_PEER_PREPARED] = "prepared",
    [JOB_PEER_RUNNING] = "running",
    [JOB_PEER_FAILED] = "failed",
    [JOB_PEER_POSTCOPY_FAILED] = "postcopy-failed",
};

static const char *const flag_names[] = {
    "live", "postcopy", "postcopy-after-precopy", "auto-converge", "postcopy-resume", "paused",
};
_Static_assert(sizeof(flag_names) / sizeof(flag_names[0]) == JOB_F_COUNT, "one name per JOB_F_ bit");
_Static_assert(JOB_F__ALL == (1u << JOB_F_COUNT) - 1, "JOB_F__ALL covers every bit");

static const char *name_of(const char *const *names, unsigned n, unsigned v)
{
    return v < n && names[v] ? names[v] : "?";
}

static int index_of(const char *const *names, unsigned n, const char *s)
{
    for (unsigned i = 0; s && i < n; i++)
        if (names[i] && strcmp(names[i], s) == 0)
            return (int)i;
    return -EINVAL;
}

const char *job_kind_name(enum job_kind k) { return name_of(kind_names, JOB_KIND__COUNT, k); }
const char *job_phase_name(enum job_phase p) { return name_of(phase_names, JOB_PHASE__COUNT, p); }
const char *job_recovery_name(enum job_recovery r)
{
    return name_of(recovery_names, JOB_RECOVER__COUNT, r);
}
const char *job_peer_outcome_name(enum job_peer_outcome o)
{
    return name_of(peer_names, JOB_PEER__COUNT, o);
}

int job_kind_from_name(const char *s, enum job_kind *out)
{
    int i = index_of(kind_names, JOB_KIND__COUNT, s);
    if (i >= 0)
        *out = (enum job_kind)i;
    return i < 0 ? i : 0;
}

int job_phase_from_name(const char *s, enum job_phase *out)
{
    int i = index_of(phase_names, JOB_PHASE__COUNT, s);
    if (i >= 0)
        *out = (enum job_phase)i;
    return i < 0 ? i : 0;
}

int job_peer_outcome_from_name(const char *s, enum job_peer_outcome *out)
{
    int i = index_of(peer_names, JOB_PEER__COUNT, s);
    if (i >= 0)
        *out = (enum job_peer_outcome)i;
    return i < 0 ? i : 0;
}

/* ---- the state machine ------------------------------------------------------- */

#define BIT(p) (1u << (p))

/* allowed_next[kind][from]: bit set of phases reachable in one step. */
static const unsigned out_next[JOB_PHASE__COUNT] = {
    [JOB_PHASE_BEGIN] = BIT(JOB_PHASE_PERFORM) | BIT(JOB_PHASE_FAILED),
    [JOB_PHASE_PERFORM] = BIT(JOB_PHASE_PERFORM_POSTCOPY) | BIT(JOB_PHASE_PERFORM_DONE) |
                          BIT(JOB_PHASE_CONFIRM_CANCELLED) | BIT(JOB_PHASE_POSTCOPY_FAILED),
    [JOB_PHASE_PERFORM_POSTCOPY] = BIT(JOB_PHASE_PERFORM_DONE) | BIT(JOB_PHASE_POSTCOPY_FAILED) |
                                   BIT(JOB_PHASE_CONFIRM_CANCELLED),
    [JOB_PHASE_PERFORM_DONE] = BIT(JOB_PHASE_CONFIRM) | BIT(JOB_PHASE_CONFIRM_CANCELLED) |
                               BIT(JOB_PHASE_POSTCOPY_FAILED),
    [JOB_PHASE_CONFIRM] = BIT(JOB_PHASE_DONE),
    [JOB_PHASE_CONFIRM_CANCELLED] = BIT(JOB_PHASE_FAILED),
    [JOB_PHASE_POSTCOPY_FAILED] = BIT(JOB_PHASE_PERFORM_POSTCOPY) | BIT(JOB_PHASE_CONFIRM) |
                                  BIT(JOB_PHASE_FAILED),
};

static const unsigned in_next[JOB_PHASE__COUNT] = {
    [JOB_PHASE_PREPARE] = BIT(JOB_PHASE_FINISH) | BIT(JOB_PHASE_POSTCOPY_FAILED) |
                          BIT(JOB_PHASE_FAILED),
    [JOB_PHASE_FINISH] = BIT(JOB_PHASE_DONE) | BIT(JOB_PHASE_POSTCOPY_FAILED) |
                         BIT(JOB_PHASE_FAILED),
    [JOB_PHASE_POSTCOPY_FAILED] = BIT(JOB_PHASE_FINISH) | BIT(JOB_PHASE_FAILED),
};

static const unsigned modify_next[JOB_PHASE__COUNT] = {
    [JOB_PHASE_NONE] = BIT(JOB_PHASE_DONE) | BIT(JOB_PHASE_FAILED),
};

static const unsigned kind_phases[JOB_KIND__COUNT] = {
    [JOB_KIND_NONE] = BIT(JOB_PHASE_NONE),
    [JOB_KIND_MIGRATION_OUT] = BIT(JOB_PHASE_BEGIN) | BIT(JOB_PHASE_PERFORM) |
                               BIT(JOB_PHASE_PERFORM_POSTCOPY) | BIT(JOB_PHASE_PERFORM_DONE) |
                               BIT(JOB_PHASE_CONFIRM) | BIT(JOB_PHASE_CONFIRM_CANCELLED) |
                               BIT(JOB_PHASE_POSTCOPY_FAILED) | BIT(JOB_PHASE_DONE) |
                               BIT(JOB_PHASE_FAILED),
    [JOB_KIND_MIGRATION_IN] = BIT(JOB_PHASE_PREPARE) | BIT(JOB_PHASE_FINISH) |
                              BIT(JOB_PHASE_POSTCOPY_FAILED) | BIT(JOB_PHASE_DONE) |
                              BIT(JOB_PHASE_FAILED),
    [JOB_KIND_MODIFY] = BIT(JOB_PHASE_NONE) | BIT(JOB_PHASE_DONE) | BIT(JOB_PHASE_FAILED),
};

enum job_phase job_initial_phase(enum job_kind k)
{
    switch (k) {
    case JOB_KIND_MIGRATION_OUT: return JOB_PHASE_BEGIN;
    case JOB_KIND_MIGRATION_IN: return JOB_PHASE_PREPARE;
    default: return JOB_PHASE_NONE;
    }
}

bool job_phase_allowed(enum job_kind k, enum job_phase p)
{
    return (unsigned)k < JOB_KIND__COUNT && (unsigned)p < JOB_PHASE__COUNT &&
           (kind_phases[k] & BIT(p));
}

bool job_phase_is_terminal(enum job_phase p) { return p == JOB_PHASE_DONE || p == JOB_PHASE_FAILED; }

bool job_transition_allowed(enum job_kind k, enum job_phase from, enum job_phase to)
{
    if (!job_phase_allowed(k, from) || !job_phase_allowed(k, to))
        return false;
    const unsigned *next = k == JOB_KIND_MIGRATION_OUT ? out_next
                         : k == JOB_KIND_MIGRATION_IN  ? in_next
                         : k == JOB_KIND_MODIFY        ? modify_next
                                                       : NULL;
    return next && (next[from] & BIT(to));
}

static bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

bool job_uuid_valid(const char *s)
{
    if (!s || strlen(s) != JOB_UUID_LEN)
        return false;
    for (int i = 0; i < JOB_UUID_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_hex(s[i]))
            return false;
    }
    return true;
}

bool job_id_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= JOB_ID_MAX || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

static int copy_str(char *dst, size_t cap, const char *src, const char *what, struct gw_error *err)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= cap)
        return gw_error_set(err, EINVAL, "%s is too long (%zu bytes, at most %zu)", what, n,
                            cap - 1);
    memcpy(dst, src ? src : "", n + 1);
    return 0;
}

int job_init(struct job *j, enum job_kind kind, const char *id, const char *uuid,
             const char *name, uint64_t now_ms, struct gw_error *err)
{
    memset(j, 0, sizeof(*j));
    if ((unsigned)kind >= JOB_KIND__COUNT || kind == JOB_KIND_NONE)
        return gw_error_set(err, EINVAL, "invalid job kind %d", (int)kind);
    if (!job_id_valid(id))
        return gw_error_set(err, EINVAL, "invalid job id '%s'", id ? id : "");
    if (!job_uuid_valid(uuid))
        return gw_error_set(err, EINVAL, "invalid domain uuid '%s'", uuid ? uuid : "");
    int rc = copy_str(j->name, sizeof(j->name), name, "domain name", err);
    if (rc < 0)
        return rc;
    j->kind = kind;
    j->phase = job_initial_phase(kind);
    snprintf(j->id, sizeof(j->id), "%s", id);
    snprintf(j->uuid, sizeof(j->uuid), "%s", uuid);
    j->started_ms = j->phase_ms = now_ms;
    return 0;
}

int job_set_phase(struct job *j, enum job_phase to, uint64_t now_ms, struct gw_error *err)
{
    enum job_phase old = j->phase;
    if (!job_transition_allowed(j->kind, old, to))
        return gw_error_set(err, EINVAL, "job %s (%s): cannot go from phase %s to phase %s",
                            j->id, job_kind_name(j->kind), job_phase_name(old),
                            job_phase_name(to));
    j->phase = to;
    j->phase_ms = now_ms;
    if (j->on_phase)
        j->on_phase(j, old, j->hook_opaque);
    return 0;
}

void job_set_error(struct job *j, const char *msg)
{
    if (j->error[0] == '\0' && msg)
        snprintf(j->error, sizeof(j->error), "%s", msg);
}

bool job_active(const struct job *j)
{
    return j && j->kind != JOB_KIND_NONE && !job_phase_is_terminal(j->phase);
}

int job_check_free(const struct job *j, const char *op, struct gw_error *err)
{
    if (!job_active(j))
        return 0;
    return gw_error_set(err, EBUSY, "domain %s: cannot %s: a %s job (%s) is in phase %s",
                        j->name[0] ? j->name : j->uuid, op, job_kind_name(j->kind), j->id,
                        job_phase_name(j->phase));
}

/* ---- JSON ------------------------------------------------------------------- */

static void put_str(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v));
}

static void put_u64(struct json_object *o, const char *k, uint64_t v)
{
    json_object_object_add(o, k, json_object_new_int64((int64_t)v));
}

int job_flag_bit(const char *name)
{
    return index_of(flag_names, JOB_F_COUNT, name);
}

struct json_object *job_flags_to_json(unsigned flags)
{
    struct json_object *a = json_object_new_array();
    for (unsigned i = 0; a && i < sizeof(flag_names) / sizeof(flag_names[0]); i++)
        if (flags & (1u << i))
            json_object_array_add(a, json_object_new_string(flag_names[i]));
    return a;
}

struct json_object *job_to_json(const struct job *j)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_add(o, "version", json_object_new_int(JOB_FILE_VERSION));
    put_str(o, "id", j->id);
    put_str(o, "kind", job_kind_name(j->kind));
    put_str(o, "phase", job_phase_name(j->phase));
    put_str(o, "uuid", j->uuid);
    put_str(o, "name", j->name);
    put_str(o, "peer_uri", j->peer_uri);
    put_str(o, "migrate_uri", j->migrate_uri);
    json_object_object_add(o, "flags", job_flags_to_json(j->flags));
    json_object_object_add(o, "postcopy_started", json_object_new_boolean(j->postcopy_started));
    json_object_object_add(o, "vmm_pid", json_object_new_int(j->vmm_pid));
    put_u64(o, "started_ms", j->started_ms);
    put_u64(o, "phase_ms", j->phase_ms);
    put_str(o, "error", j->error);
    return o;
}

/* A member of the required type, or an error naming it. */
static struct json_object *member(struct json_object *o, const char *k, enum json_type t,
                                  struct gw_error *err)
{
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(o, k, &v))
        gw_error_set(err, EINVAL, "job: member '%s' is missing", k);
    else if (!json_object_is_type(v, t))
        gw_error_set(err, EINVAL, "job: member '%s' has the wrong type (expected %s)", k,
                     json_type_to_name(t));
    else
        return v;
    return NULL;
}

static int get_str(struct json_object *o, const char *k, char *dst, size_t cap,
                   struct gw_error *err)
{
    struct json_object *v = member(o, k, json_type_string, err);
    if (!v)
        return -EINVAL;
    const char *s = json_object_get_string(v);
    if ((size_t)json_object_get_string_len(v) != strlen(s))
        return gw_error_set(err, EINVAL, "job: member '%s' contains a NUL byte", k);
    return copy_str(dst, cap, s, k, err);
}

static int get_u64(struct json_object *o, const char *k, uint64_t max, uint64_t *out,
                   struct gw_error *err)
{
    struct json_object *v = member(o, k, json_type_int, err);
    if (!v)
        return -EINVAL;
    errno = 0;
    int64_t x = json_object_get_int64(v);
    if (errno != 0 || x < 0 || (uint64_t)x > max)
        return gw_error_set(err, EINVAL, "job: member '%s' is out of range", k);
    *out = (uint64_t)x;
    return 0;
}

static int flags_from_json(struct json_object *o, unsigned *out, struct gw_error *err)
{
    struct json_object *a = member(o, "flags", json_type_array, err);
    if (!a)
        return -EINVAL;
    *out = 0;
    size_t n = json_object_array_length(a);
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(a, i);
        const char *s = json_object_is_type(e, json_type_string) ? json_object_get_string(e) : NULL;
        int bit = job_flag_bit(s);
        if (bit < 0)
            return gw_error_set(err, EINVAL, "job: unknown flag '%s'", s ? s : "(not a string)");
        *out |= 1u << bit;
    }
    return 0;
}

static const char *const job_keys[] = {
    "version", "id", "kind", "phase", "uuid", "name", "peer_uri", "migrate_uri", "flags",
    "postcopy_started", "vmm_pid", "started_ms", "phase_ms", "error",
};

static int check_keys(struct json_object *o, struct gw_error *err)
{
    json_object_object_foreach(o, key, val) {
        (void)val;
        if (index_of(job_keys, sizeof(job_keys) / sizeof(job_keys[0]), key) < 0)
            return gw_error_set(err, EINVAL, "job: unexpected member '%.64s'", key);
    }
    return 0;
}

static int enums_from_json(struct json_object *o, struct job *j, struct gw_error *err)
{
    char kind[32], phase[32];
    int rc = get_str(o, "kind", kind, sizeof(kind), err);
    if (rc == 0)
        rc = get_str(o, "phase", phase, sizeof(phase), err);
    if (rc < 0)
        return rc;
    if (job_kind_from_name(kind, &j->kind) < 0 || j->kind == JOB_KIND_NONE)
        return gw_error_set(err, EINVAL, "job: invalid kind '%s'", kind);
    if (job_phase_from_name(phase, &j->phase) < 0 || !job_phase_allowed(j->kind, j->phase))
        return gw_error_set(err, EINVAL, "job: phase '%s' is not a phase of a %s job", phase,
                            kind);
    return 0;
}

static int scalars_from_json(struct json_object *o, struct job *j, struct gw_error *err)
{
    uint64_t pid = 0;
    struct json_object *pc = member(o, "postcopy_started", json_type_boolean, err);
    if (!pc)
        return -EINVAL;
    j->postcopy_started = json_object_get_boolean(pc);
    int rc = get_u64(o, "vmm_pid", INT32_MAX, &pid, err);
    if (rc == 0)
        rc = get_u64(o, "started_ms", INT64_MAX, &j->started_ms, err);
    if (rc == 0)
        rc = get_u64(o, "phase_ms", INT64_MAX, &j->phase_ms, err);
    if (rc == 0)
        rc = flags_from_json(o, &j->flags, err);
    j->vmm_pid = (int)pid;
    return rc;
}

int job_from_json(struct json_object *o, struct job *j, struct gw_error *err)
{
    uint64_t version = 0;
    memset(j, 0, sizeof(*j));
    if (!json_object_is_type(o, json_type_object))
        return gw_error_set(err, EINVAL, "job: not a JSON object");
    int rc = check_keys(o, err);
    if (rc == 0)
        rc = get_u64(o, "version", UINT32_MAX, &version, err);
    if (rc == 0 && version != JOB_FILE_VERSION)
        rc = gw_error_set(err, EINVAL, "job: unsupported version %llu",
                          (unsigned long long)version);
    if (rc == 0)
        rc = get_str(o, "id", j->id, sizeof(j->id), err);
    if (rc == 0 && !job_id_valid(j->id))
        rc = gw_error_set(err, EINVAL, "job: invalid id '%s'", j->id);
    if (rc == 0)
        rc = get_str(o, "uuid", j->uuid, sizeof(j->uuid), err);
    if (rc == 0 && !job_uuid_valid(j->uuid))
        rc = gw_error_set(err, EINVAL, "job: invalid uuid '%s'", j->uuid);
    if (rc == 0)
        rc = enums_from_json(o, j, err);
    if (rc == 0)
        rc = get_str(o, "name", j->name, sizeof(j->name), err);
    if (rc == 0)
        rc = get_str(o, "peer_uri", j->peer_uri, sizeof(j->peer_uri), err);
    if (rc == 0)
        rc = get_str(o, "migrate_uri", j->migrate_uri, sizeof(j->migrate_uri), err);
    if (rc == 0)
        rc = get_str(o, "error", j->error, sizeof(j->error), err);
    if (rc == 0)
        rc = scalars_from_json(o, j, err);
    if (rc < 0)
        memset(j, 0, sizeof(*j));
    return rc;
}

/* ---- persistence ------------------------------------------------------------- */

static int job_path(char *buf, size_t cap, const char *state_dir, const char *uuid,
                    const char *suffix, struct gw_error *err)
{
    if (!job_uuid_valid(uuid))
        return gw_error_set(err, EINVAL, "invalid domain uuid '%s'", uuid ? uuid : "");
    int n = snprintf(buf, cap, "%s/jobs/%s%s", state_dir, uuid, suffix);
    if (n < 0 || (size_t)n >= cap)
        return gw_error_set(err, ENAMETOOLONG, "state directory path is too long");
    return 0;
}

int job_save(const struct job *j, const char *state_dir, struct gw_error *err)
{
    char dir[4096], path[4096];
    int rc = job_path(path, sizeof(path), state_dir, j->uuid, ".json", err);
    if (rc < 0)
        return rc;
    snprintf(dir, sizeof(dir), "%s/jobs", state_dir);
    if ((rc = store_make_dir(dir, err)) < 0) /* made durable when new, and checked */
        return rc;
    struct json_object *o = job_to_json(j);
    rc = o ? store_write_json(path, o, err) : gw_error_set(err, ENOMEM, "out of memory");
    json_object_put(o);
    return rc;
}

int job_load(struct job *j, const char *state_dir, const char *uuid, struct gw_error *err)
{
    char path[4096];
    struct json_object *o = NULL;
    memset(j, 0, sizeof(*j));
    int rc = job_path(path, sizeof(path), state_dir, uuid, ".json", err);
    if (rc == 0)
        rc = json_file_object(path, JOB_FILE_MAX, &o, err);
    if (rc == 0)
        rc = job_from_json(o, j, err);
    if (rc == 0 && strcmp(j->uuid, uuid) != 0)
        rc = gw_error_set(err, EINVAL, "job: uuid %s does not match its file name", j->uuid);
    if (rc < 0 && rc != -ENOENT)
        gw_error_prefix(err, "%s", path);
    if (rc < 0)
        memset(j, 0, sizeof(*j));
    json_object_put(o);
    return rc;
}

int job_remove(const char *state_dir, const char *uuid, struct gw_error *err)
{
    char path[4096];
    int rc = job_path(path, sizeof(path), state_dir, uuid, ".json", err);
    if (rc < 0)
        return rc;
    if (unlink(path) < 0 && errno != ENOENT)
        return gw_error_set(err, errno, "cannot remove %s: %s", path, strerror(errno));
    rc = store_sync_dir_of(path);
    return rc == -ENOENT ? 0 : rc < 0 ? gw_error_set(err, rc, "cannot sync the directory of %s", path) : 0;
}

static int scan_entry(const char *state_dir, const char *name, job_scan_cb cb, void *opaque)
{
    size_t n = strlen(name);
    char uuid[JOB_UUID_LEN + 1], path[4096];
    if (n < 5 || strcmp(name + n - 5, ".json") != 0)
        return 0; /* temporary files and strangers */
    snprintf(uuid, sizeof(uuid), "%.*s", (int)(n - 5 < JOB_UUID_LEN ? n - 5 : JOB_UUID_LEN), name);
    snprintf(path, sizeof(path), "%s/jobs/%s", state_dir, name);
    struct gw_error lerr;
    gw_error_init(&lerr);
    struct job j;
    int rc = n - 5 == JOB_UUID_LEN ? job_load(&j, state_dir, uuid, &lerr)
                                    : gw_error_set(&lerr, EINVAL, "%s: not named <uuid>.json", path);
    if (rc == -ENOENT)
        return 0; /* removed meanwhile */
    return rc < 0 ? cb(NULL, path, &lerr, opaque) : cb(&j, path, NULL, opaque);
}

int job_scan(const char *state_dir, job_scan_cb cb, void *opaque, struct gw_error *err)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/jobs", state_dir);
    store_remove_stale_tmp(dir);
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : gw_error_set(err, errno, "cannot read %s: %s", dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL)
        rc = scan_entry(state_dir, e->d_name, cb, opaque);
    closedir(d);
    return rc;
}

/* ---- restart recovery --------------------------------------------------------- */

/* What a query-migrate status says about the switch-over. */
enum mig_stage {
    STAGE_PRECOPY,         /* none, setup, active, device, cancelling, failed, cancelled, unknown */
    STAGE_COMPLETED,       /* the stream is complete */
    STAGE_POSTCOPY_ACTIVE, /* post-copy, stream flowing */
    STAGE_POSTCOPY_BROKEN, /* post-copy, paused or recovering */
};

static enum mig_stage stage_of(const char *status)
{
    if (!status)
        return STAGE_PRECOPY;
    if (strcmp(status, "completed") == 0)
        return STAGE_COMPLETED;
    if (strcmp(status, "postcopy-active") == 0)
        return STAGE_POSTCOPY_ACTIVE;
    if (strncmp(status, "postcopy-", 9) == 0)
        return STAGE_POSTCOPY_BROKEN; /* postcopy-paused, -recover, -recover-setup */
    return STAGE_PRECOPY;
}

static bool status_is(const char *status, const char *s) { return status && strcmp(status, s) == 0; }

static enum job_recovery recover_out_perform_postcopy(bool alive, const char *status,
                                                      bool vmm_switched)
{
    if (!alive)
        return JOB_RECOVER_CRASHED;
    switch (stage_of(status)) {
    case STAGE_POSTCOPY_ACTIVE:
    case STAGE_COMPLETED:
        return JOB_RECOVER_CONTINUE;
    case STAGE_POSTCOPY_BROKEN:
        return JOB_RECOVER_POSTCOPY_FAILED;
    case STAGE_PRECOPY:
        break;
    }
    /* "failed" after the switch was asked for (or armed): unless the VMM
     * says it never handed the guest over, the destination may have
     * started it; never risk running twice. */
    return status_is(status, "failed") && vmm_switched ? JOB_RECOVER_POSTCOPY_FAILED
                                                       : JOB_RECOVER_RESUME_SOURCE;
}

static enum job_recovery recover_out(const struct job *j, bool alive, const char *status,
                                     bool vmm_switched)
{
    enum mig_stage st = stage_of(status);
    switch (j->phase) {
    case JOB_PHASE_BEGIN:
        return alive ? JOB_RECOVER_NOTHING : JOB_RECOVER_CRASHED;
    case JOB_PHASE_PERFORM:
        /* Finish was never sent: the destination cannot have started the
         * guest, even if the stream completed. */
        if (!alive)
            return JOB_RECOVER_CRASHED;
        return st == STAGE_POSTCOPY_ACTIVE || st == STAGE_POSTCOPY_BROKEN
                   ? JOB_RECOVER_POSTCOPY_FAILED
                   : JOB_RECOVER_RESUME_SOURCE;
    case JOB_PHASE_PERFORM_POSTCOPY:
        return recover_out_perform_postcopy(alive, status, vmm_switched);
    case JOB_PHASE_PERFORM_DONE:
        return JOB_RECOVER_ASK_PEER;
    case JOB_PHASE_CONFIRM:
        return JOB_RECOVER_KILL_SOURCE;
    case JOB_PHASE_CONFIRM_CANCELLED:
        return alive ? JOB_RECOVER_RESUME_SOURCE : JOB_RECOVER_CRASHED;
    case JOB_PHASE_POSTCOPY_FAILED:
        if (!alive)
            return JOB_RECOVER_CRASHED;
        /* The VMM completed the stream after all (the daemon took a stop or
         * failed queries for a break): a success, if the destination runs
         * the guest (running: quit ours; prepared: send Finish again). */
        return st == STAGE_COMPLETED ? JOB_RECOVER_ASK_PEER : JOB_RECOVER_POSTCOPY_FAILED;
    default:
        return JOB_RECOVER_NOTHING; /* done, failed */
    }
}

/* The destination. Once a post-copy switch reached the incoming VMM (a
 * postcopy-* status, a failure after it said it switched, or the job's
 * record of a switch) the guest is, or may be, ours alone: the VMM is
 * kept and watched again, as before the restart. */
static enum job_recovery recover_in(const struct job *j, bool alive, const char *status,
                                    bool vmm_switched)
{
    enum mig_stage st = stage_of(status);
    bool postcopy = j->postcopy_started || st == STAGE_POSTCOPY_ACTIVE ||
                    st == STAGE_POSTCOPY_BROKEN || (status_is(status, "failed") && vmm_switched);
    if (job_phase_is_terminal(j->phase))
        return JOB_RECOVER_NOTHING;
    if (!alive)
        return JOB_RECOVER_KILL_INCOMING; /* nothing runs here: clean up */
    if (j->phase == JOB_PHASE_POSTCOPY_FAILED)
        return JOB_RECOVER_CONTINUE; /* paused until the source recovers it or it is given up */
    /* completed: Finish came (no failure was ever answered): complete it;
     * in prepare wait for it */
    if (st == STAGE_COMPLETED)
        return j->phase == JOB_PHASE_FINISH ? JOB_RECOVER_RESUME_INCOMING : JOB_RECOVER_CONTINUE;
    return postcopy ? JOB_RECOVER_CONTINUE
                    : JOB_RECOVER_KILL_INCOMING; /* the source still owns the guest */
}

enum job_recovery job_recovery_action(const struct job *j, bool vmm_alive, const char *vmm_status,
                                      bool vmm_switched)
{
    switch (j->kind) {
    case JOB_KIND_MIGRATION_OUT: return recover_out(j, vmm_alive, vmm_status, vmm_switched);
    case JOB_KIND_MIGRATION_IN: return recover_in(j, vmm_alive, vmm_status, vmm_switched);
    default: return JOB_RECOVER_NOTHING;
    }
}

/* The destination runs the guest. Our VMM may be quit only when it no
 * longer serves post-copy pages: never while a post-copy stream is not
 * completed (the guest would lose the pages only we hold). */
static enum job_recovery recover_out_peer_running(const struct job *j, bool alive,
                                                  const char *status, bool postcopy)
{
    if (!alive)
        return JOB_RECOVER_KILL_SOURCE; /* nothing left to stop: finish Confirm */
    switch (stage_of(status)) {
    case STAGE_COMPLETED:
        return JOB_RECOVER_KILL_SOURCE;
    case STAGE_POSTCOPY_ACTIVE:
        return JOB_RECOVER_CONFIRM_POSTCOPY;
    case STAGE_POSTCOPY_BROKEN:
        /* postcopy-recover: a recovery is under way, wait for it as Confirm
         * does; postcopy-paused: Confirm's wait asks the destination again
         * and resumes the stream if only its last message was lost
         * (mig_paused_classify), else post-copy failed */
        return JOB_RECOVER_CONFIRM_POSTCOPY;
    case STAGE_PRECOPY:
        break;
    }
    /* A pre-copy stream completed before perform-done was saved: whatever
     * the VMM says now, the destination has the whole guest. After a
     * post-copy switch a VMM that does not say completed may still hold
     * pages the destination needs: keep it, paused. */
    (void)j;
    return postcopy ? JOB_RECOVER_POSTCOPY_FAILED : JOB_RECOVER_KILL_SOURCE;
}

enum job_recovery job_recovery_after_peer(const struct job *j, bool vmm_alive,
                                          const char *vmm_status, bool vmm_switched,
                                          enum job_peer_outcome peer)
{
    /* a switch the job recorded, or one its (alive) VMM reports or does
     * not deny */
    bool postcopy = j->postcopy_started || (vmm_alive && vmm_switched);
    switch (peer) {
    case JOB_PEER_RUNNING:
        return recover_out_peer_running(j, vmm_alive, vmm_status, postcopy);
    case JOB_PEER_PREPARED:
        return JOB_RECOVER_CONTINUE; /* send Finish again */
    case JOB_PEER_POSTCOPY_FAILED:
        return vmm_alive ? JOB_RECOVER_POSTCOPY_FAILED : JOB_RECOVER_CRASHED;
    case JOB_PEER_UNKNOWN:
        if (!vmm_alive)
            return JOB_RECOVER_CRASHED;
        /* No record there is no word that the guest does not run there (the
         * record is lost when the destination migrates the domain on or
         * restarts): never resume; keep the job, guest paused. */
        return postcopy ? JOB_RECOVER_POSTCOPY_FAILED : JOB_RECOVER_WAIT_PEER;
    case JOB_PEER_FAILED:
        if (!vmm_alive)
            return JOB_RECOVER_CRASHED;
        /* After a post-copy switch the destination may have run the guest
         * before it was given up: the source copy is stale. */
        return postcopy ? JOB_RECOVER_POSTCOPY_FAILED : JOB_RECOVER_RESUME_SOURCE;
    default:
        return JOB_RECOVER_WAIT_PEER;
    }
}

bool job_finish_postcopy(const struct job *j, bool vmm_switched)
{
    return j->postcopy_started || j->phase == JOB_PHASE_POSTCOPY_FAILED || vmm_switched;
}

enum job_peer_outcome job_peer_outcome_of(const struct job *j, bool guest_running)
{
    if (!j || j->kind != JOB_KIND_MIGRATION_IN)
        return guest_running ? JOB_PEER_RUNNING : JOB_PEER_UNKNOWN;
    switch (j->phase) {
    case JOB_PHASE_PREPARE:
    case JOB_PHASE_FINISH:
        return guest_running ? JOB_PEER_RUNNING : JOB_PEER_PREPARED;
    case JOB_PHASE_POSTCOPY_FAILED:
        return JOB_PEER_POSTCOPY_FAILED;
    case JOB_PHASE_DONE:
        return JOB_PEER_RUNNING; /* it ran here: the source copy is stale */
    default:
        return guest_running ? JOB_PEER_RUNNING : JOB_PEER_FAILED;
    }
}
