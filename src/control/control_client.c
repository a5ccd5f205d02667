/* A blocking control-protocol client. */
#include "control/control_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control/control.h"

struct ctl_client {
    int fd;
    struct ctl_tls *tls;
    struct ctl_tls_session *session;
    struct ctl_io io;                 /* through read_/write_by_deadline */
    struct ctl_io raw;                /* the socket's (or its TLS session's) own */
    uint64_t deadline_ms;             /* monotonic end of the current wait; 0: none */
    int64_t next_id;
    int broken;                       /* sticky -errno after a timeout or hang-up */
    struct json_object *hello;
    struct json_object *pending[CTL_CLIENT_PENDING_EVENTS];
    unsigned npending;
};

static void set_timeout(int fd, int opt, int timeout_ms)
{
    struct timeval tv = { 0, 0 };
    if (timeout_ms > 0) {
        tv.tv_sec = timeout_ms / 1000;
        tv.tv_usec = (timeout_ms % 1000) * 1000;
    }
    setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv));
}

/* A daemon that accepts nothing (stopped, stuck) leaves connect() waiting
 * once its backlog is full: SO_SNDTIMEO bounds that wait too (EAGAIN). */
static int connect_unix(const struct ctl_uri *u, int timeout_ms, struct gw_error *err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", u->path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return gw_error_set(err, errno, "socket: %m");
    set_timeout(fd, SO_SNDTIMEO, timeout_ms);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno == EAGAIN ? ETIMEDOUT : errno;
        close(fd);
        if (e == ETIMEDOUT)
            return gw_error_set(err, e, "failed to connect to the daemon at unix:%s: it accepted "
                                "no connection within %d ms", u->path, timeout_ms);
        return gw_error_set(err, e, "failed to connect to the daemon at unix:%s: %s", u->path,
                            strerror(e));
    }
    set_timeout(fd, SO_SNDTIMEO, -1);
    return fd;
}

/* SO_SNDTIMEO bounds connect() on Linux. */
static int connect_tcp(const struct ctl_uri *u, int timeout_ms, struct gw_error *err)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res;
    int g = getaddrinfo(u->host, u->port, &hints, &res);
    if (g != 0)
        return gw_error_set(err, EHOSTUNREACH, "cannot resolve '%s': %s", u->host, gai_strerror(g));
    int fd = -1, e = EHOSTUNREACH;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        set_timeout(fd, SO_SNDTIMEO, timeout_ms);
        if (connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
            e = errno == EINPROGRESS ? ETIMEDOUT : errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return gw_error_set(err, e, "failed to connect to the daemon at tcp:%s:%s: %s", u->host,
                            u->port, strerror(e));
    set_timeout(fd, SO_SNDTIMEO, -1);
    return fd;
}

