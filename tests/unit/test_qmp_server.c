/* The QMP server over real Unix sockets, with its event loop in a thread:
 * greeting, framing across writes, events from other threads to several
 * clients, clients that vanish or stop reading, the socket file itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "qmp/qmp_client.h"
#include "qmp/qmp_server.h"

struct fx {
    struct evloop *loop;
    struct qmp_server *s;
    pthread_t thread;
    char path[108];
};

static int cmd_echo(void *opaque, struct json_object *args, struct json_object **ret,
                    struct qmp_error *err)
{
    *ret = json_object_get(args);
    return 0;
}

/* Returns a string of `size` bytes: a big reply. */
static int cmd_big(void *opaque, struct json_object *args, struct json_object **ret,
                   struct qmp_error *err)
{
    struct json_object *v;
    json_object_object_get_ex(args, "size", &v);
    size_t n = (size_t)json_object_get_int64(v);
    char *s = malloc(n + 1);
    memset(s, 'x', n);
    s[n] = 0;
    *ret = json_object_new_string(s);
    free(s);
    return 0;
}

static void *loop_thread(void *a)
{
    evloop_run(((struct fx *)a)->loop);
    return NULL;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->loop = evloop_new();
    struct qmp_version ver = { 7, 2, 0, "godwit test" };
    f->s = qmp_server_new(f->loop, &ver);
    struct qmp_command echo = { .name = "echo", .fn = cmd_echo,
                                .args = { { "text", QMP_ARG_STR, false }, { "n", QMP_ARG_INT, false } } };
    struct qmp_command big = { .name = "big", .fn = cmd_big, .args = { { "size", QMP_ARG_INT, true } } };
    assert_int_equal(qmp_server_register(f->s, &echo), 0);
    assert_int_equal(qmp_server_register(f->s, &big), 0);
    assert_int_equal(qmp_server_register(f->s, &echo), -EEXIST);
    snprintf(f->path, sizeof(f->path), "/tmp/gw-qmp-test-%d.sock", getpid());
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(qmp_server_listen(f->s, f->path, &err), 0);
    pthread_create(&f->thread, NULL, loop_thread, f);
    *state = f;
    return 0;
}

static void stop_loop(struct fx *f)
{
    if (f->loop && !evloop_stopped(f->loop)) {
        evloop_stop(f->loop);
        pthread_join(f->thread, NULL);
    }
}

static int teardown(void **state)
{
    struct fx *f = *state;
    stop_loop(f);
    qmp_server_free(f->s);
    evloop_run_once(f->loop, 0); /* release events posted after the stop */
    evloop_free(f->loop);
    assert_int_equal(access(f->path, F_OK), -1); /* the socket file is gone */
    free(f);
    return 0;
}

static int raw_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Read until `needle` has been seen `count` times (or timeout). */
static bool read_until_n(int fd, const char *needle, int count, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = 0;
    for (;;) {
        int seen = 0;
        for (const char *p = buf; (p = strstr(p, needle)); p++)
            seen++;
        if (seen >= count)
            return true;
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r <= 0)
            return false;
        n += (size_t)r;
        buf[n] = 0;
    }
}

static bool read_until(int fd, const char *needle, char *buf, size_t cap)
{
    return read_until_n(fd, needle, 1, buf, cap);
}

static void put(int fd, const char *s) { assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s)); }

static struct qmp_client *client(struct fx *f)
{
    struct gw_error err;
    gw_error_init(&err);
    struct qmp_client *c = qmp_client_connect(f->path, 5000, &err);
    if (!c)
        fail_msg("%s", err.msg);
    return c;
}

