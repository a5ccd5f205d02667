/* The migration engine of one VM: outgoing (pre-copy, save to file) and
 * incoming (live or from a file), with QEMU's states, parameters and
 * statistics. One struct migration per VMM process; nothing global.
 *
 * The engine never opens connections by itself through policy: it is handed
 * a URI, connects/listens in its own thread, and drives the VM only through
 * struct mig_vm_ops. Threads: mig_* entry points are called from the control
 * (main) thread; each migration runs in its own thread; statistics are read
 * under the lock. Returns: 0 or -errno with a message in err. */
#ifndef GW_MIGRATION_MIGRATION_H
#define GW_MIGRATION_MIGRATION_H

#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "memory/dirty_log.h"
#include "memory/guest_ram.h"
#include "migration/downtime_phases.h"
#include "migration/latency_hist.h"
#include "migration/mig_state.h"
#include "migration/params.h"
#include "migration/stream.h"
#include "migration/uri.h"

/* What the engine needs from the VM (implemented by the VMM). All hooks are
 * called on the migration thread. */
struct mig_vm_ops {
    /* Source: stop the vCPUs for the switch-over; remember whether they ran. */
    int (*stop)(void *vm, struct gw_error *err);
    /* Source: the migration failed or was cancelled: run again if it ran. */
    void (*resume)(void *vm);
    /* Source: the destination owns the guest now (state postmigrate). */
    void (*completed)(void *vm);
    /* Source: write the VCPU_STATE and DEVICE_STATE records. */
    int (*save_state)(void *vm, struct stream *s, struct gw_error *err);
    /* Source, may be NULL: records the destination checks the VM by before
     * any page moves (CPU_MODEL), written after the header. */
    int (*describe)(void *vm, struct stream *s, struct gw_error *err);
    /* Destination: take one VCPU_STATE or DEVICE_STATE record (kept until
     * load_finish; nothing touches the VM before), or check a CPU_MODEL
     * at once (an error fails the migration before the pages). */
    int (*load_record)(void *vm, const struct stream_record *rec, struct gw_error *err);
    /* Destination: every record is in: check completeness and apply. */
    int (*load_finish)(void *vm, struct gw_error *err);
    /* Destination: run the guest (or leave it paused if the user said stop). */
    void (*start)(void *vm);
    /* Destination: forget a half-loaded guest (free its memory). */
    void (*discard)(void *vm);
    void (*set_throttle)(void *vm, unsigned pct);
    /* Destination, post-copy: vCPU index of thread `tid`, or -1. */
    int (*vcpu_of_tid)(void *vm, int tid);
    /* Destination, post-copy: the source is gone for good; the guest
     * cannot go on (stop it with a reason). */
    void (*lost)(void *vm);
    /* A QMP event (data owned by the callee, may be NULL). */
    void (*event)(void *vm, const char *name, struct json_object *data);
};

#define MIG_MAX_VCPUS_STATS 64