static int secure(struct ctl_client *c, const struct ctl_tls_config *tls, int timeout_ms,
                  struct gw_error *err)
{
    ctl_io_init_fd(&c->io, &c->fd);
    if (!tls || !ctl_tls_configured(tls))
        return 0;
    c->tls = ctl_tls_new(tls, false, err);
    if (!c->tls)
        return -EINVAL;
    c->session = ctl_tls_session_new(c->tls, c->fd, timeout_ms > 0 ? timeout_ms : 30000, err);
    if (!c->session)
        return -EACCES;
    ctl_tls_session_io(c->session, &c->io);
    return 0;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

/* What is left of the deadline for poll(): -1 without one, 0 once over. */
static int deadline_left(const struct ctl_client *c)
{
    if (!c->deadline_ms)
        return -1;
    uint64_t now = mono_ms();
    return now >= c->deadline_ms ? 0 : (int)(c->deadline_ms - now);
}

/* A read that ends at c->deadline_ms however the bytes come (a peer that
 * trickles them resets no timer): the socket's own read runs without
 * blocking (TLS keeps a record it has begun for the next call) and the
 * wait is a poll() for what is left of the deadline. -ETIMEDOUT after it.
 * Writes alike: a peer that reads nothing more cannot hold a request
 * larger than the socket's buffers past the deadline (TLS is given the
 * same bytes again, as GnuTLS asks after EAGAIN). */
static ssize_t io_by_deadline(struct ctl_client *c, void *buf, size_t len, bool out)
{
    for (;;) {
        set_nonblock(c->fd, true);
        ssize_t n = out ? c->raw.write(c->raw.opaque, buf, len)
                        : c->raw.read(c->raw.opaque, buf, len);
        set_nonblock(c->fd, false);
        if (n != -ETIMEDOUT) /* fd_* and tls_* say EAGAIN so */
            return n;
        int wait = deadline_left(c);
        if (wait == 0)
            return -ETIMEDOUT;
        struct pollfd p = { .fd = c->fd, .events = out ? POLLOUT : POLLIN };
        int r = poll(&p, 1, wait);
        if (r == 0)
            return -ETIMEDOUT;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

static ssize_t read_by_deadline(void *opaque, void *buf, size_t len)
{
    return io_by_deadline(opaque, buf, len, false);
}

static ssize_t write_by_deadline(void *opaque, const void *buf, size_t len)
{
    return io_by_deadline(opaque, (void *)buf, len, true);
}

/* Every read of c from now on ends by the deadline (timeout_ms from now,
 * -1: none). */
static void deadline_in(struct ctl_client *c, int timeout_ms)
{
    c->deadline_ms = timeout_ms >= 0 ? mono_ms() + (uint64_t)timeout_ms : 0;
    if (timeout_ms == 0)
        c->deadline_ms = mono_ms(); /* nothing to wait for: only what is there */
}

static int hung_up(struct ctl_client *c, struct gw_error *err)
{
    const char *why = ctl_tls_session_error(c->session);
    c->broken = -ECONNRESET;
    return gw_error_set(err, ECONNRESET, "the daemon closed the connection%s%s", why ? ": " : "",
                        why ? why : "");
}

/* One message, by the deadline set for the call (timeout_ms: its length,
 * for the message). */
static int recv_msg(struct ctl_client *c, int timeout_ms, struct json_object **msg,
                    struct gw_error *err)
{
    int r = ctl_recv(&c->io, msg, err);
    if (r == -ECONNRESET || r == -EIO)
        return hung_up(c, err);
    if (r == -ETIMEDOUT) {
        c->broken = r;
        return gw_error_set(err, ETIMEDOUT, "no answer from the daemon within %d ms", timeout_ms);
    }
    if (r < 0) {
        c->broken = r;
        if (!gw_error_is_set(err))
            gw_error_set(err, r, "cannot read from the daemon: %s", strerror(-r));
    }
    return r;
}

static bool is_reply_to(struct json_object *msg, int64_t id)
{
    struct json_object *v;
    if (!json_object_object_get_ex(msg, "id", &v))
        return false;
    /* null: an error about a request the server could not read */
    return json_object_is_type(v, json_type_null) ||
           (json_object_is_type(v, json_type_int) && json_object_get_int64(v) == id);
}

/* A reply that says something: a return, or an error object. Anything
 * else is not an error answer (the peer did not say it refused). */
static bool well_formed(struct json_object *msg)
{
    struct json_object *v;
    return json_object_object_get_ex(msg, "return", &v) ||
           (json_object_object_get_ex(msg, "error", &v) && json_object_is_type(v, json_type_object));
}

int ctl_client_call(struct ctl_client *c, const char *command, struct json_object *args,
                    struct json_object **ret, int timeout_ms, struct gw_error *err)
{
    if (ret)
        *ret = NULL;
    if (c->broken) {
        json_object_put(args);
        return gw_error_set(err, -c->broken, "the connection to the daemon is broken");
    }
    deadline_in(c, timeout_ms); /* for the whole call: events and other replies included */
    int64_t id = ++c->next_id;
    struct json_object *req = ctl_request_new(id, command, args);
    int r = ctl_send(&c->io, req);
    json_object_put(req);
    if (r == -EIO || r == -EPIPE || r == -ECONNRESET)
        return hung_up(c, err);
    if (r == -ETIMEDOUT || (r < 0 && r != -EMSGSIZE && r != -ENOMEM))
        c->broken = r; /* part of the request may have gone out */
    if (r == -ETIMEDOUT)
        return gw_error_set(err, ETIMEDOUT, "the daemon did not take the request within %d ms",
                            timeout_ms);
    if (r < 0)
        return gw_error_set(err, r, "cannot send to the daemon: %s", strerror(-r));
    for (;;) {
        struct json_object *msg;
        if ((r = recv_msg(c, timeout_ms, &msg, err)) < 0)
            return r;
        if (ctl_msg_kind(msg) == CTL_MSG_EVENT) {
            if (c->npending < CTL_CLIENT_PENDING_EVENTS)
                c->pending[c->npending++] = msg;
            else
                json_object_put(msg);
            continue;
        }
        bool mine = is_reply_to(msg, id);
        if (mine)
            r = well_formed(msg) ? ctl_reply_result(msg, ret, NULL, err) /* the class would die with msg */
                                 : gw_error_set(err, EBADMSG, "malformed reply from the daemon "
                                                "(neither a return nor an error object)");
        json_object_put(msg);
        if (mine)
            return r;
    }
}

int ctl_client_next_event(struct ctl_client *c, int timeout_ms, struct json_object **ev,
                          struct gw_error *err)
{
    if (c->npending) {
        *ev = c->pending[0];
        memmove(c->pending, c->pending + 1, --c->npending * sizeof(c->pending[0]));
        return 0;
    }
    deadline_in(c, timeout_ms);
    for (;;) {
        if (c->broken)
            return gw_error_set(err, -c->broken, "the connection to the daemon is broken");
        struct json_object *msg;
        int r = recv_msg(c, timeout_ms, &msg, err);
        if (r < 0)
            return r;
        if (ctl_msg_kind(msg) == CTL_MSG_EVENT) {
            *ev = msg;
            return 0;
        }
        json_object_put(msg);
    }
}

/* Say hello and refuse a daemon that speaks another protocol version: no
 * request of ours could mean to it what we mean (the caller closes). */
static int hello(struct ctl_client *c, const char *who, int timeout_ms, struct gw_error *err)
{
    int r = ctl_client_call(c, "hello", ctl_hello_args(who), &c->hello, timeout_ms, err);
    return r < 0 ? r : ctl_hello_reply_check(c->hello, err);
}

static void wrap_reads(struct ctl_client *c)
{
    c->raw = c->io;
    c->io.read = read_by_deadline;
    c->io.write = write_by_deadline;
    c->io.opaque = c;
}

struct ctl_client *ctl_client_connect(const char *uri, const struct ctl_tls_config *tls,
                                      const char *who, int timeout_ms, struct gw_error *err)
{
    struct ctl_uri u;
    if (ctl_uri_parse(uri, &u, err) < 0)
        return NULL;
    struct ctl_client *c = calloc(1, sizeof(*c));
    if (!c) {
        gw_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    c->fd = u.kind == CTL_URI_TCP ? connect_tcp(&u, timeout_ms, err)
                                  : connect_unix(&u, timeout_ms, err);
    if (c->fd < 0 || secure(c, u.kind == CTL_URI_TCP ? tls : NULL, timeout_ms, err) < 0 ||
        (wrap_reads(c), hello(c, who, timeout_ms, err)) < 0) {
        ctl_client_free(c);
        return NULL;
    }
    return c;
}

struct json_object *ctl_client_hello(const struct ctl_client *c) { return c->hello; }

void ctl_client_free(struct ctl_client *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < c->npending; i++)
        json_object_put(c->pending[i]);
    json_object_put(c->hello);
    ctl_tls_session_free(c->session);
    ctl_tls_free(c->tls);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}
