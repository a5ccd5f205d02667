/* One QMP connection's protocol state: the JSON stream is cut into requests
 * with json-c's incremental tokener, each request is checked (members,
 * negotiation, command, arguments) and answered in order. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qmp/qmp_dispatch.h"
#include "qmp/qmp_json.h"

/* Echo the request's "id" (any JSON value, null included) into a reply. */
static void add_id(struct json_object *reply, struct json_object *req)
{
    struct json_object *id;
    if (req && json_object_is_type(req, json_type_object) &&
        json_object_object_get_ex(req, "id", &id))
        json_object_object_add(reply, "id", json_object_get(id));
}

static void send_obj(struct qmp_session *s, struct json_object *o, struct json_object *req)
{
    add_id(o, req);
    size_t len;
    char *line = qmp_json_line(o, &len);
    json_object_put(o);
    if (line)
        s->out(s->out_opaque, line, len);
}

static void reply_error(struct qmp_session *s, struct json_object *req, const char *cls,
                        const char *desc)
{
    send_obj(s, qmp_json_error(cls, desc, NULL), req);
}

static void reply_errorf(struct qmp_session *s, struct json_object *req, const char *cls,
                         const char *fmt, const char *arg)
{
    char d[256];
    snprintf(d, sizeof(d), fmt, arg);
    reply_error(s, req, cls, d);
}

/* qmp_capabilities: the only command allowed before negotiation, refused
 * after it. No capability (such as "oob") is supported. */
static const struct qmp_command caps_cmd = {
    .name = "qmp_capabilities",
    .args = { { "enable", QMP_ARG_ARRAY, false } },
};

static int check_enable(struct json_object *args, struct qmp_error *err)
{
    if (qmp_check_args(&caps_cmd, args, err) < 0)
        return -1;
    struct json_object *en = qmp_json_get(args, "enable");
    size_t n = en ? json_object_array_length(en) : 0;
    for (size_t i = 0; i < n; i++) {
        struct json_object *cap = json_object_array_get_idx(en, i);
        if (!json_object_is_type(cap, json_type_string)) {
            qmp_error_set(err, QMP_ERR_GENERIC,
                          "Invalid parameter type for 'enable[%zu]', expected: string", i);
            return -1;
        }
        qmp_error_set(err, QMP_ERR_GENERIC, "Parameter 'enable' does not accept value '%.200s'",
                      json_object_get_string(cap));
        return -1;
    }
    return 0;
}

/* Handles negotiation; true when the request was answered here. */
static bool negotiation_command(struct qmp_session *s, const char *name, struct json_object *args,
                                struct json_object *req)
{
    if (strcmp(name, caps_cmd.name) != 0) {
        if (s->negotiated)
            return false;
        reply_error(s, req, QMP_ERR_NOT_FOUND,
                    "Expecting capabilities negotiation with 'qmp_capabilities'");
        return true;
    }
    if (s->negotiated) {
        reply_error(s, req, QMP_ERR_NOT_FOUND,
                    "Capabilities negotiation is already complete, command ignored");
        return true;
    }
    struct qmp_error err = { 0 };
    if (args && check_enable(args, &err) < 0) {
        reply_error(s, req, err.cls, err.desc);
        return true;
    }
    s->negotiated = true;
    send_obj(s, qmp_json_return(NULL, NULL), req);
    return true;
}

