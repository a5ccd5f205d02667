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
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/json_text.h"
#include "control/control.h"
#include "control/control_client.h"
#include "control/control_tls.h"

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
 * nor an error (malformed); or reads nothing more for 3 s, then hangs up
 * (deaf). */
enum stall { STALL_CHATTER, STALL_TRICKLE, STALL_MALFORMED, STALL_DEAF };

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
    if (!send_frame(fd, "{\"id\": 1, \"return\": {\"protocol\": 1, \"server\": \"stall\"}}", false))
        goto out;
    if (f->mode == STALL_DEAF) {
        usleep(3000 * 1000);
        goto out;
    }
    if (ctl_recv(&io, &msg, NULL) < 0)
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

/* The deadline covers the request too: a daemon that reads nothing more
 * (stopped, stuck) cannot hold a call whose request is larger than the
 * socket's buffers in its write. */
static void test_client_call_deadline_write(void **state)
{
    struct stalling_daemon f = { .mode = STALL_DEAF };
    pthread_t t;
    char path[108];
    struct gw_error err;
    gw_error_init(&err);
    struct ctl_client *c = connect_stalling(&f, &t, path);
    size_t n = CTL_MAX_MSG - 1024;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = '\0';
    struct json_object *args = json_object_new_object();
    json_object_object_add(args, "definition", json_object_new_string(big));
    free(big);
    uint64_t t0 = now_ms();
    int r = ctl_client_call(c, "domain-define", args, NULL, 700, &err);
    uint64_t took = now_ms() - t0;
    int again = ctl_client_call(c, "domain-list", NULL, NULL, 700, NULL);
    disconnect_stalling(&f, t, c, path);
    if (r != -ETIMEDOUT || took < 600 || took > 2000)
        fail_msg("r=%d after %llu ms: %s", r, (unsigned long long)took, err.msg);
    assert_non_null(strstr(err.msg, "700 ms"));
    assert_true(again < 0); /* half a request went out: the connection is done */
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


/* ctl_recv with no error object (the daemon's refusal of a foreign uid
 * reads that way, and so does the CLI's progress poll): a refused header
 * must not dereference it. */
/* Counted before json-c allocates: 1 MiB of "{}," became ~260 MB of heap.
 * Braces and commas inside strings do not count. */
static void test_parse_value_limits(void **state)
{
    size_t cap = 1 << 20;
    char *text = malloc(cap);
    struct json_object *o = NULL;
    struct gw_error err;
    for (unsigned n = JSON_TEXT_MAX_CONTAINERS - 1; n <= JSON_TEXT_MAX_CONTAINERS; n++) {
        size_t len = (size_t)snprintf(text, cap, "{\"a\":[");
        for (unsigned i = 0; i < n; i++)
            len += (size_t)snprintf(text + len, cap - len, "%s{}", i ? "," : "");
        len += (size_t)snprintf(text + len, cap - len, "]}");
        gw_error_init(&err);
        int r = ctl_parse(text, len, &o, &err); /* n objects in an array in an object */
        if (n + 2 <= JSON_TEXT_MAX_CONTAINERS) {
            assert_int_equal(r, 0);
            json_object_put(o);
        } else {
            assert_int_equal(r, -E2BIG);
            assert_non_null(strstr(err.msg, "objects and arrays"));
        }
    }
    size_t len = (size_t)snprintf(text, cap, "{\"a\":[1");
    for (unsigned i = 1; i <= JSON_TEXT_MAX_VALUES; i++) /* one value more than the limit */
        len += (size_t)snprintf(text + len, cap - len, ",1");
    len += (size_t)snprintf(text + len, cap - len, "]}");
    gw_error_init(&err);
    assert_int_equal(ctl_parse(text, len, &o, &err), -E2BIG);
    assert_non_null(strstr(err.msg, "values"));
    len = (size_t)snprintf(text, cap, "{\"s\":\"");
    for (unsigned i = 0; i < 2 * JSON_TEXT_MAX_CONTAINERS; i++) /* inside a string: not counted */
        len += (size_t)snprintf(text + len, cap - len, "{,[");
    len += (size_t)snprintf(text + len, cap - len, "\\\"\"}");
    assert_int_equal(ctl_parse(text, len, &o, NULL), 0);
    json_object_put(o);
    free(text);
}

static void test_recv_refused_header_without_err(void **state)
{
    static const uint32_t lens[] = { 0, CTL_MAX_MSG + 1 };
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        struct ctl_io b;
        ctl_io_init_fd(&b, &sv[1]);
        uint8_t hdr[4];
        ctl_header_encode(hdr, lens[i]);
        assert_int_equal(write(sv[0], hdr, 4), 4);
        struct json_object *got = (void *)1;
        assert_int_equal(ctl_recv(&b, &got, NULL), -EMSGSIZE);
        assert_null(got);
        close(sv[0]);
        close(sv[1]);
    }
}

