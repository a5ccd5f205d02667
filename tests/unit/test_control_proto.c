/* The control protocol (src/control/control.h): framing with the length
 * checked before anything is read or allocated, JSON parsing, request and
 * hello validation (both ends), error classes, addresses, base64; a round
 * trip over a socketpair; and the client's hello against a fake daemon. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control/control.h"
#include "control/control_client.h"

static void test_header(void **state)
{
    struct gw_error err;
    uint8_t hdr[4];
    uint32_t len = 0;
    gw_error_init(&err);
    ctl_header_encode(hdr, 300);
    assert_int_equal(ctl_header_decode(hdr, CTL_MAX_MSG, &len, &err), 0);
    assert_int_equal(len, 300);
    ctl_header_encode(hdr, CTL_MAX_MSG + 1);
    assert_int_equal(ctl_header_decode(hdr, CTL_MAX_MSG, &len, &err), -EMSGSIZE);
    assert_non_null(strstr(err.msg, "exceeds the limit"));
    gw_error_init(&err);
    ctl_header_encode(hdr, 0);
    assert_int_equal(ctl_header_decode(hdr, CTL_MAX_MSG, &len, &err), -EPROTO);
}

static void expect_parse_error(const char *text, const char *needle)
{
    struct gw_error err;
    struct json_object *o = (void *)1;
    gw_error_init(&err);
    assert_int_equal(ctl_parse(text, strlen(text), &o, &err), -EPROTO);
    assert_null(o);
    if (!strstr(err.msg, needle))
        fail_msg("expected '%s' in '%s'", needle, err.msg);
}

static void test_parse(void **state)
{
    /* One reader for messages and state files (json_text.h): it says where. */
    expect_parse_error("{\"id\": 1,", "control message: the text ends at offset 9 (line 1, column 10) "
                                      "before the JSON object does");
    expect_parse_error("[1, 2]", "control message: a JSON array, not an object");
    expect_parse_error("{} {}", "control message: unexpected data after the JSON object at offset 3 "
                                "(line 1, column 4): \"{}\"");
    expect_parse_error("{}x", "unexpected data after the JSON object at offset 2");
    expect_parse_error("nonsense", "control message: not valid JSON");
    struct json_object *o;
    /* NUL bytes after the object were taken for white space (fuzz_peer). */
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(ctl_parse("{}\0", 3, &o, &err), -EPROTO);
    assert_null(o);
    assert_non_null(strstr(err.msg, "NUL byte"));
    /* ... and inside a comment, which json-c took for white space. */
    gw_error_init(&err);
    assert_int_equal(ctl_parse("{}//////\0\r", 11, &o, &err), -EPROTO);
    assert_null(o);
    assert_non_null(strstr(err.msg, "NUL byte"));
    assert_int_equal(ctl_parse("{\"a\": 1}\n", 9, &o, NULL), 0);
    assert_int_equal(ctl_msg_kind(o), CTL_MSG_INVALID);
    json_object_put(o);
}

static int request(const char *text, struct ctl_request *req, struct gw_error *err)
{
    struct json_object *o;
    assert_int_equal(ctl_parse(text, strlen(text), &o, NULL), 0);
    gw_error_init(err);
    int r = ctl_request_parse(o, req, err);
    ctl_request_fini(req);
    json_object_put(o);
    return r;
}

static void test_request(void **state)
{
    struct ctl_request req;
    struct gw_error err;
    assert_int_equal(request("{\"command\": \"x\"}", &req, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "\"id\""));
    assert_int_equal(request("{\"id\": [1], \"command\": \"x\"}", &req, &err), -EPROTO);
    assert_int_equal(request("{\"id\": 1}", &req, &err), -EPROTO);
    assert_int_equal(request("{\"id\": 1, \"command\": 7}", &req, &err), -EPROTO);
    assert_int_equal(request("{\"id\": 1, \"command\": \"x\", \"arguments\": [1]}", &req, &err), -EINVAL);
    assert_int_equal(request("{\"id\": \"a\", \"command\": \"x\"}", &req, &err), 0);
    /* A NUL byte must not cut a command or an argument short (fuzz_peer). */
    assert_int_equal(request("{\"id\": 1, \"command\": \"domain-start\\u0000x\"}", &req, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "NUL byte"));

    struct json_object *o;
    const char *t = "{\"id\": 4, \"command\": \"domain-start\", \"arguments\": {\"domain\": \"vm\"}}";
    assert_int_equal(ctl_parse(t, strlen(t), &o, NULL), 0);
    assert_int_equal(ctl_msg_kind(o), CTL_MSG_REQUEST);
    assert_int_equal(ctl_request_parse(o, &req, &err), 0);
    assert_string_equal(req.command, "domain-start");
    const char *dom;
    assert_int_equal(ctl_arg_str(req.args, "domain", true, &dom, &err), 0);
    assert_string_equal(dom, "vm");
    int64_t n;
    assert_int_equal(ctl_arg_int(req.args, "missing", true, &n, &err), -EINVAL);
    ctl_request_fini(&req);
    json_object_put(o);

    t = "{\"id\": 5, \"command\": \"domain-start\", \"arguments\": {\"domain\": \"vm\\u0000../x\"}}";
    assert_int_equal(ctl_parse(t, strlen(t), &o, NULL), 0);
    assert_int_equal(ctl_request_parse(o, &req, &err), 0);
    gw_error_init(&err);
    assert_int_equal(ctl_arg_str(req.args, "domain", true, &dom, &err), -EINVAL);
    assert_null(dom);
    assert_string_equal(err.msg, "argument 'domain' contains a NUL byte");
    ctl_request_fini(&req);
    json_object_put(o);
}

