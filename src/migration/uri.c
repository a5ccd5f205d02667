#include "migration/uri.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int parse_tcp(const char *rest, struct mig_uri *out, struct gw_error *err)
{
    const char *colon;
    if (rest[0] == '[') {
        const char *close = strchr(rest, ']');
        if (!close || close[1] != ':')
            return gw_error_set(err, EINVAL, "bad IPv6 address in tcp URI");
        size_t hl = (size_t)(close - rest - 1);
        if (hl == 0 || hl >= sizeof(out->host))
            return gw_error_set(err, EINVAL, "bad host in tcp URI");
        memcpy(out->host, rest + 1, hl);
        out->host[hl] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(rest, ':');
        if (!colon)
            return gw_error_set(err, EINVAL, "tcp URI needs HOST:PORT");
        size_t hl = (size_t)(colon - rest);
        if (hl >= sizeof(out->host))
            return gw_error_set(err, EINVAL, "host name too long");
        memcpy(out->host, rest, hl);
        out->host[hl] = '\0';
        if (strchr(out->host, ':'))
            return gw_error_set(err, EINVAL, "IPv6 addresses must be in brackets");
    }
    const char *port = colon + 1;
    size_t pl = strlen(port);
    if (pl == 0 || pl >= sizeof(out->port) || strspn(port, "0123456789") != pl)
        return gw_error_set(err, EINVAL, "bad port '%s' in tcp URI", port);
    long v = strtol(port, NULL, 10);
    if (v < 0 || v > 65535)
        return gw_error_set(err, EINVAL, "port %ld out of range", v);
    memcpy(out->port, port, pl + 1);
    return 0;
}

int mig_uri_parse(const char *uri, struct mig_uri *out, struct gw_error *err)
{
    memset(out, 0, sizeof(*out));
    if (!uri)
        return gw_error_set(err, EINVAL, "missing URI");
    if (strncmp(uri, "tcp:", 4) == 0) {
        out->kind = MIG_URI_TCP;
        return parse_tcp(uri + 4, out, err);
    }
    const char *path = NULL;
    if (strncmp(uri, "unix:", 5) == 0) {
        out->kind = MIG_URI_UNIX;
        path = uri + 5;
        if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
            return gw_error_set(err, ENAMETOOLONG, "unix socket path too long");
    } else if (strncmp(uri, "file:", 5) == 0) {
        out->kind = MIG_URI_FILE;
        path = uri + 5;
    } else {
        return gw_error_set(err, EINVAL, "unknown migration URI '%s' (use tcp:HOST:PORT, "
                            "unix:PATH or file:PATH)", uri);
    }
    if (!*path || strlen(path) >= sizeof(out->path))
        return gw_error_set(err, EINVAL, "bad path in URI '%s'", uri);
    strcpy(out->path, path);
    return 0;
}

void mig_uri_format(const struct mig_uri *u, char *buf, unsigned len)
{
    switch (u->kind) {
    case MIG_URI_TCP:
        snprintf(buf, len, strchr(u->host, ':') ? "tcp:[%s]:%s" : "tcp:%s:%s", u->host, u->port);
        break;
    case MIG_URI_UNIX: snprintf(buf, len, "unix:%s", u->path); break;
    case MIG_URI_FILE: snprintf(buf, len, "file:%s", u->path); break;
    }
}

static void tune_socket(int fd, bool tcp)
{
    /* Deep socket buffers keep both ends busy while the other copies; the
     * FORCE variants pass net.core.{w,r}mem_max when we may (root). */
    int big = 8 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big)) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    if (tcp) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
}

void mig_socket_liveness(int fd, unsigned timeout_ms)
{
    int one = 1;
    mig_socket_deadline(fd, timeout_ms);
    /* Page requests and their answers are small and latency-bound. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void mig_socket_deadline(int fd, unsigned timeout_ms)
{
    /* A silent peer (cable cut, link down, process stopped) must surface as
     * an error within about timeout_ms, not after TCP's ~15 minutes:
     * keepalive probes every second while idle, and TCP_USER_TIMEOUT bounds
     * how long sent data may stay unacknowledged (and, on Linux, how long
     * the peer's window may stay shut). Unix sockets need none. */
    int one = 1, idle = 1, cnt = (int)(timeout_ms / 1000 ? timeout_ms / 1000 : 1);
    unsigned uto = timeout_ms;
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0)
        return;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto));
}

