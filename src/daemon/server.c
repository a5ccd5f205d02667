/* godwitd's listeners and client connections. */
#define LOG_PREFIX "server"
#include "daemon/server.h"

#include <errno.h>
#include <stdio.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "control/control.h"
#include "control/control_tls.h"
#include "daemon/migrate.h"

#define SERVER_MAX_LISTEN DAEMON_MAX_LISTEN

struct listener {
    struct server *srv;
    int fd;
    bool tcp;
    char spec[128];
    char path[108];
    pthread_t thread;
    bool started;
    unsigned nhandshakes;        /* connections still in their TLS handshake (srv->lock) */
};

struct daemon_client {
    struct server *srv;
    struct listener *listener;
    struct daemon_client *next;
    bool counted;                /* in srv->nclients (an authenticated client) */
    bool handshaking;            /* in listener->nhandshakes */
    int fd;
    bool tcp;
    uid_t uid;
    char peer[300];
    struct ctl_tls_session *tls;
    struct ctl_io io;
    pthread_mutex_t wlock;       /* one message at a time on the wire */
    bool hello_done;
    /* events */
    struct event_sub *sub;
    pthread_mutex_t evlock;
    pthread_cond_t evcond;
    char *evq[SERVER_EVENT_QUEUE];       /* serialised events, malloc'd */
    size_t evlen[SERVER_EVENT_QUEUE];
    unsigned evhead, evcount;
    bool ev_overflow;            /* its queue overflowed: the connection is being closed */
    bool ev_stop;
    pthread_t writer;
    bool writer_started;
};

struct server {
    struct daemon *dm;
    struct ctl_tls *tls;
    struct listener listeners[SERVER_MAX_LISTEN];
    unsigned nlisteners;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct daemon_client *clients;
    unsigned nthreads;           /* client threads alive (every connection) */
    unsigned nclients;           /* authenticated clients: unix, TLS after its handshake */
    bool stopping;
};

/* ---- sending ---- */

static int send_msg(struct daemon_client *c, struct json_object *msg)
{
    pthread_mutex_lock(&c->wlock);
    int r = ctl_send(&c->io, msg);
    pthread_mutex_unlock(&c->wlock);
    json_object_put(msg);
    return r;
}

static int send_error(struct daemon_client *c, struct json_object *id, const char *cls,
                      const char *desc)
{
    return send_msg(c, ctl_reply_error(id, cls, desc));
}

/* ---- events ---- */

/* A subscriber that does not read its events as fast as they come gets
 * SERVER_EVENT_QUEUE of them queued; one more and it is disconnected (as
 * the VMM drops a QMP client whose output backs up): dropping events
 * silently would leave it believing it saw every change, in order. Its
 * threads see the connection shut down and end; the client sees it close. */
static void overflow(struct daemon_client *c)
{
    if (c->ev_overflow)
        return;
    c->ev_overflow = true;
    log_warn("%s: disconnecting an event subscriber that fell %u events behind", c->peer,
             SERVER_EVENT_QUEUE);
    shutdown(c->fd, SHUT_RDWR);
}

static void deliver(void *opaque, struct json_object *ev, const char *text, size_t len)
{
    struct daemon_client *c = opaque;
    pthread_mutex_lock(&c->evlock);
    char *copy = c->evcount < SERVER_EVENT_QUEUE ? malloc(len) : NULL;
    if (!copy) { /* the queue is full (or no memory: an event lost all the same) */
        overflow(c);
        pthread_mutex_unlock(&c->evlock);
        return;
    }
    memcpy(copy, text, len);
    unsigned tail = (c->evhead + c->evcount) % SERVER_EVENT_QUEUE;
    c->evq[tail] = copy;
    c->evlen[tail] = len;
    c->evcount++;
    pthread_cond_signal(&c->evcond);
    pthread_mutex_unlock(&c->evlock);
}

static void *writer_main(void *p)
{
    struct daemon_client *c = p;
    pthread_mutex_lock(&c->evlock);
    for (;;) {
        while (!c->ev_stop && c->evcount == 0)
            pthread_cond_wait(&c->evcond, &c->evlock);
        if (c->ev_stop)
            break;
        char *text = c->evq[c->evhead];
        size_t len = c->evlen[c->evhead];
        c->evhead = (c->evhead + 1) % SERVER_EVENT_QUEUE;
        c->evcount--;
        pthread_mutex_unlock(&c->evlock);
        pthread_mutex_lock(&c->wlock);
        int r = ctl_send_text(&c->io, text, len);
        pthread_mutex_unlock(&c->wlock);
        free(text);
        pthread_mutex_lock(&c->evlock);
        if (r < 0)
            break;
    }
    pthread_mutex_unlock(&c->evlock);
    return NULL;
}

