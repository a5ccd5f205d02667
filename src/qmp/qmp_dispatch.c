#include "qmp/qmp_dispatch.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qmp_error_set(struct qmp_error *e, const char *cls, const char *fmt, ...)
{
    e->cls = cls;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->desc, sizeof(e->desc), fmt, ap);
    va_end(ap);
}

void qmp_table_init(struct qmp_table *t) { memset(t, 0, sizeof(*t)); }

int qmp_table_add(struct qmp_table *t, const struct qmp_command *cmd)
{
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
    case QMP_ARG_INT: return json_object_is_type(v, json_type_int);
    case QMP_ARG_BOOL: return json_object_is_type(v, json_type_boolean);
    case QMP_ARG_NUMBER:
        return json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double);
    case QMP_ARG_OBJECT: return json_object_is_type(v, json_type_object);
    case QMP_ARG_ARRAY: return json_object_is_type(v, json_type_array);
    case QMP_ARG_ANY: return true;
    }
    return false;
}

/* Check arguments against the command's schema before the handler runs. */
static int check_args(const struct qmp_command *c, struct json_object *args, struct qmp_error *err)
{
    if (!c->allow_unknown_args) {
        json_object_object_foreach(args, key, val) {
            (void)val;
            bool known = false;
            for (const struct qmp_arg *a = c->args; a->name; a++)
                known |= strcmp(a->name, key) == 0;
            if (!known) {
                qmp_error_set(err, "GenericError", "Parameter '%s' is unexpected", key);
                return -1;
            }
        }
    }
    for (const struct qmp_arg *a = c->args; a->name; a++) {
        struct json_object *v;
        if (!json_object_object_get_ex(args, a->name, &v)) {
            if (a->required) {
                qmp_error_set(err, "GenericError", "Parameter '%s' is missing", a->name);
                return -1;
            }
            continue;
        }
        if (!type_ok(a->type, v)) {
            qmp_error_set(err, "GenericError", "Invalid parameter type for '%s', expected: %s",
                          a->name, type_name(a->type));
            return -1;
        }
    }
    return 0;
}

static void send_obj(struct qmp_session *s, struct json_object *o)
{
    const char *txt = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    size_t len = strlen(txt);
    char *line = malloc(len + 3);
    if (line) {
        memcpy(line, txt, len);
        memcpy(line + len, "\r\n", 3);
        s->out(s->out_opaque, line, len + 2);
    }
    json_object_put(o);
}

static void reply_error(struct qmp_session *s, struct json_object *id, const char *cls,
                        const char *desc)
{
    struct json_object *o = json_object_new_object();
    struct json_object *e = json_object_new_object();
    json_object_object_add(e, "class", json_object_new_string(cls));
    json_object_object_add(e, "desc", json_object_new_string(desc));
    json_object_object_add(o, "error", e);
    if (id)
        json_object_object_add(o, "id", json_object_get(id));
    send_obj(s, o);
}

static void reply_return(struct qmp_session *s, struct json_object *id, struct json_object *ret)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "return", ret ? ret : json_object_new_object());
    if (id)
        json_object_object_add(o, "id", json_object_get(id));
    send_obj(s, o);
}

static bool negotiation_command(struct qmp_session *s, const char *name, struct json_object *args,
                                struct json_object *id)
{
    if (strcmp(name, "qmp_capabilities") != 0) {
        if (!s->negotiated) {
            reply_error(s, id, "CommandNotFound",
                        "Expecting capabilities negotiation with 'qmp_capabilities'");
            return true;
        }
        return false;
    }
    if (s->negotiated) {
        reply_error(s, id, "CommandNotFound",
                    "Capabilities negotiation is already complete, command ignored");
        return true;
    }
    struct json_object *en;
    if (args && json_object_object_get_ex(args, "enable", &en)) {
        if (!json_object_is_type(en, json_type_array) || json_object_array_length(en) > 0) {
            reply_error(s, id, "GenericError", "Parameter 'enable': no capability is supported");
            return true;
        }
    }
    if (args) {
        json_object_object_foreach(args, key, val) {
            (void)val;
            if (strcmp(key, "enable") != 0) {
                char d[128];
                snprintf(d, sizeof(d), "Parameter '%s' is unexpected", key);
                reply_error(s, id, "GenericError", d);
                return true;
            }
        }
    }
    s->negotiated = true;
    reply_return(s, id, NULL);
    return true;
}

