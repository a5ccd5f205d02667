/* QMP protocol: negotiation, dispatch, argument checking, JSON streaming,
 * driven through qmp_session without sockets (the server over sockets is in
 * test_qmp_server.c, the client in test_qmp_client.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
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
        { "{\"execute\": \"echo\", \"arguments\": {\"text\": \"a\", \"n\": \"1\"}}",
          "Invalid parameter type for 'n', expected: integer" },
        { "{\"execute\": \"echo\", \"arguments\": {\"text\": \"a\", \"n\": 1.5}}", "expected: integer" },
        { "\"just a string\"\n", "must be a JSON object" },
        { "{\"execute\": \"qmp_capabilities\", \"id\": 4}", "already complete" },
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

/* A NUL character (\u0000) inside a string would be cut there by the C
 * code that reads it: "quit\u0000zzz" must not run quit. */
static int quit_calls;
static int cmd_quit(void *opaque, struct json_object *args, struct json_object **ret,
                    struct qmp_error *err)
{
    quit_calls++;
    return 0;
}

static void test_nul_in_strings(void **state)
{
    struct qmp_command q = { .name = "quit", .fn = cmd_quit };
    assert_int_equal(qmp_table_add(&table, &q), 0);
    struct qmp_command any = { .name = "any", .fn = cmd_echo, .allow_unknown_args = true };
    assert_int_equal(qmp_table_add(&table, &any), 0);
    quit_calls = 0;
    feed("{\"execute\": \"qmp_capabilities\"}");
    const struct { const char *in, *want; } cases[] = {
        { "{\"execute\": \"quit\\u0000zzz\"}",
          "QMP input member 'execute' must not contain a NUL character" },
        { "{\"execute\": \"echo\", \"arguments\": {\"text\": \"a\\u0000b\"}}",
          "Parameter 'text' must not contain a NUL character" },
        { "{\"execute\": \"any\", \"arguments\": {\"l\": [{\"c\": \"events\\u0000x\"}]}}",
          "Parameter 'l' must not contain a NUL character" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        feed(cases[i].in);
        if (!strstr(out, cases[i].want))
            fail_msg("%s -> %s (wanted %s)", cases[i].in, out, cases[i].want);
    }
    assert_int_equal(quit_calls, 0);
    assert_int_equal(echo_calls, 0);
    /* The same without the NUL runs. */
    feed("{\"execute\": \"quit\"}");
    assert_int_equal(quit_calls, 1);
    feed("{\"execute\": \"echo\", \"arguments\": {\"text\": \"a\\u0001b\"}}");
    assert_non_null(strstr(out, "\"return\""));

    struct json_object *o = json_tokener_parse("{\"a\": [1, {\"b\": \"x\\u0000\"}]}");
    assert_true(qmp_json_has_nul(o));
    json_object_put(o);
    o = json_tokener_parse("{\"a\": [1, {\"b\": \"x\"}], \"c\": \"\"}");
    assert_false(qmp_json_has_nul(o));
    json_object_put(o);
}

static void test_capabilities_args(void **state)
{
    feed("{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": \"oob\"}}");
    assert_non_null(strstr(out, "Invalid parameter type for 'enable', expected: array"));
    feed("{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}");
    assert_non_null(strstr(out, "does not accept value 'oob'"));
    feed("{\"execute\": \"qmp_capabilities\", \"arguments\": {\"x\": 1}}");
    assert_non_null(strstr(out, "Parameter 'x' is unexpected"));
    assert_false(sess.negotiated);
    feed("{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": []}}");
    assert_non_null(strstr(out, "\"return\":{}"));
    assert_true(sess.negotiated);
}

/* Malformed input is answered and the same session goes on. */
static void test_recovery(void **state)
{
    feed("{\"execute\": \"qmp_capabilities\"}");
    feed("{\"execute\": \"echo\", \"arguments\": {\"text\": }}\n"
         "{\"execute\": \"echo\", \"arguments\": {\"text\": \"after\"}, \"id\": 2}");
    assert_non_null(strstr(out, "JSON parse error"));
    assert_non_null(strstr(out, "\"return\":{\"text\":\"after\"},\"id\":2"));
    assert_int_equal(echo_calls, 1);
    /* Bytes no JSON starts with. */
    feed("\x01\xff garbage }\n{\"execute\": \"echo\", \"arguments\": {\"text\": \"ok\"}, \"id\": 3}");
    assert_non_null(strstr(out, "\"id\":3"));
    assert_int_equal(echo_calls, 2);
}

/* An object over QMP_MAX_INPUT is refused; the session goes on. */
static void test_too_large(void **state)
{
    feed("{\"execute\": \"qmp_capabilities\"}");
    out_len = 0;
    const char *head = "{\"execute\": \"echo\", \"arguments\": {\"text\": \"";
    qmp_session_input(&sess, head, strlen(head));
    static char chunk[65536];
    memset(chunk, 'a', sizeof(chunk));
    for (int i = 0; i < 20; i++)
        qmp_session_input(&sess, chunk, sizeof(chunk));
    assert_non_null(strstr(out, "object too large"));
    assert_int_equal(echo_calls, 0);
    feed("\"}}\n{\"execute\": \"echo\", \"arguments\": {\"text\": \"small\"}}");
    assert_non_null(strstr(out, "small"));
    assert_int_equal(echo_calls, 1);
}

static int cmd_bare_fail(void *opaque, struct json_object *args, struct json_object **ret,
                         struct qmp_error *err)
{
    *ret = json_object_new_int(1); /* must be dropped */
    return -1;
}

static void test_handler_failure_defaults(void **state)
{
    struct qmp_command c = { .name = "bare", .fn = cmd_bare_fail };
    assert_int_equal(qmp_table_add(&table, &c), 0);
    assert_int_equal(qmp_table_add(&table, &c), -EEXIST);
    struct qmp_command bad = { .name = "nofn" };
    assert_int_equal(qmp_table_add(&table, &bad), -EINVAL);
    feed("{\"execute\": \"qmp_capabilities\"}");
    feed("{\"execute\": \"bare\", \"id\": null}");
    assert_non_null(strstr(out, "{\"error\":{\"class\":\"GenericError\",\"desc\":\"Command failed\"},\"id\":null}"));
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

int main(void)
{
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_negotiation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_and_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nul_in_strings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streaming, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capabilities_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handler_failure_defaults, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
