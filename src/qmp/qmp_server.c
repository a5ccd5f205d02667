/* The QMP server: listening socket, clients (input through a qmp_session,
 * output through a capped queue), and events posted from any thread. */
#define LOG_PREFIX "qmp"
#include "qmp/qmp_server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "qmp/qmp_json.h"

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
    bool want_out;             /* EPOLLOUT registered */
    bool dead;                 /* to be closed by whoever sees it next */
};

/* Events cross threads through this queue. It outlives the server while a
 * drain is posted to the loop (then server is NULL and the drain frees it). */
struct event_queue {
    pthread_mutex_t lock;
    struct qmp_server *server;
    struct out_chunk *head, *tail;
    bool posted;
};

struct qmp_server {
    struct evloop *loop;
    struct qmp_version ver;
    int listen_fd;
    char *path;
    struct qmp_table table;
    struct qmp_client *clients[QMP_MAX_CLIENTS];
    struct event_queue *events;
};

static void client_close(struct qmp_client *c);

static void chunks_free(struct out_chunk *h)
{
    while (h) {
        struct out_chunk *n = h->next;
        free(h->data);
        free(h);
        h = n;
    }
}

static void client_kill(struct qmp_client *c, const char *why)
{
    if (!c->dead)
        log_debug("dropping client fd %d: %s", c->fd, why);
    c->dead = true;
    qmp_session_close(&c->session);
}

static void client_want_out(struct qmp_client *c, bool on)
{
    if (c->want_out == on)
        return;
    c->want_out = on;
    evloop_mod_fd(c->server->loop, c->fd, EPOLLIN | (on ? EPOLLOUT : 0));
}

static void client_flush(struct qmp_client *c)
{
    while (c->head) {
        struct out_chunk *h = c->head;
        ssize_t w = send(c->fd, h->data + h->off, h->len - h->off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            client_kill(c, strerror(errno));
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
    client_want_out(c, c->head != NULL);
}

/* Queue a line (takes ownership) and try to send it now. */
static void client_send(struct qmp_client *c, char *line, size_t len)
{
    if (c->dead) {
        free(line);
        return;
    }
    if (c->queued + len > QMP_MAX_OUTPUT) {
        log_warn("QMP client is not reading its replies (%zu bytes queued); dropping it",
                 c->queued);
        client_kill(c, "output queue full");
        free(line);
        return;
    }
    struct out_chunk *ch = malloc(sizeof(*ch));
    if (!ch) {
        free(line);
        client_kill(c, "out of memory");
        return;
    }
    *ch = (struct out_chunk){ line, len, 0, NULL };
    if (c->tail)
        c->tail->next = ch;
    else
        c->head = ch;
    c->tail = ch;
    c->queued += len;
    if (c->head == ch)
        client_flush(c);
}

static void session_out(void *opaque, char *line, size_t len) { client_send(opaque, line, len); }

static void client_read(struct qmp_client *c)
{
    char buf[16384];
    ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0)
        qmp_session_input(&c->session, buf, (size_t)n);
    else if (n == 0)
        client_kill(c, "end of file");
    else if (errno != EAGAIN && errno != EINTR)
        client_kill(c, strerror(errno));
}

static void client_cb(struct evloop *loop, int fd, uint32_t events, void *opaque)
{
    struct qmp_client *c = opaque;
    if (events & EPOLLIN)
        client_read(c);
    if (!c->dead && (events & EPOLLOUT))
        client_flush(c);
    if (!c->dead && (events & (EPOLLHUP | EPOLLERR)) && !(events & EPOLLIN))
        client_kill(c, "hang-up");
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
    chunks_free(c->head);
    free(c);
}

int qmp_server_add_client(struct qmp_server *s, int fd)
{
    int slot = -1;
    for (int i = 0; i < QMP_MAX_CLIENTS && slot < 0; i++)
        if (!s->clients[i])
            slot = i;
    if (slot < 0) {
        log_warn("refusing a QMP client: too many connections");
        close(fd);
        return -EMFILE;
    }
    int fl = fcntl(fd, F_GETFL);
    struct qmp_client *c = calloc(1, sizeof(*c));
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || !c) {
        int e = c ? errno : ENOMEM;
        free(c);
        close(fd);
        return -e;
    }
    c->server = s;
    c->fd = fd;
    int r = qmp_session_init(&c->session, &s->table, session_out, c);
    if (r == 0)
        r = evloop_add_fd(s->loop, fd, EPOLLIN, client_cb, c);
    if (r < 0) {
        qmp_session_fini(&c->session);
        close(fd);
        free(c);
        return r;
    }
    s->clients[slot] = c;
    struct json_object *g = qmp_json_greeting(&s->ver);
    size_t len;
    char *line = qmp_json_line(g, &len);
    json_object_put(g);
    if (line)
        client_send(c, line, len);
    if (c->dead) {
        client_close(c);
        return -EPIPE;
    }
    return 0;
}