struct mig_stats {
    enum mig_state status;
    uint64_t start_ms, setup_ms, total_ms, downtime_ms, expected_downtime_ms;
    uint64_t transferred, remaining, total;
    uint64_t duplicate, normal, normal_bytes, skipped;
    uint64_t dirty_pages_rate;     /* pages/s in the last round */
    uint64_t mbps_x1000;           /* bandwidth of the last 250 ms or round, Mbit/s * 1000 */
    uint64_t dirty_sync_count, iteration;
    unsigned throttle_pct;
    /* post-copy */
    uint64_t postcopy_requests;    /* pages asked for by faults */
    uint64_t postcopy_bytes;       /* bytes sent (source) / received (destination) after the switch */
    uint64_t fault_count;          /* destination: faults resolved from the source */
    uint64_t fault_p50_us, fault_p99_us, fault_max_us;
    uint64_t blocktime_us;         /* destination: time every vCPU was blocked at once */
    uint64_t vcpu_blocktime_us[MIG_MAX_VCPUS_STATS]; /* (µs: most faults last less than 1 ms) */
    /* destination: faults taken by threads that are not vCPUs, and the time
     * they waited in all. With KVM's asynchronous page faults a vCPU's fault
     * is taken by a kernel worker while the vCPU halts, so it shows here and
     * not in the vCPU's blocktime; the VMM's own device code counts here too. */
    uint64_t non_vcpu_faults, non_vcpu_wait_us;
    /* destination: pages still to come that were in memory when their data
     * came (touched outside userfaultfd); 0 in a sound run */
    uint64_t postcopy_found_present;
    uint64_t paused_count;         /* times post-copy paused */
    uint64_t switchover_retries;   /* source: stops given up, the guest given back */
    uint64_t rounds_ended_early;   /* source: live rounds ended once a stop fitted */
    uint64_t switchover_deferrals; /* source: stops put off after the drain */
    /* Source: where the switch-over's downtime went, µs per enum
     * mig_phase. Known once a switch-over over a socket has handed the
     * guest over. */
    struct mig_downtime_phases {
        bool known;
        uint64_t us[MIG_NPHASES];
    } downtime_phases;
    bool postcopy_started;         /* post-copy began: the source handed the guest over
                                      (COMMIT sent: the destination may run it), the
                                      destination entered postcopy-active */
    char error_desc[512];
};

struct migration {
    void *vm;
    const struct mig_vm_ops *ops;
    struct guest_ram *ram;
    struct dirty_log *dirty;
    const char *name;
    const uint8_t *uuid;
    unsigned nr_vcpus;

    pthread_mutex_t lock;          /* protects everything below */
    struct mig_params params;
    struct mig_caps caps;
    struct mig_stats stats;
    bool incoming;                 /* this side receives */
    bool thread_running;
    pthread_t thread;
    volatile bool cancel;
    bool committing;               /* the LOADED/COMMIT hand-over has begun: too late to
                                      cancel (the guest may run on the destination) */
    int fd, listen_fd;             /* for cancel: shutdown() wakes the thread */
    int pfd;                       /* the preempt channel (post-copy) */
    struct mig_uri uri;
    /* post-copy */
    volatile bool pc_start_req;    /* source: migrate-start-postcopy */
    volatile bool pc_pause_req;    /* migrate-pause (set with the state checked, under
                                      the lock; cleared once paused, or at the start) */
    bool pc_commit_wait;           /* destination, post-copy: RP_LOADED is sent, COMMIT
                                      awaited (state `active`): migrate-pause ends the wait */
    bool pc_recover_req;           /* migrate-recover / migrate resume:true */
    int pc_recover_fd;             /* destination: the new listening socket */
    bool pc_no_minor;              /* destination: drop pages from the memfd even where
                                      minor faults exist (the engine tests' other path) */
    uint64_t pc_bitmap_part_words; /* destination: send the page list of a recovery in
                                      parts of this many words (0: in one record where it
                                      fits; the engine tests' other path) */
    struct mig_uri pc_recover_uri; /* source: where to reconnect */
    /* destination: the post-copy migration that last completed here, if
     * its source named it (MIGRATION_ID). A source whose RP_POSTCOPY_DONE
     * was lost with a broken connection stays paused; migrate-recover here
     * answers its resume with that DONE (pc_late: the answer waits). */
    bool pc_done_named, pc_late;
    struct gws_migration_id pc_done_id;
    pthread_cond_t cond;           /* signalled on pc_recover_req and fini */
    struct latency_hist lat;       /* destination: fault latencies */
};

void mig_init(struct migration *m, void *vm, const struct mig_vm_ops *ops, struct guest_ram *ram,
              struct dirty_log *dirty, const char *name, const uint8_t *uuid, unsigned nr_vcpus);
void mig_fini(struct migration *m);

