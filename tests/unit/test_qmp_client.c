/* The blocking QMP client against the server (event loop in a thread):
 * replies matched by id with events queued meanwhile, error replies,
 * timeouts with late replies discarded, a server that goes away. */
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

/* Emits two events, then answers. */
static int cmd_noisy(void *opaque, struct json_object *args, struct json_object **ret,
                     struct qmp_error *err)
{
    struct fx *f = opaque;
    qmp_server_emit(f->s, "ONE", NULL);
    qmp_server_emit(f->s, "TWO", json_tokener_parse("{\"k\": 2}"));
    *ret = json_object_new_int(42);
    return 0;
}

static int cmd_slow(void *opaque, struct json_object *args, struct json_object **ret,
                    struct qmp_error *err)
{
    usleep(300 * 1000);
    *ret = json_object_new_string("late");
    return 0;
}

static int cmd_fail(void *opaque, struct json_object *args, struct json_object **ret,
                    struct qmp_error *err)
{
    qmp_error_set(err, QMP_ERR_DEVICE_NOT_FOUND, "no such thing");
    return -1;
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
    struct qmp_version ver = { 0, 1, 0, "godwit" };
    f->s = qmp_server_new(f->loop, &ver);
    struct qmp_command cmds[] = {
        { .name = "noisy", .fn = cmd_noisy, .opaque = f },
        { .name = "slow", .fn = cmd_slow },
        { .name = "fail", .fn = cmd_fail },
    };
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(qmp_server_register(f->s, &cmds[i]), 0);
    snprintf(f->path, sizeof(f->path), "/tmp/gw-qmpc-test-%d.sock", getpid());
    *state = f;
    return 0;
}

static void start(struct fx *f)
{
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(qmp_server_listen(f->s, f->path, &err), 0);
    pthread_create(&f->thread, NULL, loop_thread, f);
}

static int teardown(void **state)
{
    struct fx *f = *state;
    if (f->s) {
        evloop_stop(f->loop);
        pthread_join(f->thread, NULL);
        qmp_server_free(f->s);
    }
    evloop_run_once(f->loop, 0);
    evloop_free(f->loop);
    free(f);
    return 0;
}

static void test_execute_and_events(void **state)
{
    struct fx *f = *state;
    start(f);
    struct gw_error err;
    gw_error_init(&err);
    struct qmp_client *c = qmp_client_connect(f->path, 2000, &err);
    assert_non_null(c);
    assert_non_null(json_object_object_get(qmp_client_greeting(c), "QMP"));
    struct json_object *ret, *ev;
    struct qmp_error qe = { 0 };
    assert_int_equal(qmp_client_execute(c, "noisy", NULL, &ret, &qe, 2000), 0);
    assert_int_equal(json_object_get_int(ret), 42);
    json_object_put(ret);
    /* The events follow the reply; wait for the second, the first stays. */
    assert_int_equal(qmp_client_wait_event(c, "TWO", 2000, &ev), 0);
    assert_int_equal(json_object_get_int(json_object_object_get(json_object_object_get(ev, "data"), "k")), 2);
    json_object_put(ev);
    ev = qmp_client_pop_event(c);
    assert_non_null(ev);
    assert_string_equal(json_object_get_string(json_object_object_get(ev, "event")), "ONE");
    json_object_put(ev);
    assert_int_equal(qmp_client_wait_event(c, "NEVER", 50, &ev), -ETIMEDOUT);

    assert_int_equal(qmp_client_execute(c, "fail", NULL, &ret, &qe, 2000), -EREMOTEIO);
    assert_null(ret);
    assert_string_equal(qe.cls, "DeviceNotFound");
    assert_string_equal(qe.desc, "no such thing");
    assert_int_equal(qmp_client_execute(c, "qmp_capabilities", NULL, NULL, &qe, 2000), -EREMOTEIO);
    assert_string_equal(qe.cls, "CommandNotFound");
    qmp_client_free(c);
}

