/* Blocking QMP client: one socket, a read buffer cut into messages by the
 * json-c tokener, replies matched by id, events queued. */
#define LOG_PREFIX "qmp-client"
#include "qmp/qmp_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "qmp/qmp_json.h"

struct qmp_client {
    int fd;
    int broken;                    /* sticky: -EPROTO / -ECONNRESET / ... */
    struct json_tokener *tok;
    size_t pending;                /* bytes of the message being parsed */
    char buf[65536];
    size_t off, len;
    struct json_object *greeting;
    struct json_object *events;    /* array, oldest first */
    unsigned long dropped;
    int64_t next_id;
};

/* ---- deadlines ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t deadline_of(int timeout_ms) { return timeout_ms < 0 ? -1 : now_ms() + timeout_ms; }

static int remaining(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t r = deadline - now_ms();
    return r < 0 ? 0 : (int)r;
}

/* ---- socket I/O ---- */

static int wait_fd(int fd, short ev, int64_t deadline)
{
    struct pollfd p = { .fd = fd, .events = ev };
    for (;;) {
        int r = poll(&p, 1, remaining(deadline));
        if (r > 0)
            return 0;
        if (r == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

/* *sent: the bytes that went, also on failure. */
static int send_all(struct qmp_client *c, const char *p, size_t len, int64_t deadline,
                    size_t *sent)
{
    *sent = 0;
    while (len) {
        ssize_t w = send(c->fd, p, len, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            len -= (size_t)w;
            *sent += (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return errno == EPIPE ? -ECONNRESET : -errno;
        int r = wait_fd(c->fd, POLLOUT, deadline);
        if (r < 0)
            return r;
    }
    return 0;
}

static int fill(struct qmp_client *c, int64_t deadline)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->buf, sizeof(c->buf), 0);
        if (n > 0) {
            c->off = 0;
            c->len = (size_t)n;
            return 0;
        }
        if (n == 0)
            return -ECONNRESET;
        if (errno != EAGAIN && errno != EINTR)
            return -errno;
        int r = wait_fd(c->fd, POLLIN, deadline);
        if (r < 0)
            return r;
    }
}

static bool is_space(char ch) { return ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t'; }

/* Cut the next message out of the buffer; 1 when one is complete, 0 when
 * more bytes are needed, -EPROTO on garbage. */
static int parse_buffered(struct qmp_client *c, struct json_object **msg)
{
    while (c->off < c->len) {
        if (c->pending == 0 && is_space(c->buf[c->off])) {
            c->off++;
            continue;
        }
        size_t avail = c->len - c->off;
        struct json_object *o = json_tokener_parse_ex(c->tok, c->buf + c->off, (int)avail);
        enum json_tokener_error e = json_tokener_get_error(c->tok);
        if (e == json_tokener_continue) {
            c->pending += avail;
            c->off = c->len;
            if (c->pending > QMP_CLIENT_MAX_MSG)
                return -EPROTO;
            return 0;
        }
        c->off += json_tokener_get_parse_end(c->tok);
        c->pending = 0;
        json_tokener_reset(c->tok);
        if (e != json_tokener_success || !json_object_is_type(o, json_type_object)) {
            json_object_put(o);
            return -EPROTO;
        }
        *msg = o;
        return 1;
    }
    return 0;
}

/* Read one message (an object), waiting until deadline. */
static int read_msg(struct qmp_client *c, int64_t deadline, struct json_object **msg)
{
    if (c->broken)
        return c->broken;
    for (;;) {
        int r = parse_buffered(c, msg);
        if (r == 1)
            return 0;
        if (r == 0)
            r = fill(c, deadline);
        if (r < 0 && r != -ETIMEDOUT) {
            c->broken = r;
            log_debug("connection lost: %s", strerror(-r));
        }
        if (r < 0)
            return r;
    }
}

/* ---- events ---- */

static void queue_event(struct qmp_client *c, struct json_object *ev)
{
    if (json_object_array_length(c->events) >= QMP_CLIENT_MAX_EVENTS) {
        json_object_array_del_idx(c->events, 0, 1);
        c->dropped++;
    }
    json_object_array_add(c->events, ev);
}

static bool event_matches(struct json_object *ev, const char *name)
{
    const char *n = qmp_json_get_str(ev, "event");
    return n && (!name || strcmp(n, name) == 0);
}

/* Remove and return the first queued event named name, or NULL. */
static struct json_object *take_event(struct qmp_client *c, const char *name)
{
    size_t n = json_object_array_length(c->events);
    for (size_t i = 0; i < n; i++) {
        struct json_object *ev = json_object_array_get_idx(c->events, i);
        if (event_matches(ev, name)) {
            json_object_get(ev);
            json_object_array_del_idx(c->events, i, 1);
            return ev;
        }
    }
    return NULL;
}

struct json_object *qmp_client_pop_event(struct qmp_client *c) { return take_event(c, NULL); }

unsigned long qmp_client_events_dropped(const struct qmp_client *c) { return c->dropped; }

int qmp_client_wait_event(struct qmp_client *c, const char *name, int timeout_ms,
                          struct json_object **event)
{
    int64_t deadline = deadline_of(timeout_ms);
    for (;;) {
        struct json_object *ev = take_event(c, name);
        if (ev) {
            *event = ev;
            return 0;
        }
        struct json_object *msg;
        int r = read_msg(c, deadline, &msg);
        if (r < 0)
            return r;
        if (qmp_json_get(msg, "event"))
            queue_event(c, msg);
        else
            json_object_put(msg); /* a late reply to a command that timed out */
    }
}

/* ---- commands ---- */

/* Error classes are static strings in struct qmp_error: known ones are
 * mapped, others become GenericError with the class in the text. */
static void reply_error(struct json_object *e, struct qmp_error *qerr)
{
    static const char *const known[] = { QMP_ERR_GENERIC, QMP_ERR_NOT_FOUND,
                                         QMP_ERR_DEVICE_INACTIVE, QMP_ERR_DEVICE_NOT_FOUND,
                                         "KVMMissingCap" };
    const char *cls = qmp_json_get_str(e, "class");
    const char *desc = qmp_json_get_str(e, "desc");
    for (size_t i = 0; cls && i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(cls, known[i]) == 0) {
            qmp_error_set(qerr, known[i], "%s", desc ? desc : "");
            return;
        }
    qmp_error_set(qerr, QMP_ERR_GENERIC, "[%s] %s", cls ? cls : "?", desc ? desc : "");
}

static int send_request(struct qmp_client *c, const char *cmd, struct json_object *args,
                        int64_t id, int64_t deadline)
{
    struct json_object *req = json_object_new_object();
    json_object_object_add(req, "execute", json_object_new_string(cmd));
    if (args)
        json_object_object_add(req, "arguments", args);
    json_object_object_add(req, "id", json_object_new_int64(id));
    size_t len;
    char *line = qmp_json_line(req, &len);
    json_object_put(req);
    if (!line)
        return -ENOMEM;
    size_t sent;
    int r = send_all(c, line, len, deadline, &sent);
    free(line);
    if (r == -ETIMEDOUT && sent > 0)
        c->broken = -EPIPE; /* the next request would follow half of this one */
    else if (r < 0 && r != -ETIMEDOUT)
        c->broken = r;
    return r;
}

static bool is_reply_to(struct json_object *msg, int64_t id)
{
    struct json_object *v = qmp_json_get(msg, "id");
    return v && json_object_is_type(v, json_type_int) && json_object_get_int64(v) == id;
}

int qmp_client_execute(struct qmp_client *c, const char *cmd, struct json_object *args,
                       struct json_object **ret, struct qmp_error *qerr, int timeout_ms)
{
    if (ret)
        *ret = NULL;
    if (c->broken) {
        json_object_put(args);
        return c->broken;
    }
    int64_t deadline = deadline_of(timeout_ms);
    int64_t id = ++c->next_id;
    int r = send_request(c, cmd, args, id, deadline);
    while (r == 0) {
        struct json_object *msg;
        if ((r = read_msg(c, deadline, &msg)) < 0)
            break;
        if (qmp_json_get(msg, "event")) {
            queue_event(c, msg);
            continue;
        }
        if (!is_reply_to(msg, id)) {
            json_object_put(msg);
            continue;
        }
        struct json_object *e = qmp_json_get(msg, "error");
        struct json_object *v;
        if (e) {
            reply_error(e, qerr);
            r = -EREMOTEIO;
        } else if (!json_object_object_get_ex(msg, "return", &v)) {
            r = -EPROTO;
        } else if (ret) {
            *ret = json_object_get(v);
        }
        json_object_put(msg);
        return r;
    }
    return r;
}

/* ---- set-up ---- */

static int read_greeting(struct qmp_client *c, int64_t deadline)
{
    struct json_object *msg;
    int r = read_msg(c, deadline, &msg);
    if (r < 0)
        return r;
    if (!qmp_json_get(msg, "QMP")) {
        json_object_put(msg);
        return -EPROTO;
    }
    c->greeting = msg;
    return 0;
}

static struct qmp_client *client_new(int fd)
{
    struct qmp_client *c = calloc(1, sizeof(*c));
    int fl = fcntl(fd, F_GETFL);
    if (!c || fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        goto err;
    c->fd = fd;
    c->tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
    c->events = json_object_new_array();
    if (!c->tok || !c->events)
        goto err;
    return c;
err:
    if (c) {
        c->fd = -1;
        qmp_client_free(c);
    }
    close(fd);
    errno = ENOMEM;
    return NULL;
}

static struct qmp_client *open_common(int fd, int timeout_ms, bool negotiate,
                                      struct gw_error *err)
{
    struct qmp_client *c = client_new(fd);
    if (!c) {
        gw_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    int64_t deadline = deadline_of(timeout_ms);
    int r = read_greeting(c, deadline);
    if (r < 0) {
        gw_error_set(err, -r, "QMP greeting: %s", strerror(-r));
        goto err_free;
    }
    if (negotiate) {
        struct qmp_error qe = { 0 };
        r = qmp_client_execute(c, "qmp_capabilities", NULL, NULL, &qe, remaining(deadline));
        if (r < 0) {
            gw_error_set(err, -r, "QMP negotiation: %s",
                         r == -EREMOTEIO ? qe.desc : strerror(-r));
            goto err_free;
        }
    }
    return c;
err_free:
    qmp_client_free(c);
    errno = -r;
    return NULL;
}

struct qmp_client *qmp_client_open(int fd, int timeout_ms, struct gw_error *err)
{
    return open_common(fd, timeout_ms, true, err);
}

struct qmp_client *qmp_client_open_raw(int fd, int timeout_ms, struct gw_error *err)
{
    return open_common(fd, timeout_ms, false, err);
}

static int try_connect(const char *path, int *fdp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    *fdp = fd;
    return 0;
}

struct qmp_client *qmp_client_connect(const char *path, int timeout_ms, struct gw_error *err)
{
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        gw_error_set(err, ENAMETOOLONG, "QMP socket path '%s' is too long", path);
        errno = ENAMETOOLONG;
        return NULL;
    }
    int64_t deadline = deadline_of(timeout_ms);
    int fd = -1, r;
    while ((r = try_connect(path, &fd)) == -ENOENT || r == -ECONNREFUSED) {
        if (remaining(deadline) == 0)
            break;
        struct timespec ts = { 0, 10 * 1000000 };
        nanosleep(&ts, NULL);
    }
    if (r < 0) {
        gw_error_set(err, -r, "cannot connect to QMP socket '%s': %s", path, strerror(-r));
        errno = -r;
        return NULL;
    }
    struct qmp_client *c = open_common(fd, remaining(deadline), true, err);
    if (!c)
        gw_error_prefix(err, "%s", path);
    return c;
}

void qmp_client_free(struct qmp_client *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    if (c->tok)
        json_tokener_free(c->tok);
    json_object_put(c->greeting);
    json_object_put(c->events);
    free(c);
}

struct json_object *qmp_client_greeting(const struct qmp_client *c) { return c->greeting; }

int qmp_client_fd(const struct qmp_client *c) { return c->fd; }
