/* godwitd's context: domains, their job slots and state machine, the
 * request-handler registry, the event bus, the listeners.
 *
 * Threads: each client connection has its own thread; each running
 * domain has a monitor thread (monitor.h). dm->lock protects the domain
 * list and every field of struct domain except qmp (dom->qmp_lock). Never
 * block on I/O while holding dm->lock: take the domain's job slot, unlock,
 * do the I/O, relock. dm->cond is broadcast whenever a job slot is
 * released or a monitor ends.
 * Lock order: dm->lock -> dom->qmp_lock is NOT allowed (a QMP command may
 * take seconds); take qmp_lock without dm->lock held.
 *
 * Returns: 0 or -errno with err filled (the errno chooses the error class
 * sent to the client: control.h ctl_error_class). */
#ifndef GW_DAEMON_DAEMON_H
#define GW_DAEMON_DAEMON_H

#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

#include "common/error.h"
#include "control/control_tls.h"
#include "daemon/domain_def.h"
#include "daemon/events.h"

#define DAEMON_MAX_LISTEN   8
#define DAEMON_MAX_TABLES   8
#define DAEMON_MAX_HOOKS    4
#define DAEMON_JOB_WAIT_MS  30000  /* how long a lifecycle operation waits for another */

struct daemon_config {
    const char *state_dir;
    const char *vmm_path;        /* NULL: godwit-vmm next to the godwitd binary */
    const char *listen[DAEMON_MAX_LISTEN];
    unsigned nlisten;
    struct ctl_tls_config tls;
    bool insecure;               /* allow a TCP listener without TLS */
};

struct qmp_client;
struct daemon;
struct daemon_client;
struct server;
struct mig_ctx;

struct domain {
    struct domain *next;
    struct dom_def def;
    enum dom_state state;
    enum dom_reason reason;
    int id;                       /* -1 while inactive */
    enum dom_job job;             /* the job slot */
    char job_what[32];            /* the operation holding a MODIFY job */
    struct dom_def *next_def;     /* a definition given while active (the persistent one,
                                     in STATE/domains): def stays the one the VMM runs with
                                     until the domain is inactive and no job holds it */
    /* while active (and while starting) */
    pid_t pid;
    unsigned long long pid_start; /* the VMM's process start time (vmm_start_time) */
    bool starting;                /* spawned, not answering QMP yet: the status records
                                     the VMM so that a restarted daemon finds it */
    int pidfd;
    int console_fd;               /* write end of the serial input FIFO */
    char qmp_path[108];
    pthread_mutex_t qmp_lock;
    struct qmp_client *qmp;       /* command connection (qmp_lock) */
    pthread_t monitor;
    bool monitor_joinable;
    bool monitor_running;
    struct dom_exit_facts exit;   /* filled as the VMM goes */
    enum dom_reason pause_reason; /* the reason to record for the next STOP */
    bool switchover_given_back;   /* the VMM gave up a switch-over (MIGRATION {active}
                                     while paused for it): its RESUME is no cancel */
    bool vmm_unreachable;         /* at start-up its VMM did not answer QMP and a migration
                                     job holds the domain: left running unwatched, the job
                                     kept as saved (never killed: it may hold the guest) */
    bool resume_pending;          /* a `cont` is under way whose caller sets the state from
                                     its result: the monitor leaves the RESUME event alone */
};

/* A request handler. args is the request's arguments object (borrowed,
 * never NULL); on success *ret may be set to the reply's "return" value
 * (NULL: {}). Runs on the client's thread without dm->lock. */
typedef int (*daemon_handler_fn)(struct daemon *dm, struct daemon_client *cl,
                                 struct json_object *args, struct json_object **ret,
                                 struct gw_error *err);
struct daemon_command {
    const char *name;
    daemon_handler_fn fn;
};

/* Called by a domain's monitor for every QMP event of its VMM (with
 * dm->lock held; must not block): the migration's (migrate_cmds.c). */
typedef void (*daemon_qmp_event_fn)(struct daemon *dm, struct domain *dom, const char *event,
                                    struct json_object *data);

