/* The daemon's state directory. */
#define LOG_PREFIX "store"
#include "daemon/domain_store.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/json_text.h"
#include "common/log.h"

static const char *const subdirs[] = { "domains", "run", "log", "jobs" };

/* A directory of the state: a directory of ours that no one else may write
 * in (whoever can chooses what the daemon runs, kernels included). */
static int check_dir(const char *path, struct gw_error *err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return gw_error_set(err, errno, "cannot stat '%s': %m", path);
    if (!S_ISDIR(st.st_mode))
        return gw_error_set(err, ENOTDIR, "'%s' is not a directory", path);
    if (st.st_uid != geteuid())
        return gw_error_set(err, EPERM, "'%s' is owned by uid %u, not by this daemon's uid %u",
                            path, (unsigned)st.st_uid, (unsigned)geteuid());
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        return gw_error_set(err, EPERM, "'%s' is writable by other users (mode %04o): whoever "
                            "writes there chooses what this daemon runs; remove their write "
                            "permission (chmod go-w)", path, (unsigned)(st.st_mode & 07777));
    return 0;
}

int store_make_dir(const char *path, struct gw_error *err)
{
    if (mkdir(path, 0700) == 0) {
        int r = store_sync_dir_of(path); /* the new entry, durable */
        if (r < 0)
            return gw_error_set(err, -r, "cannot sync the directory of '%s': %s", path,
                                strerror(-r));
    } else if (errno != EEXIST) {
        return gw_error_set(err, errno, "cannot create '%s': %m", path);
    }
    return check_dir(path, err);
}

int store_init(const char *dir, struct gw_error *err)
{
    char path[PATH_MAX];
    int r = store_make_dir(dir, err);
    if (r < 0)
        return r;
    for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
        if (snprintf(path, sizeof(path), "%s/%s", dir, subdirs[i]) >= (int)sizeof(path))
            return gw_error_set(err, ENAMETOOLONG, "state directory path too long: %s", dir);
        if ((r = store_make_dir(path, err)) < 0)
            return r;
    }
    return 0;
}

int store_path(const char *dir, enum store_file f, const char *name, char *buf, size_t len)
{
    static const char *const fmt[] = {
        [STORE_DEF] = "%s/domains/%s.json",   [STORE_STATUS] = "%s/run/%s.json",
        [STORE_QMP] = "%s/run/%s.qmp",        [STORE_CONSOLE] = "%s/run/%s.console",
        [STORE_SERIAL_LOG] = "%s/log/%s.log", [STORE_VMM_LOG] = "%s/log/%s.vmm.log",
        [STORE_LIVE_DEF] = "%s/run/%s.def",
    };
    int n = snprintf(buf, len, fmt[f], dir, name);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int store_sync_dir_of(const char *path)
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof(copy), "%s", path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

static int write_all(int fd, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        off += (size_t)n;
    }
    return 0;
}

int store_write_atomic(const char *path, const char *data, size_t len, struct gw_error *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s" STORE_TMP_SUFFIX "XXXXXX", path) >= (int)sizeof(tmp))
        return gw_error_set(err, ENAMETOOLONG, "path too long: %s", path);
    /* A new file of this write's own (O_EXCL, mode 0600): never one a crash
     * left, nor what a link there names, nor another writer's. */
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return gw_error_set(err, errno, "cannot create a temporary file for '%s': %m", path);
    int r = write_all(fd, data, len);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r < 0) { /* ENOSPC, EDQUOT, EIO: the old file stays as it was */
        unlink(tmp);
        return gw_error_set(err, -r, "cannot write '%s': %s", tmp, strerror(-r));
    }
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return gw_error_set(err, e, "cannot rename '%s' to '%s': %s", tmp, path, strerror(e));
    }
    if ((r = store_sync_dir_of(path)) < 0) /* until then a power cut may undo the rename */
        return gw_error_set(err, -r, "cannot sync the directory of '%s': %s", path, strerror(-r));
    return 0;
}

/* A name store_write_atomic gives its temporary files ("X.tmp.AbC123"),
 * or the one older daemons gave them ("X.tmp"); no state file ends so. */