/* An address that is refused is quoted as it was given. */
static void test_uri_errors(void **state)
{
    struct ctl_uri u;
    static const char *const bad[] = { "tcp:[::1]:99999", "tcp:[]:22", "tcp:host: 22",
                                       "tcp:host:+22" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct gw_error err;
        gw_error_init(&err);
        assert_int_equal(ctl_uri_parse(bad[i], &u, &err), -EINVAL);
        if (!strstr(err.msg, bad[i]))
            fail_msg("'%s' refused as '%s'", bad[i], err.msg);
    }
}

/* A fake daemon that answers the client's hello with raw bytes. */
struct raw_daemon {
    int lfd;
    const uint8_t *bytes;
    size_t len;
};

static void *raw_daemon_main(void *p)
{
    struct raw_daemon *f = p;
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    uint8_t buf[512];
    if (recv(fd, buf, sizeof(buf), 0) > 0) /* the hello */
        send(fd, f->bytes, f->len, MSG_NOSIGNAL);
    while (recv(fd, buf, sizeof(buf), 0) > 0) /* until the client hangs up */
        ;
    close(fd);
    return NULL;
}

static int listen_unix_at(char *path, const char *tag, int backlog)
{
    snprintf(path, 108, "/tmp/godwit-ctl-%s-%d.sock", tag, (int)getpid());
    unlink(path);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, backlog), 0);
    return fd;
}

/* A plain client whose peer speaks TLS (godwit without --tls-psk against
 * a TLS listener) must be told so, not that a message of 352518912 bytes
 * is over the limit. */
static void test_client_plain_to_tls(void **state)
{
    static const uint8_t alert[] = { 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50 };
    char path[108];
    struct raw_daemon f = { .lfd = listen_unix_at(path, "tls", 1), .bytes = alert, .len = sizeof(alert) };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, raw_daemon_main, &f), 0);
    char uri[128];
    snprintf(uri, sizeof(uri), "unix:%s", path);
    struct gw_error err;
    gw_error_init(&err);
    struct ctl_client *c = ctl_client_connect(uri, NULL, "test", 5000, &err);
    ctl_client_free(c);
    pthread_join(t, NULL);
    close(f.lfd);
    unlink(path);
    assert_null(c);
    if (!strstr(err.msg, "TLS") || strstr(err.msg, "exceeds"))
        fail_msg("got '%s'", err.msg);
}

/* connect() to a daemon that accepts nothing (its backlog full: stopped,
 * stuck) ends by the connect timeout. */
struct connect_try {
    const char *uri;
    int timeout_ms;
    struct gw_error err;
    bool ok;
    volatile bool done;
};

static void *connect_main(void *p)
{
    struct connect_try *ct = p;
    gw_error_init(&ct->err);
    struct ctl_client *c = ctl_client_connect(ct->uri, NULL, "test", ct->timeout_ms, &ct->err);
    ct->ok = c != NULL;
    ctl_client_free(c);
    ct->done = true;
    return NULL;
}

