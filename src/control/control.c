/* The control protocol: framing and messages (docs/daemon.md). */
#include "control/control.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/json_text.h"

/* ---- plain socket transport ---- */

static ssize_t fd_read(void *opaque, void *buf, size_t len)
{
    int fd = *(int *)opaque;
    for (;;) {
        ssize_t n = recv(fd, buf, len, 0);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
    }
}

static ssize_t fd_write(void *opaque, const void *buf, size_t len)
{
    int fd = *(int *)opaque;
    for (;;) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
    }
}

void ctl_io_init_fd(struct ctl_io *io, int *fd)
{
    io->read = fd_read;
    io->write = fd_write;
    io->opaque = fd;
}

/* ---- framing ---- */

/* The first bytes of a TLS record (RFC 8446 5.1: content type 20-23, then
 * the major version 3 and a minor version 0-4): a plain side's header
 * when its peer speaks TLS, a length far over any limit. */
static bool looks_like_tls(const uint8_t hdr[CTL_HEADER_LEN])
{
    return hdr[0] >= 20 && hdr[0] <= 23 && hdr[1] == 3 && hdr[2] <= 4;
}

int ctl_header_decode(const uint8_t hdr[CTL_HEADER_LEN], uint32_t max, uint32_t *len,
                      struct gw_error *err)
{
    uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (n == 0)
        return gw_error_set(err, EPROTO, "empty control message");
    if (n > max && looks_like_tls(hdr))
        return gw_error_set(err, EMSGSIZE, "a TLS record came where a control message was expected: "
                            "the other side speaks TLS on this connection and this side does not");
    if (n > max)
        return gw_error_set(err, EMSGSIZE, "control message of %u bytes exceeds the limit of %u",
                            n, max);
    *len = n;
    return 0;
}

void ctl_header_encode(uint8_t hdr[CTL_HEADER_LEN], uint32_t len)
{
    hdr[0] = (uint8_t)(len >> 24);
    hdr[1] = (uint8_t)(len >> 16);
    hdr[2] = (uint8_t)(len >> 8);
    hdr[3] = (uint8_t)len;
}

int ctl_parse(const char *buf, size_t len, struct json_object **out, struct gw_error *err)
{
    struct gw_error e;
    gw_error_init(&e);
    int r = json_text_object(buf, len, out, &e);
    if (r == -EINVAL) /* a malformed message: the wire's error */
        r = -EPROTO;
    return r < 0 ? gw_error_set(err, -r, "control message: %s", e.msg) : 0;
}

static int write_all(struct ctl_io *io, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = io->write(io->opaque, p, len);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(struct ctl_io *io, void *buf, size_t len, bool first)
{
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = io->read(io->opaque, p + got, len - got);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return (first && got == 0) ? -ECONNRESET : -EPROTO;
        got += (size_t)n;
    }
    return 0;
}

int ctl_send(struct ctl_io *io, struct json_object *msg)
{
    size_t len;
    const char *text = json_object_to_json_string_length(msg, JSON_C_TO_STRING_PLAIN, &len);
    if (!text)
        return -ENOMEM;
    return ctl_send_text(io, text, len);
}

int ctl_send_text(struct ctl_io *io, const char *text, size_t len)
{
    if (len == 0 || len > CTL_MAX_MSG)
        return -EMSGSIZE;
    uint8_t hdr[CTL_HEADER_LEN];
    ctl_header_encode(hdr, (uint32_t)len);
    int r = write_all(io, hdr, sizeof(hdr));
    return r < 0 ? r : write_all(io, text, len);
}