static void accept_cb(struct evloop *loop, int fd, uint32_t events, void *opaque)
{
    int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (cfd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            log_warn("accept on the QMP socket: %s", strerror(errno));
        return;
    }
    qmp_server_add_client(opaque, cfd);
}

unsigned qmp_server_client_count(const struct qmp_server *s)
{
    unsigned n = 0;
    for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++)
        n += s->clients[i] != NULL;
    return n;
}

static int cmd_query_commands(void *opaque, struct json_object *args, struct json_object **ret,
                              struct qmp_error *err)
{
    struct qmp_server *s = opaque;
    struct json_object *a = json_object_new_array();
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string("qmp_capabilities"));
    json_object_array_add(a, o);
    for (unsigned i = 0; i < s->table.n; i++) {
        o = json_object_new_object();
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
    s->events = calloc(1, sizeof(*s->events));
    char *pkg = strdup(ver->package ? ver->package : "");
    if (!s->events || !pkg) {
        free(pkg);
        free(s->events);
        free(s);
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutex_init(&s->events->lock, NULL);
    s->events->server = s;
    s->loop = loop;
    s->ver = *ver;
    s->ver.package = pkg;
    s->listen_fd = -1;
    qmp_table_init(&s->table);
    struct qmp_command qc = { .name = "query-commands", .fn = cmd_query_commands, .opaque = s };
    qmp_table_add(&s->table, &qc);
    return s;
}

static void event_queue_free(struct event_queue *q)
{
    chunks_free(q->head);
    pthread_mutex_destroy(&q->lock);
    free(q);
}

static void broadcast(struct qmp_server *s, const struct out_chunk *ev);

/* Hand the events still queued to the clients now (the loop may not turn
 * again: an event raised just before the VMM ends must still go out). */
static void flush_events(struct qmp_server *s)
{
    struct event_queue *q = s->events;
    pthread_mutex_lock(&q->lock);
    struct out_chunk *list = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->lock);
    for (struct out_chunk *e = list; e; e = e->next)
        broadcast(s, e);
    chunks_free(list);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The end: the client's queued output (a reply, SHUTDOWN) goes to its
 * socket while it reads, until the deadline. */
static void client_drain(struct qmp_client *c, int64_t deadline)
{
    for (;;) {
        client_flush(c);
        int64_t left = deadline - now_ms();
        if (!c->head || c->dead || left <= 0)
            return;
        struct pollfd p = { .fd = c->fd, .events = POLLOUT };
        if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
            return;
    }
}

void qmp_server_free(struct qmp_server *s)
{
    if (!s)
        return;
    flush_events(s);
    int64_t deadline = now_ms() + QMP_FREE_FLUSH_MS;
    for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++) {
        if (!s->clients[i])
            continue;
        client_drain(s->clients[i], deadline);
        client_close(s->clients[i]);
    }
    if (s->listen_fd >= 0) {
        evloop_del_fd(s->loop, s->listen_fd);
        close(s->listen_fd);
        unlink(s->path);
    }
    struct event_queue *q = s->events;
    pthread_mutex_lock(&q->lock);
    q->server = NULL;
    bool posted = q->posted;
    pthread_mutex_unlock(&q->lock);
    if (!posted)
        event_queue_free(q);
    free(s->path);
    free((char *)s->ver.package);
    free(s);
}

/* Remove a stale socket at path; refuse to remove anything else. */
static int remove_stale(const char *path, struct gw_error *err)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : gw_error_set(err, errno, "QMP socket '%s': %s", path,
                                                   strerror(errno));
    if (!S_ISSOCK(st.st_mode))
        return gw_error_set(err, EEXIST, "QMP socket '%s': a file that is not a socket is in the way",
                            path);
    if (unlink(path) < 0 && errno != ENOENT)
        return gw_error_set(err, errno, "QMP socket '%s': %s", path, strerror(errno));
    return 0;
}