static void test_client_connect_backlog_full(void **state)
{
    char path[108], uri[128];
    int lfd = listen_unix_at(path, "backlog", 0);
    snprintf(uri, sizeof(uri), "unix:%s", path);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fill[8], nfill = 0;
    for (; nfill < 8; nfill++) { /* fill the backlog: the next connect would wait */
        fill[nfill] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (connect(fill[nfill], (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            close(fill[nfill]);
            break;
        }
    }
    assert_true(nfill < 8);
    struct connect_try ct = { .uri = uri, .timeout_ms = 500 };
    pthread_t t;
    uint64_t t0 = now_ms();
    assert_int_equal(pthread_create(&t, NULL, connect_main, &ct), 0);
    while (!ct.done && now_ms() - t0 < 3000)
        usleep(20 * 1000);
    bool in_time = ct.done;
    close(lfd); /* wakes a connect still waiting */
    pthread_join(t, NULL);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    unlink(path);
    assert_true(in_time);
    assert_false(ct.ok);
    assert_int_equal(ct.err.code, ETIMEDOUT);
}

/* ---- TLS ---- */

static void write_psk(char *path, const char *tag, const char *text)
{
    snprintf(path, 108, "/tmp/godwit-ctl-%s-%d.psk", tag, (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    chmod(path, 0600);
}

#define TEST_PSK "godwit:6f2d1b0c4a3e59877a6b5c4d3e2f10a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3\n"

/* A server given a key file it cannot use starts with it and refuses
 * every client later; it must refuse the file at once. */
static void test_tls_server_bad_psk_file(void **state)
{
    static const char *const texts[] = { "", "nocolon\n", "user:\n", "user:not-hex\n" };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        char path[108];
        write_psk(path, "bad", texts[i]);
        struct ctl_tls_config cfg = { .psk_file = path };
        struct gw_error err;
        gw_error_init(&err);
        struct ctl_tls *t = ctl_tls_new(&cfg, true, &err);
        ctl_tls_free(t);
        unlink(path);
        if (t)
            fail_msg("server accepted key file %zu (%s)", i, texts[i]);
        assert_non_null(strstr(err.msg, path));
    }
    char path[108];
    write_psk(path, "good", TEST_PSK);
    struct ctl_tls_config cfg = { .psk_file = path };
    struct ctl_tls *t = ctl_tls_new(&cfg, true, NULL);
    assert_non_null(t);
    ctl_tls_free(t);
    unlink(path);
}

/* A peer that sends its handshake a byte at a time: the handshake's time
 * limit is for the whole handshake (docs/daemon.md: "a handshake must end
 * within 3 s"), not for each byte, or 16 such peers hold every handshake
 * slot of a listener for ever. */
struct trickler {
    int fd;
};

static void *trickler_main(void *p)
{
    struct trickler *tr = p;
    /* a TLS record header announcing 256 bytes of ClientHello, then its bytes */
    uint8_t rec[64] = { 0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0xfc, 0x03, 0x03 };
    for (size_t i = 0; i < sizeof(rec); i++) { /* 6.4 s at most */
        if (send(tr->fd, &rec[i], 1, MSG_NOSIGNAL) != 1)
            break;
        usleep(100 * 1000);
    }
    close(tr->fd);
    return NULL;
}

static void test_tls_handshake_deadline(void **state)
{
    char path[108];
    write_psk(path, "hs", TEST_PSK);
    struct ctl_tls_config cfg = { .psk_file = path };
    void (*old)(int) = signal(SIGPIPE, SIG_IGN); /* the alert to a gone peer: another test's */
    for (int server = 1; server >= 0; server--) {
        struct ctl_tls *t = ctl_tls_new(&cfg, server, NULL);
        assert_non_null(t);
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        struct trickler tr = { .fd = sv[1] };
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, trickler_main, &tr), 0);
        struct gw_error err;
        gw_error_init(&err);
        uint64_t t0 = now_ms();
        struct ctl_tls_session *s = ctl_tls_session_new(t, sv[0], 700, &err);
        uint64_t took = now_ms() - t0;
        ctl_tls_session_free(s);
        shutdown(sv[0], SHUT_RDWR);
        pthread_join(th, NULL);
        close(sv[0]);
        ctl_tls_free(t);
        signal(SIGPIPE, old);
        assert_null(s);
        if (took < 600 || took > 2000)
            fail_msg("%s: the handshake ended after %llu ms (limit 700 ms): %s",
                     server ? "server" : "client", (unsigned long long)took, err.msg);
        old = signal(SIGPIPE, SIG_IGN);
    }
    signal(SIGPIPE, old);
    unlink(path);
}

/* Both ends of a TLS session over a socketpair. */
struct tls_pair_end {
    struct ctl_tls *tls;
    int fd;
    struct ctl_tls_session *s;
};

static void *tls_server_main(void *p)
{
    struct tls_pair_end *e = p;
    e->s = ctl_tls_session_new(e->tls, e->fd, 5000, NULL);
    return NULL;
}

/* A TLS write to a peer that hung up is an error, as on a plain socket
 * (MSG_NOSIGNAL), not a SIGPIPE that ends whatever process uses the
 * library (godwit and godwitd ignore SIGPIPE; a library must not rely on
 * it). */
static void test_tls_write_after_hangup(void **state)
{
    char path[108];
    write_psk(path, "pipe", TEST_PSK);
    struct ctl_tls_config cfg = { .psk_file = path };
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct tls_pair_end srv = { .tls = ctl_tls_new(&cfg, true, NULL), .fd = sv[1] };
    struct tls_pair_end cli = { .tls = ctl_tls_new(&cfg, false, NULL), .fd = sv[0] };
    assert_non_null(srv.tls);
    assert_non_null(cli.tls);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, tls_server_main, &srv), 0);
    cli.s = ctl_tls_session_new(cli.tls, cli.fd, 5000, NULL);
    pthread_join(t, NULL);
    assert_non_null(cli.s);
    assert_non_null(srv.s);
    struct ctl_io io;
    ctl_tls_session_io(cli.s, &io);
    assert_int_equal(ctl_send_text(&io, "{}", 2), 0);
    ctl_tls_session_free(srv.s);
    close(srv.fd); /* the peer is gone */
    void (*old)(int) = signal(SIGPIPE, SIG_DFL);
    int r = 0;
    for (int i = 0; i < 4 && r == 0; i++)
        r = ctl_send_text(&io, "{}", 2);
    signal(SIGPIPE, old);
    assert_true(r < 0);
    ctl_tls_session_free(cli.s);
    close(cli.fd);
    ctl_tls_free(srv.tls);
    ctl_tls_free(cli.tls);
    unlink(path);
}

