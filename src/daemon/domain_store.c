/* The daemon's state directory. */
#define LOG_PREFIX "store"
#include "daemon/domain_store.h"

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

static const char *const subdirs[] = { "domains", "run", "log" };

int store_init(const char *dir, struct gw_error *err)
{
    char path[PATH_MAX];
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return gw_error_set(err, errno, "cannot create state directory '%s': %m", dir);
    for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, subdirs[i]);
        if (mkdir(path, 0700) < 0 && errno != EEXIST)
            return gw_error_set(err, errno, "cannot create '%s': %m", path);
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

int store_write_atomic(const char *path, const char *data, size_t len, struct gw_error *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return gw_error_set(err, ENAMETOOLONG, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return gw_error_set(err, errno, "cannot create '%s': %m", tmp);
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto err_tmp;
        off += (size_t)n;
    }
    if (fsync(fd) < 0)
        goto err_tmp;
    close(fd);
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return gw_error_set(err, e, "cannot rename '%s' to '%s': %s", tmp, path, strerror(e));
    }
    store_sync_dir_of(path);
    return 0;
err_tmp: {
        int e = errno ? errno : EIO;
        close(fd);
        unlink(tmp);
        return gw_error_set(err, e, "cannot write '%s': %s", tmp, strerror(e));
    }
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
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        if (store_path(dir, files[i], name, path, sizeof(path)) == 0)
            unlink(path);
    store_sync_dir_of(path);
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
    snprintf(path, sizeof(path), "%s/domains", dir);
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