int daemon_client_subscribe(struct daemon_client *c, const char *domain, const char *type,
                            struct gw_error *err)
{
    if (c->sub)
        return gw_error_set(err, EALREADY, "this connection is already subscribed to events");
    if (!c->writer_started) {
        int r = pthread_create(&c->writer, NULL, writer_main, c);
        if (r != 0)
            return gw_error_set(err, r, "cannot start the event writer: %s", strerror(r));
        c->writer_started = true;
    }
    c->sub = event_bus_subscribe(c->srv->dm->bus, domain, type, deliver, c);
    return c->sub ? 0 : gw_error_set(err, ENOMEM, "out of memory");
}

const char *daemon_client_peer(const struct daemon_client *c) { return c->peer; }

/* ---- built-in requests: hello, events-subscribe ---- */

static int h_subscribe(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                       struct json_object **ret, struct gw_error *err)
{
    const char *domain, *type;
    char uuid[DOM_UUID_LEN + 1] = "";
    int r;
    if ((r = ctl_arg_str(args, "domain", false, &domain, err)) < 0 ||
        (r = ctl_arg_str(args, "event", false, &type, err)) < 0)
        return r;
    if (type && !event_type_known(type)) /* virsh: "unknown event type" */
        return gw_error_set(err, EINVAL, "unknown event type '%s' (known: lifecycle, "
                            "migration-iteration, job-completed)", type);
    if (domain) { /* by name, UUID or id: filter on the UUID */
        pthread_mutex_lock(&dm->lock);
        struct domain *dom = daemon_find_domain(dm, domain);
        if (dom)
            strcpy(uuid, dom->def.uuid);
        pthread_mutex_unlock(&dm->lock);
        if (!uuid[0])
            return gw_error_set(err, ENOENT, "Domain not found: no domain with matching name '%s'", domain);
    }
    return daemon_client_subscribe(cl, domain ? uuid : NULL, type, err);
}

static const struct daemon_command server_commands[] = {
    { "events-subscribe", h_subscribe },
};

static struct json_object *hello_reply(struct daemon_client *c)
{
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "protocol", json_object_new_int(CTL_PROTOCOL_VERSION));
    json_object_object_add(o, "server", json_object_new_string("godwitd " GODWIT_VERSION));
    json_object_object_add(o, "hostname", json_object_new_string(host));
    json_object_object_add(o, "peer", json_object_new_string(c->peer));
    return o;
}

/* ---- dispatch ---- */

/* Returns false when the connection must close. */
static bool do_hello(struct daemon_client *c, struct ctl_request *req)
{
    struct gw_error e;
    gw_error_init(&e);
    if (strcmp(req->command, "hello") != 0) {
        send_error(c, req->id, CTL_ERR_PROTOCOL, "the first request must be 'hello'");
        return true;
    }
    if (ctl_hello_check(req->args, &e) < 0) {
        send_error(c, req->id, ctl_error_class(e.code), e.msg);
        return e.code != EPROTONOSUPPORT;
    }
    c->hello_done = true;
    return send_msg(c, ctl_reply_return(req->id, hello_reply(c))) == 0;
}