static void test_timeout_then_late_reply(void **state)
{
    struct fx *f = *state;
    start(f);
    struct qmp_client *c = qmp_client_connect(f->path, 2000, NULL);
    assert_non_null(c);
    struct json_object *ret;
    struct qmp_error qe = { 0 };
    assert_int_equal(qmp_client_execute(c, "slow", NULL, &ret, &qe, 50), -ETIMEDOUT);
    /* The late reply to "slow" is skipped; this one gets its own. */
    assert_int_equal(qmp_client_execute(c, "noisy", NULL, &ret, &qe, 2000), 0);
    assert_int_equal(json_object_get_int(ret), 42);
    json_object_put(ret);
    qmp_client_free(c);
}

static void *late_listen(void *a)
{
    usleep(100 * 1000);
    start(a);
    return NULL;
}

/* connect() retries until the server listens; a server going away ends
 * the client's calls with -ECONNRESET. */
static void test_connect_retry_and_reset(void **state)
{
    struct fx *f = *state;
    unlink(f->path);
    struct gw_error err;
    gw_error_init(&err);
    assert_null(qmp_client_connect(f->path, 30, &err));
    assert_int_equal(err.code, ENOENT);
    pthread_t t;
    pthread_create(&t, NULL, late_listen, f);
    struct qmp_client *c = qmp_client_connect(f->path, 3000, NULL);
    pthread_join(t, NULL);
    assert_non_null(c);
    evloop_stop(f->loop);
    pthread_join(f->thread, NULL);
    qmp_server_free(f->s);
    f->s = NULL;
    struct qmp_error qe = { 0 };
    struct json_object *ev;
    assert_int_equal(qmp_client_wait_event(c, NULL, 2000, &ev), -ECONNRESET);
    assert_int_equal(qmp_client_execute(c, "noisy", NULL, NULL, &qe, 2000), -ECONNRESET);
    qmp_client_free(c);
}

/* A "server" that speaks something else. */
static void test_not_qmp(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(write(sv[1], "[1,2]\n", 6), 6);
    struct gw_error err;
    gw_error_init(&err);
    assert_null(qmp_client_open(sv[0], 1000, &err));
    assert_int_equal(err.code, EPROTO);
    close(sv[1]);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    gw_error_init(&err);
    assert_null(qmp_client_open(sv[0], 50, &err)); /* silence */
    assert_int_equal(err.code, ETIMEDOUT);
    close(sv[1]);
}

/* A request the deadline cut in the middle (a server that stopped
 * reading): the connection was said to stay usable, and the next request
 * went out glued to the half-sent one, which the server can only read as
 * garbage. The connection is given up instead. */
static void test_request_cut_by_timeout(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    const char *greeting = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n";
    assert_int_equal(write(sv[1], greeting, strlen(greeting)), (ssize_t)strlen(greeting));
    struct gw_error err;
    gw_error_init(&err);
    struct qmp_client *c = qmp_client_open_raw(sv[0], 1000, &err);
    assert_non_null(c);
    size_t n = 4u << 20;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = 0;
    struct json_object *args = json_object_new_object();
    json_object_object_add(args, "text", json_object_new_string(big));
    free(big);
    struct qmp_error qe = { 0 };
    assert_int_equal(qmp_client_execute(c, "first", args, NULL, &qe, 100), -ETIMEDOUT);
    int r = qmp_client_execute(c, "second", NULL, NULL, &qe, 100);
    assert_int_equal(r, -EPIPE);
    /* What the "server" can read: no byte of the second request. */
    int fl = fcntl(sv[1], F_GETFL);
    fcntl(sv[1], F_SETFL, fl | O_NONBLOCK);
    static char buf[65536 + 16];
    size_t keep = 0;
    ssize_t got;
    bool second = false;
    while ((got = read(sv[1], buf + keep, sizeof(buf) - keep - 1)) > 0) {
        buf[keep + (size_t)got] = 0;
        second = second || strstr(buf, "second");
        size_t len = keep + (size_t)got;
        keep = len < 16 ? len : 16;
        memmove(buf, buf + len - keep, keep);
    }
    assert_false(second);
    qmp_client_free(c);
    close(sv[1]);
}

int main(void)
{
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_execute_and_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_then_late_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_retry_and_reset, setup, teardown),
        cmocka_unit_test(test_not_qmp),
        cmocka_unit_test(test_request_cut_by_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