/* connect() that gives up after MIG_CONNECT_TIMEOUT_MS, or once *cancel
 * is set (looked at every 100 ms): an address that drops the SYN would
 * otherwise hold the caller ~2 minutes. -1 with errno on failure. */
static int connect_bounded(int fd, const struct sockaddr *sa, socklen_t len,
                           const volatile bool *cancel)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    int e = connect(fd, sa, len) == 0 ? 0 : errno;
    for (int waited = 0; e == EINPROGRESS;) {
        struct pollfd p = { fd, POLLOUT, 0 };
        int n = poll(&p, 1, 100);
        socklen_t el = sizeof(e);
        if (n > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0)
            e = errno;
        else if (n < 0 && errno != EINTR)
            e = errno;
        else if (n <= 0 && cancel && *cancel)
            e = ECANCELED;
        else if (n <= 0 && (waited += 100) >= MIG_CONNECT_TIMEOUT_MS)
            e = ETIMEDOUT;
    }
    fcntl(fd, F_SETFL, fl);
    errno = e;
    return e ? -1 : 0;
}

static int tcp_socket(const struct mig_uri *u, const volatile bool *cancel, bool listen_side,
                      struct gw_error *err)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = listen_side ? AI_PASSIVE : 0 };
    struct addrinfo *res, *ai;
    const char *host = u->host[0] ? u->host : NULL;
    int r = getaddrinfo(host, u->port, &hints, &res);
    if (r != 0)
        return gw_error_set(err, EHOSTUNREACH, "cannot resolve '%s': %s", u->host, gai_strerror(r));
    int fd = -1, last = 0;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (listen_side) {
            int one = 1;
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            tune_socket(fd, true);
            if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 8) == 0)
                break;
        } else {
            tune_socket(fd, true);
            if (connect_bounded(fd, ai->ai_addr, ai->ai_addrlen, cancel) == 0)
                break;
        }
        last = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return gw_error_set(err, last, "cannot %s tcp:%s:%s: %s", listen_side ? "listen on" : "connect to",
                            u->host, u->port, strerror(last));
    return fd;
}

static int unix_socket(const struct mig_uri *u, bool listen_side, struct gw_error *err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", u->path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return gw_error_set(err, errno, "socket: %s", strerror(errno));
    tune_socket(fd, false);
    if (listen_side) {
        unlink(u->path);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0) {
            int e = errno;
            close(fd);
            return gw_error_set(err, e, "cannot listen on unix:%s: %s", u->path, strerror(e));
        }
    } else if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return gw_error_set(err, e, "cannot connect to unix:%s: %s", u->path, strerror(e));
    }
    return fd;
}

int mig_uri_connect(const struct mig_uri *u, const volatile bool *cancel, struct gw_error *err)
{
    switch (u->kind) {
    case MIG_URI_TCP: return tcp_socket(u, cancel, false, err);
    case MIG_URI_UNIX: return unix_socket(u, false, err);
    case MIG_URI_FILE: {
        int fd = open(u->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            return gw_error_set(err, errno, "cannot create '%s': %s", u->path, strerror(errno));
        return fd;
    }
    }
    return gw_error_set(err, EINVAL, "bad URI kind");
}

int mig_uri_listen(const struct mig_uri *u, bool *is_listener, struct gw_error *err)
{
    *is_listener = u->kind != MIG_URI_FILE;
    switch (u->kind) {
    case MIG_URI_TCP: return tcp_socket(u, NULL, true, err);
    case MIG_URI_UNIX: return unix_socket(u, true, err);
    case MIG_URI_FILE: {
        int fd = open(u->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return gw_error_set(err, errno, "cannot open '%s': %s", u->path, strerror(errno));
        return fd;
    }
    }
    return gw_error_set(err, EINVAL, "bad URI kind");
}
