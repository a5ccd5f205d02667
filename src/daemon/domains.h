/* Request handlers for domain definitions and queries (docs/daemon.md):
 * domain-define, domain-undefine, domain-list, domain-info, domain-state,
 * domain-console; and finding running VMs again when the daemon starts. */
#ifndef GW_DAEMON_DOMAINS_H
#define GW_DAEMON_DOMAINS_H

#include "daemon/daemon.h"

extern const struct daemon_command domains_commands[];
extern const size_t domains_ncommands;

/* Load the stored definitions and their status; reattach to VMMs that
 * still run (pid alive, QMP answers query-name with the domain's name);
 * mark the others shut off (crashed). Called once before listening. */
int domains_load(struct daemon *dm, struct gw_error *err);

#endif
