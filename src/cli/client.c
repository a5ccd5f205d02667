/* godwit's connection to the daemon: connect (Unix or TCP+TLS), hello,
 * requests and events. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/cli.h"
#include "control/control.h"

#define CLI_HANDSHAKE_MS 10000

struct cli_conn {
    int fd;
    struct ctl_tls *tls;
    struct ctl_tls_session *session;
    struct ctl_io io;
    int64_t next_id;
    struct json_object *pending[64];  /* events that arrived before a reply */
    unsigned npending;
};

static int connect_unix(const struct ctl_uri *u, struct gw_error *err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", u->path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return gw_error_set(err, errno, "socket: %m");
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return gw_error_set(err, e, "failed to connect to the daemon at unix:%s: %s", u->path,
                            strerror(e));
    }
    return fd;
}

static int connect_tcp(const struct ctl_uri *u, struct gw_error *err)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res;
    int g = getaddrinfo(u->host, u->port, &hints, &res);
    if (g != 0)
        return gw_error_set(err, EHOSTUNREACH, "cannot resolve '%s': %s", u->host, gai_strerror(g));
    int fd = -1, e = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return gw_error_set(err, e ? e : EHOSTUNREACH, "failed to connect to the daemon at tcp:%s:%s: %s",
                            u->host, u->port, strerror(e ? e : EHOSTUNREACH));
    return fd;
}

static int secure(struct cli *cli, struct cli_conn *c, bool tcp, struct gw_error *err)
{
    ctl_io_init_fd(&c->io, &c->fd);
    if (!tcp || !ctl_tls_configured(&cli->tls))
        return 0;
    c->tls = ctl_tls_new(&cli->tls, false, err);
    if (!c->tls)
        return -EINVAL;
    c->session = ctl_tls_session_new(c->tls, c->fd, CLI_HANDSHAKE_MS, err);
    if (!c->session)
        return -EACCES;
    ctl_tls_session_io(c->session, &c->io);
    return 0;
}

static int call(struct cli_conn *c, const char *command, struct json_object *args,
                struct json_object **ret, struct gw_error *err);

static int open_conn(struct cli *cli, struct gw_error *err)
{
    struct ctl_uri u;
    int r = ctl_uri_parse(cli->uri, &u, err);
    if (r < 0)
        return r;
    struct cli_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return gw_error_set(err, ENOMEM, "out of memory");
    c->fd = u.kind == CTL_URI_TCP ? connect_tcp(&u, err) : connect_unix(&u, err);
    if (c->fd < 0) {
        r = c->fd;
        free(c);
        return r;
    }
    cli->conn = c;
    if ((r = secure(cli, c, u.kind == CTL_URI_TCP, err)) < 0)
        return r;
    r = call(c, "hello", ctl_hello_args("godwit " GODWIT_VERSION), NULL, err);
    if (r == -ECONNRESET)
        gw_error_set(err, ECONNRESET, "the daemon closed the connection");
    return r;
}

static int closed(struct cli_conn *c, struct gw_error *err)
{
    const char *why = ctl_tls_session_error(c->session);
    return gw_error_set(err, ECONNRESET, "the daemon closed the connection%s%s", why ? ": " : "",
                        why ? why : "");
}

static int recv_msg(struct cli_conn *c, struct json_object **msg, struct gw_error *err)
{
    int r = ctl_recv(&c->io, msg, err);
    if (r == -ECONNRESET || r == -EIO)
        return closed(c, err);
    if (r < 0 && !gw_error_is_set(err))
        gw_error_set(err, r, "cannot read from the daemon: %s", strerror(-r));
    return r;
}

static int call(struct cli_conn *c, const char *command, struct json_object *args,
                struct json_object **ret, struct gw_error *err)
{
    int64_t id = ++c->next_id;
    struct json_object *req = ctl_request_new(id, command, args);
    int r = ctl_send(&c->io, req);
    json_object_put(req);
    if (r == -EIO || r == -EPIPE || r == -ECONNRESET)
        return closed(c, err);
    if (r < 0)
        return gw_error_set(err, r, "cannot send to the daemon: %s", strerror(-r));
    for (;;) {
        struct json_object *msg, *mid;
        if ((r = recv_msg(c, &msg, err)) < 0)
            return r;
        if (ctl_msg_kind(msg) == CTL_MSG_EVENT && c->npending < 64) {
            c->pending[c->npending++] = msg;
            continue;
        }
        bool mine = json_object_object_get_ex(msg, "id", &mid) &&
                    (json_object_is_type(mid, json_type_null) || json_object_get_int64(mid) == id);
        if (mine)
            r = ctl_reply_result(msg, ret, NULL, err);
        json_object_put(msg);
        if (mine)
            return r;
    }
}

int cli_call(struct cli *cli, const char *command, struct json_object *args,
             struct json_object **ret, struct gw_error *err)
{
    if (ret)
        *ret = NULL;
    if (!cli->conn) {
        int r = open_conn(cli, err);
        if (r < 0) {
            json_object_put(args);
            cli_disconnect(cli);
            return r;
        }
    }
    return call(cli->conn, command, args, ret, err);
}

int cli_next_event(struct cli *cli, int timeout_ms, struct json_object **ev, struct gw_error *err)
{
    struct cli_conn *c = cli->conn;
    if (c->npending) {
        *ev = c->pending[0];
        memmove(c->pending, c->pending + 1, --c->npending * sizeof(c->pending[0]));
        return 0;
    }
    struct timeval tv = { 0, 0 };
    if (timeout_ms > 0) {
        tv.tv_sec = timeout_ms / 1000;
        tv.tv_usec = (timeout_ms % 1000) * 1000;
    }
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    for (;;) {
        struct json_object *msg;
        int r = ctl_recv(&c->io, &msg, err);
        if (r == -ETIMEDOUT)
            return r;
        if (r < 0)
            return r == -ECONNRESET || r == -EIO ? closed(c, err) : r;
        if (ctl_msg_kind(msg) == CTL_MSG_EVENT) {
            *ev = msg;
            return 0;
        }
        json_object_put(msg);
    }
}

void cli_disconnect(struct cli *cli)
{
    struct cli_conn *c = cli->conn;
    if (!c)
        return;
    for (unsigned i = 0; i < c->npending; i++)
        json_object_put(c->pending[i]);
    ctl_tls_session_free(c->session);
    ctl_tls_free(c->tls);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
    cli->conn = NULL;
}
