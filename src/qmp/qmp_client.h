/* A small blocking QMP client: connect, read the greeting, negotiate,
 * execute commands and wait for events, each with a timeout. Used by
 * godwitd to drive its VMMs and by the tests.
 *
 * Returns: constructors NULL + errno (and err filled); operations 0 or
 * -errno: -ETIMEDOUT (the deadline passed; the connection stays usable, a
 * late reply is discarded by id; unless the request went out only in part:
 * every later call then returns -EPIPE), -ECONNRESET (the server closed
 * the connection), -EPROTO (the server sent something that is not QMP),
 * -EREMOTEIO (the server answered with an error: *qerr holds its class and
 * desc). Timeouts are in milliseconds, -1 = wait forever.
 *
 * Threads: a client belongs to one thread at a time; nothing runs in the
 * background (events are read while waiting for a reply or an event).
 *
 * Ownership: qmp_client_execute() takes args (may be NULL) and stores a new
 * reference in *ret (the caller puts it; ret may be NULL to discard). Events
 * returned are new references the caller puts. The greeting is borrowed. */
#ifndef GW_QMP_QMP_CLIENT_H
#define GW_QMP_QMP_CLIENT_H

#include <json-c/json.h>
#include <stddef.h>

#include "common/error.h"
#include "qmp/qmp_dispatch.h"

#define QMP_CLIENT_MAX_MSG    (64u << 20)  /* one message from the server */
#define QMP_CLIENT_MAX_EVENTS 4096         /* queued events; the oldest go first */

struct qmp_client;

/* Connect to the Unix socket at path, retrying while it does not exist yet
 * or refuses (a VMM starting up) until timeout_ms; then as qmp_client_open. */
struct qmp_client *qmp_client_connect(const char *path, int timeout_ms, struct gw_error *err);
/* Use a connected stream socket (owned from now on, also on failure): read
 * the greeting and negotiate capabilities. */
struct qmp_client *qmp_client_open(int fd, int timeout_ms, struct gw_error *err);
/* Same without negotiating (for tests of the negotiation itself). */
struct qmp_client *qmp_client_open_raw(int fd, int timeout_ms, struct gw_error *err);
void qmp_client_free(struct qmp_client *c);

/* {"QMP": {...}} as received. */
struct json_object *qmp_client_greeting(const struct qmp_client *c);
int qmp_client_fd(const struct qmp_client *c);

/* Send {"execute": cmd, "arguments": args, "id": N} and wait for the reply
 * with that id; events arriving meanwhile are queued. */
int qmp_client_execute(struct qmp_client *c, const char *cmd, struct json_object *args,
                       struct json_object **ret, struct qmp_error *qerr, int timeout_ms);
/* Wait for an event named name (NULL: any); it is removed from the queue,
 * other events stay queued. */
int qmp_client_wait_event(struct qmp_client *c, const char *name, int timeout_ms,
                          struct json_object **event);
/* The oldest queued event or NULL, without reading. */
struct json_object *qmp_client_pop_event(struct qmp_client *c);
/* Events dropped because the queue was full. */
unsigned long qmp_client_events_dropped(const struct qmp_client *c);

#endif