static void test_greeting_and_negotiation(void **state)
{
    struct fx *f = *state;
    char buf[4096];
    int fd = raw_connect(f->path);
    assert_true(read_until(fd, "\r\n", buf, sizeof(buf)));
    struct json_object *g = json_tokener_parse(buf);
    assert_non_null(g);
    struct json_object *q = json_object_object_get(g, "QMP");
    struct json_object *v = json_object_object_get(json_object_object_get(q, "version"), "qemu");
    assert_int_equal(json_object_get_int(json_object_object_get(v, "major")), 7);
    assert_int_equal(json_object_get_int(json_object_object_get(v, "minor")), 2);
    assert_int_equal(json_object_get_int(json_object_object_get(v, "micro")), 0);
    assert_string_equal(json_object_get_string(json_object_object_get(json_object_object_get(q, "version"), "package")),
                        "godwit test");
    assert_int_equal(json_object_array_length(json_object_object_get(q, "capabilities")), 0);
    json_object_put(g);

    put(fd, "{\"execute\": \"echo\", \"id\": 1}");
    assert_true(read_until(fd, "Expecting capabilities negotiation", buf, sizeof(buf)));
    assert_non_null(strstr(buf, "CommandNotFound"));
    put(fd, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}");
    assert_true(read_until(fd, "does not accept value 'oob'", buf, sizeof(buf)));
    put(fd, "{\"execute\": \"qmp_capabilities\", \"id\": \"neg\"}");
    assert_true(read_until(fd, "\"id\":\"neg\"", buf, sizeof(buf)));
    assert_non_null(strstr(buf, "\"return\":{}"));
    put(fd, "{\"execute\": \"qmp_capabilities\"}");
    assert_true(read_until(fd, "already complete", buf, sizeof(buf)));
    put(fd, "{\"execute\": \"echo\", \"arguments\": {\"n\": 5}, \"id\": {\"k\": [1, 2]}}");
    assert_true(read_until(fd, "\"id\":{\"k\":[1,2]}", buf, sizeof(buf)));
    assert_non_null(strstr(buf, "\"return\":{\"n\":5}"));
    close(fd);
}

/* Framing: two objects in one write, one object byte by byte, malformed
 * JSON followed by a good request on the same connection. */
static void test_framing(void **state)
{
    struct fx *f = *state;
    char buf[8192];
    int fd = raw_connect(f->path);
    assert_true(read_until(fd, "QMP", buf, sizeof(buf)));
    put(fd, "{\"execute\":\"qmp_capabilities\",\"id\":0}{\"execute\":\"echo\",\"arguments\":{\"n\":1},\"id\":1}\n");
    assert_true(read_until(fd, "\"id\":1", buf, sizeof(buf)));
    assert_non_null(strstr(buf, "\"id\":0"));
    assert_true(strstr(buf, "\"id\":0") < strstr(buf, "\"id\":1")); /* in order */

    const char *msg = "{\"execute\": \"echo\", \"arguments\": {\"text\": \"split\"}, \"id\": 2}";
    for (size_t i = 0; msg[i]; i++) {
        assert_int_equal(write(fd, msg + i, 1), 1);
        usleep(200);
    }
    assert_true(read_until(fd, "\"id\":2", buf, sizeof(buf)));
    assert_non_null(strstr(buf, "split"));

    put(fd, "{\"execute\": ]\n{\"execute\": \"echo\", \"id\": 3}");
    assert_true(read_until(fd, "\"id\":3", buf, sizeof(buf)));
    assert_non_null(strstr(buf, "JSON parse error"));
    assert_non_null(strstr(buf, "\"return\":{}"));
    close(fd);
}

static void test_query_commands(void **state)
{
    struct fx *f = *state;
    struct qmp_client *c = client(f);
    struct json_object *ret;
    struct qmp_error qe = { 0 };
    assert_int_equal(qmp_client_execute(c, "query-commands", NULL, &ret, &qe, 5000), 0);
    const char *want[] = { "qmp_capabilities", "query-commands", "echo", "big" };
    assert_int_equal(json_object_array_length(ret), 4);
    for (size_t i = 0; i < 4; i++) {
        struct json_object *o = json_object_array_get_idx(ret, i);
        assert_string_equal(json_object_get_string(json_object_object_get(o, "name")), want[i]);
    }
    json_object_put(ret);
    assert_int_equal(qmp_client_execute(c, "nope", NULL, &ret, &qe, 5000), -EREMOTEIO);
    assert_string_equal(qe.cls, "CommandNotFound");
    assert_string_equal(qe.desc, "The command nope has not been found");
    assert_int_equal(qmp_client_execute(c, "big", json_tokener_parse("{\"size\": \"1\"}"), &ret, &qe, 5000),
                     -EREMOTEIO);
    assert_string_equal(qe.desc, "Invalid parameter type for 'size', expected: integer");
    qmp_client_free(c);
}