static bool is_stale_tmp(const char *name)
{
    size_t n = strlen(name), sfx = strlen(STORE_TMP_SUFFIX);
    if (n > 4 && strcmp(name + n - 4, ".tmp") == 0)
        return true;
    if (n < sfx + 7 || memcmp(name + n - 6 - sfx, STORE_TMP_SUFFIX, sfx) != 0)
        return false;
    for (size_t i = n - 6; i < n; i++)
        if (!isalnum((unsigned char)name[i]))
            return false;
    return true;
}

void store_remove_stale_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (is_stale_tmp(e->d_name) && unlinkat(dirfd(d), e->d_name, 0) == 0)
            log_info("removed %s/%s: a temporary file of a write cut short", dir, e->d_name);
    closedir(d);
}

int store_write_json(const char *path, struct json_object *o, struct gw_error *err)
{
    size_t len;
    const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PRETTY, &len);
    if (!s)
        return gw_error_set(err, ENOMEM, "out of memory");
    char *text = malloc(len + 2);
    if (!text)
        return gw_error_set(err, ENOMEM, "out of memory");
    memcpy(text, s, len);
    text[len] = '\n';
    int r = store_write_atomic(path, text, len + 1, err);
    free(text);
    return r;
}

int store_parse_json(const char *text, size_t len, struct json_object **out, struct gw_error *err)
{
    *out = NULL;
    if (len > STORE_FILE_MAX)
        return gw_error_set(err, EFBIG, "%zu bytes, over the limit of %u", len, STORE_FILE_MAX);
    return json_text_object(text, len, out, err);
}

int store_read_json(const char *path, struct json_object **out, struct gw_error *err)
{
    int r = json_file_object(path, STORE_FILE_MAX, out, err);
    if (r < 0 && r != -ENOENT)
        gw_error_prefix(err, "%s", path);
    return r;
}

int store_save_def(const char *dir, const struct dom_def *def, struct gw_error *err)
{
    char path[PATH_MAX];
    if (store_path(dir, STORE_DEF, def->name, path, sizeof(path)) < 0)
        return gw_error_set(err, ENAMETOOLONG, "state directory path too long");
    struct json_object *o = dom_def_to_json(def);
    int r = store_write_json(path, o, err);
    json_object_put(o);
    return r;
}

void store_remove_domain(const char *dir, const char *name)
{
    static const enum store_file files[] = { STORE_DEF, STORE_STATUS, STORE_QMP, STORE_CONSOLE,
                                             STORE_LIVE_DEF };
    static const enum store_file dirs[] = { STORE_DEF, STORE_STATUS }; /* domains/, run/ */
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        if (store_path(dir, files[i], name, path, sizeof(path)) == 0)
            unlink(path);
    /* durable in both directories: an undefined domain stays undefined */
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
        if (store_path(dir, dirs[i], name, path, sizeof(path)) == 0 && store_sync_dir_of(path) < 0)
            log_warn("domain '%s': cannot sync the directory of %s: %m", name, path);
}

/* ---- runtime status ---- */

struct json_object *store_status_to_json(const struct store_status *s)
{
    struct json_object *o = json_object_new_object();
    if (s->uuid[0])
        json_object_object_add(o, "uuid", json_object_new_string(s->uuid));
    if (s->state >= 0)
        json_object_object_add(o, "state", json_object_new_string(dom_state_name(s->state)));
    if (s->reason >= 0)
        json_object_object_add(o, "reason", json_object_new_string(dom_reason_name(s->reason)));
    if (s->id >= 0)
        json_object_object_add(o, "id", json_object_new_int(s->id));
    if (s->pid > 0)
        json_object_object_add(o, "pid", json_object_new_int(s->pid));
    if (s->pid_start)
        json_object_object_add(o, "pid_start", json_object_new_int64((int64_t)s->pid_start));
    if (s->qmp[0])
        json_object_object_add(o, "qmp", json_object_new_string(s->qmp));
    if (s->starting)
        json_object_object_add(o, "starting", json_object_new_boolean(1));
    return o;
}

/* A string member without a NUL byte that fits cap, or NULL. */
static const char *status_str(struct json_object *o, const char *key, size_t cap)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    return n < cap && strlen(s) == n ? s : NULL;
}

/* An integer member in [min, max], or dflt. */
static int status_int(struct json_object *o, const char *key, int64_t min, int64_t max, int dflt)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
        return dflt;
    errno = 0;
    int64_t n = json_object_get_int64(v);
    return errno == 0 && n >= min && n <= max ? (int)n : dflt;
}

