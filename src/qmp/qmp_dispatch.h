/* QMP command table, argument validation and the per-connection protocol
 * state (negotiation, JSON stream parsing) — independent of sockets, so it
 * is unit-tested and fuzzed by feeding bytes in and collecting replies.
 *
 *   qmp_dispatch.c  the command table and the argument schema check
 *   qmp_session.c   one connection: JSON stream -> requests -> replies
 *
 * Returns: table operations 0 or -errno; qmp_session_init 0 or -ENOMEM;
 * handlers return 0 (success) or -1 with *err filled (class + desc; a
 * handler that returns -1 without setting err gets "GenericError").
 *
 * Ownership: handlers receive `args` borrowed (never put it; it is {} when
 * the request had no "arguments") and may store a new reference in *ret
 * (left NULL it means {}); on failure the dispatcher puts *ret. Each reply
 * line handed to the session's out callback is malloc'd, ends in "\r\n",
 * and belongs to the callee.
 *
 * Threads: a table is filled before it is used and then only read; a session
 * belongs to one thread (the server's loop thread). Handlers run on the
 * thread that feeds the session and must not block for long: the loop
 * serves every client and posts events meanwhile. */
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
    const char *name;      /* NULL ends the list */
    enum qmp_arg_type type;
    bool required;
};

/* Error classes QEMU clients know. */
#define QMP_ERR_GENERIC        "GenericError"
#define QMP_ERR_NOT_FOUND      "CommandNotFound"
#define QMP_ERR_DEVICE_INACTIVE "DeviceNotActive"
#define QMP_ERR_DEVICE_NOT_FOUND "DeviceNotFound"

struct qmp_error {
    const char *cls;   /* static string: "GenericError", "CommandNotFound", ... */
    char desc[512];
};

/* desc is cut to fit without splitting a UTF-8 character. */
void qmp_error_set(struct qmp_error *e, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The length of s's longest prefix of at most max bytes that does not end
 * inside a UTF-8 character: for "%.*s" of names a client sent. */
int qmp_utf8_prefix(const char *s, int max);

typedef int (*qmp_handler)(void *opaque, struct json_object *args, struct json_object **ret,
                           struct qmp_error *err);

struct qmp_command {
    const char *name;                   /* static or outliving the table */
    qmp_handler fn;
    void *opaque;
    struct qmp_arg args[QMP_MAX_ARGS];  /* terminated by a NULL name */
    bool allow_unknown_args;            /* for commands with open argument sets */
};

struct qmp_table {
    unsigned n;
    struct qmp_command cmds[QMP_MAX_COMMANDS];
};

void qmp_table_init(struct qmp_table *t);
/* Copies *cmd; -EEXIST for a duplicate name, -ENOSPC when full, -EINVAL
 * without a name or handler. */
int qmp_table_add(struct qmp_table *t, const struct qmp_command *cmd);
const struct qmp_command *qmp_table_find(const struct qmp_table *t, const char *name);
/* Check args (an object, borrowed) against the command's schema; 0 or -1
 * with err filled ("Parameter 'x' is missing", ...). A string anywhere in
 * args that holds a NUL character is refused. QMP_ARG_INT is a signed
 * 64-bit integer (QEMU's 'int'): 2^63 and above are refused. */
int qmp_check_args(const struct qmp_command *c, struct json_object *args, struct qmp_error *err);
/* Does v (borrowed), or any string within it, hold a NUL character? */
bool qmp_json_has_nul(struct json_object *v);
/* Check, then call the handler. 0 with *ret (new reference, never NULL) or
 * -1 with err filled (and *ret NULL). */
int qmp_dispatch(const struct qmp_command *c, struct json_object *args, struct json_object **ret,
                 struct qmp_error *err);

/* What json-c lets through and QMP refuses, looked for in the bytes of the
 * value being parsed (qmp_session.c): NaN, Infinity and other bare words
 * but true, false and null; integers beyond 64 bits (json-c saturates
 * them); comments; strings that are not UTF-8; member names holding
 * \u0000 (json-c cuts them there);
 * two members of one name (json-c keeps the last: counted here, one ':'
 * per member, against the members json-c kept). Also the nesting and the
 * string state that error recovery needs. */
struct qmp_scan {
    unsigned depth;            /* open objects and arrays */
    size_t colons;             /* members so far */
    char quote;                /* inside a string: its quote character, else 0 */
    unsigned char esc;         /* 1 after a backslash; 2..5: \u digits to come + 1 */
    unsigned ucode;            /* the \u escape's value so far */
    bool str_nul;              /* the last string read holds \u0000 */
    unsigned char u8need;      /* UTF-8 continuation bytes to come in a string */
    unsigned char u8lo, u8hi;  /* the range of the next one */
    bool newline, bol;         /* a newline was seen; only blanks since */
    char word[12];             /* a bare token (number, literal): its first bytes */
    unsigned wlen;
    bool wfrac, walpha;        /* it has '.', 'e' or 'E'; other letters */
    char digits[20];           /* an integer's digits without leading zeros */
    unsigned ndigits;
    char bad[96];              /* the first problem, "" if none */
};

/* One client connection's protocol state. */
struct qmp_session {
    const struct qmp_table *table;
    struct json_tokener *tok;
    size_t pending;            /* bytes of the object being parsed */
    bool negotiated;
    bool closed;               /* qmp_session_close(): input is ignored */
    bool skipping;             /* dropping the rest of a bad value (see qmp_session_input) */
    struct qmp_scan scan;
    /* Called with each complete reply line (JSON + "\r\n"), malloc'd. */
    void (*out)(void *opaque, char *line, size_t len);
    void *out_opaque;
};

int qmp_session_init(struct qmp_session *s, const struct qmp_table *t,
                     void (*out)(void *, char *, size_t), void *opaque);
void qmp_session_fini(struct qmp_session *s);
/* Feed received bytes (any split); complete requests are executed and
 * answered in order through out(). Never fails: malformed input (or an
 * object over QMP_MAX_INPUT) is answered with one error, and the rest of
 * that value is dropped: up to the bracket that closes it, or the next
 * newline, whichever comes first; a '{' that begins a line after a value
 * left open starts a new request. Bytes outside any value are dropped up
 * to the next '{' or newline. */
void qmp_session_input(struct qmp_session *s, const char *buf, size_t len);
/* Execute one parsed request (borrowed; any JSON value). */
void qmp_session_request(struct qmp_session *s, struct json_object *req);
/* Stop executing input (the connection is going away), e.g. from out(). */
void qmp_session_close(struct qmp_session *s);

#endif
