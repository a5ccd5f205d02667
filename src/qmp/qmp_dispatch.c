/* The command table and the argument schema check. */
#include "qmp/qmp_dispatch.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool utf8_cont(unsigned char c) { return (c & 0xc0) == 0x80; }

int qmp_utf8_prefix(const char *s, int max)
{
    size_t n = strnlen(s, (size_t)max + 1);
    if (n <= (size_t)max)
        return (int)n;
    int k = max; /* s[max] exists: back up to the start of the character it is in */
    while (k > 0 && utf8_cont((unsigned char)s[k]))
        k--;
    return k;
}

/* Cut a character left incomplete at the end of s (by vsnprintf). */
static void utf8_trim_tail(char *s)
{
    size_t n = strlen(s), k = n;
    while (k > 0 && n - k < 3 && utf8_cont((unsigned char)s[k - 1]))
        k--;
    if (k == 0)
        return;
    unsigned char lead = (unsigned char)s[k - 1];
    size_t want = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    if (n - (k - 1) < want)
        s[k - 1] = 0;
}

void qmp_error_set(struct qmp_error *e, const char *cls, const char *fmt, ...)
{
    if (!e)
        return;
    e->cls = cls;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->desc, sizeof(e->desc), fmt, ap);
    va_end(ap);
    utf8_trim_tail(e->desc);
}

void qmp_table_init(struct qmp_table *t) { memset(t, 0, sizeof(*t)); }

int qmp_table_add(struct qmp_table *t, const struct qmp_command *cmd)
{
    if (!cmd->name || !cmd->fn)
        return -EINVAL;
    if (qmp_table_find(t, cmd->name))
        return -EEXIST;
    if (t->n == QMP_MAX_COMMANDS)
        return -ENOSPC;
    t->cmds[t->n++] = *cmd;
    return 0;
}

const struct qmp_command *qmp_table_find(const struct qmp_table *t, const char *name)
{
    for (unsigned i = 0; i < t->n; i++)
        if (strcmp(t->cmds[i].name, name) == 0)
            return &t->cmds[i];
    return NULL;
}

static const char *type_name(enum qmp_arg_type t)
{
    switch (t) {
    case QMP_ARG_STR: return "string";
    case QMP_ARG_INT: return "integer";
    case QMP_ARG_BOOL: return "boolean";
    case QMP_ARG_NUMBER: return "number";
    case QMP_ARG_OBJECT: return "object";
    case QMP_ARG_ARRAY: return "array";
    case QMP_ARG_ANY: return "any";
    }
    return "?";
}

static bool type_ok(enum qmp_arg_type t, struct json_object *v)
{
    switch (t) {
    case QMP_ARG_STR: return json_object_is_type(v, json_type_string);
    case QMP_ARG_INT: /* json-c keeps 2^63..2^64-1 too, as unsigned */
        return json_object_is_type(v, json_type_int) &&
               (json_object_get_int64(v) < INT64_MAX || json_object_get_uint64(v) <= INT64_MAX);
    case QMP_ARG_BOOL: return json_object_is_type(v, json_type_boolean);
    case QMP_ARG_NUMBER:
        return json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double);
    case QMP_ARG_OBJECT: return json_object_is_type(v, json_type_object);
    case QMP_ARG_ARRAY: return json_object_is_type(v, json_type_array);
    case QMP_ARG_ANY: return true;
    }
    return false;
}

static const struct qmp_arg *find_arg(const struct qmp_command *c, const char *name)
{
    for (const struct qmp_arg *a = c->args; a < c->args + QMP_MAX_ARGS && a->name; a++)
        if (strcmp(a->name, name) == 0)
            return a;
    return NULL;
}

bool qmp_json_has_nul(struct json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_string:
        return (size_t)json_object_get_string_len(v) != strlen(json_object_get_string(v));
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(v); i++)
            if (qmp_json_has_nul(json_object_array_get_idx(v, i)))
                return true;
        return false;
    case json_type_object: {
        json_object_object_foreach(v, key, val) {
            (void)key;
            if (qmp_json_has_nul(val))
                return true;
        }
        return false;
    }
    default:
        return false;
    }
}

int qmp_check_args(const struct qmp_command *c, struct json_object *args, struct qmp_error *err)
{
    if (!json_object_is_type(args, json_type_object)) {
        qmp_error_set(err, QMP_ERR_GENERIC, "QMP input member 'arguments' must be an object");
        return -1;
    }
    /* C code reads strings up to their first NUL: "a\u0000b" would be
     * taken for "a". */
    json_object_object_foreach(args, name, value) {
        if (qmp_json_has_nul(value)) {
            qmp_error_set(err, QMP_ERR_GENERIC,
                          "Parameter '%.*s' must not contain a NUL character (\\u0000)",
                          qmp_utf8_prefix(name, 200), name);
            return -1;
        }
    }
    if (!c->allow_unknown_args) {
        json_object_object_foreach(args, key, val) {
            (void)val;
            if (!find_arg(c, key)) {
                qmp_error_set(err, QMP_ERR_GENERIC, "Parameter '%.*s' is unexpected",
                              qmp_utf8_prefix(key, 200), key);
                return -1;
            }
        }
    }
    for (const struct qmp_arg *a = c->args; a < c->args + QMP_MAX_ARGS && a->name; a++) {
        struct json_object *v;
        if (!json_object_object_get_ex(args, a->name, &v)) {
            if (a->required) {
                qmp_error_set(err, QMP_ERR_GENERIC, "Parameter '%s' is missing", a->name);
                return -1;
            }
            continue;
        }
        if (!type_ok(a->type, v)) {
            qmp_error_set(err, QMP_ERR_GENERIC, "Invalid parameter type for '%s', expected: %s",
                          a->name, type_name(a->type));
            return -1;
        }
    }
    return 0;
}

int qmp_dispatch(const struct qmp_command *c, struct json_object *args, struct json_object **ret,
                 struct qmp_error *err)
{
    *ret = NULL;
    if (qmp_check_args(c, args, err) < 0)
        return -1;
    struct qmp_error e = { 0 };
    if (c->fn(c->opaque, args, ret, &e) < 0) {
        json_object_put(*ret);
        *ret = NULL;
        qmp_error_set(err, e.cls ? e.cls : QMP_ERR_GENERIC, "%s",
                      e.desc[0] ? e.desc : "Command failed");
        return -1;
    }
    if (!*ret)
        *ret = json_object_new_object();
    return 0;
}
