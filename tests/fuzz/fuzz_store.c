/* libFuzzer target: the daemon's state directory read back after a
 * restart, from real files (in a directory on tmpfs made once):
 *   byte 0 % 3 == 0: a definition, STATE/domains/vm.json, as
 *     store_load_defs reads it (store_read_json, dom_def_from_json; one
 *     that names another domain is skipped);
 *   == 1: a runtime status, STATE/run/NAME.json (store_read_json,
 *     store_status_from_json, as recover.c reads it);
 *   == 2: a migration job, STATE/jobs/UUID.json (job_load), and what the
 *     restarted daemon decides to do with it (job_recovery_action,
 *     job_recovery_after_peer, with facts from byte 0).
 * Oracles: a refused file carries an errno and a message naming it; an
 * accepted definition or status is one JSON object with nothing after it
 * but white space (no NUL byte, and the same bytes followed by "\nx" are
 * refused, saying where); what is loaded obeys its rules; it is written
 * back by the daemon's own writer (store_save_def, store_status_to_json,
 * job_save) and loads again to the same value (for a definition, through
 * store_load_defs, and the same domain at every load, a made-up uuid
 * included); a status member that is valid is never lost, one that is not
 * is never half-read; every saved job has a recovery action in range. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/domain_store.h"
#include "daemon/job.h"
#include "fuzz_util.h"

#define UUID "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab"

static char dir[64], dir2[64];

static void cleanup(void)
{
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", dir, dir2);
    if (dir[0] && system(cmd) != 0)
        fprintf(stderr, "fuzz_store: could not remove %s\n", dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof(dir), "%s/godwit-fuzz-XXXXXX", base);
    snprintf(dir2, sizeof(dir2), "%s/godwit-fuzz-XXXXXX", base);
    if (!mkdtemp(dir) || !mkdtemp(dir2))
        abort();
    atexit(cleanup);
    struct gw_error err;
    gw_error_init(&err);
    if (store_init(dir, &err) < 0 || store_init(dir2, &err) < 0)
        abort();
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/jobs", dir);
    mkdir(path, 0700);
    return 0;
}

static void put_file(const char *path, const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(write(fd, data, size) == (ssize_t)size);
    close(fd);
}

/* Accepted bytes with something after the object: refused whole, saying
 * where ("\n" first: the bytes may end in a // comment). */
static void refused_with_more(const uint8_t *data, size_t size, const char *path)
{
    uint8_t *more = malloc(size + 2);
    FUZZ_CHECK(more);
    memcpy(more, data, size);
    memcpy(more + size, "\nx", 2);
    put_file(path, more, size + 2);
    free(more);
    struct gw_error err;
    gw_error_init(&err);
    struct json_object *o = (void *)1;
    int r = store_read_json(path, &o, &err);
    fuzz_check_refused(r, &err);
    FUZZ_CHECK(r == -EINVAL && !o && strstr(err.msg, "unexpected data after the JSON object at offset"));
}

/* ---- definitions ---- */

struct loaded {
    int n;
    struct json_object *text; /* dom_def_to_json of what was loaded */
};

static void collect(void *opaque, struct dom_def *def)
{
    struct loaded *l = opaque;
    l->n++;
    json_object_put(l->text);
    l->text = dom_def_to_json(def);
    dom_def_fini(def);
}

/* The bytes as the daemon's file of kind f for domain "vm" (its name in
 * path[PATH_MAX]), read back as JSON; NULL when the reader refused them
 * (with a reason). */
static struct json_object *read_back(enum store_file f, const uint8_t *data, size_t size,
                                     char *path)
{
    struct gw_error err;
    gw_error_init(&err);
    FUZZ_CHECK(store_path(dir, f, "vm", path, PATH_MAX) == 0);
    put_file(path, data, size);
    struct json_object *o;
    int r = store_read_json(path, &o, &err);
    if (r < 0) {
        fuzz_check_refused(r, &err);
        FUZZ_CHECK(!strncmp(err.msg, path, strlen(path))); /* the message names the file */
        return NULL;
    }
    FUZZ_CHECK(json_object_is_type(o, json_type_object) && !memchr(data, 0, size));
    refused_with_more(data, size, path);
    put_file(path, data, size);
    return o;
}

