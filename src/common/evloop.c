#include "common/evloop.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

struct watch {
    int fd;
    bool is_timer;
    bool dead;
    evloop_fd_cb cb;
    evloop_fn tfn;
    void *opaque;
    struct watch *next;
};

struct posted {
    evloop_fn fn;
    void *opaque;
    struct posted *next;
};

struct evloop {
    int epfd;
    int wakefd;
    volatile bool stop;
    struct watch *watches;      /* loop thread only */
    pthread_mutex_t lock;       /* protects posted */
    struct posted *posted, *posted_tail;
    int dispatch_depth;
};

struct evloop *evloop_new(void)
{
    struct evloop *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return NULL;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0)
        goto err_free;
    loop->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop->wakefd < 0)
        goto err_epoll;
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wakefd, &ev) < 0)
        goto err_wake;
    pthread_mutex_init(&loop->lock, NULL);
    return loop;

err_wake:
    close(loop->wakefd);
err_epoll:
    close(loop->epfd);
err_free: {
    int e = errno;
    free(loop);
    errno = e;
    return NULL;
}
}

static void reap_dead(struct evloop *loop)
{
    struct watch **pp = &loop->watches;
    while (*pp) {
        struct watch *w = *pp;
        if (w->dead) {
            *pp = w->next;
            if (w->is_timer)
                close(w->fd);
            free(w);
        } else {
            pp = &w->next;
        }
    }
}

void evloop_free(struct evloop *loop)
{
    if (!loop)
        return;
    for (struct watch *w = loop->watches; w; w = w->next)
        w->dead = true;
    reap_dead(loop);
    struct posted *p = loop->posted;
    while (p) {
        struct posted *n = p->next;
        free(p);
        p = n;
    }
    close(loop->wakefd);
    close(loop->epfd);
    pthread_mutex_destroy(&loop->lock);
    free(loop);
}

static struct watch *find_watch(struct evloop *loop, int fd)
{
    for (struct watch *w = loop->watches; w; w = w->next)
        if (w->fd == fd && !w->dead)
            return w;
    return NULL;
}

static int add_watch(struct evloop *loop, struct watch *w, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = w };
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, w->fd, &ev) < 0) {
        int e = errno;
        free(w);
        return -e;
    }
    w->next = loop->watches;
    loop->watches = w;
    return 0;
}

int evloop_add_fd(struct evloop *loop, int fd, uint32_t events, evloop_fd_cb cb, void *opaque)
{
    struct watch *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->fd = fd;
    w->cb = cb;
    w->opaque = opaque;
    return add_watch(loop, w, events);
}

int evloop_mod_fd(struct evloop *loop, int fd, uint32_t events)
{
    struct watch *w = find_watch(loop, fd);
    if (!w)
        return -ENOENT;
    struct epoll_event ev = { .events = events, .data.ptr = w };
    return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

int evloop_del_fd(struct evloop *loop, int fd)
{
    struct watch *w = find_watch(loop, fd);
    if (!w)
        return -ENOENT;
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
    w->dead = true;
    if (loop->dispatch_depth == 0)
        reap_dead(loop);
    return 0;
}

int evloop_post(struct evloop *loop, evloop_fn fn, void *opaque)
{
    struct posted *p = malloc(sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->fn = fn;
    p->opaque = opaque;
    p->next = NULL;
    pthread_mutex_lock(&loop->lock);
    if (loop->posted_tail)
        loop->posted_tail->next = p;
    else
        loop->posted = p;
    loop->posted_tail = p;
    pthread_mutex_unlock(&loop->lock);
    uint64_t one = 1;
    ssize_t r = write(loop->wakefd, &one, sizeof(one));
    (void)r;
    return 0;
}

int evloop_add_timer(struct evloop *loop, unsigned first_ms, unsigned period_ms,
                     evloop_fn fn, void *opaque)
{
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (tfd < 0)
        return -errno;
    if (first_ms == 0)
        first_ms = 1;
    struct itimerspec its = {
        .it_value = { first_ms / 1000, (long)(first_ms % 1000) * 1000000 },
        .it_interval = { period_ms / 1000, (long)(period_ms % 1000) * 1000000 },
    };
    if (timerfd_settime(tfd, 0, &its, NULL) < 0) {
        int e = errno;
        close(tfd);
        return -e;
    }
    struct watch *w = calloc(1, sizeof(*w));
    if (!w) {
        close(tfd);
        return -ENOMEM;
    }
    w->fd = tfd;
    w->is_timer = true;
    w->tfn = fn;
    w->opaque = opaque;
    int r = add_watch(loop, w, EPOLLIN);
    if (r < 0) {
        close(tfd);
        return r;
    }
    return tfd;
}

int evloop_del_timer(struct evloop *loop, int tfd) { return evloop_del_fd(loop, tfd); }

static void run_posted(struct evloop *loop)
{
    uint64_t v;
    ssize_t r = read(loop->wakefd, &v, sizeof(v));
    (void)r;
    pthread_mutex_lock(&loop->lock);
    struct posted *p = loop->posted;
    loop->posted = loop->posted_tail = NULL;
    pthread_mutex_unlock(&loop->lock);
    while (p) {
        struct posted *n = p->next;
        p->fn(p->opaque);
        free(p);
        p = n;
    }
}

int evloop_run_once(struct evloop *loop, int timeout_ms)
{
    struct epoll_event evs[32];
    int n = epoll_wait(loop->epfd, evs, 32, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    loop->dispatch_depth++;
    for (int i = 0; i < n; i++) {
        struct watch *w = evs[i].data.ptr;
        if (!w) {
            run_posted(loop);
            continue;
        }
        if (w->dead)
            continue;
        if (w->is_timer) {
            uint64_t exp;
            if (read(w->fd, &exp, sizeof(exp)) != sizeof(exp))
                continue;
            w->tfn(w->opaque);
        } else {
            w->cb(loop, w->fd, evs[i].events, w->opaque);
        }
    }
    loop->dispatch_depth--;
    if (loop->dispatch_depth == 0)
        reap_dead(loop);
    return 0;
}

int evloop_run(struct evloop *loop)
{
    while (!loop->stop) {
        int r = evloop_run_once(loop, -1);
        if (r < 0)
            return r;
    }
    return 0;
}

void evloop_stop(struct evloop *loop)
{
    loop->stop = true;
    uint64_t one = 1;
    ssize_t r = write(loop->wakefd, &one, sizeof(one));
    (void)r;
}

bool evloop_stopped(struct evloop *loop) { return loop->stop; }
