/* The daemon's state directory: domain definitions and runtime status,
 * each written atomically (temporary file, fsync, rename, fsync of the
 * directory).
 *
 *   STATE/domains/NAME.json   the definition (dom_def_to_json)
 *   STATE/run/NAME.json       runtime status: state, reason, id, pid, QMP
 *                             socket path (see docs/daemon.md)
 *   STATE/run/NAME.qmp        the VMM's QMP socket
 *   STATE/run/NAME.console    FIFO: the VMM's serial input
 *   STATE/run/NAME.def        the definition the running VMM was started
 *                             with, while it differs from the persistent one
 *   STATE/log/NAME.log        serial output (default serial_log)
 *   STATE/log/NAME.vmm.log    the VMM's own messages (stderr)
 *   STATE/jobs/UUID.json      a migration job (job.h)
 *
 * Every directory of the state is the daemon's own: owned by its uid and
 * writable by no one else (store_init refuses anything else: whoever can
 * write there chooses what the daemon runs).
 *
 * Returns: 0 or -errno with err filled. Threads: no shared state; writers
 * of one file at once each replace it whole (the last rename wins). */
#ifndef GW_DAEMON_DOMAIN_STORE_H
#define GW_DAEMON_DOMAIN_STORE_H

#include <json-c/json.h>
#include <stdbool.h>
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
    STORE_LIVE_DEF,
};

/* Create STATE, STATE/domains, STATE/run, STATE/log and STATE/jobs (mode
 * 0700, each new one made durable by a sync of its parent), and check each
 * (-EPERM: owned by another uid, or writable by group or others). */
int store_init(const char *dir, struct gw_error *err);
/* One directory of the state, as store_init makes and checks it. */
int store_make_dir(const char *path, struct gw_error *err);
/* The path of one of a domain's files; -ENAMETOOLONG if it does not fit. */
int store_path(const char *dir, enum store_file f, const char *name, char *buf, size_t len);

/* Replace path whole: a new temporary file PATH.tmp.XXXXXX (mode 0600,
 * O_EXCL), written, fsync'd, renamed to path, then the directory fsync'd.
 * On any failure (ENOSPC, EDQUOT, EIO, ...) the old file is kept and the
 * temporary one removed; a failed sync of the directory after the rename
 * is an error too (a power cut may undo the rename). */
#define STORE_TMP_SUFFIX ".tmp."
int store_write_atomic(const char *path, const char *data, size_t len, struct gw_error *err);
int store_write_json(const char *path, struct json_object *o, struct gw_error *err);
/* fsync the directory that holds path (after a rename or an unlink there). */
int store_sync_dir_of(const char *path);
/* Remove from directory dir the temporary files of writes a crash cut
 * short (store_write_atomic's, and "X.tmp" of older daemons). Only while
 * no writer can be at work: the daemon holds the state directory's lock. */
void store_remove_stale_tmp(const char *dir);

/* What a state file read back must hold: one JSON object, then nothing but
 * white space (space, tab, CR, LF; a NUL byte is not white space). Anything
 * else is refused whole, never half-read: -EINVAL with err saying where
 * (byte offset, line, column) and what was found there; -EFBIG over
 * STORE_FILE_MAX bytes. store_parse_json checks text[0 .. len) (a new
 * object in *out, NULL on failure); store_read_json reads the file at path
 * (a regular file) and checks it, its messages starting with the path.
 * store_read_json returns -ENOENT when the file is absent (err not filled). */
#define STORE_FILE_MAX (4u << 20)
int store_parse_json(const char *text, size_t len, struct json_object **out, struct gw_error *err);
int store_read_json(const char *path, struct json_object **out, struct gw_error *err);

int store_save_def(const char *dir, const struct dom_def *def, struct gw_error *err);
/* Remove a domain's definition, status and runtime files (not its logs;
 * with the saved live definition). */
void store_remove_domain(const char *dir, const char *name);

/* A domain's runtime status, STATE/run/NAME.json: {"uuid", "state",
 * "reason"} and, while the domain is active, {"id", "pid", "pid_start",
 * "qmp"}; while its VMM starts (spawned, QMP not answered yet) the state
 * is still inactive and {"starting": true, "pid", "pid_start", "qmp"}
 * say which process it is (docs/daemon.md, "The state directory"). */
#define STORE_QMP_PATH_MAX 108         /* sun_path */
struct store_status {
    char uuid[DOM_UUID_LEN + 1];       /* "" when absent */
    int state;                         /* enum dom_state; -1: absent or unknown */
    int reason;                        /* enum dom_reason; -1: absent or unknown */
    int id;                            /* 0 .. INT_MAX - 1; -1: absent */
    int pid;                           /* > 0; 0: absent */
    char qmp[STORE_QMP_PATH_MAX];      /* "" when absent */
    unsigned long long pid_start;      /* the process start time; 0: absent */
    bool starting;                     /* the VMM was being started */
};
struct json_object *store_status_to_json(const struct store_status *s);
/* Read a status a daemon wrote before it restarted. The file is ours but
 * may be damaged: a member of the wrong type, out of range or too long is
 * taken as absent (never converted: "12" is not a pid), so a damaged
 * status can only make the domain look crashed. -EINVAL when o is not an
 * object. */
int store_status_from_json(struct json_object *o, struct store_status *s, struct gw_error *err);

/* Call fn for every stored definition (sorted by file name); a definition
 * that does not parse, or whose name is not its file's (domains/NAME.json),
 * is logged and skipped, its file left as it is; one without a uuid is
 * given one, saved in its file before fn sees it. First removes the stale
 * temporary files of domains/ and run/ (store_remove_stale_tmp: call it
 * with the state directory's lock held). */
int store_load_defs(const char *dir, void (*fn)(void *opaque, struct dom_def *def), void *opaque,
                    struct gw_error *err);

#endif