int ctl_recv(struct ctl_io *io, struct json_object **msg, struct gw_error *err)
{
    *msg = NULL;
    uint8_t hdr[CTL_HEADER_LEN];
    int r = read_all(io, hdr, sizeof(hdr), true);
    if (r == -EPROTO)
        return gw_error_set(err, EPROTO, "connection closed in the middle of a message");
    if (r < 0)
        return r;
    uint32_t len;
    if (ctl_header_decode(hdr, CTL_MAX_MSG, &len, err) < 0) {
        if (err) /* may be NULL (the daemon reads a refused peer's request without one) */
            err->code = EMSGSIZE; /* 0 or too long: the body was not read, the framing is lost */
        return -EMSGSIZE;
    }
    char *buf = malloc(len);
    if (!buf)
        return gw_error_set(err, ENOMEM, "out of memory");
    r = read_all(io, buf, len, false);
    if (r == -EPROTO)
        gw_error_set(err, EPROTO, "connection closed in the middle of a message");
    if (r == 0)
        r = ctl_parse(buf, len, msg, err);
    free(buf);
    return r;
}

/* ---- messages ---- */

enum ctl_msg_kind ctl_msg_kind(struct json_object *msg)
{
    struct json_object *v;
    if (!json_object_is_type(msg, json_type_object))
        return CTL_MSG_INVALID;
    if (json_object_object_get_ex(msg, "command", &v))
        return CTL_MSG_REQUEST;
    if (json_object_object_get_ex(msg, "event", &v))
        return CTL_MSG_EVENT;
    if (json_object_object_get_ex(msg, "return", &v) || json_object_object_get_ex(msg, "error", &v))
        return CTL_MSG_REPLY;
    return CTL_MSG_INVALID;
}

static bool valid_id(struct json_object *id)
{
    return json_object_is_type(id, json_type_int) || json_object_is_type(id, json_type_string);
}

int ctl_request_parse(struct json_object *msg, struct ctl_request *req, struct gw_error *err)
{
    memset(req, 0, sizeof(*req));
    struct json_object *id = NULL, *cmd = NULL, *args = NULL;
    json_object_object_get_ex(msg, "id", &id);
    if (!id || !valid_id(id))
        return gw_error_set(err, EPROTO, "request without a valid \"id\" (integer or string)");
    req->id = id;
    if (!json_object_object_get_ex(msg, "command", &cmd) || !json_object_is_type(cmd, json_type_string))
        return gw_error_set(err, EPROTO, "request without a \"command\" string");
    if (strlen(json_object_get_string(cmd)) != (size_t)json_object_get_string_len(cmd))
        return gw_error_set(err, EPROTO, "the \"command\" contains a NUL byte");
    if (json_object_object_get_ex(msg, "arguments", &args) && !json_object_is_type(args, json_type_object))
        return gw_error_set(err, EINVAL, "\"arguments\" must be an object");
    req->command = json_object_get_string(cmd);
    if (!args) {
        req->empty = json_object_new_object();
        args = req->empty;
    }
    req->args = args;
    return 0;
}

void ctl_request_fini(struct ctl_request *req)
{
    json_object_put(req->empty);
    memset(req, 0, sizeof(*req));
}

/* The one rule of both ends of a hello: the other side's version is ours,
 * or the connection ends (docs/daemon.md, "Hello"). */
static int check_version(int64_t v, const char *theirs, const char *self, struct gw_error *err)
{
    if (v != CTL_PROTOCOL_VERSION)
        return gw_error_set(err, EPROTONOSUPPORT,
                            "%s control protocol version %lld is not supported (%s speaks version %d)",
                            theirs, (long long)v, self, CTL_PROTOCOL_VERSION);
    return 0;
}

int ctl_hello_check(struct json_object *args, struct gw_error *err)
{
    int64_t v = 0;
    int r = ctl_arg_int(args, "protocol", true, &v, err);
    return r < 0 ? r : check_version(v, "the client's", "this daemon", err);
}

int ctl_hello_reply_check(struct json_object *ret, struct gw_error *err)
{
    struct json_object *v;
    if (!json_object_is_type(ret, json_type_object) || !json_object_object_get_ex(ret, "protocol", &v) ||
        !json_object_is_type(v, json_type_int))
        return gw_error_set(err, EPROTO, "the daemon's hello reply does not say which control "
                            "protocol version it speaks (this client speaks version %d)",
                            CTL_PROTOCOL_VERSION);
    return check_version(json_object_get_int64(v), "the daemon's", "this client", err);
}