static void definition(const uint8_t *data, size_t size)
{
    char path[PATH_MAX];
    struct json_object *o = read_back(STORE_DEF, data, size, path);
    if (!o)
        return;
    struct gw_error err;
    gw_error_init(&err);
    FUZZ_CHECK(json_object_is_type(o, json_type_object));
    struct dom_def def;
    struct json_object *uuid = NULL;
    bool had_uuid = json_object_object_get_ex(o, "uuid", &uuid) && uuid;
    int r = dom_def_from_json(o, &def, &err);
    json_object_put(o);
    if (r < 0) {
        fuzz_check_refused(r, &err);
        dom_def_fini(&def);
        return;
    }
    /* Only accepted files: store_load_defs logs each one it skips, and
     * domains/vm.json that defines another domain is one of them. */
    struct loaded l = { 0 }, l2 = { 0 }, l3 = { 0 };
    if (strcmp(def.name, "vm") != 0) {
        FUZZ_CHECK(store_load_defs(dir, collect, &l, &err) == 0 && l.n == 0);
        dom_def_fini(&def);
        return;
    }
    FUZZ_CHECK(store_load_defs(dir, collect, &l, &err) == 0 && l.n == 1);
    struct json_object *want = dom_def_to_json(&def);
    if (had_uuid) /* else a uuid was made up: the same at the next load */
        FUZZ_CHECK(!strcmp(json_object_to_json_string(want), json_object_to_json_string(l.text)));
    FUZZ_CHECK(store_load_defs(dir, collect, &l3, &err) == 0 && l3.n == 1);
    FUZZ_CHECK(!strcmp(json_object_to_json_string(l.text), json_object_to_json_string(l3.text)));
    json_object_put(l3.text);
    /* Written back by the daemon, loaded again. */
    FUZZ_CHECK(store_save_def(dir2, &def, &err) == 0);
    FUZZ_CHECK(store_load_defs(dir2, collect, &l2, &err) == 0 && l2.n == 1);
    FUZZ_CHECK(!strcmp(json_object_to_json_string(want), json_object_to_json_string(l2.text)));
    store_remove_domain(dir2, def.name);
    json_object_put(want);
    json_object_put(l.text);
    json_object_put(l2.text);
    dom_def_fini(&def);
}

/* ---- runtime status ---- */

/* A member that is valid in the file is what was read. */
static void check_status_members(struct json_object *o, const struct store_status *s)
{
    struct json_object *v;
    if (json_object_object_get_ex(o, "pid", &v) && json_object_is_type(v, json_type_int) &&
        json_object_get_int64(v) > 0 && json_object_get_int64(v) <= INT32_MAX)
        FUZZ_CHECK(s->pid == json_object_get_int64(v));
    if (json_object_object_get_ex(o, "id", &v) && json_object_is_type(v, json_type_int) &&
        json_object_get_int64(v) >= 0 && json_object_get_int64(v) < INT32_MAX)
        FUZZ_CHECK(s->id == json_object_get_int64(v));
    if (json_object_object_get_ex(o, "state", &v) && json_object_is_type(v, json_type_string) &&
        dom_state_from_name(json_object_get_string(v)) >= 0 &&
        strlen(json_object_get_string(v)) == (size_t)json_object_get_string_len(v))
        FUZZ_CHECK(s->state == dom_state_from_name(json_object_get_string(v)));
}