/* An error reply always gives the client something to say (fuzz_peer: an
 * empty "desc" made `error: ` with nothing after it). */
static void test_reply_result(void **state)
{
    static const struct { const char *reply, *msg, *cls; } cases[] = {
        { "{\"id\": 2, \"error\": {\"class\": \"NoDomain\", \"desc\": \"no such domain\"}}",
          "no such domain", "NoDomain" },
        { "{\"id\": 2, \"error\": {\"class\": \"NoDomain\", \"desc\": \"\"}}",
          "NoDomain from the daemon, without a description", "NoDomain" },
        { "{\"id\": 2, \"error\": {\"class\": \"OperationFailed\"}}",
          "OperationFailed from the daemon, without a description", "OperationFailed" },
        { "{\"id\": 2, \"error\": {\"desc\": \"\"}}", "malformed reply from the daemon", CTL_ERR_GENERIC },
        { "{\"id\": 2}", "malformed reply from the daemon", CTL_ERR_GENERIC },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct json_object *o = json_tokener_parse(cases[i].reply), *ret = (void *)1;
        const char *cls = NULL;
        struct gw_error err;
        gw_error_init(&err);
        assert_int_equal(ctl_reply_result(o, &ret, &cls, &err), -EREMOTEIO);
        assert_null(ret);
        assert_string_equal(err.msg, cases[i].msg);
        assert_string_equal(cls, cases[i].cls);
        json_object_put(o);
    }
}

static void test_hello(void **state)
{
    struct gw_error err;
    gw_error_init(&err);
    struct json_object *args = ctl_hello_args("test");
    assert_int_equal(ctl_hello_check(args, &err), 0);
    json_object_object_add(args, "protocol", json_object_new_int(2));
    assert_int_equal(ctl_hello_check(args, &err), -EPROTONOSUPPORT);
    assert_non_null(strstr(err.msg, "version 2 is not supported"));
    assert_string_equal(ctl_error_class(err.code), CTL_ERR_VERSION);
    json_object_object_del(args, "protocol");
    gw_error_init(&err);
    assert_int_equal(ctl_hello_check(args, &err), -EINVAL);
    json_object_put(args);
}

/* The daemon's hello reply as the client checks it: the version it got
 * and the one it speaks are both named. */
