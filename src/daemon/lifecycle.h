/* Domain lifecycle: the operations behind start, shutdown, destroy,
 * suspend, resume, and the helpers other operations (migration) reuse:
 * spawning and attaching to a VMM, running a QMP command on a domain.
 *
 * Returns: 0 or -errno with err filled.
 * Locks: functions marked (job) are called with dom's job slot held and
 * dm->lock NOT held; the others take what they need. */
#ifndef GW_DAEMON_LIFECYCLE_H
#define GW_DAEMON_LIFECYCLE_H

#include <json-c/json.h>

#include "daemon/daemon.h"

/* The request handlers (daemon_register_commands): domain-start,
 * domain-shutdown, domain-destroy, domain-suspend, domain-resume. */
extern const struct daemon_command lifecycle_commands[];
extern const size_t lifecycle_ncommands;

/* (job) Run a QMP command on dom's command connection; *ret may be NULL.
 * An error reply becomes -EIO with its desc; *cls (may be NULL) gets the
 * QMP error class. A VMM that is gone, closed the connection or sent
 * garbage is -EIO too (OperationFailed), one that did not answer in 10 s
 * -ETIMEDOUT.
 * A connection the VMM closed (it drops a client whose queued events pass
 * QMP_MAX_OUTPUT) is made again once per call, to dom->qmp_path with the
 * first connection's handshake and name check, within 3 s (warning
 * logged). The command is then sent on it if it was certainly not
 * delivered (the close was found before writing it) or if it may be
 * repeated (query-*, qmp_capabilities, stop, cont, migrate_cancel,
 * migrate-set-capabilities, migrate-set-parameters); any other command
 * whose delivery is uncertain fails, and the next one uses the new
 * connection. */
int domain_qmp(struct domain *dom, const char *cmd, struct json_object *args /* taken */,
               struct json_object **ret, const char **cls, struct gw_error *err);

/* (any thread, no lock held) Read and drop the events the VMM queued on
 * dom's command connection, for at most 100 ms, unless a command runs on
 * it (it reads them then): the monitor calls it every few seconds so that
 * the VMM's queue for this connection does not grow while no command
 * runs. */
void domain_qmp_drain(struct domain *dom);

/* (job) Spawn dom's VMM, connect, verify, start its monitor and mark it
 * running (booted). On failure nothing is left running, and the error is
 * -EIO (OperationFailed) or -ETIMEDOUT/-ENOMEM, whatever call failed. */
int domain_spawn_and_attach(struct daemon *dm, struct domain *dom, struct gw_error *err);

/* (job) The same for the destination of a migration: `godwit-vmm
 * --incoming`, state paused (migrating), event "Started Migrated". */
int domain_spawn_incoming(struct daemon *dm, struct domain *dom, struct gw_error *err);

/* Connect to a running VMM's QMP socket twice (commands, events) and
 * check it answers query-name with name; used at start and at recovery. */
int domain_connect_vmm(const char *qmp_path, const char *name, int pidfd, int timeout_ms,
                       struct qmp_client **cmdq, struct qmp_client **evq, struct gw_error *err);

#endif