static bool dispatch(struct daemon_client *c, struct json_object *msg)
{
    struct daemon *dm = c->srv->dm;
    struct ctl_request req;
    struct gw_error e;
    gw_error_init(&e);
    if (ctl_request_parse(msg, &req, &e) < 0) {
        bool ok = send_error(c, req.id, ctl_error_class(e.code), e.msg) == 0;
        ctl_request_fini(&req);
        return ok;
    }
    if (!c->hello_done) {
        bool ok = do_hello(c, &req);
        ctl_request_fini(&req);
        return ok;
    }
    if (strcmp(req.command, "hello") == 0) { /* the connection stays as it is */
        char why[96];
        snprintf(why, sizeof(why), "hello was already exchanged on this connection (control "
                 "protocol version %d)", CTL_PROTOCOL_VERSION);
        bool ok = send_error(c, req.id, CTL_ERR_PROTOCOL, why) == 0;
        ctl_request_fini(&req);
        return ok;
    }
    const struct daemon_command *cmd = daemon_find_command(dm, req.command);
    struct json_object *ret = NULL;
    int r = cmd ? cmd->fn(dm, c, req.args, &ret, &e)
                : gw_error_set(&e, ENOSYS, "unknown command '%s'", req.command);
    if (cmd)
        log_debug("%s: %s -> %d", c->peer, req.command, r);
    struct json_object *reply = r < 0 ? ctl_reply_error(req.id, ctl_error_class(e.code),
                                                        e.msg[0] ? e.msg : strerror(-r))
                                      : ctl_reply_return(req.id, ret);
    if (r < 0)
        json_object_put(ret);
    else if (strcmp(req.command, "migration-finish") == 0 && mig_fault("dst-finish-malformed")) {
        /* test-only: Finish did its work, its answer is neither return nor error */
        log_error("injected fault dst-finish-malformed: answering Finish without a return");
        json_object_object_del(reply, "return");
    }
    struct json_object *id = json_object_get(req.id);
    char cmdname[64];
    snprintf(cmdname, sizeof(cmdname), "%s", req.command);
    ctl_request_fini(&req);
    int sent = send_msg(c, reply);
    if (sent == -EMSGSIZE) { /* nothing was sent: say why rather than go silent */
        char desc[160];
        snprintf(desc, sizeof(desc), "the reply to '%s' would be over the control message "
                 "limit of %u bytes", cmdname, (unsigned)CTL_MAX_MSG);
        log_warn("%s: %s", c->peer, desc);
        sent = send_error(c, id, CTL_ERR_GENERIC, desc);
    }
    json_object_put(id);
    return sent == 0;
}

static void serve(struct daemon_client *c)
{
    for (;;) {
        struct json_object *msg;
        struct gw_error e;
        gw_error_init(&e);
        int r = ctl_recv(&c->io, &msg, &e);
        if (r == -ECONNRESET || (r < 0 && !e.msg[0]))
            return;
        if (r < 0) {
            send_error(c, NULL, ctl_error_class(e.code), e.msg);
            if (r == -EMSGSIZE)
                return; /* length 0 or over the limit: the framing is lost */
            continue;   /* bad JSON in a whole frame, or a cut frame (EOF comes next) */
        }
        bool go_on = dispatch(c, msg);
        json_object_put(msg);
        if (!go_on)
            return;
    }
}

/* ---- connections ---- */

static bool peer_allowed(struct daemon_client *c)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return false;
    c->uid = cred.uid;
    snprintf(c->peer, sizeof(c->peer), "uid:%u", (unsigned)cred.uid);
    return cred.uid == 0 || cred.uid == c->srv->dm->uid;
}

/* Answer the client's first request with an error, then close. */
static void refuse(struct daemon_client *c)
{
    struct timeval tv = { 2, 0 };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct json_object *msg = NULL, *id = NULL;
    if (ctl_recv(&c->io, &msg, NULL) == 0)
        json_object_object_get_ex(msg, "id", &id);
    char desc[200];
    snprintf(desc, sizeof(desc), "access denied: uid %u may not use this daemon (only root and uid %u)",
             (unsigned)c->uid, (unsigned)c->srv->dm->uid);
    log_warn("refused a client with uid %u", (unsigned)c->uid);
    send_error(c, id, CTL_ERR_PERMISSION, desc);
    json_object_put(msg);
}

/* A TLS client that completed its handshake leaves the handshake slots
 * and takes a client slot, if one is free. */
static bool admit(struct daemon_client *c)
{
    struct server *s = c->srv;
    pthread_mutex_lock(&s->lock);
    c->handshaking = false;
    c->listener->nhandshakes--;
    bool full = s->nclients >= SERVER_MAX_CLIENTS;
    if (!full) {
        c->counted = true;
        s->nclients++;
    }
    pthread_mutex_unlock(&s->lock);
    if (full)
        log_warn("refusing %s: too many clients (%d)", c->peer, SERVER_MAX_CLIENTS);
    return !full;
}