void qmp_session_request(struct qmp_session *s, struct json_object *req)
{
    if (!json_object_is_type(req, json_type_object)) {
        reply_error(s, NULL, "GenericError", "QMP input must be a JSON object");
        return;
    }
    struct json_object *id = NULL, *exec = NULL, *args = NULL;
    json_object_object_get_ex(req, "id", &id);
    json_object_object_foreach(req, key, val) {
        (void)val;
        if (strcmp(key, "execute") && strcmp(key, "arguments") && strcmp(key, "id")) {
            char d[160];
            snprintf(d, sizeof(d), strcmp(key, "exec-oob") == 0
                                       ? "QMP input member '%s' is not supported (no out-of-band)"
                                       : "QMP input member '%s' is unexpected", key);
            reply_error(s, id, "GenericError", d);
            return;
        }
    }
    if (!json_object_object_get_ex(req, "execute", &exec)) {
        reply_error(s, id, "GenericError", "QMP input lacks member 'execute'");
        return;
    }
    if (!json_object_is_type(exec, json_type_string)) {
        reply_error(s, id, "GenericError", "QMP input member 'execute' must be a string");
        return;
    }
    if (json_object_object_get_ex(req, "arguments", &args) &&
        !json_object_is_type(args, json_type_object)) {
        reply_error(s, id, "GenericError", "QMP input member 'arguments' must be an object");
        return;
    }
    const char *name = json_object_get_string(exec);
    if (negotiation_command(s, name, args, id))
        return;
    const struct qmp_command *c = qmp_table_find(s->table, name);
    if (!c) {
        char d[160];
        snprintf(d, sizeof(d), "The command %s has not been found", name);
        reply_error(s, id, "CommandNotFound", d);
        return;
    }
    struct json_object *empty = NULL;
    if (!args)
        args = empty = json_object_new_object();
    struct qmp_error err = { 0 };
    if (check_args(c, args, &err) < 0) {
        reply_error(s, id, err.cls, err.desc);
    } else {
        struct json_object *ret = NULL;
        if (c->fn(c->opaque, args, &ret, &err) < 0) {
            json_object_put(ret);
            reply_error(s, id, err.cls ? err.cls : "GenericError", err.desc);
        } else {
            reply_return(s, id, ret);
        }
    }
    json_object_put(empty);
}

int qmp_session_init(struct qmp_session *s, const struct qmp_table *t,
                     void (*out)(void *, char *, size_t), void *opaque)
{
    memset(s, 0, sizeof(*s));
    s->table = t;
    s->out = out;
    s->out_opaque = opaque;
    s->tok = json_tokener_new();
    return s->tok ? 0 : -ENOMEM;
}

void qmp_session_fini(struct qmp_session *s)
{
    if (s->tok)
        json_tokener_free(s->tok);
    s->tok = NULL;
}

void qmp_session_input(struct qmp_session *s, const char *buf, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        /* Skip whitespace between objects. */
        if (s->pending == 0 && (buf[pos] == ' ' || buf[pos] == '\n' || buf[pos] == '\r' ||
                                buf[pos] == '\t')) {
            pos++;
            continue;
        }
        size_t chunk = len - pos;
        struct json_object *obj = json_tokener_parse_ex(s->tok, buf + pos, (int)chunk);
        enum json_tokener_error jerr = json_tokener_get_error(s->tok);
        if (jerr == json_tokener_continue) {
            s->pending += chunk;
            if (s->pending > QMP_MAX_INPUT) {
                reply_error(s, NULL, "GenericError", "JSON parse error, object too large");
                json_tokener_reset(s->tok);
                s->pending = 0;
            }
            return;
        }
        size_t used = (size_t)json_tokener_get_parse_end(s->tok);
        if (used == 0)
            used = 1;
        pos += used;
        s->pending = 0;
        if (jerr != json_tokener_success) {
            char d[160];
            snprintf(d, sizeof(d), "JSON parse error, %s", json_tokener_error_desc(jerr));
            reply_error(s, NULL, "GenericError", d);
            json_tokener_reset(s->tok);
            /* Resynchronise at the next line or object start. */
            while (pos < len && buf[pos] != '\n' && buf[pos] != '{')
                pos++;
            continue;
        }
        json_tokener_reset(s->tok);
        qmp_session_request(s, obj);
        json_object_put(obj);
    }
}
