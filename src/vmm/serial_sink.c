/* COM1's host side: a bounded queue and a writer thread (serial_sink.h). */
#define LOG_PREFIX "serial"
#include "vmm/serial_sink.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#define SINK_WRITE_MAX 4096 /* PIPE_BUF */

struct serial_sink {
    int fd;
    pthread_mutex_t lock;
    pthread_cond_t more;   /* bytes queued, or stopping */
    pthread_t thread;
    uint8_t *ring;         /* SERIAL_SINK_CAP bytes */
    size_t head, len;      /* the oldest byte waiting; how many wait */
    uint64_t dropped;
    bool dropping;         /* in a run of drops (logged at its start) */
    bool writer_waits;
    bool stop;
    bool broken;           /* the descriptor refused a write: all is dropped */
};

/* Some of p[0..n) written: how many (> 0), or 0 once the descriptor
 * refuses for good. Waits for the reader as long as it takes: only
 * serial_sink_free cuts that short, by cancelling the thread here. */
static size_t write_some(int fd, const uint8_t *p, size_t n)
{
    for (;;) {
        pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
        ssize_t w = write(fd, p, n);
        int e = errno;
        if (w < 0 && e == EAGAIN) {
            struct pollfd pfd = { .fd = fd, .events = POLLOUT };
            poll(&pfd, 1, 100);
        }
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
        if (w > 0)
            return (size_t)w;
        if (w < 0 && (e == EINTR || e == EAGAIN))
            continue;
        log_warn("serial output: %s; the guest's output is dropped from now on",
                 w < 0 ? strerror(e) : "the descriptor takes no more");
        return 0;
    }
}

static void *writer(void *opaque)
{
    struct serial_sink *s = opaque;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->len && !s->stop) {
            s->writer_waits = true;
            pthread_cond_wait(&s->more, &s->lock);
            s->writer_waits = false;
        }
        if (!s->len)
            break; /* stopping, all written */
        /* put() appends after head + len, never inside this run. At most
         * SINK_WRITE_MAX a write: to a pipe that is all or nothing, so a
         * write cancelled by serial_sink_free wrote nothing. */
        size_t n = s->len < SERIAL_SINK_CAP - s->head ? s->len : SERIAL_SINK_CAP - s->head;
        if (n > SINK_WRITE_MAX)
            n = SINK_WRITE_MAX;
        const uint8_t *p = s->ring + s->head;
        pthread_mutex_unlock(&s->lock);
        size_t w = write_some(s->fd, p, n);
        pthread_mutex_lock(&s->lock);
        if (!w) {
            s->broken = true;
            s->dropped += s->len;
            s->len = 0;
            continue;
        }
        s->head = (s->head + w) % SERIAL_SINK_CAP;
        s->len -= w;
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

struct serial_sink *serial_sink_new(int fd)
{
    struct serial_sink *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->fd = fd;
    s->ring = malloc(SERIAL_SINK_CAP);
    if (!s->ring)
        goto err_sink;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->more, NULL);
    int r = pthread_create(&s->thread, NULL, writer, s);
    if (r != 0) {
        errno = r;
        goto err_sync;
    }
    return s;
err_sync:
    pthread_cond_destroy(&s->more);
    pthread_mutex_destroy(&s->lock);
    free(s->ring);
err_sink:
    free(s);
    return NULL;
}

void serial_sink_put(struct serial_sink *s, uint8_t byte)
{
    pthread_mutex_lock(&s->lock);
    if (s->len == SERIAL_SINK_CAP || s->broken || s->stop) {
        s->dropped++;
        bool first = !s->dropping && !s->broken;
        s->dropping = true;
        pthread_mutex_unlock(&s->lock);
        if (first)
            log_warn("serial output: the reader is not keeping up (%u bytes wait); the guest's "
                     "output is dropped until it does", SERIAL_SINK_CAP);
        return;
    }
    s->ring[(s->head + s->len) % SERIAL_SINK_CAP] = byte;
    s->len++;
    s->dropping = false;
    if (s->writer_waits)
        pthread_cond_signal(&s->more);
    pthread_mutex_unlock(&s->lock);
}

uint64_t serial_sink_dropped(struct serial_sink *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t n = s->dropped;
    pthread_mutex_unlock(&s->lock);
    return n;
}

void serial_sink_free(struct serial_sink *s, unsigned timeout_ms)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_signal(&s->more);
    pthread_mutex_unlock(&s->lock);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    if (pthread_timedjoin_np(s->thread, NULL, &until) != 0) {
        /* The reader still does not read: it is cancelled in its write,
         * where alone it can be (it holds no lock there). */
        pthread_cancel(s->thread);
        pthread_join(s->thread, NULL);
        s->dropped += s->len;
    }
    if (s->dropped)
        log_warn("serial output: %llu bytes of the guest's output were dropped",
                 (unsigned long long)s->dropped);
    pthread_cond_destroy(&s->more);
    pthread_mutex_destroy(&s->lock);
    free(s->ring);
    free(s);
}
