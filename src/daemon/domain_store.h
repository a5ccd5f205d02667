/* The daemon's state directory: domain definitions and runtime status,
 * each written atomically (temporary file, fsync, rename, fsync of the
 * directory).
 *
 *   STATE/domains/NAME.json   the definition (dom_def_to_json)
 *   STATE/run/NAME.json       runtime status: state, reason, id, pid, QMP
 *                             socket path (see docs/daemon.md)
 *   STATE/run/NAME.qmp        the VMM's QMP socket
 *   STATE/run/NAME.console    FIFO: the VMM's serial input
 *   STATE/log/NAME.log        serial output (default serial_log)
 *   STATE/log/NAME.vmm.log    the VMM's own messages (stderr)
 *
 * Returns: 0 or -errno with err filled. Threads: no shared state. */
#ifndef GW_DAEMON_DOMAIN_STORE_H
#define GW_DAEMON_DOMAIN_STORE_H

#include <json-c/json.h>
#include <stddef.h>

#include "common/error.h"
#include "daemon/domain_def.h"

enum store_file {
    STORE_DEF,
    STORE_STATUS,
    STORE_QMP,
    STORE_CONSOLE,
    STORE_SERIAL_LOG,
    STORE_VMM_LOG,
};

/* Create STATE, STATE/domains, STATE/run and STATE/log (mode 0700). */
int store_init(const char *dir, struct gw_error *err);
/* The path of one of a domain's files; -ENAMETOOLONG if it does not fit. */
int store_path(const char *dir, enum store_file f, const char *name, char *buf, size_t len);

int store_write_atomic(const char *path, const char *data, size_t len, struct gw_error *err);
int store_write_json(const char *path, struct json_object *o, struct gw_error *err);
/* Read a JSON object file; -ENOENT when absent. */
int store_read_json(const char *path, struct json_object **out, struct gw_error *err);

int store_save_def(const char *dir, const struct dom_def *def, struct gw_error *err);
/* Remove a domain's definition, status and runtime files (not its logs). */
void store_remove_domain(const char *dir, const char *name);

/* Call fn for every stored definition (sorted by file name); a definition
 * that does not parse is logged and skipped. */
int store_load_defs(const char *dir, void (*fn)(void *opaque, struct dom_def *def), void *opaque,
                    struct gw_error *err);

#endif
