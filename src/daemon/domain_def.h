/* Domain definitions (the JSON a user gives to `godwit define`) and the
 * libvirt-style state, reason, lifecycle-event and job name tables.
 * Pure: no I/O, no locks; unit-tested (tests/unit/test_daemon_domain.c).
 * Format: docs/daemon.md.
 *
 * Returns: 0 or -errno with err filled; predicates bool; builders a new
 * json_object or NULL. dom_def_from_json fills a dom_def the caller
 * releases with dom_def_fini (also after a failure). */
#ifndef GW_DAEMON_DOMAIN_DEF_H
#define GW_DAEMON_DOMAIN_DEF_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

#define DOM_NAME_MAX      64
#define DOM_UUID_LEN      36
#define DOM_MAX_VCPUS     64
#define DOM_MAX_MEMORY_MIB (1024ULL * 1024)

/* ---- migration policy (stored here; used by the migration part) ---- */

enum dom_timeout_action {
    DOM_TIMEOUT_ABORT,
    DOM_TIMEOUT_PAUSE,
    DOM_TIMEOUT_POSTCOPY,
    DOM_TIMEOUT__COUNT,
};
const char *dom_timeout_action_name(enum dom_timeout_action a);

/* The largest downtime limit: the VMM's `downtime-limit` range (QEMU's,
 * 2000 s), so that a domain's limit never fails its migrations. */
#define DOM_MAX_DOWNTIME_MS 2000000

struct dom_policy {
    bool permit_postcopy;
    bool permit_auto_converge;
    uint32_t max_downtime_ms;      /* 1..DOM_MAX_DOWNTIME_MS, default 300 */
    uint32_t bandwidth_mib_s;      /* 0 = unlimited */
    uint32_t completion_timeout_s; /* per GiB of RAM; 0 = none; default 800 */
    enum dom_timeout_action timeout_action;
    uint32_t switchover_retries;   /* VMM max-switchover-retries, 0..100, default 2 */
};
void dom_policy_default(struct dom_policy *p);

struct dom_def {
    char name[DOM_NAME_MAX + 1];
    char uuid[DOM_UUID_LEN + 1];
    uint64_t memory_mib;
    bool memory_prealloc; /* godwit-vmm --mem-prealloc, here and on a migration's destination */
    unsigned vcpus;
    bool test_guest;
    char *kernel;      /* NULL when absent; malloc'd */
    char *initrd;
    char *cmdline;
    char *serial_log;  /* NULL: the daemon's default (STATE/log/NAME.log) */
    char *cpu;         /* godwit-vmm --cpu (e.g. "host,-avx512f"); NULL: the host's */
    struct dom_policy policy;
};

/* Parse and validate; a missing uuid is generated. Unknown keys are errors. */
int dom_def_from_json(struct json_object *o, struct dom_def *def, struct gw_error *err);
struct json_object *dom_def_to_json(const struct dom_def *def);
void dom_def_fini(struct dom_def *def);
/* Deep copy (dst must be fini'd by the caller). */
int dom_def_copy(struct dom_def *dst, const struct dom_def *src);

bool dom_name_valid(const char *name);
/* Checks 8-4-4-4-12 hex and writes the lowercase form to out (37 bytes). */
bool dom_uuid_parse(const char *s, char *out);
void dom_uuid_generate(char *out);

/* ---- states and reasons (libvirt's) ---- */

enum dom_state {
    DOM_STATE_NOSTATE,
    DOM_STATE_RUNNING,
    DOM_STATE_BLOCKED,
    DOM_STATE_PAUSED,
    DOM_STATE_SHUTDOWN,   /* being shut down */
    DOM_STATE_SHUTOFF,
    DOM_STATE_CRASHED,
    DOM_STATE_PMSUSPENDED,
    DOM_STATE__COUNT,
};
const char *dom_state_name(enum dom_state s);  /* "running", "shut off", ... */
/* A VMM process exists in this state. */
bool dom_state_active(enum dom_state s);

