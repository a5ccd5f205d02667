/* QMP command table, argument validation and the per-connection protocol
 * state (negotiation, JSON stream parsing) — independent of sockets, so it is
 * unit-tested and fuzzed by feeding bytes in and collecting replies.
 *
 * Ownership: handlers receive `args` borrowed (never put it) and return a
 * new reference in *ret (NULL means {}). Replies handed to the output
 * callback are new strings the callee must free.
 * Returns: handlers 0 or -1 with qmp_error filled. */
#ifndef GW_QMP_QMP_DISPATCH_H
#define GW_QMP_QMP_DISPATCH_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

#define QMP_MAX_COMMANDS   128
#define QMP_MAX_ARGS       24
#define QMP_MAX_INPUT      (1u << 20) /* one JSON object at most 1 MiB */

enum qmp_arg_type { QMP_ARG_STR, QMP_ARG_INT, QMP_ARG_BOOL, QMP_ARG_NUMBER, QMP_ARG_OBJECT,
                    QMP_ARG_ARRAY, QMP_ARG_ANY };

struct qmp_arg {
    const char *name;
    enum qmp_arg_type type;
    bool required;
};

struct qmp_error {
    const char *cls;   /* "GenericError", "CommandNotFound", "DeviceNotActive", ... */
    char desc[512];
};

void qmp_error_set(struct qmp_error *e, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

typedef int (*qmp_handler)(void *opaque, struct json_object *args, struct json_object **ret,
                           struct qmp_error *err);

struct qmp_command {
    const char *name;
    qmp_handler fn;
    void *opaque;
    struct qmp_arg args[QMP_MAX_ARGS]; /* terminated by a NULL name */
    bool allow_unknown_args;            /* for commands with open argument sets */
};

struct qmp_table {
    unsigned n;
    struct qmp_command cmds[QMP_MAX_COMMANDS];
};

void qmp_table_init(struct qmp_table *t);
int qmp_table_add(struct qmp_table *t, const struct qmp_command *cmd);
const struct qmp_command *qmp_table_find(const struct qmp_table *t, const char *name);

/* One client connection's protocol state. */
struct qmp_session {
    const struct qmp_table *table;
    struct json_tokener *tok;
    size_t pending;            /* bytes of the object being parsed */
    bool negotiated;
    /* Called with each complete reply line (JSON + "\r\n"), malloc'd. */
    void (*out)(void *opaque, char *line, size_t len);
    void *out_opaque;
};

int qmp_session_init(struct qmp_session *s, const struct qmp_table *t,
                     void (*out)(void *, char *, size_t), void *opaque);
void qmp_session_fini(struct qmp_session *s);
/* Feed received bytes; complete commands are executed and answered. */
void qmp_session_input(struct qmp_session *s, const char *buf, size_t len);
/* Execute one parsed request object (borrowed). */
void qmp_session_request(struct qmp_session *s, struct json_object *req);

#endif