static bool setup_transport(struct daemon_client *c)
{
    ctl_io_init_fd(&c->io, &c->fd);
    if (!c->tcp) {
        if (peer_allowed(c))
            return true;
        refuse(c);
        return false;
    }
    if (!c->srv->tls)
        return true;
    struct gw_error e;
    gw_error_init(&e);
    c->tls = ctl_tls_session_new(c->srv->tls, c->fd, SERVER_HANDSHAKE_MS, &e);
    if (!c->tls) {
        log_warn("%s: %s", c->peer, e.msg);
        return false;
    }
    snprintf(c->peer, sizeof(c->peer), "%s", ctl_tls_session_peer(c->tls));
    ctl_tls_session_io(c->tls, &c->io);
    return admit(c);
}

static void client_close(struct daemon_client *c)
{
    struct server *s = c->srv;
    event_bus_unsubscribe(s->dm->bus, c->sub);
    if (c->writer_started) {
        pthread_mutex_lock(&c->evlock);
        c->ev_stop = true;
        pthread_cond_signal(&c->evcond);
        pthread_mutex_unlock(&c->evlock);
        shutdown(c->fd, SHUT_WR); /* a writer blocked in send */
        pthread_join(c->writer, NULL);
    }
    for (unsigned i = 0; i < c->evcount; i++)
        free(c->evq[(c->evhead + i) % SERVER_EVENT_QUEUE]);
    ctl_tls_session_free(c->tls);
    pthread_mutex_lock(&s->lock);
    for (struct daemon_client **p = &s->clients; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    close(c->fd);
    s->nthreads--;
    if (c->counted)
        s->nclients--;
    if (c->handshaking)
        c->listener->nhandshakes--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_destroy(&c->wlock);
    pthread_mutex_destroy(&c->evlock);
    pthread_cond_destroy(&c->evcond);
    free(c);
}

static void *client_main(void *p)
{
    struct daemon_client *c = p;
    if (setup_transport(c))
        serve(c);
    client_close(c);
    return NULL;
}

static void start_client(struct listener *l, int fd, const char *peer)
{
    struct server *s = l->srv;
    struct daemon_client *c = calloc(1, sizeof(*c));
    pthread_t t;
    pthread_attr_t attr;
    if (!c) {
        close(fd);
        return;
    }
    *c = (struct daemon_client){ .srv = s, .listener = l, .fd = fd, .tcp = l->tcp };
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    pthread_mutex_init(&c->wlock, NULL);
    pthread_mutex_init(&c->evlock, NULL);
    pthread_cond_init(&c->evcond, NULL);
    /* A TLS connection is nobody until its handshake ends: it waits in the
     * listener's own few handshake slots, so that connections that never
     * finish one cannot lock out the unix socket or authenticated clients. */
    bool tls = l->tcp && s->tls;
    pthread_mutex_lock(&s->lock);
    bool full = s->stopping || (tls ? l->nhandshakes >= SERVER_MAX_HANDSHAKES
                                    : s->nclients >= SERVER_MAX_CLIENTS);
    if (!full) {
        c->next = s->clients;
        s->clients = c;
        s->nthreads++;
        if (tls) {
            c->handshaking = true;
            l->nhandshakes++;
        } else {
            c->counted = true;
            s->nclients++;
        }
    }
    pthread_mutex_unlock(&s->lock);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (full || pthread_create(&t, &attr, client_main, c) != 0) {
        log_warn("refusing a client from %s (%s)", peer,
                 !full ? "no thread" : tls ? "too many TLS handshakes in progress" : "too many clients");
        if (!full) {
            client_close(c);
        } else {
            close(fd);
            free(c);
        }
    }
    pthread_attr_destroy(&attr);
}

static void *accept_main(void *p)
{
    struct listener *l = p;
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        int fd = accept4(l->fd, (struct sockaddr *)&sa, &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
                if (errno == EMFILE || errno == ENFILE)
                    usleep(100000);
                continue;
            }
            return NULL; /* shut down */
        }
        char peer[300] = "unix";
        if (l->tcp) {
            char host[NI_MAXHOST], port[NI_MAXSERV];
            if (getnameinfo((struct sockaddr *)&sa, len, host, sizeof(host), port, sizeof(port),
                            NI_NUMERICHOST | NI_NUMERICSERV) == 0)
                snprintf(peer, sizeof(peer), "tcp:%s:%s", host, port);
        }
        start_client(l, fd, peer);
    }
}

/* ---- listeners ---- */

/* Whether something accepts connections on the unix socket at path. */
static bool socket_answers(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool live = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EAGAIN;
    close(fd);
    return live;
}

