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
    };
    int n = snprintf(buf, len, fmt[f], dir, name);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int fsync_dir_of(const char *path)
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
    fsync_dir_of(path);
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

/* ---- reading a state file back ---- */

/* Line and column (from 1) of byte off of text. */
static void line_col(const char *text, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        (*col)++;
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        }
    }
}

/* "offset N (line L, column C)" for byte off of text. */
static void where(char *buf, size_t cap, const char *text, size_t off)
{
    size_t line, col;
    line_col(text, off, &line, &col);
    snprintf(buf, cap, "offset %zu (line %zu, column %zu)", off, line, col);
}

/* The first bytes of text[0 .. len) as a quoted C-like string, followed by
 * how many more there are: "xyz", "{\"a\": 1,\n  \"b\"" and 40 more bytes. */
#define SHOW_MAX 16
static void show(char *buf, size_t cap, const char *text, size_t len)
{
    size_t n = len < SHOW_MAX ? len : SHOW_MAX, o = 0;
    char q[SHOW_MAX * 4 + 3];
    q[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\')
            o += (size_t)sprintf(q + o, "\\%c", c);
        else if (c == '\n')
            o += (size_t)sprintf(q + o, "\\n");
        else if (c < 0x20 || c >= 0x7f)
            o += (size_t)sprintf(q + o, "\\x%02x", c);
        else
            q[o++] = (char)c;
    }
    q[o++] = '"';
    q[o] = '\0';
    if (len > n)
        snprintf(buf, cap, "%s and %zu more bytes", q, len - n);
    else
        snprintf(buf, cap, "%s", q);
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static size_t skip_blanks(const char *text, size_t len, size_t off)
{
    while (off < len && is_blank(text[off]))
        off++;
    return off;
}

static int nul_byte(const char *text, const char *nul, struct gw_error *err)
{
    char at[96];
    where(at, sizeof(at), text, (size_t)(nul - text));
    return gw_error_set(err, EINVAL, "not valid JSON: a NUL byte at %s", at);
}

/* Why json-c stopped short of a whole object (text[start] is the first
 * byte that is not white space). */
static int parse_failed(const char *text, size_t len, size_t start, size_t end,
                        enum json_tokener_error jerr, struct gw_error *err)
{
    char at[96], found[SHOW_MAX * 4 + 40];
    const char *nul = memchr(text, '\0', len); /* json-c stops there: "unexpected end of data" */
    if (nul && (size_t)(nul - text) <= end)
        return nul_byte(text, nul, err);
    if (jerr == json_tokener_continue && text[start] != '{' && text[start] != '/') {
        show(found, sizeof(found), text + start, len - start); /* "null", "12": json-c waits */
        return gw_error_set(err, EINVAL, "not a JSON object: %s", found);
    }
    if (jerr == json_tokener_continue) {
        where(at, sizeof(at), text, len);
        return gw_error_set(err, EINVAL, "the text ends at %s before the JSON object does", at);
    }
    where(at, sizeof(at), text, end);
    return gw_error_set(err, EINVAL, "not valid JSON: %s at %s", json_tokener_error_desc(jerr), at);
}

int store_parse_json(const char *text, size_t len, struct json_object **out, struct gw_error *err)
{
    *out = NULL;
    if (len > STORE_FILE_MAX)
        return gw_error_set(err, EFBIG, "%zu bytes, over the limit of %u", len, STORE_FILE_MAX);
    size_t start = skip_blanks(text, len, 0);
    if (start == len)
        return gw_error_set(err, EINVAL, "empty (no JSON object in it)");
    struct json_tokener *tok = json_tokener_new();
    if (!tok)
        return gw_error_set(err, ENOMEM, "out of memory");
    struct json_object *o = json_tokener_parse_ex(tok, text, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    int r = 0;
    char at[96], found[SHOW_MAX * 4 + 40];
    if (jerr != json_tokener_success)
        r = parse_failed(text, len, start, end, jerr, err);
    else if (!json_object_is_type(o, json_type_object)) /* o is NULL for "null" */
        r = gw_error_set(err, EINVAL, "a JSON %s, not an object", json_type_to_name(json_object_get_type(o)));
    else if ((end = skip_blanks(text, len, end)) < len) { /* a NUL byte is not white space */
        where(at, sizeof(at), text, end);
        show(found, sizeof(found), text + end, len - end);
        r = gw_error_set(err, EINVAL, "unexpected data after the JSON object at %s: %s", at, found);
    } else if (memchr(text, '\0', len)) { /* json-c took it for a part of a comment */
        r = nul_byte(text, memchr(text, '\0', len), err);
    }
    if (r < 0) {
        json_object_put(o);
        return r;
    }
    *out = o;
    return 0;
}

/* The whole of a regular file of at most STORE_FILE_MAX bytes (NUL added). */
static int read_file(const char *path, char **text, size_t *len, struct gw_error *err)
{
    *text = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? -ENOENT : gw_error_set(err, errno, "cannot open: %m");
    struct stat st;
    int r = fstat(fd, &st) < 0 ? gw_error_set(err, errno, "cannot stat: %m") : 0;
    if (r == 0 && !S_ISREG(st.st_mode))
        r = gw_error_set(err, EINVAL, "not a regular file");
    else if (r == 0 && st.st_size > STORE_FILE_MAX)
        r = gw_error_set(err, EFBIG, "%lld bytes, over the limit of %u", (long long)st.st_size,
                         STORE_FILE_MAX);
    size_t cap = r == 0 ? (size_t)st.st_size + 1 : 0, n = 0; /* + 1: to see it grow */
    char *buf = r == 0 ? malloc(cap + 1) : NULL;
    if (r == 0 && !buf)
        r = gw_error_set(err, ENOMEM, "out of memory");
    while (r == 0 && n < cap) {
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            r = gw_error_set(err, errno, "cannot read: %m");
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    if (r == 0 && n == cap)
        r = gw_error_set(err, EINVAL, "the file grew while it was read");
    close(fd);
    if (r < 0) {
        free(buf);
        return r;
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
}

int store_read_json(const char *path, struct json_object **out, struct gw_error *err)
{
    char *text;
    size_t len = 0;
    *out = NULL;
    int r = read_file(path, &text, &len, err);
    if (r == 0)
        r = store_parse_json(text, len, out, err);
    if (r < 0 && r != -ENOENT)
        gw_error_prefix(err, "%s", path);
    free(text);
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
    static const enum store_file files[] = { STORE_DEF, STORE_STATUS, STORE_QMP, STORE_CONSOLE };
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        if (store_path(dir, files[i], name, path, sizeof(path)) == 0)
            unlink(path);
    fsync_dir_of(path);
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
    if (s->qmp[0])
        json_object_object_add(o, "qmp", json_object_new_string(s->qmp));
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
