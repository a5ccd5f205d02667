/* The control protocol between godwit (client) and godwitd (daemon), and
 * between two daemons: framing, versioned JSON messages, length bound,
 * error replies with a human message. Spec: docs/daemon.md.
 *
 * Framing: each message is a 4-byte big-endian length N (1..CTL_MAX_MSG)
 * followed by N bytes of JSON text (one object). The length is checked
 * before anything is allocated.
 *
 * Messages:
 *   request  {"id": INT|STRING, "command": NAME, "arguments": {...}}
 *   reply    {"id": ID, "return": VALUE}
 *            {"id": ID|null, "error": {"class": CLASS, "desc": "human message"}}
 *   event    {"event": TYPE, "domain": NAME, "uuid": UUID, "data": {...},
 *             "timestamp": {"seconds": S, "microseconds": US}}
 * The first request on a connection must be "hello" with
 * {"protocol": CTL_PROTOCOL_VERSION}; its reply carries the daemon's
 * version. Each side refuses a version other than its own
 * (ctl_hello_check, ctl_hello_reply_check) and the connection ends.
 *
 * Returns: 0 or -errno for operations (-ECONNRESET: peer closed cleanly,
 * -EMSGSIZE: over-length, -EPROTO: not a valid message, -EIO: transport
 * error); parse errors are also described in err. Builders return a new
 * json_object (caller puts) or NULL. Arguments marked "taken" become part of
 * the result; others are borrowed.
 * Threads: all functions are reentrant; one ctl_io must not be read by two
 * threads at once, nor written by two threads at once (the caller locks). */
#ifndef GW_CONTROL_CONTROL_H
#define GW_CONTROL_CONTROL_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

#define CTL_PROTOCOL_VERSION 1
#define CTL_MAX_MSG          (1u << 20) /* bytes of JSON in one message */
#define CTL_HEADER_LEN       4

/* Error classes carried in error replies. */
#define CTL_ERR_GENERIC        "GenericError"
#define CTL_ERR_PROTOCOL       "ProtocolError"
#define CTL_ERR_VERSION        "VersionMismatch"
#define CTL_ERR_NOT_FOUND      "CommandNotFound"
#define CTL_ERR_INVALID_ARG    "InvalidArgument"
#define CTL_ERR_NO_DOMAIN      "NoDomain"
#define CTL_ERR_OP_INVALID     "OperationInvalid"
#define CTL_ERR_OP_FAILED      "OperationFailed"
#define CTL_ERR_JOB_ACTIVE     "JobActive"
#define CTL_ERR_PERMISSION     "PermissionDenied"
#define CTL_ERR_UNSUPPORTED    "Unsupported"

/* A byte transport: plain socket or TLS session. read/write return bytes
 * moved (> 0), 0 on end of stream (read), or -errno. They may move fewer
 * bytes than asked. */
struct ctl_io {
    ssize_t (*read)(void *opaque, void *buf, size_t len);
    ssize_t (*write)(void *opaque, const void *buf, size_t len);
    void *opaque;
};

/* A ctl_io over a connected socket fd (opaque holds the fd). */
void ctl_io_init_fd(struct ctl_io *io, int *fd);

/* ---- framing ---- */

/* Decode a header; -EPROTO for 0, -EMSGSIZE for > max (err filled). */
int ctl_header_decode(const uint8_t hdr[CTL_HEADER_LEN], uint32_t max, uint32_t *len,
                      struct gw_error *err);
void ctl_header_encode(uint8_t hdr[CTL_HEADER_LEN], uint32_t len);
/* Parse len bytes: one JSON object and nothing after it but white space
 * (json_text_object). -EPROTO on anything else, the message saying where. */