struct emitter {
    struct qmp_server *s;
    const char *name;
    int n;
};

static void *emit_thread(void *a)
{
    struct emitter *e = a;
    for (int i = 0; i < e->n; i++) {
        struct json_object *d = json_object_new_object();
        json_object_object_add(d, "seq", json_object_new_int(i));
        qmp_server_emit(e->s, e->name, d);
    }
    return NULL;
}

/* Events from two threads reach both negotiated clients, each thread's in
 * order, with a timestamp; a client that has not negotiated gets none. */
static void test_events(void **state)
{
    struct fx *f = *state;
    struct qmp_client *a = client(f), *b = client(f);
    char buf[4096];
    int raw = raw_connect(f->path);
    assert_true(read_until(raw, "QMP", buf, sizeof(buf)));
    struct timeval before;
    gettimeofday(&before, NULL);
    qmp_server_emit(f->s, "STOP", NULL);
    enum { N = 200 };
    struct emitter e1 = { f->s, "EV_A", N }, e2 = { f->s, "EV_B", N };
    pthread_t t1, t2;
    pthread_create(&t1, NULL, emit_thread, &e1);
    pthread_create(&t2, NULL, emit_thread, &e2);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    struct qmp_client *cs[2] = { a, b };
    for (int k = 0; k < 2; k++) {
        struct json_object *ev;
        assert_int_equal(qmp_client_wait_event(cs[k], "STOP", 5000, &ev), 0);
        assert_null(json_object_object_get(ev, "data"));
        struct json_object *ts = json_object_object_get(ev, "timestamp");
        int64_t sec = json_object_get_int64(json_object_object_get(ts, "seconds"));
        int64_t usec = json_object_get_int64(json_object_object_get(ts, "microseconds"));
        assert_true(sec >= before.tv_sec && sec <= before.tv_sec + 5);
        assert_true(usec >= 0 && usec < 1000000);
        json_object_put(ev);
        for (int i = 0; i < N; i++) {
            assert_int_equal(qmp_client_wait_event(cs[k], "EV_A", 5000, &ev), 0);
            assert_int_equal(json_object_get_int(json_object_object_get(json_object_object_get(ev, "data"), "seq")), i);
            json_object_put(ev);
            assert_int_equal(qmp_client_wait_event(cs[k], "EV_B", 5000, &ev), 0);
            assert_int_equal(json_object_get_int(json_object_object_get(json_object_object_get(ev, "data"), "seq")), i);
            json_object_put(ev);
        }
        assert_null(qmp_client_pop_event(cs[k]));
    }
    /* The raw client never negotiated: its next line is the error reply. */
    put(raw, "{\"execute\": \"echo\"}");
    assert_true(read_until(raw, "\r\n", buf, sizeof(buf)));
    assert_null(strstr(buf, "event"));
    close(raw);
    qmp_client_free(a);
    qmp_client_free(b);
}

/* A client asks for a big reply and vanishes; another that stops reading
 * is dropped once its queue passes the cap; a third is unaffected. */