struct json_object *ctl_request_new(int64_t id, const char *command, struct json_object *args)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_int64(id));
    json_object_object_add(o, "command", json_object_new_string(command));
    if (args)
        json_object_object_add(o, "arguments", args);
    return o;
}

struct json_object *ctl_hello_args(const char *who)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "protocol", json_object_new_int(CTL_PROTOCOL_VERSION));
    json_object_object_add(o, "client", json_object_new_string(who));
    return o;
}

struct json_object *ctl_reply_return(struct json_object *id, struct json_object *ret)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_get(id));
    json_object_object_add(o, "return", ret ? ret : json_object_new_object());
    return o;
}

struct json_object *ctl_reply_error(struct json_object *id, const char *cls, const char *desc)
{
    struct json_object *e = json_object_new_object();
    json_object_object_add(e, "class", json_object_new_string(cls));
    json_object_object_add(e, "desc", json_object_new_string(desc));
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_get(id));
    json_object_object_add(o, "error", e);
    return o;
}

struct json_object *ctl_event_new(const char *type, const char *domain, const char *uuid,
                                  struct json_object *data)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct json_object *ts = json_object_new_object();
    json_object_object_add(ts, "seconds", json_object_new_int64(tv.tv_sec));
    json_object_object_add(ts, "microseconds", json_object_new_int64(tv.tv_usec));
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "event", json_object_new_string(type));
    if (domain)
        json_object_object_add(o, "domain", json_object_new_string(domain));
    if (uuid)
        json_object_object_add(o, "uuid", json_object_new_string(uuid));
    json_object_object_add(o, "data", data ? data : json_object_new_object());
    json_object_object_add(o, "timestamp", ts);
    return o;
}

const char *ctl_error_class(int code)
{
    switch (code < 0 ? -code : code) {
    case ENOENT: return CTL_ERR_NO_DOMAIN;
    case EINVAL: return CTL_ERR_INVALID_ARG;
    case EBUSY: return CTL_ERR_JOB_ACTIVE;
    case EEXIST: case EALREADY: case ENOTCONN: return CTL_ERR_OP_INVALID;
    case EPERM: case EACCES: return CTL_ERR_PERMISSION;
    case EPROTO: case EMSGSIZE: return CTL_ERR_PROTOCOL;
    case EPROTONOSUPPORT: return CTL_ERR_VERSION;
    case ENOSYS: return CTL_ERR_NOT_FOUND;
    case ENOTSUP: return CTL_ERR_UNSUPPORTED;
    case EIO: case ETIMEDOUT: case ECHILD: case ESRCH: return CTL_ERR_OP_FAILED;
    default: return CTL_ERR_GENERIC;
    }
}

int ctl_reply_result(struct json_object *reply, struct json_object **ret, const char **cls,
                     struct gw_error *err)
{
    struct json_object *v;
    if (ret)
        *ret = NULL;
    if (json_object_object_get_ex(reply, "return", &v)) {
        if (ret)
            *ret = json_object_get(v);
        return 0;
    }
    const char *c = NULL, *desc = NULL;
    if (json_object_object_get_ex(reply, "error", &v)) {
        struct json_object *s;
        if (json_object_object_get_ex(v, "class", &s))
            c = json_object_get_string(s);
        if (json_object_object_get_ex(v, "desc", &s))
            desc = json_object_get_string(s);
    }
    if (cls)
        *cls = c ? c : CTL_ERR_GENERIC;
    if (desc && desc[0])
        return gw_error_set(err, EREMOTEIO, "%s", desc);
    /* Never an empty message: the caller's error would say nothing. */
    if (c && c[0])
        return gw_error_set(err, EREMOTEIO, "%s from the daemon, without a description", c);
    return gw_error_set(err, EREMOTEIO, "malformed reply from the daemon");
}

/* ---- arguments ---- */

int ctl_arg_str(struct json_object *args, const char *key, bool required, const char **out,
                struct gw_error *err)
{
    struct json_object *v;
    *out = NULL;
    if (!json_object_object_get_ex(args, key, &v) || json_object_is_type(v, json_type_null))
        return required ? gw_error_set(err, EINVAL, "missing argument '%s'", key) : 0;
    if (!json_object_is_type(v, json_type_string))
        return gw_error_set(err, EINVAL, "argument '%s' must be a string", key);
    /* A NUL byte would cut the string short: "vm1\u0000x" must not name vm1. */
    if (strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v))
        return gw_error_set(err, EINVAL, "argument '%s' contains a NUL byte", key);
    *out = json_object_get_string(v);
    return 0;
}

