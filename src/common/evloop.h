/* A small epoll event loop, owned by one thread.
 *
 * Returns: 0 or -errno for operations; evloop_new() returns NULL + errno.
 * Callbacks run on the loop thread. evloop_post() is the only function that
 * other threads may call: it queues a function to run on the loop thread.
 * Timers are timerfds registered like any other fd. */
#ifndef GW_COMMON_EVLOOP_H
#define GW_COMMON_EVLOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

struct evloop;

/* Called with the epoll events (EPOLLIN, EPOLLOUT, EPOLLHUP, ...). */
typedef void (*evloop_fd_cb)(struct evloop *loop, int fd, uint32_t events, void *opaque);
typedef void (*evloop_fn)(void *opaque);

struct evloop *evloop_new(void);
void evloop_free(struct evloop *loop);

/* Watch fd for events (EPOLLIN/EPOLLOUT); the loop does not own fd. */
int evloop_add_fd(struct evloop *loop, int fd, uint32_t events, evloop_fd_cb cb, void *opaque);
int evloop_mod_fd(struct evloop *loop, int fd, uint32_t events);
/* Safe to call from inside a callback, including the fd's own. */
int evloop_del_fd(struct evloop *loop, int fd);

/* Thread-safe: run fn(opaque) on the loop thread soon. */
int evloop_post(struct evloop *loop, evloop_fn fn, void *opaque);

/* A periodic or one-shot timer (period_ms 0 = one shot). Returns the timer
 * fd (>= 0) to pass to evloop_del_timer(), or -errno. */
int evloop_add_timer(struct evloop *loop, unsigned first_ms, unsigned period_ms,
                     evloop_fn fn, void *opaque);
int evloop_del_timer(struct evloop *loop, int tfd);

/* Run until evloop_stop(); returns 0 or -errno. */
int evloop_run(struct evloop *loop);
/* Run one iteration, waiting at most timeout_ms (-1 = forever). */
int evloop_run_once(struct evloop *loop, int timeout_ms);
/* Thread-safe. */
void evloop_stop(struct evloop *loop);
bool evloop_stopped(struct evloop *loop);

#endif