/* Source: start migrating to `uri` (returns once the thread runs). */
int mig_start_outgoing(struct migration *m, const char *uri, struct gw_error *err);
/* Destination: wait for a stream on `uri` (tcp/unix listen, or read a file). */
int mig_start_incoming(struct migration *m, const char *uri, struct gw_error *err);
int mig_cancel(struct migration *m, struct gw_error *err);
/* Source: switch to post-copy now (postcopy-ram set on both sides). */
int mig_start_postcopy(struct migration *m, struct gw_error *err);
/* Either side, in postcopy-active or postcopy-recover (the destination
 * also while it waits for COMMIT after RP_LOADED): break the connection on
 * purpose; both sides go to postcopy-paused and wait for recovery. */
int mig_pause(struct migration *m, struct gw_error *err);
/* Destination, in postcopy-paused: listen on `uri` for the source. */
int mig_recover(struct migration *m, const char *uri, struct gw_error *err);
/* Source, in postcopy-paused: reconnect to the destination at `uri`. */
int mig_resume(struct migration *m, const char *uri, struct gw_error *err);
/* Snapshot of the statistics (times computed as of now). */
void mig_get_stats(struct migration *m, struct mig_stats *out);
bool mig_active(struct migration *m);

/* Parameters and capabilities, all-or-nothing, refused while active where
 * QEMU refuses them. */
int mig_set_params(struct migration *m, const struct mig_params *p, struct gw_error *err);
void mig_get_params(struct migration *m, struct mig_params *p);
int mig_set_caps(struct migration *m, const struct mig_caps *c, struct gw_error *err);
void mig_get_caps(struct migration *m, struct mig_caps *c);

/* Internal (outgoing.c / incoming.c / migration.c). */
uint64_t mig_now_ms(void);
uint64_t mig_now_ns(void);
/* Nanoseconds the calling thread has spent runnable but waiting for a CPU
 * (/proc/thread-self/schedstat); 0 where the kernel does not say. */
uint64_t mig_thread_cpu_wait_ns(void);
/* This thread's time on a CPU and waiting for one (ns, schedstat). */
void mig_thread_sched(uint64_t *run_ns, uint64_t *wait_ns);
/* CPU time the hypervisor under this machine took from all its CPUs (steal,
 * /proc/stat), ms since boot; 0 if unknown. For debug lines: on our PVM
 * hosts a thread the outer host holds off its CPU still looks on-CPU. */
uint64_t mig_host_steal_ms(void);
/* Give the calling thread a CPU ahead of the VMM's other threads (nice
 * -10) for work a stopped vCPU waits on: post-copy's fault thread and page
 * server. With the guest's vCPUs, the push and its unpacking busy on two
 * cores, a request otherwise waited for a CPU: compressed post-copy's
 * fault p99 went from 1.7-2.0 ms to 1.0-1.3 ms with it. Where the VMM may
 * not (no CAP_SYS_NICE) nothing changes. */
void mig_thread_priority_high(void);
void mig_set_state(struct migration *m, enum mig_state to);
void mig_fail(struct migration *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void *mig_outgoing_thread(void *arg);
void *mig_incoming_thread(void *arg);
/* Post-copy: go to postcopy-paused and wait for mig_recover/mig_resume.
 * Returns 0 once recovery was asked for (the state is postcopy-recover),
 * -ECANCELED when the VMM is shutting down. */
int mig_pc_wait_recovery(struct migration *m, const char *why);
/* The migration thread, at the hand-over (source: RP_LOADED read, COMMIT
 * next; destination: RP_LOADED next): false if a cancel came first (the
 * migration then fails), else from here on cancel is refused. */
bool mig_take_commit(struct migration *m);
/* Destination, after a completed post-copy migration: take one resume on
 * m->pc_recover_fd that names it and answer RP_POSTCOPY_DONE. */
void *mig_pc_late_done_thread(void *arg);

#endif