int ctl_arg_bool(struct json_object *args, const char *key, bool *out, struct gw_error *err)
{
    struct json_object *v;
    if (!json_object_object_get_ex(args, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_boolean))
        return gw_error_set(err, EINVAL, "argument '%s' must be true or false", key);
    *out = json_object_get_boolean(v);
    return 0;
}

int ctl_arg_int(struct json_object *args, const char *key, bool required, int64_t *out,
                struct gw_error *err)
{
    struct json_object *v;
    if (!json_object_object_get_ex(args, key, &v))
        return required ? gw_error_set(err, EINVAL, "missing argument '%s'", key) : 0;
    if (!json_object_is_type(v, json_type_int))
        return gw_error_set(err, EINVAL, "argument '%s' must be an integer", key);
    *out = json_object_get_int64(v);
    return 0;
}

/* ---- addresses ---- */

/* s: what follows "tcp:"; the error quotes the address as given. */
static int parse_tcp(const char *s, struct ctl_uri *uri, struct gw_error *err)
{
    const char *colon = strrchr(s, ':'), *host = s;
    if (!colon || colon == s || !colon[1])
        return gw_error_set(err, EINVAL, "bad address 'tcp:%s': expected tcp:HOST:PORT", s);
    size_t hlen = (size_t)(colon - s);
    if (s[0] == '[' && hlen >= 2 && s[hlen - 1] == ']') {
        host++;
        hlen -= 2;
    }
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    /* digits only: strtoul would also take " 22", "+22" and "-1" */
    if (colon[1] < '0' || colon[1] > '9' || *end || port == 0 || port > 65535 || hlen == 0 ||
        hlen >= sizeof(uri->host))
        return gw_error_set(err, EINVAL, "bad address 'tcp:%s': expected tcp:HOST:PORT", s);
    memcpy(uri->host, host, hlen);
    uri->host[hlen] = '\0';
    snprintf(uri->port, sizeof(uri->port), "%lu", port);
    return 0;
}

int ctl_uri_parse(const char *s, struct ctl_uri *uri, struct gw_error *err)
{
    memset(uri, 0, sizeof(*uri));
    if (strncmp(s, "unix:", 5) == 0) {
        uri->kind = CTL_URI_UNIX;
        if (!s[5] || strlen(s + 5) >= sizeof(uri->path))
            return gw_error_set(err, EINVAL, "bad address '%s': the socket path must have 1-%zu characters",
                                s, sizeof(uri->path) - 1);
        strcpy(uri->path, s + 5);
        return 0;
    }
    if (strncmp(s, "tcp:", 4) == 0) {
        uri->kind = CTL_URI_TCP;
        return parse_tcp(s + 4, uri, err);
    }
    return gw_error_set(err, EINVAL, "bad address '%s': expected unix:PATH or tcp:HOST:PORT", s);
}

/* ---- base64 ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *ctl_base64(const uint8_t *buf, size_t len)
{
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    char *p = out;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)buf[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)buf[i + 1] << 8;
        if (i + 2 < len)
            v |= buf[i + 2];
        *p++ = b64[v >> 18 & 63];
        *p++ = b64[v >> 12 & 63];
        *p++ = i + 1 < len ? b64[v >> 6 & 63] : '=';
        *p++ = i + 2 < len ? b64[v & 63] : '=';
    }
    *p = '\0';
    return out;
}

ssize_t ctl_unbase64(const char *s, uint8_t *out)
{
    uint32_t acc = 0;
    int bits = 0;
    ssize_t n = 0;
    for (; *s && *s != '='; s++) {
        const char *c = strchr(b64, *s);
        if (!c || !*s)
            return -EINVAL;
        acc = acc << 6 | (uint32_t)(c - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return n;
}
