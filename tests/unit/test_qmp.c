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

/* ---- what json-c lets through and QMP must not ---- */

/* Every reply line is strict JSON in valid UTF-8 (NaN, Infinity or a cut
 * multi-byte character would break clients such as Python's json). */
static void assert_lines_valid(void)
{
    const char *p = out;
    while (*p) {
        const char *e = strstr(p, "\r\n");
        assert_non_null(e);
        struct json_tokener *t = json_tokener_new();
        json_tokener_set_flags(t, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        struct json_object *o = json_tokener_parse_ex(t, p, (int)(e - p));
        if (!o || json_tokener_get_parse_end(t) != (size_t)(e - p))
            fail_msg("not strict JSON in UTF-8: %.*s", (int)(e - p), p);
        json_object_put(o);
        json_tokener_free(t);
        p = e + 2;
    }
}

static int count_lines(void)
{
    int n = 0;
    for (const char *p = out; (p = strstr(p, "\r\n")); p += 2)
        n++;
    return n;
}

static void add_quit(void)
{
    struct qmp_command q = { .name = "quit", .fn = cmd_quit };
    assert_int_equal(qmp_table_add(&table, &q), 0);
    struct qmp_command any = { .name = "any", .fn = cmd_echo, .allow_unknown_args = true };
    assert_int_equal(qmp_table_add(&table, &any), 0);
    quit_calls = 0;
    feed("{\"execute\": \"qmp_capabilities\"}");
}

/* Each input is refused with one parse error and runs nothing. */
static void expect_parse_errors(const char *const *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        feed(in[i]);
        if (!strstr(out, "JSON parse error") || count_lines() != 1)
            fail_msg("%s -> %s (wanted one JSON parse error)", in[i], out);
        assert_lines_valid();
    }
    assert_int_equal(echo_calls, 0);
    assert_int_equal(quit_calls, 0);
}

/* NaN and Infinity are not JSON: json-c reads them, and an id holding one
 * was echoed as is, a reply no strict JSON parser reads. */
static void test_not_json_numbers(void **state)
{
    add_quit();
    const char *in[] = {
        "{\"execute\": \"echo\", \"arguments\": {\"text\": \"a\"}, \"id\": NaN}",
        "{\"execute\": \"any\", \"arguments\": {\"x\": -Infinity}}",
        "{\"execute\": \"any\", \"id\": [1, Infinity]}",
        "{\"execute\": \"any\", \"id\": nan}",
        "{\"execute\": \"any\", \"id\": TRUE}",
        "/* a comment */ {\"execute\": \"any\"}",
        "{\"execute\": \"any\" // a comment\n}",
    };
    expect_parse_errors(in, sizeof(in) / sizeof(in[0]));
    /* Numbers JSON allows are echoed as written. */
    feed("{\"execute\": \"any\", \"id\": [1.50, -0, 1e400, 1E2, true, false, null]}");
    assert_non_null(strstr(out, "\"id\":[1.50,0,1e400,1E2,true,false,null]"));
    assert_lines_valid();
    /* QEMU's single-quoted strings are accepted (a '"' inside is text). */
    feed("{'execute': 'echo', 'arguments': {'text': 'a \"{b:'}, 'id': 'q'}");
    assert_non_null(strstr(out, "\"return\":{\"text\":\"a \\\"{b:\"},\"id\":\"q\""));
    assert_int_equal(echo_calls, 2);
}

/* json-c saturates integers beyond 64 bits: the id came back changed
 * (a client waiting for its id never saw it) and arguments were clamped. */
static void test_integer_range(void **state)
{
    add_quit();
    const char *in[] = {
        "{\"execute\": \"any\", \"id\": 18446744073709551616}",
        "{\"execute\": \"any\", \"id\": -9223372036854775809}",
        "{\"execute\": \"any\", \"id\": 100000000000000000000000000000}",
        "{\"execute\": \"echo\", \"arguments\": {\"text\": \"a\", \"n\": 000018446744073709551617}}",
    };
    expect_parse_errors(in, sizeof(in) / sizeof(in[0]));
    feed("{\"execute\": \"any\", \"id\": [18446744073709551615, -9223372036854775808, "
         "9007199254740993, 123456789012345678901234567890.5]}");
    assert_non_null(strstr(out, "\"id\":[18446744073709551615,-9223372036854775808,"
                                "9007199254740993,123456789012345678901234567890.5]"));
    assert_lines_valid();
}

/* An integer argument is a signed 64-bit one (QEMU's 'int'): json-c keeps
 * 2^63..2^64-1 as unsigned, and json_object_get_int64() clamped it. */
