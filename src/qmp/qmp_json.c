#include "qmp/qmp_json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qmp/qmp_server.h"

char *qmp_json_line(struct json_object *o, size_t *len)
{
    const char *txt = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    if (!txt) {
        errno = ENOMEM;
        return NULL;
    }
    size_t n = strlen(txt);
    char *line = malloc(n + 3);
    if (!line)
        return NULL;
    memcpy(line, txt, n);
    memcpy(line + n, "\r\n", 3);
    *len = n + 2;
    return line;
}

struct json_object *qmp_json_greeting(const struct qmp_version *ver)
{
    struct json_object *qemu = json_object_new_object();
    json_object_object_add(qemu, "micro", json_object_new_int(ver->micro));
    json_object_object_add(qemu, "minor", json_object_new_int(ver->minor));
    json_object_object_add(qemu, "major", json_object_new_int(ver->major));
    struct json_object *v = json_object_new_object();
    json_object_object_add(v, "qemu", qemu);
    json_object_object_add(v, "package", json_object_new_string(ver->package ? ver->package : ""));
    struct json_object *q = json_object_new_object();
    json_object_object_add(q, "version", v);
    json_object_object_add(q, "capabilities", json_object_new_array());
    struct json_object *g = json_object_new_object();
    json_object_object_add(g, "QMP", q);
    return g;
}

struct json_object *qmp_json_return(struct json_object *ret, struct json_object *id)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "return", ret ? ret : json_object_new_object());
    if (id)
        json_object_object_add(o, "id", json_object_get(id));
    return o;
}

struct json_object *qmp_json_error(const char *cls, const char *desc, struct json_object *id)
{
    struct json_object *e = json_object_new_object();
    json_object_object_add(e, "class", json_object_new_string(cls ? cls : "GenericError"));
    json_object_object_add(e, "desc", json_object_new_string(desc ? desc : ""));
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "error", e);
    if (id)
        json_object_object_add(o, "id", json_object_get(id));
    return o;
}

struct json_object *qmp_json_event(const char *name, struct json_object *data, int64_t sec,
                                   int64_t usec)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "event", json_object_new_string(name));
    if (data)
        json_object_object_add(o, "data", data);
    struct json_object *ts = json_object_new_object();
    json_object_object_add(ts, "seconds", json_object_new_int64(sec));
    json_object_object_add(ts, "microseconds", json_object_new_int64(usec));
    json_object_object_add(o, "timestamp", ts);
    return o;
}

struct json_object *qmp_json_get(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

const char *qmp_json_get_str(struct json_object *o, const char *key)
{
    struct json_object *v = qmp_json_get(o, key);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}
