/* Job statistics as virsh shows them: the VMM's query-migrate reply turned
 * into (a) struct jobinfo, (b) `virsh domjobinfo` text with virsh's labels,
 * units and alignment, (c) the `--rawstats` form with libvirt's typed
 * parameter names, and (d) a JSON object for the control protocol and the
 * `job-completed` event (jobinfo_from_json() reads it back, so the client
 * prints what the daemon measured).
 *
 * Conversions follow libvirt's QEMU driver: memory_bps = mbps * 125000
 * (bytes/s), memory_iteration = dirty-sync-count, memory_dirty_rate =
 * dirty-pages-rate (pages/s); the "downtime" parameter is expected-downtime
 * while the job runs and downtime once it completed (virsh prints
 * "Expected downtime:" or "Total downtime:" accordingly); data_* = memory_*
 * (no disks); disk_* are present and 0.
 *
 * Returns: 0 or -errno with err filled; formatters return a malloc'd,
 * NUL-terminated string (caller frees) or NULL on allocation failure;
 * jobinfo_to_json returns a new object or NULL. Pure: no I/O, no clock. */
#ifndef GW_DAEMON_JOBINFO_H
#define GW_DAEMON_JOBINFO_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "daemon/mig_policy.h"
#include "migration/downtime_phases.h"

struct json_object;

/* libvirt's virDomainJobType numbers (printed by --rawstats). */
enum jobinfo_type {
    JOBINFO_NONE = 0,
    JOBINFO_BOUNDED = 1,
    JOBINFO_UNBOUNDED = 2,
    JOBINFO_COMPLETED = 3,
    JOBINFO_FAILED = 4,
    JOBINFO_CANCELLED = 5,
    JOBINFO_TYPE__COUNT
};

/* libvirt's virDomainJobOperation numbers. */
enum jobinfo_op {
    JOBINFO_OP_UNKNOWN = 0,
    JOBINFO_OP_START = 1,
    JOBINFO_OP_SAVE = 2,
    JOBINFO_OP_RESTORE = 3,
    JOBINFO_OP_MIGRATION_IN = 4,
    JOBINFO_OP_MIGRATION_OUT = 5,
    JOBINFO_OP_SNAPSHOT = 6,
    JOBINFO_OP_SNAPSHOT_REVERT = 7,
    JOBINFO_OP_DUMP = 8,
    JOBINFO_OP_BACKUP = 9,
    JOBINFO_OP__COUNT
};

#define JOBINFO_STATUS_MAX 32
#define JOBINFO_ERRMSG_MAX 256

struct jobinfo {
    enum jobinfo_type type;
    enum jobinfo_op op;
    char status[JOBINFO_STATUS_MAX];   /* the VMM's status ("" when none) */
    uint64_t time_elapsed_ms;          /* since the job started (the daemon's clock) */
    uint64_t vmm_total_time_ms;        /* query-migrate total-time (the policy's clock) */
    bool downtime_set;
    uint64_t downtime_ms;              /* expected (running) or total (completed) */
    bool setup_time_set;
    uint64_t setup_time_ms;
    uint64_t mem_total, mem_processed, mem_remaining;   /* bytes */
    uint64_t mem_bps;                  /* bytes/s, 0 = unknown */
    bool mem_pages_set;                /* constant/normal present */
    uint64_t mem_constant, mem_normal, mem_normal_bytes;
    uint64_t mem_dirty_rate;           /* pages/s */
    uint64_t mem_iteration;
    uint64_t mem_postcopy_requests;
    uint64_t mem_page_size;            /* 0 = unknown */
    /* godwit's own (not libvirt's; shown only when not 0): switch-overs the
     * source's guard gave up, live rounds that gave way to the stop early,
     * stops put off after the last look before them */
    uint64_t switchover_retries, rounds_ended_early, switchover_deferrals;
    /* ... and where the completed switch-over's downtime went, µs
     * (query-migrate downtime-phases: stop, sync, pages, state, load, resume) */
    bool downtime_phases_set;
    uint64_t downtime_phase_us[MIG_NPHASES];
    int auto_converge_throttle;        /* percent, 0 = none */
    char errmsg[JOBINFO_ERRMSG_MAX];   /* "" = none */
    bool postcopy_started;             /* query-migrate postcopy-started: the source handed
                                          the guest over for post-copy (not in the text,
                                          raw or JSON forms) */
};

/* Format flags (virsh domjobinfo options). */
enum {
    JOBINFO_FMT_COMPLETED = 1u << 0, /* --completed */
    JOBINFO_FMT_ANYSTATS = 1u << 1,  /* --anystats */
};

const char *jobinfo_type_name(enum jobinfo_type t);  /* "None", "Unbounded", ... (virsh) */
const char *jobinfo_op_name(enum jobinfo_op op);     /* "Outgoing migration", ... (virsh) */

/* The "return" object of query-migrate ({} before any migration: type
 * none). A member of the wrong type or a negative number is an error
 * (-EINVAL); unknown members are ignored. The status decides the type:
 * completed -> Completed, failed -> Failed, cancelled -> Cancelled, any
 * other (setup, active, device, postcopy-*, cancelling) -> Unbounded. */
int jobinfo_from_query_migrate(struct jobinfo *out, struct json_object *ret,
                               enum jobinfo_op op, uint64_t elapsed_ms, struct gw_error *err);
/* Turn the last running statistics into the completed job's (--completed):
 * type Completed (success) or Failed, remaining 0 on success, the error
 * message kept on failure (msg may be NULL). */
void jobinfo_complete(struct jobinfo *ji, bool success, const char *msg);

/* `virsh domjobinfo` text (flags JOBINFO_FMT_*). */
char *jobinfo_format_text(const struct jobinfo *ji, unsigned flags);
/* `virsh domjobinfo --rawstats`: "Job type: N\n\n" then "name: value"
 * lines in libvirt's order. */
char *jobinfo_format_raw(const struct jobinfo *ji);
/* {"type": "unbounded", "type_id": 2, "operation_name": "outgoing-migration",
 *  "status": ..., and every rawstats name with its value}. */
struct json_object *jobinfo_to_json(const struct jobinfo *ji);
int jobinfo_from_json(struct jobinfo *out, struct json_object *o, struct gw_error *err);

/* The policy's view of the statistics (status borrowed from ji). */
void jobinfo_policy_sample(const struct jobinfo *ji, struct mig_sample *s);

#endif