static void test_int_argument_range(void **state)
{
    feed("{\"execute\": \"qmp_capabilities\"}");
    feed("{\"execute\": \"echo\", \"arguments\": {\"text\": \"a\", \"n\": 9223372036854775808}}");
    assert_non_null(strstr(out, "Invalid parameter type for 'n', expected: integer"));
    feed("{\"execute\": \"echo\", \"arguments\": {\"text\": \"a\", \"n\": 18446744073709551615}}");
    assert_non_null(strstr(out, "Invalid parameter type for 'n', expected: integer"));
    assert_int_equal(echo_calls, 0);
    feed("{\"execute\": \"echo\", \"arguments\": {\"text\": \"a\", \"n\": 9223372036854775807}}");
    assert_non_null(strstr(out, "\"n\":9223372036854775807"));
    feed("{\"execute\": \"echo\", \"arguments\": {\"text\": \"a\", \"n\": -9223372036854775808}}");
    assert_non_null(strstr(out, "\"n\":-9223372036854775808"));
    assert_int_equal(echo_calls, 2);
}

/* json-c keeps the last of two members of the same name and cuts a name at
 * \u0000: a proxy that reads the first "execute" (or none, for a name
 * "execute\u0000x") would pass a request that runs something else here. */
static void test_member_names(void **state)
{
    add_quit();
    const char *in[] = {
        "{\"execute\": \"echo\", \"execute\": \"quit\"}",
        "{\"execute\": \"any\", \"execute\\u0000x\": \"quit\"}",
        "{\"execute\": \"echo\", \"arguments\": {\"text\": \"a\", \"text\": \"b\"}}",
        "{\"execute\": \"any\", \"id\": [{\"k\": 1}, {\"k\": 2, \"k\": 3}]}",
        "{\"execute\": \"any\", \"arguments\": {\"a\\u0000\": 1, \"a\": 2}}",
        "{\"execute\": \"any\", \"id\": {\"a\": {\"x\": 1}, \"a\": 2}}",
    };
    expect_parse_errors(in, sizeof(in) / sizeof(in[0]));
    /* The same name in different objects is fine. */
    feed("{\"execute\": \"any\", \"arguments\": {\"k\": {\"k\": 1}}, \"id\": [{\"k\": 1}, {\"k\": 2}]}");
    assert_non_null(strstr(out, "\"return\":{\"k\":{\"k\":1}}"));
    assert_int_equal(echo_calls, 1);
}

/* json-c does not check UTF-8 by default: bytes that are not UTF-8 were
 * echoed in the reply (the id), which clients cannot decode. */