static void test_vanishing_and_slow_clients(void **state)
{
    struct fx *f = *state;
    struct qmp_client *good = client(f);
    char buf[4096];
    int gone = raw_connect(f->path);
    assert_true(read_until(gone, "QMP", buf, sizeof(buf)));
    put(gone, "{\"execute\":\"qmp_capabilities\"}{\"execute\":\"big\",\"arguments\":{\"size\":4000000}}"
              "{\"execute\":\"echo\"}{\"execute\":\"ec");
    close(gone);

    int slow = raw_connect(f->path);
    assert_true(read_until(slow, "QMP", buf, sizeof(buf)));
    put(slow, "{\"execute\":\"qmp_capabilities\"}");
    assert_true(read_until(slow, "return", buf, sizeof(buf)));
    for (int i = 0; i < 24; i++)
        put(slow, "{\"execute\":\"big\",\"arguments\":{\"size\":1048576}}");
    struct qmp_error qe = { 0 };
    struct json_object *ret;
    /* The server keeps serving the good client meanwhile. */
    for (int i = 0; i < 50; i++) {
        assert_int_equal(qmp_client_execute(good, "echo", json_tokener_parse("{\"n\": 1}"), &ret, &qe, 5000), 0);
        json_object_put(ret);
    }
    for (int i = 0; i < 200 && qmp_server_client_count(f->s) > 1; i++)
        usleep(10000);
    /* Read the slow client's socket: it must end (dropped), not hang. */
    size_t total = 0;
    char big[65536];
    ssize_t r;
    while ((r = read(slow, big, sizeof(big))) > 0)
        total += (size_t)r;
    /* The server closes with our requests still unread in its buffer, so
     * the kernel may answer with a reset instead of an orderly end. */
    assert_true(r == 0 || (r < 0 && errno == ECONNRESET));
    assert_true(total < 24u * 1048576u);
    close(slow);
    assert_int_equal(qmp_client_execute(good, "big", json_tokener_parse("{\"size\": 100000}"), &ret, &qe, 5000), 0);
    assert_int_equal(json_object_get_string_len(ret), 100000);
    json_object_put(ret);
    qmp_client_free(good);
}

static void test_socket_file(void **state)
{
    struct fx *f = *state;
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    stop_loop(f);
    /* A second server replaces a stale socket, refuses a regular file. */
    struct qmp_version ver = { 1, 0, 0, "x" };
    struct evloop *loop = evloop_new();
    struct qmp_server *s2 = qmp_server_new(loop, &ver);
    char p2[128];
    snprintf(p2, sizeof(p2), "%s.2", f->path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p2);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd); /* stale */
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(qmp_server_listen(s2, p2, &err), 0);
    qmp_server_free(s2);
    assert_int_equal(access(p2, F_OK), -1);
    fd = open(p2, O_CREAT | O_WRONLY, 0600);
    close(fd);
    s2 = qmp_server_new(loop, &ver);
    assert_int_equal(qmp_server_listen(s2, p2, &err), -EEXIST);
    assert_int_equal(access(p2, F_OK), 0);
    unlink(p2);
    qmp_server_free(s2);
    evloop_free(loop);
}

/* add_client() over a socketpair, driven with evloop_run_once. */
static void test_socketpair(void **state)
{
    struct evloop *loop = evloop_new();
    struct qmp_version ver = { 0, 1, 0, "godwit" };
    struct qmp_server *s = qmp_server_new(loop, &ver);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(qmp_server_add_client(s, sv[0]), 0);
    char buf[4096];
    assert_true(read_until(sv[1], "QMP", buf, sizeof(buf)));
    put(sv[1], "{\"execute\":\"qmp_capabilities\"}{\"execute\":\"query-commands\",\"id\":7}");
    for (int i = 0; i < 10; i++)
        evloop_run_once(loop, 10);
    assert_true(read_until(sv[1], "\"id\":7", buf, sizeof(buf)));
    qmp_server_emit(s, "RESET", json_tokener_parse("{\"guest\": true}"));
    evloop_run_once(loop, 100);
    assert_true(read_until(sv[1], "RESET", buf, sizeof(buf)));
    assert_non_null(strstr(buf, "\"data\":{\"guest\":true}"));
    close(sv[1]);
    for (int i = 0; i < 5 && qmp_server_client_count(s); i++)
        evloop_run_once(loop, 10);
    assert_int_equal(qmp_server_client_count(s), 0);
    /* An event posted, then the server freed before the loop runs. */
    qmp_server_emit(s, "LATE", NULL);
    qmp_server_free(s);
    evloop_run_once(loop, 100);
    evloop_free(loop);
}

/* An event raised just before the VMM ends (SIGTERM's SHUTDOWN, then the
 * loop stopped): freeing the server hands it to the clients. */