int ctl_parse(const char *buf, size_t len, struct json_object **out, struct gw_error *err);
/* Send one message (borrowed). */
int ctl_send(struct ctl_io *io, struct json_object *msg);
/* Send one message already serialised (one JSON object, len bytes). */
int ctl_send_text(struct ctl_io *io, const char *text, size_t len);
/* Receive one message (new reference in *msg). -EMSGSIZE when the header
 * is refused (length 0 or over CTL_MAX_MSG; err says which): the body was
 * not read, so the stream cannot be resynchronised. */
int ctl_recv(struct ctl_io *io, struct json_object **msg, struct gw_error *err);

/* ---- messages ---- */

enum ctl_msg_kind { CTL_MSG_INVALID, CTL_MSG_REQUEST, CTL_MSG_REPLY, CTL_MSG_EVENT };
enum ctl_msg_kind ctl_msg_kind(struct json_object *msg);

struct ctl_request {
    struct json_object *id;      /* borrowed from the message */
    const char *command;         /* borrowed */
    struct json_object *args;    /* borrowed; never NULL (an empty object is used) */
    struct json_object *empty;   /* owned: the empty object when none was sent */
};
/* Validate a request. On failure *req is cleared (id kept when readable). */
int ctl_request_parse(struct json_object *msg, struct ctl_request *req, struct gw_error *err);
void ctl_request_fini(struct ctl_request *req);
/* The daemon's check of a hello request's arguments: -EINVAL when
 * "protocol" is missing or not an integer, -EPROTONOSUPPORT (class
 * VersionMismatch) when it is not CTL_PROTOCOL_VERSION. */
int ctl_hello_check(struct json_object *args, struct gw_error *err);
/* The client's check of the daemon's hello return: -EPROTO when it has no
 * integer "protocol", -EPROTONOSUPPORT when it is not CTL_PROTOCOL_VERSION.
 * Both messages name the version received and the version spoken. */
int ctl_hello_reply_check(struct json_object *ret, struct gw_error *err);

struct json_object *ctl_request_new(int64_t id, const char *command, struct json_object *args /* taken */);
struct json_object *ctl_hello_args(const char *who);
struct json_object *ctl_reply_return(struct json_object *id, struct json_object *ret /* taken */);
struct json_object *ctl_reply_error(struct json_object *id, const char *cls, const char *desc);
struct json_object *ctl_event_new(const char *type, const char *domain, const char *uuid,
                                  struct json_object *data /* taken */);

/* The class for an error code (the errno in struct gw_error). */
const char *ctl_error_class(int code);
/* From a reply: 0 and *ret (new ref, may be NULL) for a return; -EREMOTEIO
 * with err filled ("desc", or a message saying there was none) and *cls
 * (borrowed from reply) for an error. */
int ctl_reply_result(struct json_object *reply, struct json_object **ret, const char **cls,
                     struct gw_error *err);

/* Argument helpers: -EINVAL with a message when the type is wrong, a
 * string contains a NUL byte, or a required member is missing. */
int ctl_arg_str(struct json_object *args, const char *key, bool required, const char **out,
                struct gw_error *err);
int ctl_arg_bool(struct json_object *args, const char *key, bool *out, struct gw_error *err);
int ctl_arg_int(struct json_object *args, const char *key, bool required, int64_t *out,
                struct gw_error *err);

/* Addresses: "unix:PATH" or "tcp:HOST:PORT" (HOST may be "[v6addr]"). */
enum ctl_uri_kind { CTL_URI_UNIX, CTL_URI_TCP };
struct ctl_uri {
    enum ctl_uri_kind kind;
    char path[108];   /* unix */
    char host[256];   /* tcp */
    char port[16];
};
int ctl_uri_parse(const char *s, struct ctl_uri *uri, struct gw_error *err);

/* Base64 (RFC 4648) encoding of len bytes; malloc'd NUL-terminated string. */
char *ctl_base64(const uint8_t *buf, size_t len);
/* Decoding; returns bytes written to out (capacity >= strlen(s)*3/4) or -EINVAL. */
ssize_t ctl_unbase64(const char *s, uint8_t *out);

#endif