static void test_hello_reply(void **state)
{
    static const struct { const char *ret; int r; const char *msg; } cases[] = {
        { "{\"protocol\": 1, \"server\": \"godwitd 0.1.0\"}", 0, "" },
        { "{\"protocol\": 2, \"server\": \"godwitd 9\"}", -EPROTONOSUPPORT,
          "the daemon's control protocol version 2 is not supported (this client speaks version 1)" },
        { "{\"protocol\": 0}", -EPROTONOSUPPORT, "version 0 is not supported" },
        { "{\"protocol\": \"1\"}", -EPROTO, "does not say which control protocol version" },
        { "{\"protocol\": 1.0}", -EPROTO, "does not say which control protocol version" },
        { "{\"server\": \"godwitd 0.1.0\"}", -EPROTO, "(this client speaks version 1)" },
        { "[1]", -EPROTO, "does not say which" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct json_object *o = json_tokener_parse(cases[i].ret);
        struct gw_error err;
        gw_error_init(&err);
        assert_int_equal(ctl_hello_reply_check(o, &err), cases[i].r);
        if (!strstr(err.msg, cases[i].msg))
            fail_msg("%s: got '%s', wanted '%s'", cases[i].ret, err.msg, cases[i].msg);
        json_object_put(o);
    }
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(ctl_hello_reply_check(NULL, &err), -EPROTO);
}

/* A fake daemon on a Unix socket: it answers the hello with `reply` (the
 * hello's "return") and records what the client did next. No cmocka
 * assertion on its thread: the test checks what it recorded. */
struct fake_daemon {
    char path[108];
    int lfd;
    const char *reply;
    char hello_cmd[32];     /* the first request's command */
    int next;               /* ctl_recv of the message after the hello */
};

static void *fake_daemon_main(void *p)
{
    struct fake_daemon *f = p;
    int fd = accept(f->lfd, NULL, NULL);
    struct ctl_io io;
    ctl_io_init_fd(&io, &fd);
    struct json_object *msg = NULL, *id = NULL, *cmd = NULL;
    f->next = fd < 0 ? -errno : ctl_recv(&io, &msg, NULL);
    if (f->next < 0)
        goto out;
    json_object_object_get_ex(msg, "id", &id);
    if (json_object_object_get_ex(msg, "command", &cmd))
        snprintf(f->hello_cmd, sizeof(f->hello_cmd), "%s", json_object_get_string(cmd));
    struct json_object *reply = ctl_reply_return(id, json_tokener_parse(f->reply));
    f->next = ctl_send(&io, reply);
    json_object_put(reply);
    json_object_put(msg);
    msg = NULL;
    if (f->next == 0)
        f->next = ctl_recv(&io, &msg, NULL);
out:
    json_object_put(msg);
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* Connect to a fake daemon whose hello returns `reply`: true when the
 * client accepted it (it then sends one more request), false with err
 * filled. f->next then says what the client did after the hello. */
static bool connect_to_fake(struct fake_daemon *f, const char *reply, struct gw_error *err)
{
    memset(f, 0, sizeof(*f));
    f->reply = reply;
    snprintf(f->path, sizeof(f->path), "/tmp/godwit-ctl-%d.sock", (int)getpid());
    unlink(f->path);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
    f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(f->lfd, 1), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fake_daemon_main, f), 0);
    char uri[128];
    snprintf(uri, sizeof(uri), "unix:%s", f->path);
    gw_error_init(err);
    struct ctl_client *c = ctl_client_connect(uri, NULL, "test", 5000, err);
    if (c) /* the fake daemon takes it and hangs up: no answer */
        ctl_client_call(c, "domain-list", NULL, NULL, 5000, NULL);
    ctl_client_free(c);
    pthread_join(t, NULL);
    close(f->lfd);
    unlink(f->path);
    return c != NULL;
}

/* The client went on with a daemon whose hello reply gave another
 * protocol version (or none): it must refuse it, say which version it got
 * and which it speaks, and hang up without another request. */
static void test_client_hello_version(void **state)
{
    struct fake_daemon f;
    struct gw_error err;
    assert_true(connect_to_fake(&f, "{\"protocol\": 1, \"server\": \"fake\"}", &err));
    assert_string_equal(f.hello_cmd, "hello");
    assert_int_equal(f.next, 0); /* the client went on: domain-list */

    assert_false(connect_to_fake(&f, "{\"protocol\": 2, \"server\": \"fake 2.0\"}", &err));
    assert_int_equal(err.code, EPROTONOSUPPORT);
    assert_string_equal(err.msg,
                        "the daemon's control protocol version 2 is not supported (this client speaks version 1)");
    assert_int_equal(f.next, -ECONNRESET); /* hung up, nothing sent after the hello */

    assert_false(connect_to_fake(&f, "{\"server\": \"fake\"}", &err));
    assert_int_equal(err.code, EPROTO);
    assert_non_null(strstr(err.msg, "does not say which control protocol version"));
    assert_int_equal(f.next, -ECONNRESET);
}

/* A daemon that answers hello, then holds the next call open without
 * answering it: it trickles the reply one byte every 100 ms (trickle), or
 * sends events and replies to other ids every 100 ms (chatter), for at
 * most 5 s or until the client hangs up; or answers with neither a return
 * nor an error (malformed). */
enum stall { STALL_CHATTER, STALL_TRICKLE, STALL_MALFORMED };

struct stalling_daemon {
    int lfd;
    enum stall mode;
};

static bool send_frame(int fd, const char *text, bool trickle)
{
    uint8_t buf[256];
    size_t len = strlen(text);
    ctl_header_encode(buf, (uint32_t)len);
    memcpy(buf + CTL_HEADER_LEN, text, len);
    len += CTL_HEADER_LEN;
    for (size_t off = 0; off < len; off += trickle ? 1 : len - off) {
        if (send(fd, buf + off, trickle ? 1 : len - off, MSG_NOSIGNAL) < 0)
            return false;
        if (trickle)
            usleep(100 * 1000);
    }
    return true;
}

