#include "migration/switchover_guard.h"

#include <errno.h>
#include <time.h>

#include "migration/migration.h"

void sw_guard_init(struct sw_guard *g, void (*fire)(void *arg), void *arg)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cond, &a);
    pthread_condattr_destroy(&a);
    pthread_mutex_init(&g->lock, NULL);
    g->thread_running = false;
    g->state = SW_GUARD_IDLE;
    g->deadline_ms = 0;
    g->fire = fire;
    g->arg = arg;
}

void sw_guard_fini(struct sw_guard *g)
{
    sw_guard_end(g);
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
}

/* Under the lock. */
static void fire_locked(struct sw_guard *g)
{
    g->state = SW_GUARD_FIRED;
    g->fire(g->arg);
    pthread_cond_broadcast(&g->cond);
}

static void *guard_thread(void *arg)
{
    struct sw_guard *g = arg;
    pthread_setname_np(pthread_self(), "mig-guard");
    pthread_mutex_lock(&g->lock);
    while (g->state == SW_GUARD_ARMED) {
        uint64_t now = mig_now_ms();
        if (now >= g->deadline_ms) {
            fire_locked(g);
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (g->deadline_ms - now) * 1000000ULL;
        ts.tv_sec += (time_t)(ns / 1000000000ULL);
        ts.tv_nsec = (long)(ns % 1000000000ULL);
        pthread_cond_timedwait(&g->cond, &g->lock, &ts);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

int sw_guard_arm(struct sw_guard *g, uint64_t deadline_ms)
{
    pthread_mutex_lock(&g->lock);
    if (g->state != SW_GUARD_IDLE || g->thread_running) {
        pthread_mutex_unlock(&g->lock);
        return -EBUSY;
    }
    g->state = SW_GUARD_ARMED;
    g->deadline_ms = deadline_ms;
    int r = pthread_create(&g->thread, NULL, guard_thread, g);
    if (r != 0)
        g->state = SW_GUARD_IDLE;
    else
        g->thread_running = true;
    pthread_mutex_unlock(&g->lock);
    return -r;
}

bool sw_guard_fire(struct sw_guard *g)
{
    pthread_mutex_lock(&g->lock);
    if (g->state == SW_GUARD_ARMED)
        fire_locked(g);
    bool fired = g->state == SW_GUARD_FIRED;
    pthread_mutex_unlock(&g->lock);
    return fired;
}

bool sw_guard_fired(struct sw_guard *g)
{
    pthread_mutex_lock(&g->lock);
    bool fired = g->state == SW_GUARD_FIRED;
    pthread_mutex_unlock(&g->lock);
    return fired;
}

bool sw_guard_disarm(struct sw_guard *g)
{
    pthread_mutex_lock(&g->lock);
    if (g->state == SW_GUARD_ARMED) {
        g->state = SW_GUARD_DISARMED;
        pthread_cond_broadcast(&g->cond);
    }
    bool fired = g->state == SW_GUARD_FIRED;
    pthread_mutex_unlock(&g->lock);
    return !fired;
}

bool sw_guard_end(struct sw_guard *g)
{
    bool fired = !sw_guard_disarm(g);
    pthread_mutex_lock(&g->lock);
    bool join = g->thread_running;
    g->thread_running = false;
    pthread_mutex_unlock(&g->lock);
    if (join)
        pthread_join(g->thread, NULL);
    pthread_mutex_lock(&g->lock);
    g->state = SW_GUARD_IDLE;
    pthread_mutex_unlock(&g->lock);
    return fired;
}
