#include "test_relay.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void set_addr(struct sockaddr_un *a, const char *path)
{
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    snprintf(a->sun_path, sizeof(a->sun_path), "%s", path);
}

static void close_pair(struct test_relay *r, int i, bool reset)
{
    if (reset) { /* a unix socket has no reset: closing with data unread is the nearest */
        struct linger l = { 1, 0 };
        setsockopt(r->a[i], SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        setsockopt(r->b[i], SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    close(r->a[i]);
    close(r->b[i]);
    r->a[i] = r->b[i] = -1;
}

static void accept_one(struct test_relay *r)
{
    int a = accept(r->lfd, NULL, NULL);
    if (a < 0)
        return;
    int b = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un to;
    set_addr(&to, r->to);
    for (int i = 0; i < RELAY_MAX_PAIRS; i++) {
        if (r->a[i] >= 0)
            continue;
        if (b >= 0 && connect(b, (struct sockaddr *)&to, sizeof(to)) == 0) {
            if (r->inject_len && write(a, r->inject, r->inject_len) != (ssize_t)r->inject_len)
                break;
            r->a[i] = a;
            r->b[i] = b;
            r->accepted++;
            return;
        }
        break;
    }
    close(a);
    if (b >= 0)
        close(b);
}

/* Move what `from` has to `to`: false once the pair is done. */
static bool move(struct test_relay *r, int i, int from, int to)
{
    char buf[64 << 10];
    ssize_t n = read(from, buf, sizeof(buf));
    if (n == 0) {
        shutdown(to, SHUT_WR);
        return true; /* the other direction may go on */
    }
    if (n < 0) {
        close_pair(r, i, true);
        return false;
    }
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(to, buf + off, (size_t)(n - off));
        if (w <= 0) {
            close_pair(r, i, true);
            return false;
        }
        off += w;
    }
    return true;
}

static void *relay_thread(void *arg)
{
    struct test_relay *r = arg;
    while (!r->quit) {
        struct pollfd p[1 + 2 * RELAY_MAX_PAIRS];
        int n = 0;
        p[n++] = (struct pollfd){ r->lfd, POLLIN, 0 };
        bool frozen = r->frozen;
        for (int i = 0; i < RELAY_MAX_PAIRS && !frozen; i++) {
            p[n++] = (struct pollfd){ r->a[i], r->a[i] >= 0 ? POLLIN : 0, 0 };
            p[n++] = (struct pollfd){ r->b[i], r->b[i] >= 0 ? POLLIN : 0, 0 };
        }
        if (poll(p, (nfds_t)n, 10) <= 0)
            continue;
        if (p[0].revents & POLLIN)
            accept_one(r);
        for (int i = 0; i < RELAY_MAX_PAIRS && !frozen; i++) {
            short ra = p[1 + 2 * i].revents, rb = p[2 + 2 * i].revents;
            if (r->a[i] >= 0 && (ra & (POLLIN | POLLHUP | POLLERR)) && !move(r, i, r->a[i], r->b[i]))
                continue;
            if (r->b[i] >= 0 && (rb & (POLLIN | POLLHUP | POLLERR)))
                move(r, i, r->b[i], r->a[i]);
        }
    }
    return NULL;
}

int test_relay_start(struct test_relay *r, const char *from, const char *to)
{
    memset(r, 0, sizeof(*r));
    for (int i = 0; i < RELAY_MAX_PAIRS; i++)
        r->a[i] = r->b[i] = -1;
    snprintf(r->from, sizeof(r->from), "%s", from);
    snprintf(r->to, sizeof(r->to), "%s", to);
    unlink(from);
    r->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a;
    set_addr(&a, from);
    if (r->lfd < 0 || bind(r->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(r->lfd, 8) < 0) {
        int e = errno;
        if (r->lfd >= 0)
            close(r->lfd);
        return -e;
    }
    int e = pthread_create(&r->thread, NULL, relay_thread, r);
    if (e) {
        close(r->lfd);
        return -e;
    }
    return 0;
}

void test_relay_freeze(struct test_relay *r, bool frozen) { r->frozen = frozen; }

void test_relay_inject(struct test_relay *r, const void *bytes, size_t len)
{
    r->inject = bytes;
    r->inject_len = len;
}

void test_relay_stop(struct test_relay *r)
{
    r->quit = true;
    pthread_join(r->thread, NULL);
    for (int i = 0; i < RELAY_MAX_PAIRS; i++)
        if (r->a[i] >= 0)
            close_pair(r, i, false);
    close(r->lfd);
    unlink(r->from);
}