static void *stalling_daemon_main(void *p)
{
    struct stalling_daemon *f = p;
    int fd = accept(f->lfd, NULL, NULL);
    struct ctl_io io;
    ctl_io_init_fd(&io, &fd);
    struct json_object *msg = NULL;
    if (fd < 0 || ctl_recv(&io, &msg, NULL) < 0)
        goto out;
    json_object_put(msg);
    msg = NULL;
    if (!send_frame(fd, "{\"id\": 1, \"return\": {\"protocol\": 1, \"server\": \"stall\"}}", false) ||
        ctl_recv(&io, &msg, NULL) < 0)
        goto out;
    if (f->mode == STALL_MALFORMED)
        send_frame(fd, "{\"id\": 2, \"outcome\": \"running\"}", false);
    else if (f->mode == STALL_TRICKLE) /* the reply to request 2, 60-odd bytes: over 6 s */
        send_frame(fd, "{\"id\": 2, \"return\": {\"padding\": \"................\"}}", true);
    else
        for (int i = 0; i < 50; i++) {
            if (!send_frame(fd, i % 2 ? "{\"id\": 99, \"return\": {}}"
                                      : "{\"event\": \"tick\", \"data\": {}}", false))
                break;
            usleep(100 * 1000);
        }
out:
    json_object_put(msg);
    if (fd >= 0)
        close(fd);
    return NULL;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ctl_client_call's timeout is one deadline for the whole call: neither a
 * reply that trickles in nor a stream of other messages keeps it open. */
static struct ctl_client *connect_stalling(struct stalling_daemon *f, pthread_t *t, char *path)
{
    snprintf(path, 108, "/tmp/godwit-ctl-stall-%d.sock", (int)getpid());
    unlink(path);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(f->lfd, 1), 0);
    assert_int_equal(pthread_create(t, NULL, stalling_daemon_main, f), 0);
    char uri[128];
    snprintf(uri, sizeof(uri), "unix:%s", path);
    struct gw_error err;
    gw_error_init(&err);
    struct ctl_client *c = ctl_client_connect(uri, NULL, "test", 5000, &err);
    assert_non_null(c);
    return c;
}

static void disconnect_stalling(struct stalling_daemon *f, pthread_t t, struct ctl_client *c,
                                const char *path)
{
    ctl_client_free(c); /* the stalling daemon's next send fails: it ends */
    pthread_join(t, NULL);
    close(f->lfd);
    unlink(path);
}

static void test_client_call_deadline(void **state)
{
    for (enum stall mode = STALL_CHATTER; mode <= STALL_TRICKLE; mode++) {
        struct stalling_daemon f = { .mode = mode };
        pthread_t t;
        char path[108];
        struct gw_error err;
        gw_error_init(&err);
        struct ctl_client *c = connect_stalling(&f, &t, path);
        uint64_t t0 = now_ms();
        int r = ctl_client_call(c, "domain-list", NULL, NULL, 700, &err);
        uint64_t took = now_ms() - t0;
        disconnect_stalling(&f, t, c, path);
        assert_int_equal(r, -ETIMEDOUT);
        assert_true(took >= 600 && took < 2000);
    }
}

/* A reply with neither a return nor an error is no refusal: -EBADMSG, not
 * the -EREMOTEIO of an error answer (a source would take that for "the
 * destination failed" and resume its guest). */
static void test_client_malformed_reply(void **state)
{
    struct stalling_daemon f = { .mode = STALL_MALFORMED };
    pthread_t t;
    char path[108];
    struct gw_error err;
    gw_error_init(&err);
    struct ctl_client *c = connect_stalling(&f, &t, path);
    struct json_object *ret = NULL;
    int r = ctl_client_call(c, "migration-finish", NULL, &ret, 5000, &err);
    disconnect_stalling(&f, t, c, path);
    assert_int_equal(r, -EBADMSG);
    assert_null(ret);
    assert_non_null(strstr(err.msg, "malformed reply"));
}