struct daemon {
    struct daemon_config cfg;
    char vmm_path[PATH_MAX];
    uid_t uid;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct domain *domains;
    int next_id;
    struct event_bus *bus;
    const struct daemon_command *tables[DAEMON_MAX_TABLES];
    size_t table_len[DAEMON_MAX_TABLES];
    unsigned ntables;
    daemon_qmp_event_fn hooks[DAEMON_MAX_HOOKS];
    unsigned nhooks;
    atomic_bool stopping;
    struct server *server;
    int lock_fd;                  /* STATE/godwitd.lock, flock()ed: one daemon per state dir */
    struct mig_ctx *mig;          /* migrate.h: migration records and threads */
};

/* ---- daemon.c ---- */
struct daemon *daemon_new(const struct daemon_config *cfg, struct gw_error *err);
/* Load definitions, find running VMs again, listen. */
int daemon_start(struct daemon *dm, struct gw_error *err);
/* Stop listening, close clients, stop monitors (VMMs keep running).
 * false when a client's thread still runs (a request handler that did not
 * end within server_stop's wait): then dm must not be freed, the process
 * just exits. */
bool daemon_stop(struct daemon *dm);
void daemon_free(struct daemon *dm);

int daemon_register_commands(struct daemon *dm, const struct daemon_command *cmds, size_t n);
int daemon_register_qmp_hook(struct daemon *dm, daemon_qmp_event_fn fn);
const struct daemon_command *daemon_find_command(struct daemon *dm, const char *name);

/* ---- domain.c (dm->lock held for all) ---- */
struct domain *domain_new(const struct dom_def *def /* copied */);
void domain_free(struct domain *dom);
/* By name, UUID or id (decimal): what an operator types. */
struct domain *daemon_find_domain(struct daemon *dm, const char *key);
/* By UUID only (case-insensitive): peer-protocol messages, job files and
 * internal re-lookups, where a domain NAMED like the UUID is another one. */
struct domain *daemon_find_domain_uuid(struct daemon *dm, const char *uuid);
/* The domain named by args' "domain" member; -ENOENT with libvirt's message. */
int daemon_lookup(struct daemon *dm, struct json_object *args, struct domain **dom,
                  struct gw_error *err);
/* The one state transition helper: checks the transition, persists the
 * status, publishes the lifecycle event (ev < 0: none). */
int domain_set_state(struct daemon *dm, struct domain *dom, enum dom_state st, enum dom_reason why,
                     int ev, enum dom_event_detail detail);
/* Publish a lifecycle event. */
void daemon_emit_lifecycle(struct daemon *dm, const struct domain *dom, enum dom_event ev,
                           enum dom_event_detail detail);
/* Publish any event about dom (data taken), e.g. "job-completed". */
void daemon_emit(struct daemon *dm, const struct domain *dom, const char *type,
                 struct json_object *data);
int domain_save_status(struct daemon *dm, const struct domain *dom, struct gw_error *err);
/* The definition to show and to save (the persistent one): next_def if a
 * new one waits for the domain to stop, else def. */
const struct dom_def *domain_persistent_def(const struct domain *dom);
/* Make a waiting next_def the domain's definition; does nothing while the
 * domain is active or starting. The caller holds dm->lock and no other
 * thread holds the job slot (none, or the caller's own: nobody reads def
 * without the lock then). Removes the saved live definition. */
void domain_apply_next_def(struct daemon *dm, struct domain *dom);
/* *ts = now + ms on CLOCK_REALTIME: the deadline of a wait on dm->cond. */
void daemon_deadline_in(struct timespec *ts, int ms);
/* (locked) One bounded step of a wait on dm->cond for a condition the
 * caller tests again: false at once when deadline_ms (mig_mono_ms' clock)
 * has passed, else waits up to 100 ms (or a broadcast) and returns true. */
bool daemon_wait_step(struct daemon *dm, uint64_t deadline_ms);
/* Take the job slot (waits up to DAEMON_JOB_WAIT_MS for a MODIFY job,
 * refuses at once while an asynchronous job holds it). dom may be freed
 * meanwhile: callers look it up again by uuid (the returned *dom). */
int domain_job_begin(struct daemon *dm, struct domain **dom, enum dom_job kind, const char *what,
                     struct gw_error *err);
void domain_job_end(struct daemon *dm, struct domain *dom);
/* A path for one of dom's files (domain_store.h enum store_file). */
void domain_path(struct daemon *dm, const struct domain *dom, int file, char *buf, size_t len);

#endif