static int bind_listen(int fd, const char *path, struct gw_error *err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    /* umask closes the window between bind() and chmod(). */
    mode_t old = umask(0077);
    int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (r < 0 || chmod(path, 0600) < 0 || listen(fd, 16) < 0)
        return gw_error_set(err, errno, "cannot listen on QMP socket '%s': %s", path,
                            strerror(errno));
    return 0;
}

int qmp_server_listen(struct qmp_server *s, const char *path, struct gw_error *err)
{
    struct sockaddr_un sa;
    if (strlen(path) >= sizeof(sa.sun_path))
        return gw_error_set(err, ENAMETOOLONG, "QMP socket path '%s' is too long", path);
    if (s->listen_fd >= 0)
        return gw_error_set(err, EBUSY, "the QMP server already listens on '%s'", s->path);
    int r = remove_stale(path, err);
    if (r < 0)
        return r;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return gw_error_set(err, errno, "socket: %s", strerror(errno));
    if ((r = bind_listen(fd, path, err)) < 0)
        goto err_close;
    if ((r = evloop_add_fd(s->loop, fd, EPOLLIN, accept_cb, s)) < 0) {
        gw_error_set(err, -r, "event loop: %s", strerror(-r));
        goto err_unlink;
    }
    if (!(s->path = strdup(path))) {
        evloop_del_fd(s->loop, fd);
        r = gw_error_set(err, ENOMEM, "out of memory");
        goto err_unlink;
    }
    s->listen_fd = fd;
    return 0;

err_unlink:
    unlink(path);
err_close:
    close(fd);
    return r;
}

int qmp_server_register(struct qmp_server *s, const struct qmp_command *cmd)
{
    if (cmd->name && strcmp(cmd->name, "qmp_capabilities") == 0)
        return -EEXIST;
    return qmp_table_add(&s->table, cmd);
}

const struct qmp_table *qmp_server_table(const struct qmp_server *s) { return &s->table; }

static void broadcast(struct qmp_server *s, const struct out_chunk *ev)
{
    for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++) {
        struct qmp_client *c = s->clients[i];
        if (!c || !c->session.negotiated)
            continue;
        char *copy = malloc(ev->len);
        if (copy) {
            memcpy(copy, ev->data, ev->len);
            client_send(c, copy, ev->len);
        }
        if (c->dead)
            client_close(c);
    }
}

/* Loop thread: hand every queued event to the clients. */
static void drain_events(void *opaque)
{
    struct event_queue *q = opaque;
    pthread_mutex_lock(&q->lock);
    struct out_chunk *list = q->head;
    q->head = q->tail = NULL;
    q->posted = false;
    struct qmp_server *s = q->server;
    pthread_mutex_unlock(&q->lock);
    if (!s) {               /* the server was freed meanwhile */
        chunks_free(list);
        event_queue_free(q);
        return;
    }
    for (struct out_chunk *e = list; e; e = e->next)
        broadcast(s, e);
    chunks_free(list);
}

static struct out_chunk *event_line(const char *event, struct json_object *data)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct json_object *o = qmp_json_event(event, data, tv.tv_sec, tv.tv_usec);
    struct out_chunk *ch = calloc(1, sizeof(*ch));
    if (ch)
        ch->data = qmp_json_line(o, &ch->len);
    json_object_put(o);
    if (ch && !ch->data) {
        free(ch);
        ch = NULL;
    }
    return ch;
}

void qmp_server_emit(struct qmp_server *s, const char *event, struct json_object *data)
{
    struct out_chunk *ch = event_line(event, data);
    if (!ch) {
        log_warn("event %s lost: out of memory", event);
        return;
    }
    struct event_queue *q = s->events;
    pthread_mutex_lock(&q->lock);
    if (q->tail)
        q->tail->next = ch;
    else
        q->head = ch;
    q->tail = ch;
    bool post = !q->posted;
    q->posted = true;
    pthread_mutex_unlock(&q->lock);
    log_debug("event %s", event);
    if (post && evloop_post(s->loop, drain_events, q) < 0) {
        log_warn("event %s delayed: cannot post to the event loop", event);
        pthread_mutex_lock(&q->lock);
        q->posted = false;
        pthread_mutex_unlock(&q->lock);
    }
}