static void test_classes(void **state)
{
    assert_string_equal(ctl_error_class(ENOSYS), "CommandNotFound");
    assert_string_equal(ctl_error_class(-ENOENT), "NoDomain");
    assert_string_equal(ctl_error_class(EBUSY), "JobActive");
    assert_string_equal(ctl_error_class(EINVAL), "InvalidArgument");
    assert_string_equal(ctl_error_class(EMSGSIZE), "ProtocolError");
    assert_string_equal(ctl_error_class(12345), "GenericError");

    struct json_object *id = json_object_new_int(3);
    struct json_object *e = ctl_reply_error(id, "NoDomain", "Domain not found: x");
    struct gw_error err;
    gw_error_init(&err);
    const char *cls;
    assert_int_equal(ctl_msg_kind(e), CTL_MSG_REPLY);
    assert_int_equal(ctl_reply_result(e, NULL, &cls, &err), -EREMOTEIO);
    assert_string_equal(cls, "NoDomain");
    assert_string_equal(err.msg, "Domain not found: x");
    json_object_put(e);
    struct json_object *ok = ctl_reply_return(id, json_object_new_int(7)), *ret;
    assert_int_equal(ctl_reply_result(ok, &ret, NULL, NULL), 0);
    assert_int_equal(json_object_get_int(ret), 7);
    json_object_put(ret);
    json_object_put(ok);
    json_object_put(id);
    struct json_object *ev = ctl_event_new("lifecycle", "vm", NULL, NULL);
    assert_int_equal(ctl_msg_kind(ev), CTL_MSG_EVENT);
    json_object_put(ev);
}

static void test_uri(void **state)
{
    struct ctl_uri u;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(ctl_uri_parse("unix:/run/godwit/godwitd.sock", &u, &err), 0);
    assert_int_equal(u.kind, CTL_URI_UNIX);
    assert_string_equal(u.path, "/run/godwit/godwitd.sock");
    assert_int_equal(ctl_uri_parse("tcp:10.77.0.2:16509", &u, &err), 0);
    assert_string_equal(u.host, "10.77.0.2");
    assert_string_equal(u.port, "16509");
    assert_int_equal(ctl_uri_parse("tcp:[::1]:1", &u, &err), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(ctl_uri_parse("tcp:host:0", &u, &err), -EINVAL);
    assert_int_equal(ctl_uri_parse("tcp:host", &u, &err), -EINVAL);
    assert_int_equal(ctl_uri_parse("unix:", &u, &err), -EINVAL);
    assert_int_equal(ctl_uri_parse("qemu:///system", &u, &err), -EINVAL);
}

static void test_base64(void **state)
{
    const uint8_t in[] = { 0, 1, 2, 0xff, 'a', '\n', 0x80 };
    for (size_t len = 0; len <= sizeof(in); len++) {
        char *s = ctl_base64(in, len);
        uint8_t out[16];
        assert_int_equal(ctl_unbase64(s, out), (ssize_t)len);
        assert_memory_equal(in, out, len);
        free(s);
    }
    char *s = ctl_base64((const uint8_t *)"godwit", 6);
    assert_string_equal(s, "Z29kd2l0");
    free(s);
    uint8_t out[8];
    assert_int_equal(ctl_unbase64("a!b", out), -EINVAL);
}

/* Over a socketpair: a message round trip, an over-length header refused
 * without reading on, end of stream, a message cut short. */
static void test_wire(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct ctl_io a, b;
    ctl_io_init_fd(&a, &sv[0]);
    ctl_io_init_fd(&b, &sv[1]);
    struct json_object *req = ctl_request_new(1, "hello", ctl_hello_args("t")), *got;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(ctl_send(&a, req), 0);
    assert_int_equal(ctl_recv(&b, &got, &err), 0);
    assert_string_equal(json_object_to_json_string(got), json_object_to_json_string(req));
    json_object_put(got);
    json_object_put(req);

    uint8_t hdr[4];
    ctl_header_encode(hdr, 512u << 20);
    assert_int_equal(write(sv[0], hdr, 4), 4);
    assert_int_equal(ctl_recv(&b, &got, &err), -EMSGSIZE);

    ctl_header_encode(hdr, 100);
    assert_int_equal(write(sv[0], hdr, 4), 4);
    assert_int_equal(write(sv[0], "{\"a\"", 4), 4);
    shutdown(sv[0], SHUT_WR);
    gw_error_init(&err);
    assert_int_equal(ctl_recv(&b, &got, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "middle"));
    assert_int_equal(ctl_recv(&b, &got, &err), -ECONNRESET);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header),  cmocka_unit_test(test_parse),
        cmocka_unit_test(test_request), cmocka_unit_test(test_hello),
        cmocka_unit_test(test_classes), cmocka_unit_test(test_uri),
        cmocka_unit_test(test_base64),  cmocka_unit_test(test_wire),
        cmocka_unit_test(test_reply_result), cmocka_unit_test(test_hello_reply),
        cmocka_unit_test(test_client_hello_version), cmocka_unit_test(test_client_call_deadline),
        cmocka_unit_test(test_client_malformed_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
