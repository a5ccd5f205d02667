/* The switch-over guard: gives a pre-copy guest back to its source when
 * the stop-and-copy runs too long (parameter max-switchover-retries).
 *
 * The source stops the vCPUs once the policy expects the rest to fit the
 * downtime limit. If the host then moves the rest far slower than expected
 * (our PVM hosts copy into freshly reclaimed memory at a fifth of their
 * usual rate) or the destination stops reading, the guest would stay paused
 * for as long as that lasts. Until the source commits to the switch-over by
 * taking the device state, nothing it sent is final on the destination: the
 * pages are pre-copy pages like any other. So the guard resumes the guest,
 * and pre-copy goes on with what was not sent.
 *
 * It fires at a deadline from a thread of its own (the migration thread may
 * be blocked in a write to a destination that stopped reading), or at once
 * when the migration thread asks (it foresees the overrun). The migration
 * thread disarms it before it takes the device state; after that it can no
 * longer fire. `fire` runs once, on the thread that fires, under the
 * guard's lock.
 * Returns: 0 or -errno. */
#ifndef GW_MIGRATION_SWITCHOVER_GUARD_H
#define GW_MIGRATION_SWITCHOVER_GUARD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

enum sw_guard_state { SW_GUARD_IDLE, SW_GUARD_ARMED, SW_GUARD_FIRED, SW_GUARD_DISARMED };

struct sw_guard {
    pthread_mutex_t lock;
    pthread_cond_t cond;            /* CLOCK_MONOTONIC */
    pthread_t thread;
    bool thread_running;
    enum sw_guard_state state;
    uint64_t deadline_ms;           /* mig_now_ms() clock */
    void (*fire)(void *arg);
    void *arg;
};

void sw_guard_init(struct sw_guard *g, void (*fire)(void *arg), void *arg);
void sw_guard_fini(struct sw_guard *g);
/* Arm until deadline_ms (the guard must be idle: initialised, or ended
 * with sw_guard_end). */
int sw_guard_arm(struct sw_guard *g, uint64_t deadline_ms);
/* Fire now if armed. True if the guard has fired (now or before). */
bool sw_guard_fire(struct sw_guard *g);
/* Has it fired? (A hint: it may fire right after a false answer.) */
bool sw_guard_fired(struct sw_guard *g);
/* The caller commits to the switch-over: from here on the guard never
 * fires. False when it fired first (the guest runs again: the switch-over
 * is off). Does not wait for the thread; sw_guard_end does. */
bool sw_guard_disarm(struct sw_guard *g);
/* Disarm if armed, wait for the thread and make the guard idle again.
 * True if it had fired. */
bool sw_guard_end(struct sw_guard *g);

#endif
