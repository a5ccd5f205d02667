/* The QMP server: a Unix socket, several clients at once, the greeting,
 * commands dispatched through a qmp_table, and events broadcast to every
 * negotiated client.
 *
 * Threads: everything runs on the event-loop thread except
 * qmp_server_emit(), which any thread may call (the timestamp is taken at
 * the call). Slow clients never block the VMM: output is queued per client
 * (capped; a client over the cap is dropped).
 * Returns: constructors NULL+errno; operations 0 or -errno + err. */
#ifndef GW_QMP_QMP_SERVER_H
#define GW_QMP_QMP_SERVER_H

#include <json-c/json.h>

#include "common/error.h"
#include "common/evloop.h"
#include "qmp/qmp_dispatch.h"

#define QMP_MAX_CLIENTS 16
#define QMP_MAX_OUTPUT  (16u << 20)

struct qmp_server;

struct qmp_version {
    int major, minor, micro;
    const char *package;
};

struct qmp_server *qmp_server_new(struct evloop *loop, const struct qmp_version *ver);
void qmp_server_free(struct qmp_server *s);
int qmp_server_listen(struct qmp_server *s, const char *path, struct gw_error *err);
/* Register a command (copied); the built-ins are qmp_capabilities and
 * query-commands. */
int qmp_server_register(struct qmp_server *s, const struct qmp_command *cmd);
/* Broadcast an event; takes ownership of data (NULL: no "data" member). */
void qmp_server_emit(struct qmp_server *s, const char *event, struct json_object *data);
const struct qmp_table *qmp_server_table(const struct qmp_server *s);

#endif
