/* libFuzzer target: what a peer daemon sends during a migration, through
 * the code that reads it, without sockets or a daemon:
 *   - the control-protocol framing and parsing (ctl_recv over an in-memory
 *     transport that hands out the bytes in reads of a chosen size);
 *   - a request (the destination's side): ctl_request_parse, then, by
 *     command, what the handlers of migrate_dst.c parse first: hello
 *     (ctl_hello_check), migration-prepare (mig_begin_from_json, then the
 *     Prepare checks with facts taken from the input), migration-finish
 *     (mig_finish_from_json), migration-abort/-status (mig_head_from_json),
 *     migration-prepare-resume (head and dest_host);
 *   - a reply (the source's side): ctl_reply_result, then what the source
 *     reads from a hello, Prepare or Finish/Status answer
 *     (ctl_hello_reply_check, mig_uri_from_reply, mig_outcome_from_reply).
 * Input: byte 0 = how the rest is read (bit 0: the rest is a framed byte
 * stream as on the wire; else it is one message body and gets a correct
 * header; bits 1-3: read size), byte 1 = the destination's facts for the
 * Prepare checks, then the bytes.
 * Oracles: a message with a NUL byte is refused (the JSON text ends
 * there); a refusal carries an errno and a message, and the error reply
 * the daemon would send carries that message to the client intact; an
 * accepted message obeys its rules (ids, uuids, flags, the cookie's domain
 * uuid is the job's), keeps its strings whole, and what the source would
 * send again for it (mig_*_to_json, over the wire) parses back to the same
 * thing; Prepare's checks refuse whenever the facts say the domain is in
 * use and accept only a layout and post-copy both sides support; an
 * accepted Prepare answer's uri is a tcp:HOST:PORT address; a hello
 * answer is accepted exactly when its "protocol" is our version. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "control/control.h"
#include "daemon/migrate_peer.h"
#include "qmp/qmp_json.h"
#include "fuzz_util.h"

struct feed {
    const uint8_t *p;
    size_t len, off, step;
};

static ssize_t feed_read(void *opaque, void *buf, size_t len)
{
    struct feed *f = opaque;
    size_t n = f->len - f->off;
    if (n > len)
        n = len;
    if (f->step && n > f->step)
        n = f->step;
    memcpy(buf, f->p + f->off, n);
    f->off += n;
    return (ssize_t)n;
}

static ssize_t feed_write(void *opaque, const void *buf, size_t len) { return (ssize_t)len; }

/* The string member k of o, if any, is stored whole in s. */
static void check_kept(struct json_object *o, const char *k, const char *s)
{
    struct json_object *v;
    if (json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
        FUZZ_CHECK(strlen(s) == (size_t)json_object_get_string_len(v));
}

static void check_head(struct json_object *args, const struct mig_msg_head *h)
{
    FUZZ_CHECK(h->version == MIG_PROTO_VERSION);
    FUZZ_CHECK(job_id_valid(h->job) && job_uuid_valid(h->uuid));
    check_kept(args, "job", h->job);
    check_kept(args, "uuid", h->uuid);
}

static bool head_equal(const struct mig_msg_head *a, const struct mig_msg_head *b)
{
    return a->version == b->version && !strcmp(a->job, b->job) && !strcmp(a->uuid, b->uuid);
}

/* ---- the destination's side: requests ---- */

static bool begin_equal(const struct mig_begin *a, const struct mig_begin *b)
{
    struct json_object *da = dom_def_to_json(&a->def), *db = dom_def_to_json(&b->def);
    bool same = !strcmp(json_object_to_json_string(da), json_object_to_json_string(db));
    json_object_put(da);
    json_object_put(db);
    return same && head_equal(&a->head, &b->head) && !strcmp(a->src_host, b->src_host) &&
           !strcmp(a->dest_host, b->dest_host) && a->mem_size == b->mem_size &&
           a->page_size == b->page_size && a->src_postcopy == b->src_postcopy &&
           a->flags == b->flags;
}

static void prepare_checks(const struct mig_begin *b, uint8_t bits)
{
    struct mig_prepare_facts f = {
        .uuid_defined = bits & 1, .uuid_active = bits & 2, .uuid_job = bits & 4,
        .name_other_uuid = bits & 8, .name_other_active = bits & 16, .local_postcopy = bits & 32,
    };
    struct gw_error err;
    gw_error_init(&err);
    int r = mig_prepare_check(b, &f, &err);
    if (f.uuid_active || f.uuid_job || f.name_other_uuid || f.name_other_active)
        FUZZ_CHECK(r == -EEXIST);
    if (r < 0) {
        fuzz_check_refused(r, &err);
        return;
    }
    FUZZ_CHECK(b->mem_size == b->def.memory_mib << 20 && b->page_size == MIG_PAGE_SIZE);
    FUZZ_CHECK(b->def.vcpus >= 1 && b->def.vcpus <= DOM_MAX_VCPUS);
    if (b->flags & JOB_F_POSTCOPY)
        FUZZ_CHECK(b->def.policy.permit_postcopy && f.local_postcopy && b->src_postcopy);
}

static int on_prepare(struct json_object *args, uint8_t facts, struct gw_error *err)
{
    struct mig_begin b, back;
    int r = mig_begin_from_json(args, &b, err);
    if (r == 0) {
        check_head(args, &b.head);
        check_kept(args, "dest_host", b.dest_host);
        FUZZ_CHECK(!strcmp(b.def.uuid, b.head.uuid) && !b.def.serial_log);
        FUZZ_CHECK(b.mem_size > 0 && b.page_size > 0 && !(b.flags & ~(unsigned)JOB_F__ALL));
        struct json_object *o = mig_begin_to_json(&b), *wire = fuzz_over_the_wire(o, JSON_C_TO_STRING_PLAIN);
        struct gw_error e2;
        gw_error_init(&e2);
        FUZZ_CHECK(mig_begin_from_json(wire, &back, &e2) == 0 && begin_equal(&b, &back));
        mig_begin_fini(&back);
        json_object_put(wire);
        json_object_put(o);
        prepare_checks(&b, facts);
    }
    mig_begin_fini(&b);
    return r;
}

static int on_finish(struct json_object *args, struct gw_error *err)
{
    struct mig_finish f, back;
    struct job j;
    int r = mig_finish_from_json(args, &f, err);
    if (r < 0)
        return r;
    check_head(args, &f.head);
    struct gw_error e2;
    gw_error_init(&e2);
    FUZZ_CHECK(job_init(&j, JOB_KIND_MIGRATION_OUT, f.head.job, f.head.uuid, "vm", 1, &e2) == 0);
    struct json_object *o = mig_finish_to_json(&j, f.cancelled, f.postcopy,
                                               f.stats ? json_object_get(f.stats) : NULL);
    struct json_object *wire = fuzz_over_the_wire(o, JSON_C_TO_STRING_PLAIN);
    FUZZ_CHECK(mig_finish_from_json(wire, &back, &e2) == 0);
    FUZZ_CHECK(head_equal(&f.head, &back.head) && f.cancelled == back.cancelled &&
               f.postcopy == back.postcopy && !f.stats == !back.stats);
    json_object_put(wire);
    json_object_put(o);
    return 0;
}

static int on_head(struct json_object *args, bool resume, struct gw_error *err)
{
    struct mig_msg_head h, back;
    const char *host = NULL;
    int r = mig_head_from_json(args, &h, err);
    if (r == 0 && resume)
        r = ctl_arg_str(args, "dest_host", true, &host, err);
    if (r < 0)
        return r;
    check_head(args, &h);
    if (host)
        check_kept(args, "dest_host", host);
    struct json_object *o = mig_head_to_json(h.job, h.uuid), *wire = fuzz_over_the_wire(o, JSON_C_TO_STRING_PLAIN);
    struct gw_error e2;
    gw_error_init(&e2);
    FUZZ_CHECK(mig_head_from_json(wire, &back, &e2) == 0 && head_equal(&h, &back));
    json_object_put(wire);
    json_object_put(o);
    return 0;
}

/* The error reply the daemon sends for a refused request reaches the
 * client with its message and class. */
static void check_error_reply(struct json_object *id, const struct gw_error *err)
{
    const char *cls = ctl_error_class(err->code);
    struct json_object *reply = ctl_reply_error(id, cls, err->msg);
    struct json_object *wire = fuzz_over_the_wire(reply, JSON_C_TO_STRING_PLAIN);
    struct gw_error back;
    const char *bcls = NULL;
    gw_error_init(&back);
    FUZZ_CHECK(ctl_msg_kind(wire) == CTL_MSG_REPLY);
    FUZZ_CHECK(ctl_reply_result(wire, NULL, &bcls, &back) == -EREMOTEIO);
    FUZZ_CHECK(!strcmp(back.msg, err->msg) && bcls && !strcmp(bcls, cls));
    json_object_put(wire);
    json_object_put(reply);
}

static void on_request(struct json_object *msg, uint8_t facts)
{
    struct ctl_request req;
    struct gw_error err;
    gw_error_init(&err);
    int r = ctl_request_parse(msg, &req, &err);
    if (r == 0) {
        FUZZ_CHECK(req.command && json_object_is_type(req.args, json_type_object));
        const char *c = req.command;
        if (!strcmp(c, "hello"))
            r = ctl_hello_check(req.args, &err);
        else if (!strcmp(c, "migration-prepare"))
            r = on_prepare(req.args, facts, &err);
        else if (!strcmp(c, "migration-finish"))
            r = on_finish(req.args, &err);
        else if (!strcmp(c, "migration-abort") || !strcmp(c, "migration-status"))
            r = on_head(req.args, false, &err);
        else if (!strcmp(c, "migration-prepare-resume"))
            r = on_head(req.args, true, &err);
    }
    if (r < 0) {
        fuzz_check_refused(r, &err);
        check_error_reply(req.id, &err);
    }
    ctl_request_fini(&req);
}

/* ---- the source's side: replies ---- */

static void check_uri(const char *uri)
{
    struct ctl_uri u, again;
    char canon[JOB_URI_MAX + 8], host[MIG_HOST_MAX];
    struct gw_error err;
    gw_error_init(&err);
    FUZZ_CHECK(ctl_uri_parse(uri, &u, &err) == 0 && u.kind == CTL_URI_TCP && u.host[0]);
    unsigned port = (unsigned)atoi(u.port);
    FUZZ_CHECK(port >= 1 && port <= 65535);
    mig_tcp_uri(canon, sizeof(canon), u.host, port);
    FUZZ_CHECK(ctl_uri_parse(canon, &again, &err) == 0 && !strcmp(again.host, u.host) &&
               !strcmp(again.port, u.port));
    if (mig_uri_host(uri, host, sizeof(host), &err) < 0)
        FUZZ_CHECK(err.code && err.msg[0]);
}

/* The source's check of the peer's hello answer: our version or nothing. */
static void check_hello_answer(struct json_object *ret)
{
    struct json_object *v = NULL;
    struct gw_error err;
    gw_error_init(&err);
    bool ours = json_object_is_type(ret, json_type_object) && json_object_object_get_ex(ret, "protocol", &v) &&
                json_object_is_type(v, json_type_int) && json_object_get_int64(v) == CTL_PROTOCOL_VERSION;
    int r = ctl_hello_reply_check(ret, &err);
    FUZZ_CHECK((r == 0) == ours);
    if (r < 0)
        fuzz_check_refused(r, &err);
}

static void on_reply(struct json_object *msg)
{
    struct json_object *ret = NULL;
    const char *cls = NULL;
    struct gw_error err;
    gw_error_init(&err);
    int r = ctl_reply_result(msg, &ret, &cls, &err);
    if (r < 0) {
        FUZZ_CHECK(r == -EREMOTEIO && cls);
        fuzz_check_refused(r, &err);
        return;
    }
    check_hello_answer(ret);
    char uri[JOB_URI_MAX];
    if ((r = mig_uri_from_reply(ret, "Prepare answer", uri, sizeof(uri), &err)) == 0)
        check_uri(uri);
    else
        fuzz_check_refused(r, &err);
    enum job_peer_outcome o;
    gw_error_init(&err);
    if ((r = mig_outcome_from_reply(ret, &o, &err)) == 0) {
        FUZZ_CHECK((unsigned)o < JOB_PEER__COUNT && o != JOB_PEER_UNREACHABLE);
        FUZZ_CHECK(!strcmp(job_peer_outcome_name(o), qmp_json_get_str(ret, "outcome")));
    } else {
        fuzz_check_refused(r, &err);
    }
    json_object_put(ret);
}

/* ---- the framing ---- */

static void on_message(struct json_object *msg, uint8_t facts)
{
    FUZZ_CHECK(json_object_is_type(msg, json_type_object));
    struct json_object *again = fuzz_over_the_wire(msg, JSON_C_TO_STRING_PLAIN);
    FUZZ_CHECK(json_object_is_type(again, json_type_object));
    json_object_put(again);
    switch (ctl_msg_kind(msg)) {
    case CTL_MSG_REPLY:
        on_reply(msg);
        break;
    case CTL_MSG_EVENT:
        break;
    default: /* a request, or what the server answers as a bad request */
        on_request(msg, facts);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    bool framed = data[0] & 1;
    unsigned stepbits = (data[0] >> 1) & 7;
    uint8_t facts = data[1];
    data += 2;
    size -= 2;
    uint8_t *buf = NULL;
    if (!framed) { /* one message body: give it a correct header */
        if (size == 0 || size > CTL_MAX_MSG)
            return 0;
        buf = malloc(size + CTL_HEADER_LEN);
        ctl_header_encode(buf, (uint32_t)size);
        memcpy(buf + CTL_HEADER_LEN, data, size);
        data = buf;
        size += CTL_HEADER_LEN;
    }
    struct feed f = { .p = data, .len = size, .step = stepbits ? 1u << (stepbits - 1) * 2 : 0 };
    struct ctl_io io = { .read = feed_read, .write = feed_write, .opaque = &f };
    unsigned nmsg = 0;
    for (;;) {
        struct json_object *msg;
        struct gw_error err;
        gw_error_init(&err);
        int r = ctl_recv(&io, &msg, &err);
        if (r == -ECONNRESET) /* a clean end between messages */
            break;
        if (r < 0) {
            fuzz_check_refused(r, &err);
            if (!framed)
                FUZZ_CHECK(r == -EPROTO);
            if (r == -EMSGSIZE)
                break; /* as the server: the framing is lost */
            continue;
        }
        nmsg++;
        if (!framed) /* json-c stops at a NUL byte: one may only have been taken for space */
            FUZZ_CHECK(!memchr(data + CTL_HEADER_LEN, 0, size - CTL_HEADER_LEN));
        on_message(msg, facts);
        json_object_put(msg);
    }
    if (!framed)
        FUZZ_CHECK(f.off == f.len && nmsg <= 1);
    free(buf);
    return 0;
}
