#define LOG_PREFIX "qmp"
#include "qmp/qmp_server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"

struct out_chunk {
    char *data;
    size_t len, off;
    struct out_chunk *next;
};

struct qmp_client {
    struct qmp_server *server;
    int fd;
    struct qmp_session session;
    struct out_chunk *head, *tail;
    size_t queued;
    bool dead;
};

struct qmp_server {
    struct evloop *loop;
    struct qmp_version ver;
    int listen_fd;
    char *path;
    struct qmp_table table;
    struct qmp_client *clients[QMP_MAX_CLIENTS];
};

struct pending_event {
    struct qmp_server *server;
    char *line;
    size_t len;
};

static void client_close(struct qmp_client *c);

static void client_flush(struct qmp_client *c)
{
    while (c->head) {
        struct out_chunk *h = c->head;
        ssize_t w = send(c->fd, h->data + h->off, h->len - h->off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            c->dead = true;
            return;
        }
        h->off += (size_t)w;
        c->queued -= (size_t)w;
        if (h->off < h->len)
            break;
        c->head = h->next;
        if (!c->head)
            c->tail = NULL;
        free(h->data);
        free(h);
    }
    evloop_mod_fd(c->server->loop, c->fd, EPOLLIN | (c->head ? EPOLLOUT : 0));
}

/* Queue a line (takes ownership). */
static void client_send(struct qmp_client *c, char *line, size_t len)
{
    if (c->dead || c->queued + len > QMP_MAX_OUTPUT) {
        if (!c->dead)
            log_warn("client is not reading its replies; dropping it");
        c->dead = true;
        free(line);
        return;
    }
    struct out_chunk *ch = malloc(sizeof(*ch));
    if (!ch) {
        free(line);
        c->dead = true;
        return;
    }
    *ch = (struct out_chunk){ line, len, 0, NULL };
    if (c->tail)
        c->tail->next = ch;
    else
        c->head = ch;
    c->tail = ch;
    c->queued += len;
    client_flush(c);
}

static void session_out(void *opaque, char *line, size_t len) { client_send(opaque, line, len); }

static void client_cb(struct evloop *loop, int fd, uint32_t events, void *opaque)
{
    struct qmp_client *c = opaque;
    if (events & EPOLLIN) {
        char buf[16384];
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            c->dead = true;
        else if (n > 0)
            qmp_session_input(&c->session, buf, (size_t)n);
    }
    if (!c->dead && (events & EPOLLOUT))
        client_flush(c);
    if (!c->dead && (events & (EPOLLHUP | EPOLLERR)) && !(events & EPOLLIN))
        c->dead = true;
    if (c->dead)
        client_close(c);
}

static void client_close(struct qmp_client *c)
{
    struct qmp_server *s = c->server;
    for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++)
        if (s->clients[i] == c)
            s->clients[i] = NULL;
    evloop_del_fd(s->loop, c->fd);
    close(c->fd);
    qmp_session_fini(&c->session);
    while (c->head) {
        struct out_chunk *n = c->head->next;
        free(c->head->data);
        free(c->head);
        c->head = n;
    }
    free(c);
    log_debug("client disconnected");
}

static char *greeting(const struct qmp_server *s, size_t *len)
{
    char *g = NULL;
    int n = asprintf(&g,
                     "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": %d, \"minor\": %d, \"major\": %d}, "
                     "\"package\": \"%s\"}, \"capabilities\": []}}\r\n",
                     s->ver.micro, s->ver.minor, s->ver.major, s->ver.package ? s->ver.package : "");
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return g;
}

static void accept_cb(struct evloop *loop, int fd, uint32_t events, void *opaque)
{
    struct qmp_server *s = opaque;
    int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (cfd < 0)
        return;
    int slot = -1;
    for (int i = 0; i < QMP_MAX_CLIENTS; i++)
        if (!s->clients[i]) {
            slot = i;
            break;
        }
    struct qmp_client *c = slot >= 0 ? calloc(1, sizeof(*c)) : NULL;
    if (!c) {
        log_warn("refusing a QMP client: too many connections");
        close(cfd);
        return;
    }
    c->server = s;
    c->fd = cfd;
    if (qmp_session_init(&c->session, &s->table, session_out, c) < 0 ||
        evloop_add_fd(loop, cfd, EPOLLIN, client_cb, c) < 0) {
        qmp_session_fini(&c->session);
        close(cfd);
        free(c);
        return;
    }
    s->clients[slot] = c;
    size_t len;
    char *g = greeting(s, &len);
    if (g)
        client_send(c, g, len);
    if (c->dead)
        client_close(c);
}