static void status(const uint8_t *data, size_t size)
{
    char path[PATH_MAX];
    struct json_object *o = read_back(STORE_STATUS, data, size, path);
    if (!o)
        return;
    struct gw_error err;
    gw_error_init(&err);
    struct store_status s, back;
    FUZZ_CHECK(store_status_from_json(o, &s, &err) == 0);
    FUZZ_CHECK(s.state >= -1 && s.state < DOM_STATE__COUNT && s.reason >= -1 && s.reason < DOM_REASON__COUNT);
    FUZZ_CHECK(s.id >= -1 && s.id < INT32_MAX && s.pid >= 0);
    FUZZ_CHECK(memchr(s.qmp, 0, sizeof(s.qmp)) && memchr(s.uuid, 0, sizeof(s.uuid)));
    FUZZ_CHECK(!s.uuid[0] || strlen(s.uuid) == DOM_UUID_LEN);
    check_status_members(o, &s);
    json_object_put(o);
    /* Written back as the daemon writes it, read again. */
    struct json_object *w = store_status_to_json(&s);
    FUZZ_CHECK(store_write_json(path, w, &err) == 0);
    json_object_put(w);
    FUZZ_CHECK(store_read_json(path, &o, &err) == 0);
    FUZZ_CHECK(store_status_from_json(o, &back, &err) == 0);
    FUZZ_CHECK(!memcmp(&s, &back, sizeof(s)));
    json_object_put(o);
}

/* ---- migration jobs ---- */

static void job(const uint8_t *data, size_t size, uint8_t facts)
{
    char path[PATH_MAX];
    struct gw_error err;
    gw_error_init(&err);
    snprintf(path, sizeof(path), "%s/jobs/" UUID ".json", dir);
    put_file(path, data, size);
    struct job j, back;
    int r = job_load(&j, dir, UUID, &err);
    if (r < 0) {
        fuzz_check_refused(r, &err);
        return;
    }
    FUZZ_CHECK(!memchr(data, 0, size)); /* one JSON object, nothing after it */
    FUZZ_CHECK(!strcmp(j.uuid, UUID) && job_id_valid(j.id));
    FUZZ_CHECK(j.kind > JOB_KIND_NONE && j.kind < JOB_KIND__COUNT && job_phase_allowed(j.kind, j.phase));
    FUZZ_CHECK(!(j.flags & ~(unsigned)JOB_F__ALL));
    FUZZ_CHECK(memchr(j.name, 0, sizeof(j.name)) && memchr(j.peer_uri, 0, sizeof(j.peer_uri)) &&
               memchr(j.migrate_uri, 0, sizeof(j.migrate_uri)) && memchr(j.error, 0, sizeof(j.error)));
    FUZZ_CHECK(job_save(&j, dir2, &err) == 0 && job_load(&back, dir2, UUID, &err) == 0);
    FUZZ_CHECK(!memcmp(&j, &back, sizeof(j)));
    FUZZ_CHECK(job_remove(dir2, UUID, &err) == 0);
    const char *const statuses[] = { NULL, "active", "completed", "postcopy-active", "postcopy-paused",
                                     "failed", "cancelled", "device" };
    const char *st = statuses[(facts >> 2) & 7];
    bool alive = facts & 1, switched = facts & 2;
    enum job_recovery a = job_recovery_action(&j, alive, st, switched);
    FUZZ_CHECK(a < JOB_RECOVER__COUNT && strcmp(job_recovery_name(a), "?"));
    if (a == JOB_RECOVER_ASK_PEER)
        for (unsigned p = 0; p < JOB_PEER__COUNT; p++) {
            enum job_recovery b = job_recovery_after_peer(&j, alive, st, switched,
                                                          (enum job_peer_outcome)p);
            FUZZ_CHECK(b < JOB_RECOVER__COUNT);
            /* A destination that knows nothing is no word that the guest
             * does not run there: never a reason to run it here. */
            FUZZ_CHECK(p != JOB_PEER_UNKNOWN || b != JOB_RECOVER_RESUME_SOURCE);
        }
    FUZZ_CHECK(job_peer_outcome_of(&j, alive) < JOB_PEER__COUNT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        definition(data + 1, size - 1);
        break;
    case 1:
        status(data + 1, size - 1);
        break;
    default:
        job(data + 1, size - 1, data[0] / 3);
        break;
    }
    return 0;
}
