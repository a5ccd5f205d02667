/* The QMP server: a Unix socket, several clients at once, the greeting,
 * commands dispatched through a qmp_table (qmp_dispatch.h), and events
 * broadcast to every negotiated client.
 *
 * Threads: everything runs on the event-loop thread except
 * qmp_server_emit(), which any thread may call (the timestamp is taken at
 * the call, the line is queued and handed to the loop with evloop_post()).
 * Slow clients never block the VMM: sockets are non-blocking and output is
 * queued per client up to QMP_MAX_OUTPUT; a client over the cap, or whose
 * socket fails (EPIPE, ECONNRESET), is dropped.
 *
 * Returns: qmp_server_new() NULL + errno; operations 0 or -errno (with err
 * filled when they take one).
 * Ownership: qmp_server_emit() takes the reference to data; registered
 * commands are copied (their name and opaque must outlive the server).
 * Lifetime: qmp_server_free() on the loop thread, after the threads that
 * emit have stopped. It hands the events queued to the clients and waits
 * up to QMP_FREE_FLUSH_MS (all clients together) for the output queued for
 * them (a reply, SHUTDOWN) to reach their sockets while they read; then
 * it closes them. The loop must run once more, or be freed, to release a
 * delivery posted meanwhile. */
#ifndef GW_QMP_QMP_SERVER_H
#define GW_QMP_QMP_SERVER_H

#include <json-c/json.h>

#include "common/error.h"
#include "common/evloop.h"
#include "qmp/qmp_dispatch.h"

#define QMP_MAX_CLIENTS 16
#define QMP_MAX_OUTPUT  (16u << 20)
#define QMP_FREE_FLUSH_MS 1000   /* qmp_server_free(): output still queued */

struct qmp_server;

struct qmp_version {
    int major, minor, micro;
    const char *package;          /* "godwit 0.1.0"; copied */
};

struct qmp_server *qmp_server_new(struct evloop *loop, const struct qmp_version *ver);
void qmp_server_free(struct qmp_server *s);
/* Listen on a Unix socket at path (mode 0600). A stale socket at path is
 * replaced; any other kind of file there is an error (EEXIST). The socket
 * file is removed by qmp_server_free(). */
int qmp_server_listen(struct qmp_server *s, const char *path, struct gw_error *err);
/* Serve an already-connected stream socket (socketpair, inherited fd); the
 * server owns fd from now on, also on failure. Sends the greeting. */
int qmp_server_add_client(struct qmp_server *s, int fd);
/* Register a command (copied); the built-ins are qmp_capabilities and
 * query-commands. -EEXIST, -ENOSPC, -EINVAL as qmp_table_add(). */
int qmp_server_register(struct qmp_server *s, const struct qmp_command *cmd);
/* Broadcast an event to every negotiated client; takes ownership of data
 * (NULL: no "data" member). Any thread. */
void qmp_server_emit(struct qmp_server *s, const char *event, struct json_object *data);
const struct qmp_table *qmp_server_table(const struct qmp_server *s);
/* Connected clients (loop thread; for tests and status). */
unsigned qmp_server_client_count(const struct qmp_server *s);

#endif