int store_status_from_json(struct json_object *o, struct store_status *s, struct gw_error *err)
{
    memset(s, 0, sizeof(*s));
    s->state = s->reason = s->id = -1;
    if (!json_object_is_type(o, json_type_object))
        return gw_error_set(err, EINVAL, "a domain status must be a JSON object");
    const char *uuid = status_str(o, "uuid", sizeof(s->uuid)), *qmp = status_str(o, "qmp", sizeof(s->qmp));
    char canon[DOM_UUID_LEN + 1];
    if (uuid && dom_uuid_parse(uuid, canon))
        memcpy(s->uuid, canon, sizeof(s->uuid));
    s->state = dom_state_from_name(status_str(o, "state", 32));
    s->reason = dom_reason_from_name(status_str(o, "reason", 32));
    s->id = status_int(o, "id", 0, INT_MAX - 1, -1); /* the next id is id + 1 */
    s->pid = status_int(o, "pid", 1, INT_MAX, 0);
    struct json_object *v;
    if (json_object_object_get_ex(o, "pid_start", &v) && json_object_is_type(v, json_type_int)) {
        errno = 0;
        int64_t t = json_object_get_int64(v);
        s->pid_start = errno == 0 && t > 0 ? (unsigned long long)t : 0;
    }
    s->starting = json_object_object_get_ex(o, "starting", &v) &&
                  json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v);
    if (qmp)
        memcpy(s->qmp, qmp, strlen(qmp) + 1);
    return 0;
}

/* ---- definitions ---- */

/* The definition in domains/NAME.json must be domain NAME's: a copy under
 * another name would be a second file of one domain (undefine removes one). */
static int check_file_name(const char *path, const struct dom_def *def, struct gw_error *err)
{
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t n = strlen(base) - 5; /* is_json: ends with ".json" */
    if (strlen(def->name) == n && strncmp(base, def->name, n) == 0)
        return 0;
    return gw_error_set(err, EINVAL, "%s: it defines domain '%s', not '%.*s' (a definition's file "
                        "is named after its domain: domains/%s.json)", path, def->name, (int)n,
                        base, def->name);
}

static int load_one(const char *path, void (*fn)(void *, struct dom_def *), void *opaque)
{
    struct gw_error e;
    gw_error_init(&e);
    struct json_object *o;
    struct dom_def def;
    int r = store_read_json(path, &o, &e);
    if (r == 0) {
        struct json_object *uuid = NULL;
        bool had_uuid = json_object_object_get_ex(o, "uuid", &uuid) && uuid;
        r = dom_def_from_json(o, &def, &e);
        json_object_put(o);
        gw_error_prefix(&e, "%s", path);
        if (r == 0)
            r = check_file_name(path, &def, &e);
        /* A definition written without a uuid (by hand) got a new one:
         * keep it, or the domain would change identity at every restart
         * (its job file and its migrations go by uuid). */
        if (r == 0 && !had_uuid) {
            struct json_object *d = dom_def_to_json(&def);
            if (store_write_json(path, d, &e) < 0)
                log_warn("definition %s: cannot save its new uuid %s: %s", path, def.uuid, e.msg);
            json_object_put(d);
        }
        if (r == 0)
            fn(opaque, &def);
        else
            dom_def_fini(&def);
    }
    if (r < 0 && !e.msg[0]) /* gone since the directory was read */
        gw_error_set(&e, -r, "%s: %s", path, strerror(-r));
    if (r < 0)
        log_error("skipping definition %s", e.msg);
    return r;
}

static int name_cmp(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int is_json(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return n > 5 && strcmp(d->d_name + n - 5, ".json") == 0;
}

int store_load_defs(const char *dir, void (*fn)(void *opaque, struct dom_def *def), void *opaque,
                    struct gw_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/run", dir);
    store_remove_stale_tmp(path);
    snprintf(path, sizeof(path), "%s/domains", dir);
    store_remove_stale_tmp(path);
    struct dirent **list;
    int n = scandir(path, &list, is_json, name_cmp);
    if (n < 0)
        return gw_error_set(err, errno, "cannot read '%s': %m", path);
    for (int i = 0; i < n; i++) {
        char file[PATH_MAX];
        snprintf(file, sizeof(file), "%s/%s", path, list[i]->d_name);
        load_one(file, fn, opaque);
        free(list[i]);
    }
    free(list);
    return 0;
}