/* The request's top-level members; false when answered with an error. */
static bool check_members(struct qmp_session *s, struct json_object *req)
{
    json_object_object_foreach(req, key, val) {
        (void)val;
        if (!strcmp(key, "execute") || !strcmp(key, "arguments") || !strcmp(key, "id"))
            continue;
        if (!strcmp(key, "exec-oob"))
            reply_error(s, req, QMP_ERR_GENERIC,
                        "QMP input member 'exec-oob' is not supported (no out-of-band execution)");
        else
            reply_errorf(s, req, QMP_ERR_GENERIC, "QMP input member '%.200s' is unexpected", key);
        return false;
    }
    struct json_object *exec = qmp_json_get(req, "execute");
    if (!exec) {
        reply_error(s, req, QMP_ERR_GENERIC, "QMP input lacks member 'execute'");
        return false;
    }
    if (!json_object_is_type(exec, json_type_string)) {
        reply_error(s, req, QMP_ERR_GENERIC, "QMP input member 'execute' must be a string");
        return false;
    }
    if (qmp_json_has_nul(exec)) { /* "quit\u0000zzz" is not quit */
        reply_error(s, req, QMP_ERR_GENERIC,
                    "QMP input member 'execute' must not contain a NUL character (\\u0000)");
        return false;
    }
    struct json_object *args = qmp_json_get(req, "arguments");
    if (args && !json_object_is_type(args, json_type_object)) {
        reply_error(s, req, QMP_ERR_GENERIC, "QMP input member 'arguments' must be an object");
        return false;
    }
    return true;
}

void qmp_session_request(struct qmp_session *s, struct json_object *req)
{
    if (s->closed)
        return;
    if (!json_object_is_type(req, json_type_object)) {
        reply_error(s, NULL, QMP_ERR_GENERIC, "QMP input must be a JSON object");
        return;
    }
    if (!check_members(s, req))
        return;
    const char *name = qmp_json_get_str(req, "execute");
    struct json_object *args = qmp_json_get(req, "arguments");
    if (negotiation_command(s, name, args, req))
        return;
    const struct qmp_command *c = qmp_table_find(s->table, name);
    if (!c) {
        reply_errorf(s, req, QMP_ERR_NOT_FOUND, "The command %.200s has not been found", name);
        return;
    }
    struct json_object *empty = args ? NULL : json_object_new_object();
    struct json_object *ret;
    struct qmp_error err = { 0 };
    if (qmp_dispatch(c, args ? args : empty, &ret, &err) < 0)
        reply_error(s, req, err.cls, err.desc);
    else
        send_obj(s, qmp_json_return(ret, NULL), req);
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
    s->closed = true;
}

void qmp_session_close(struct qmp_session *s) { s->closed = true; }

static bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* After a parse error: skip to a likely start of the next request. */
static size_t resync(const char *buf, size_t pos, size_t len)
{
    while (pos < len && buf[pos] != '\n' && buf[pos] != '{')
        pos++;
    return pos;
}

/* Parse from buf; returns the bytes consumed (all of them when the object
 * continues in the next read). */
static size_t parse_one(struct qmp_session *s, const char *buf, size_t len)
{
    int chunk = len > INT_MAX ? INT_MAX : (int)len;
    struct json_object *obj = json_tokener_parse_ex(s->tok, buf, chunk);
    enum json_tokener_error jerr = json_tokener_get_error(s->tok);
    if (jerr == json_tokener_continue) {
        s->pending += (size_t)chunk;
        if (s->pending > QMP_MAX_INPUT) {
            reply_error(s, NULL, QMP_ERR_GENERIC, "JSON parse error, object too large");
            json_tokener_reset(s->tok);
            s->pending = 0;
            s->skip_line = true;
        }
        return (size_t)chunk;
    }
    size_t used = json_tokener_get_parse_end(s->tok);
    if (used == 0)
        used = 1;
    s->pending = 0;
    json_tokener_reset(s->tok);
    if (jerr != json_tokener_success) {
        char d[160];
        snprintf(d, sizeof(d), "JSON parse error, %s", json_tokener_error_desc(jerr));
        reply_error(s, NULL, QMP_ERR_GENERIC, d);
        return resync(buf, used, len);
    }
    qmp_session_request(s, obj);
    json_object_put(obj);
    return used;
}

void qmp_session_input(struct qmp_session *s, const char *buf, size_t len)
{
    size_t pos = 0;
    while (pos < len && !s->closed) {
        if (s->skip_line) {       /* the rest of an oversized request */
            const char *nl = memchr(buf + pos, '\n', len - pos);
            if (!nl)
                return;
            pos = (size_t)(nl - buf) + 1;
            s->skip_line = false;
            continue;
        }
        if (s->pending == 0 && is_space(buf[pos])) {
            pos++;
            continue;
        }
        pos += parse_one(s, buf + pos, len - pos);
    }
}
