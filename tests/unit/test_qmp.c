/* QMP protocol: negotiation, dispatch, argument checking, JSON streaming,
 * driven through qmp_session without sockets; plus the server over a real
 * Unix socket with events from another thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "qmp/qmp_server.h"

static char out[65536];
static size_t out_len;

static void collect(void *o, char *line, size_t len)
{
    if (out_len + len < sizeof(out)) {
        memcpy(out + out_len, line, len);
        out_len += len;
        out[out_len] = 0;
    }
    free(line);
}

static int echo_calls;
static int cmd_echo(void *opaque, struct json_object *args, struct json_object **ret,
                    struct qmp_error *err)
{
    echo_calls++;
    struct json_object *v;
    if (json_object_object_get_ex(args, "fail", &v) && json_object_get_boolean(v)) {
        qmp_error_set(err, "GenericError", "asked to fail");
        return -1;
    }
    *ret = json_object_get(args);
    return 0;
}

static struct qmp_table table;
static struct qmp_session sess;

static int setup(void **state)
{
    qmp_table_init(&table);
    struct qmp_command c = { .name = "echo", .fn = cmd_echo,
                             .args = { { "text", QMP_ARG_STR, true }, { "n", QMP_ARG_INT, false },
                                       { "fail", QMP_ARG_BOOL, false } } };
    qmp_table_add(&table, &c);
    qmp_session_init(&sess, &table, collect, NULL);
    out_len = 0;
    out[0] = 0;
    echo_calls = 0;
    return 0;
}

static int teardown(void **state)
{
    qmp_session_fini(&sess);
    return 0;
}

static void feed(const char *s)
{
    out_len = 0;
    out[0] = 0;
    qmp_session_input(&sess, s, strlen(s));
}

static void test_negotiation(void **state)
{
    feed("{\"execute\": \"echo\", \"arguments\": {\"text\": \"x\"}}");
    assert_non_null(strstr(out, "CommandNotFound"));
    assert_non_null(strstr(out, "qmp_capabilities"));
    assert_int_equal(echo_calls, 0);
    feed("{\"execute\": \"qmp_capabilities\", \"id\": 1}");
    assert_non_null(strstr(out, "\"return\":{}"));
    assert_non_null(strstr(out, "\"id\":1"));
    feed("{\"execute\": \"qmp_capabilities\"}");
    assert_non_null(strstr(out, "already complete"));
}

static void test_dispatch_and_ids(void **state)
{
    feed("{\"execute\": \"qmp_capabilities\"}");
    feed("{\"execute\": \"echo\", \"arguments\": {\"text\": \"hi\", \"n\": 3}, \"id\": \"abc\"}");
    assert_non_null(strstr(out, "\"return\":{\"text\":\"hi\",\"n\":3}"));
    assert_non_null(strstr(out, "\"id\":\"abc\""));
    feed("{\"execute\": \"echo\", \"arguments\": {\"text\": \"hi\", \"fail\": true}, \"id\": [1]}");
    assert_non_null(strstr(out, "asked to fail"));
    assert_non_null(strstr(out, "\"id\":[1]"));
}

static void test_bad_requests(void **state)
{
    feed("{\"execute\": \"qmp_capabilities\"}");
    const struct { const char *in, *want; } cases[] = {
        { "{\"execute\": \"nope\"}", "The command nope has not been found" },
        { "{\"execute\": \"echo\"}", "Parameter 'text' is missing" },
        { "{\"execute\": \"echo\", \"arguments\": {\"text\": 5}}", "expected: string" },
        { "{\"execute\": \"echo\", \"arguments\": {\"text\": \"a\", \"zz\": 1}}", "Parameter 'zz' is unexpected" },
        { "{\"execute\": \"echo\", \"arguments\": [1]}", "must be an object" },
        { "{\"arguments\": {}}", "lacks member 'execute'" },
        { "{\"execute\": \"echo\", \"bogus\": 1}", "'bogus' is unexpected" },
        { "{\"exec-oob\": \"echo\"}", "out-of-band" },
        { "[1, 2]", "must be a JSON object" },
        { "{\"execute\": 7}", "must be a string" },
        { "{\"execute\": oops}", "JSON parse error" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        feed(cases[i].in);
        if (!strstr(out, cases[i].want))
            fail_msg("%s -> %s (wanted %s)", cases[i].in, out, cases[i].want);
    }
    assert_int_equal(echo_calls, 0);
    /* Still usable after the errors. */
    feed("{\"execute\": \"echo\", \"arguments\": {\"text\": \"ok\"}}");
    assert_non_null(strstr(out, "\"return\""));
}