enum dom_reason {
    DOM_REASON_UNKNOWN,
    DOM_REASON_BOOTED,
    DOM_REASON_MIGRATED,
    DOM_REASON_RESTORED,
    DOM_REASON_UNPAUSED,
    DOM_REASON_MIGRATION_CANCELED,
    DOM_REASON_POSTCOPY,
    DOM_REASON_USER,
    DOM_REASON_MIGRATING,
    DOM_REASON_POSTCOPY_FAILED,
    DOM_REASON_STARTING_UP,
    DOM_REASON_SHUTDOWN,
    DOM_REASON_DESTROYED,
    DOM_REASON_CRASHED,
    DOM_REASON_FAILED,
    DOM_REASON_SAVED,
    DOM_REASON_DAEMON,
    DOM_REASON__COUNT,
};
const char *dom_reason_name(enum dom_reason r);
/* Inverse lookups; -1 when unknown. */
int dom_state_from_name(const char *s);
int dom_reason_from_name(const char *s);

/* Whether the state machine allows from -> to. */
bool dom_transition_ok(enum dom_state from, enum dom_state to);

/* ---- lifecycle events (virsh event wording) ---- */

enum dom_event {
    DOM_EVENT_DEFINED,
    DOM_EVENT_UNDEFINED,
    DOM_EVENT_STARTED,
    DOM_EVENT_SUSPENDED,
    DOM_EVENT_RESUMED,
    DOM_EVENT_STOPPED,
    DOM_EVENT_SHUTDOWN,
    DOM_EVENT_CRASHED,
    DOM_EVENT__COUNT,
};
enum dom_event_detail {
    DOM_DETAIL_ADDED,
    DOM_DETAIL_UPDATED,
    DOM_DETAIL_REMOVED,
    DOM_DETAIL_BOOTED,
    DOM_DETAIL_MIGRATED,
    DOM_DETAIL_RESTORED,
    DOM_DETAIL_PAUSED,
    DOM_DETAIL_UNPAUSED,
    DOM_DETAIL_POSTCOPY,
    DOM_DETAIL_POSTCOPY_ERROR,
    DOM_DETAIL_API_ERROR,
    DOM_DETAIL_SHUTDOWN,
    DOM_DETAIL_DESTROYED,
    DOM_DETAIL_CRASHED,
    DOM_DETAIL_FAILED,
    DOM_DETAIL_FINISHED,
    DOM_DETAIL_PANICKED,
    DOM_DETAIL__COUNT,
};
const char *dom_event_name(enum dom_event e);           /* "Started" */
const char *dom_event_detail_name(enum dom_event_detail d); /* "Booted" */

/* ---- the per-domain job slot ---- */

enum dom_job {
    DOM_JOB_NONE,
    DOM_JOB_MODIFY,         /* a synchronous lifecycle operation (start, destroy, ...) */
    DOM_JOB_MIGRATION_OUT,  /* asynchronous: held from Begin to Confirm */
    DOM_JOB_MIGRATION_IN,   /* asynchronous: held from Prepare to Finish */
    DOM_JOB_UNREADABLE,     /* its migration job file could not be read at start: held until a
                             * restart reads it (it may say the guest is elsewhere) */
    DOM_JOB__COUNT,
};
const char *dom_job_name(enum dom_job j);
/* Asynchronous jobs refuse other operations at once; a held synchronous job
 * is waited for. Returns 0 (slot free), -EAGAIN (wait and retry) or -EBUSY
 * (refused, err says why). what: the refused operation ("start"). */
int dom_job_check(enum dom_job held, const char *name, const char *what, struct gw_error *err);

/* ---- why a VMM process ended ---- */

struct dom_exit_facts {
    bool destroy_requested;   /* the daemon killed it (destroy) */
    bool shutdown_event;      /* the VMM sent SHUTDOWN before it went */
    bool status_known;        /* wait status available (our child) */
    int wait_status;          /* as from waitpid */
    bool migrated;            /* quit after the guest migrated away (Confirm) */
    bool migration_failed;    /* an incoming VMM discarded after a failed migration */
};
/* The shut-off reason and the lifecycle event detail for an exit. */
void dom_exit_classify(const struct dom_exit_facts *f, enum dom_reason *reason,
                       enum dom_event_detail *detail);

#endif
