/* A running domain's monitor: one thread per VMM that reads its QMP
 * events (on a connection of its own) and watches its process (pidfd).
 * QMP events become state transitions and lifecycle events (STOP ->
 * "Suspended Paused", RESUME -> "Resumed Unpaused", SHUTDOWN noted); the
 * process ending becomes "Stopped Shutdown/Destroyed/Failed" with the
 * domain shut off (reason shutdown, destroyed or crashed), and the domain's
 * runtime resources (command connection, pidfd, console FIFO fd) are
 * released. When the daemon stops, monitors leave their VMMs running.
 *
 * Returns: 0 or -errno with err filled; monitor_wait_end a predicate.
 * Locks: all functions are called with dm->lock held. */
#ifndef GW_DAEMON_MONITOR_H
#define GW_DAEMON_MONITOR_H

#include <stdbool.h>

#include "daemon/daemon.h"

struct qmp_client;

/* Start monitoring dom (active: pid, pidfd set). evq (taken, also on
 * failure) is a negotiated QMP connection used only by the monitor. */
int monitor_start(struct daemon *dm, struct domain *dom, struct qmp_client *evq,
                  struct gw_error *err);
/* Wait up to ms for dom's monitor to end (dm->lock is released meanwhile). */
bool monitor_wait_end(struct daemon *dm, struct domain *dom, int ms);
/* Join a monitor that has ended (no-op if none). */
void monitor_join(struct domain *dom);

#endif