static void test_event_flushed_at_free(void **state)
{
    struct evloop *loop = evloop_new();
    struct qmp_version ver = { 0, 1, 0, "godwit" };
    struct qmp_server *s = qmp_server_new(loop, &ver);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(qmp_server_add_client(s, sv[0]), 0);
    char buf[4096];
    assert_true(read_until(sv[1], "QMP", buf, sizeof(buf)));
    put(sv[1], "{\"execute\":\"qmp_capabilities\",\"id\":1}");
    for (int i = 0; i < 10; i++)
        evloop_run_once(loop, 10);
    assert_true(read_until(sv[1], "\"id\":1", buf, sizeof(buf)));
    qmp_server_emit(s, "SHUTDOWN", json_tokener_parse("{\"guest\": false, \"reason\": \"host-signal\"}"));
    qmp_server_free(s); /* the loop never turns again */
    assert_true(read_until(sv[1], "\"reason\":\"host-signal\"", buf, sizeof(buf)));
    evloop_run_once(loop, 10); /* the posted delivery finds the queue empty and frees it */
    close(sv[1]);
    evloop_free(loop);
}

struct drain {
    int fd;
    size_t total;
    bool shutdown_seen;
};

/* Read until end of file, keeping the last bytes to look for SHUTDOWN. */
static void *drain_thread(void *a)
{
    struct drain *d = a;
    static char buf[65536 + 512];
    size_t keep = 0;
    ssize_t r;
    while ((r = read(d->fd, buf + keep, sizeof(buf) - keep - 1)) > 0) {
        d->total += (size_t)r;
        buf[keep + (size_t)r] = 0;
        if (strstr(buf, "\"event\":\"SHUTDOWN\""))
            d->shutdown_seen = true;
        size_t n = keep + (size_t)r;
        keep = n < 256 ? n : 256;
        memmove(buf, buf + n - keep, keep);
    }
    return NULL;
}

/* A client that has not yet read a big reply when the VMM ends (SIGTERM's
 * SHUTDOWN queued behind it): the queue was freed with the socket, so the
 * reply's tail and SHUTDOWN never came. They are flushed, for a bounded
 * time, while the client reads. */
static void test_backlog_flushed_at_free(void **state)
{
    struct evloop *loop = evloop_new();
    struct qmp_version ver = { 0, 1, 0, "godwit" };
    struct qmp_server *s = qmp_server_new(loop, &ver);
    struct qmp_command big = { .name = "big", .fn = cmd_big, .args = { { "size", QMP_ARG_INT, true } } };
    assert_int_equal(qmp_server_register(s, &big), 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(qmp_server_add_client(s, sv[0]), 0);
    char buf[4096];
    assert_true(read_until(sv[1], "QMP", buf, sizeof(buf)));
    put(sv[1], "{\"execute\":\"qmp_capabilities\",\"id\":1}");
    for (int i = 0; i < 10; i++)
        evloop_run_once(loop, 10);
    assert_true(read_until(sv[1], "\"id\":1", buf, sizeof(buf)));
    put(sv[1], "{\"execute\":\"big\",\"arguments\":{\"size\":4000000},\"id\":2}");
    for (int i = 0; i < 10; i++)
        evloop_run_once(loop, 10); /* the reply is queued: nobody reads */
    qmp_server_emit(s, "SHUTDOWN", json_tokener_parse("{\"guest\": false, \"reason\": \"host-signal\"}"));
    struct timeval tv = { 5, 0 };
    setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct drain d = { .fd = sv[1] };
    pthread_t t;
    pthread_create(&t, NULL, drain_thread, &d);
    qmp_server_free(s); /* the loop never turns again */
    pthread_join(t, NULL);
    assert_true(d.total > 4000000);
    assert_true(d.shutdown_seen);
    evloop_run_once(loop, 10);
    close(sv[1]);
    evloop_free(loop);
}

int main(void)
{
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_greeting_and_negotiation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_framing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_commands, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vanishing_and_slow_clients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_socket_file, setup, teardown),
        cmocka_unit_test(test_socketpair),
        cmocka_unit_test(test_event_flushed_at_free),
        cmocka_unit_test(test_backlog_flushed_at_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