static int cmd_query_commands(void *opaque, struct json_object *args, struct json_object **ret,
                              struct qmp_error *err)
{
    struct qmp_server *s = opaque;
    struct json_object *a = json_object_new_array();
    json_object_array_add(a, json_tokener_parse("{\"name\": \"qmp_capabilities\"}"));
    for (unsigned i = 0; i < s->table.n; i++) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string(s->table.cmds[i].name));
        json_object_array_add(a, o);
    }
    *ret = a;
    return 0;
}

struct qmp_server *qmp_server_new(struct evloop *loop, const struct qmp_version *ver)
{
    struct qmp_server *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->loop = loop;
    s->ver = *ver;
    s->listen_fd = -1;
    qmp_table_init(&s->table);
    struct qmp_command qc = { .name = "query-commands", .fn = cmd_query_commands, .opaque = s };
    qmp_table_add(&s->table, &qc);
    return s;
}

void qmp_server_free(struct qmp_server *s)
{
    if (!s)
        return;
    for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++)
        if (s->clients[i])
            client_close(s->clients[i]);
    if (s->listen_fd >= 0) {
        evloop_del_fd(s->loop, s->listen_fd);
        close(s->listen_fd);
        unlink(s->path);
    }
    free(s->path);
    free(s);
}

int qmp_server_listen(struct qmp_server *s, const char *path, struct gw_error *err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa.sun_path))
        return gw_error_set(err, ENAMETOOLONG, "QMP socket path '%s' is too long", path);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return gw_error_set(err, errno, "socket: %s", strerror(errno));
    unlink(path);
    mode_t old = umask(0077);
    int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (r < 0 || listen(fd, 8) < 0) {
        int e = errno;
        close(fd);
        return gw_error_set(err, e, "cannot listen on QMP socket '%s': %s", path, strerror(e));
    }
    if ((r = evloop_add_fd(s->loop, fd, EPOLLIN, accept_cb, s)) < 0) {
        close(fd);
        return gw_error_set(err, -r, "event loop: %s", strerror(-r));
    }
    s->listen_fd = fd;
    s->path = strdup(path);
    return 0;
}

int qmp_server_register(struct qmp_server *s, const struct qmp_command *cmd)
{
    return qmp_table_add(&s->table, cmd);
}

const struct qmp_table *qmp_server_table(const struct qmp_server *s) { return &s->table; }

static void deliver_event(void *opaque)
{
    struct pending_event *ev = opaque;
    struct qmp_server *s = ev->server;
    for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++) {
        struct qmp_client *c = s->clients[i];
        if (!c || !c->session.negotiated)
            continue;
        char *copy = malloc(ev->len);
        if (!copy)
            continue;
        memcpy(copy, ev->line, ev->len);
        client_send(c, copy, ev->len);
        if (c->dead)
            client_close(c);
    }
    free(ev->line);
    free(ev);
}

void qmp_server_emit(struct qmp_server *s, const char *event, struct json_object *data)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "event", json_object_new_string(event));
    if (data)
        json_object_object_add(o, "data", data);
    struct json_object *ts = json_object_new_object();
    json_object_object_add(ts, "seconds", json_object_new_int64(tv.tv_sec));
    json_object_object_add(ts, "microseconds", json_object_new_int64(tv.tv_usec));
    json_object_object_add(o, "timestamp", ts);
    const char *txt = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    struct pending_event *ev = malloc(sizeof(*ev));
    size_t len = strlen(txt);
    char *line = malloc(len + 3);
    if (!ev || !line) {
        free(ev);
        free(line);
        json_object_put(o);
        return;
    }
    memcpy(line, txt, len);
    memcpy(line + len, "\r\n", 3);
    json_object_put(o);
    *ev = (struct pending_event){ s, line, len + 2 };
    log_debug("event %s", event);
    if (evloop_post(s->loop, deliver_event, ev) < 0) {
        free(line);
        free(ev);
    }
}
