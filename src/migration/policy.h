/* Pre-copy convergence policy: pure functions of the round statistics, so
 * they are unit-tested without a VM (Xen's simple_precopy_policy).
 *
 * After each round the engine fills struct precopy_round and calls
 * precopy_decide(); the decision says whether to switch over now and what
 * CPU throttle to apply. Nothing here blocks or allocates. */
#ifndef GW_MIGRATION_POLICY_H
#define GW_MIGRATION_POLICY_H

#include <stdbool.h>
#include <stdint.h>

struct precopy_params {
    uint64_t downtime_limit_ms;    /* QMP downtime-limit (default 300) */
    bool auto_converge;            /* capability auto-converge */
    unsigned throttle_initial;     /* cpu-throttle-initial (default 20) */
    unsigned throttle_increment;   /* cpu-throttle-increment (default 10) */
    unsigned throttle_max;         /* max-cpu-throttle (default 99) */
    unsigned throttle_trigger_pct; /* dirty/transferred ratio that counts as "not
                                      converging" (default 50) */
};

/* What the last round did. */
struct precopy_round {
    unsigned iteration;            /* 1 = the first full pass */
    uint64_t remaining_bytes;      /* dirty bytes still to send after this round */
    uint64_t bandwidth_bps;        /* bytes/s measured over this round */
    uint64_t dirtied_bytes;        /* bytes dirtied while this round ran */
    uint64_t transferred_bytes;    /* bytes sent during this round */
};

/* Carried from one decision to the next (zero-initialise once). */
struct precopy_policy_state {
    unsigned high_dirty_rounds;    /* consecutive rounds dirtying too much */
    unsigned throttle_pct;         /* current throttle */
};

struct precopy_decision {
    bool switchover;               /* stop the guest and send the rest now */
    uint64_t expected_downtime_ms; /* remaining_bytes / bandwidth */
    unsigned throttle_pct;         /* throttle to apply from now on */
    bool throttle_changed;
};

void precopy_params_default(struct precopy_params *p);
/* The bandwidth to expect once the vCPUs stop, from a live round that moved
 * `bytes` in `round_ns`, during which the sending thread waited `cpu_wait_ns`
 * for a CPU (runnable, not running: /proc/thread-self/schedstat). On a
 * host whose cores the guest's vCPUs keep busy, that wait is what stopping
 * them gives back: the switch-over ran at 3.1-3.2 GB/s where the live
 * rounds just before ran at 1.3-1.7 GB/s (busy 1 GiB, two cores). Waiting
 * on the network or the destination still counts. At most twice the live
 * rate, in case the wait came from something that will not stop. */
uint64_t precopy_switch_bandwidth(uint64_t bytes, uint64_t round_ns, uint64_t cpu_wait_ns);
uint64_t precopy_expected_downtime_ms(uint64_t remaining_bytes, uint64_t bandwidth_bps);
void precopy_decide(const struct precopy_params *p, struct precopy_policy_state *st,
                    const struct precopy_round *r, struct precopy_decision *d);

/* In a live round that has sent `sent` pages, `again` of which the guest
 * has written since, with `left_bytes` that a stop would have to send now
 * (the round's unsent pages and all written since) at `bandwidth_bps`:
 * end the round here and let the policy decide? Yes when the stop fits
 * the limit and at least half of what the round sent is written again
 * (going on would mostly send pages the stop sends anyway); an idle
 * guest's round goes on, and its stop then sends next to nothing. */
bool precopy_round_ends_early(uint64_t downtime_limit_ms, uint64_t sent, uint64_t again,
                              uint64_t left_bytes, uint64_t bandwidth_bps);

/* The switch-over guard (switchover_guard.h). How long the guest may stay
 * stopped while the last round's pages go: the limit and a quarter of it
 * again, at least 10 ms more than the limit (the state and the
 * destination's load come on top, a few ms). A quarter: a stop the host
 * slowed ran 1.3 times the limit (393 ms for 300) where half let it by. */
uint64_t precopy_stop_allowance_ms(uint64_t downtime_limit_ms);
/* While stopped, `elapsed_ms` after the stop, `sent` of the round's `total`
 * pages gone: give the guest back now? Yes past the allowance, and from a
 * quarter of it on when the pace so far would end past it (a host that
 * copies at a fifth of its usual rate is seen after a quarter of the
 * allowance, not after all of it). */
bool precopy_stop_overruns(uint64_t downtime_limit_ms, uint64_t elapsed_ms, uint64_t sent,
                           uint64_t total);

#endif