/* The same over TLS: a peer daemon that answers hello, then reads
 * nothing for 3 s. The call ends by its deadline (GnuTLS's EAGAIN is no
 * busy loop), and freeing the client does not wait for that peer. */
struct deaf_tls_daemon {
    int lfd;
    struct ctl_tls *tls;
};

static void *deaf_tls_main(void *p)
{
    struct deaf_tls_daemon *f = p;
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    struct ctl_tls_session *s = ctl_tls_session_new(f->tls, fd, 5000, NULL);
    struct ctl_io io;
    struct json_object *msg = NULL, *id = NULL;
    if (s) {
        ctl_tls_session_io(s, &io);
        if (ctl_recv(&io, &msg, NULL) == 0 && json_object_object_get_ex(msg, "id", &id)) {
            struct json_object *ret = json_object_new_object();
            json_object_object_add(ret, "protocol", json_object_new_int(CTL_PROTOCOL_VERSION));
            struct json_object *reply = ctl_reply_return(id, ret);
            ctl_send(&io, reply);
            json_object_put(reply);
            usleep(3000 * 1000);
        }
        json_object_put(msg);
        ctl_tls_session_free(s);
    }
    close(fd);
    return NULL;
}

static void test_client_tls_deadline_write(void **state)
{
    char path[108];
    write_psk(path, "deaf", TEST_PSK);
    struct ctl_tls_config cfg = { .psk_file = path };
    struct deaf_tls_daemon f = { .tls = ctl_tls_new(&cfg, true, NULL) };
    assert_non_null(f.tls);
    f.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    /* a small window and small segments (loopback's are 64 KiB, and the
     * sender's buffer grows with them): the request cannot all sit in
     * the sockets' buffers */
    int small = 4096, mss = 536;
    setsockopt(f.lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    setsockopt(f.lfd, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof(mss));
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(f.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(f.lfd, 1), 0);
    assert_int_equal(getsockname(f.lfd, (struct sockaddr *)&sa, &sl), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, deaf_tls_main, &f), 0);
    char uri[64];
    snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    struct gw_error err;
    gw_error_init(&err);
    struct ctl_client *c = ctl_client_connect(uri, &cfg, "test", 5000, &err);
    if (!c)
        fail_msg("connect: %s", err.msg);
    size_t n = CTL_MAX_MSG - 1024;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = '\0';
    struct json_object *args = json_object_new_object();
    json_object_object_add(args, "definition", json_object_new_string(big));
    free(big);
    uint64_t t0 = now_ms();
    int r = ctl_client_call(c, "domain-define", args, NULL, 700, &err);
    uint64_t took = now_ms() - t0;
    ctl_client_free(c);
    uint64_t freed = now_ms() - t0 - took;
    pthread_join(t, NULL);
    close(f.lfd);
    ctl_tls_free(f.tls);
    unlink(path);
    if (r != -ETIMEDOUT || took < 600 || took > 2000 || freed > 1000)
        fail_msg("r=%d after %llu ms, free took %llu ms: %s", r, (unsigned long long)took,
                 (unsigned long long)freed, err.msg);
}

int main(int argc, char **argv)
{
    if (argc > 1) /* one test, by name (or a pattern) */
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header),  cmocka_unit_test(test_parse),
        cmocka_unit_test(test_request), cmocka_unit_test(test_hello),
        cmocka_unit_test(test_classes), cmocka_unit_test(test_uri),
        cmocka_unit_test(test_base64),  cmocka_unit_test(test_wire),
        cmocka_unit_test(test_reply_result), cmocka_unit_test(test_hello_reply),
        cmocka_unit_test(test_client_hello_version), cmocka_unit_test(test_client_call_deadline),
        cmocka_unit_test(test_client_malformed_reply),
        cmocka_unit_test(test_recv_refused_header_without_err), cmocka_unit_test(test_uri_errors),
        cmocka_unit_test(test_client_plain_to_tls), cmocka_unit_test(test_client_connect_backlog_full),
        cmocka_unit_test(test_tls_server_bad_psk_file), cmocka_unit_test(test_tls_handshake_deadline),
        cmocka_unit_test(test_tls_write_after_hangup), cmocka_unit_test(test_client_call_deadline_write),
        cmocka_unit_test(test_client_tls_deadline_write), cmocka_unit_test(test_parse_value_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