static void test_invalid_utf8(void **state)
{
    add_quit();
    const char *in[] = {
        "{\"execute\": \"any\", \"id\": \"\xff\"}",
        "{\"execute\": \"any\", \"id\": \"\xc3\"}",
        "{\"execute\": \"any\", \"arguments\": {\"\xe2\x82\": 1}}",
        "{\"execute\": \"any\", \"id\": \"\xc0\xaf\"}",         /* overlong '/' */
        "{\"execute\": \"any\", \"id\": \"\xed\xa0\x80\"}",     /* a surrogate */
        "{\"execute\": \"any\", \"id\": \"\xf4\x90\x80\x80\"}", /* past U+10FFFF */
    };
    expect_parse_errors(in, sizeof(in) / sizeof(in[0]));
    feed("{\"execute\": \"any\", \"id\": \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}");
    assert_non_null(strstr(out, "\"id\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""));
    /* A bad byte after a request does not spoil that request. */
    feed("{\"execute\": \"any\", \"id\": 1}\r\xbf{\"execute\": \"any\", \"id\": 2}");
    assert_non_null(strstr(out, "\"id\":1"));
    assert_non_null(strstr(out, "\"id\":2"));
    assert_int_equal(echo_calls, 3);
}

/* A malformed request is one error: the server skipped to the next '{',
 * which is often inside the bad request, answered its pieces one by one
 * (a client pairing replies with requests by order lost track) and ran
 * an object nested in it as a command of its own. */
static void test_one_error_per_bad_request(void **state)
{
    add_quit();
    const char *in[] = {
        "{\"execute\" \"any\", \"arguments\": {\"execute\": \"quit\"}}",
        "{\"execute\": \"any\", \"arguments\": {\"a\": 1 2, \"b\": {\"execute\": \"quit\"}}}",
        "{\"execute\": \"any\", \"arguments\": {\"a\": \"\\q\", \"b\": {\"execute\": \"quit\"}}}",
        "{\"execute\": \"any\", \"id\": NaN, \"arguments\": {\"b\": {\"execute\": \"quit\"}}}",
        /* Pretty-printed, a comma missing at the end of the first line. */
        "{\"execute\": \"any\"\n  \"arguments\": {\"b\": {\"execute\": \"quit\"}}}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{\"execute\": \"quit\"}]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        "} ] , : {\"execute\": \"any\"",
    };
    expect_parse_errors(in, 5);
    feed(in[5]);
    assert_int_equal(count_lines(), 1);
    assert_int_equal(quit_calls, 0);
    /* Garbage at the top level: one error, then the next request runs. */
    feed(in[6]);
    assert_int_equal(count_lines(), 1);
    assert_int_equal(echo_calls, 0);
    feed("}\n");
    assert_int_equal(echo_calls, 1);
    /* A line of '{': one error, not one per byte. */
    static char brace[20001];
    memset(brace, '{', sizeof(brace) - 1);
    feed(brace);
    assert_int_equal(count_lines(), 1);
    feed("\n{\"execute\": \"any\", \"id\": 4}");
    assert_int_equal(count_lines(), 1);
    assert_non_null(strstr(out, "\"id\":4"));
    /* A request cut short, then a newline and the next request. */
    feed("{\"execute\": \"any\", \"arguments\": {\"a\": 1}\n{\"execute\": \"any\", \"id\": 5}");
    assert_int_equal(count_lines(), 2);
    assert_non_null(strstr(out, "JSON parse error"));
    assert_non_null(strstr(out, "\"id\":5"));
    assert_int_equal(quit_calls, 0);
}

/* json-c reads on past a complete value, through blanks and comments: a
 * request followed in the same read by "/x" was reported as a parse error
 * and never ran (it ran when the reads fell otherwise). */
static void test_bytes_after_request(void **state)
{
    feed("{\"execute\": \"qmp_capabilities\"}");
    feed("{\"execute\": \"echo\", \"arguments\": {\"text\": \"a\"}, \"id\": 1}  /x\n");
    assert_non_null(strstr(out, "\"id\":1"));
    assert_int_equal(echo_calls, 1);
    feed("{\"execute\": \"echo\", \"arguments\": {\"text\": \"b\"}, \"id\": 2} /* c */\n");
    assert_non_null(strstr(out, "\"id\":2"));
    assert_int_equal(echo_calls, 2);
}

/* json-c holds a JSON null as a NULL pointer, which looked like a member
 * left out: "arguments": null ran the command with no arguments. */
static void test_null_members(void **state)
{
    add_quit();
    feed("{\"execute\": \"quit\", \"arguments\": null, \"id\": 1}");
    assert_non_null(strstr(out, "QMP input member 'arguments' must be an object"));
    assert_non_null(strstr(out, "\"id\":1"));
    feed("{\"execute\": null, \"id\": 2}");
    assert_non_null(strstr(out, "QMP input member 'execute' must be a string"));
    assert_int_equal(quit_calls, 0);
    feed("{\"execute\": \"qmp_capabilities\", \"id\": null}");
    assert_non_null(strstr(out, "\"id\":null"));
}

/* Error messages quote names the client sent, cut at a byte count: a cut
 * inside a multi-byte character made the reply invalid UTF-8. */
static int cmd_long_error(void *opaque, struct json_object *args, struct json_object **ret,
                          struct qmp_error *err)
{
    char msg[1200] = "x";
    for (int i = 0; i < 390; i++)
        strcat(msg, "\xe2\x82\xac"); /* 3 bytes, 1 + 3 * 390 > sizeof(err->desc) */
    qmp_error_set(err, QMP_ERR_GENERIC, "%s", msg);
    return -1;
}

static void test_utf8_cut(void **state)
{
    struct qmp_command c = { .name = "long-error", .fn = cmd_long_error };
    assert_int_equal(qmp_table_add(&table, &c), 0);
    feed("{\"execute\": \"qmp_capabilities\"}");
    static char req[4096];
    char name[1024] = "x";
    for (int i = 0; i < 300; i++)
        strcat(name, "\xc3\xa9");
    snprintf(req, sizeof(req), "{\"execute\": \"%s\"}", name);
    feed(req);
    assert_non_null(strstr(out, "has not been found"));
    assert_lines_valid();
    snprintf(req, sizeof(req), "{\"execute\": \"echo\", \"arguments\": {\"text\": \"a\", \"%s\": 1}}", name);
    feed(req);
    assert_non_null(strstr(out, "is unexpected"));
    assert_lines_valid();
    snprintf(req, sizeof(req), "{\"execute\": \"echo\", \"bogus%s\": 1}", name);
    feed(req);
    assert_non_null(strstr(out, "is unexpected"));
    assert_lines_valid();
    snprintf(req, sizeof(req), "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"%s\": 1}}", name);
    feed(req);
    assert_lines_valid();
    feed("{\"execute\": \"long-error\"}");
    assert_non_null(strstr(out, "\"desc\":\"x\xe2\x82\xac"));
    assert_lines_valid();
    assert_int_equal(echo_calls, 0);
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
        cmocka_unit_test_setup_teardown(test_not_json_numbers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_integer_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_int_argument_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_member_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_error_per_bad_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_utf8_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_after_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_members, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