static void test_streaming(void **state)
{
    feed("{\"execute\": \"qmp_capabilities\"}");
    feed("{\"execute\":\"echo\",\"arguments\":{\"text\":\"1\"}}{\"execute\":\"echo\",\"arguments\":{\"text\":\"2\"}}\n");
    assert_int_equal(echo_calls, 2);
    const char *msg = "{\"execute\": \"echo\", \"arguments\": {\"text\": \"split\"}, \"id\": 9}";
    out_len = 0;
    for (size_t i = 0; msg[i]; i++)
        qmp_session_input(&sess, msg + i, 1);
    assert_int_equal(echo_calls, 3);
    assert_non_null(strstr(out, "split"));
}

/* ---- the server over a socket ---- */

struct srv {
    struct evloop *loop;
    struct qmp_server *s;
    pthread_t thread;
};

static void *loop_thread(void *a)
{
    struct srv *v = a;
    evloop_run(v->loop);
    return NULL;
}

static int connect_to(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Read until `needle` shows up (or timeout); returns whether it did. */
static bool read_until(int fd, const char *needle, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = 0;
    while (!strstr(buf, needle)) {
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r <= 0)
            return false;
        n += (size_t)r;
        buf[n] = 0;
    }
    return true;
}

static void *emit_thread(void *a)
{
    qmp_server_emit(a, "TEST_EVENT", json_tokener_parse("{\"x\": 1}"));
    return NULL;
}

static void test_server(void **state)
{
    struct srv v;
    v.loop = evloop_new();
    struct qmp_version ver = { 7, 2, 0, "test" };
    v.s = qmp_server_new(v.loop, &ver);
    char path[64];
    snprintf(path, sizeof(path), "/tmp/gw-qmp-test-%d.sock", getpid());
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(qmp_server_listen(v.s, path, &err), 0);
    pthread_create(&v.thread, NULL, loop_thread, &v);

    char buf[8192];
    int a = connect_to(path), b = connect_to(path);
    assert_true(read_until(a, "\"QMP\"", buf, sizeof(buf)));
    assert_non_null(strstr(buf, "\"major\":7"));
    assert_true(read_until(b, "\"QMP\"", buf, sizeof(buf)));
    const char *neg = "{\"execute\":\"qmp_capabilities\"}";
    assert_true(write(a, neg, strlen(neg)) > 0);
    assert_true(write(b, neg, strlen(neg)) > 0);
    assert_true(read_until(a, "return", buf, sizeof(buf)));
    assert_true(read_until(b, "return", buf, sizeof(buf)));
    /* A third client connects and vanishes mid-command. */
    int c = connect_to(path);
    const char *half = "{\"execute\":\"qmp_capabilities\"}{\"execute\":\"query-comm";
    assert_true(write(c, half, strlen(half)) > 0);
    close(c);
    pthread_t t;
    pthread_create(&t, NULL, emit_thread, v.s);
    pthread_join(t, NULL);
    assert_true(read_until(a, "TEST_EVENT", buf, sizeof(buf)));
    assert_non_null(strstr(buf, "\"timestamp\""));
    assert_non_null(strstr(buf, "\"microseconds\""));
    assert_true(read_until(b, "TEST_EVENT", buf, sizeof(buf)));
    const char *q = "{\"execute\":\"query-commands\",\"id\":5}";
    assert_true(write(a, q, strlen(q)) > 0);
    assert_true(read_until(a, "query-commands", buf, sizeof(buf)));
    close(a);
    close(b);
    evloop_stop(v.loop);
    pthread_join(v.thread, NULL);
    qmp_server_free(v.s);
    evloop_free(v.loop);
}

int main(void)
{
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_negotiation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_and_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streaming, setup, teardown),
        cmocka_unit_test(test_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