static int listen_unix(struct listener *l, const char *path, struct gw_error *err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return gw_error_set(err, EEXIST, "'%s' exists and is not a socket", path);
        if (socket_answers(path))
            return gw_error_set(err, EADDRINUSE, "'%s' is in use: another godwitd (or another "
                                "program) answers there", path);
        unlink(path); /* stale socket of an earlier daemon */
    }
    l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l->fd < 0)
        return gw_error_set(err, errno, "socket: %m");
    if (bind(l->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return gw_error_set(err, errno, "cannot bind '%s': %m", path);
    snprintf(l->path, sizeof(l->path), "%s", path);
    if (chmod(path, 0600) < 0 || listen(l->fd, 16) < 0)
        return gw_error_set(err, errno, "cannot listen on '%s': %m", path);
    return 0;
}

static int listen_tcp(struct listener *l, const struct ctl_uri *u, struct gw_error *err)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res;
    int g = getaddrinfo(u->host[0] && strcmp(u->host, "*") ? u->host : NULL, u->port, &hints, &res);
    if (g != 0)
        return gw_error_set(err, EINVAL, "cannot resolve '%s': %s", u->host, gai_strerror(g));
    int r = gw_error_set(err, EADDRNOTAVAIL, "no address for '%s'", u->host);
    l->fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (l->fd < 0)
        r = gw_error_set(NULL, errno, "-");
    else if (setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
             bind(l->fd, res->ai_addr, res->ai_addrlen) < 0 || listen(l->fd, 16) < 0)
        r = gw_error_set(NULL, errno, "-");
    else
        r = 0;
    if (r < 0) {
        err->code = 0;
        gw_error_set(err, -r, "cannot listen on tcp:%s:%s: %s", u->host, u->port, strerror(-r));
    }
    freeaddrinfo(res);
    return r;
}

int server_listen(struct server *s, const char *spec, struct gw_error *err)
{
    struct ctl_uri u;
    if (s->nlisteners == SERVER_MAX_LISTEN)
        return gw_error_set(err, E2BIG, "too many listeners");
    int r = ctl_uri_parse(spec, &u, err);
    if (r < 0)
        return r;
    struct listener *l = &s->listeners[s->nlisteners];
    *l = (struct listener){ .srv = s, .fd = -1, .tcp = u.kind == CTL_URI_TCP };
    snprintf(l->spec, sizeof(l->spec), "%s", spec);
    r = l->tcp ? listen_tcp(l, &u, err) : listen_unix(l, u.path, err);
    if (r == 0 && (r = pthread_create(&l->thread, NULL, accept_main, l)) != 0)
        r = gw_error_set(err, r, "cannot start a thread: %s", strerror(r));
    if (r < 0) {
        if (l->fd >= 0)
            close(l->fd);
        return r;
    }
    l->started = true;
    s->nlisteners++;
    log_info("listening on %s%s", spec, l->tcp ? (s->tls ? " (TLS)" : " (no TLS: --insecure)") : "");
    return 0;
}

struct server *server_new(struct daemon *dm, struct gw_error *err)
{
    struct server *s = calloc(1, sizeof(*s));
    if (!s) {
        gw_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    s->dm = dm;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (ctl_tls_configured(&dm->cfg.tls) && !(s->tls = ctl_tls_new(&dm->cfg.tls, true, err))) {
        server_free(s);
        return NULL;
    }
    daemon_register_commands(dm, server_commands, sizeof(server_commands) / sizeof(server_commands[0]));
    return s;
}

bool server_stop(struct server *s)
{
    for (unsigned i = 0; i < s->nlisteners; i++) {
        struct listener *l = &s->listeners[i];
        shutdown(l->fd, SHUT_RDWR);
        pthread_join(l->thread, NULL);
        close(l->fd);
        if (l->path[0])
            unlink(l->path);
    }
    s->nlisteners = 0;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    for (struct daemon_client *c = s->clients; c; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 20;
    while (s->nthreads && pthread_cond_timedwait(&s->cond, &s->lock, &deadline) != ETIMEDOUT)
        ;
    bool done = s->nthreads == 0;
    if (!done)
        log_warn("%u client(s) still busy at exit", s->nthreads);
    pthread_mutex_unlock(&s->lock);
    return done;
}

void server_free(struct server *s)
{
    if (!s)
        return;
    ctl_tls_free(s->tls);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}
