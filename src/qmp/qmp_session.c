/* One QMP connection's protocol state: the JSON stream is cut into requests
 * with json-c's incremental tokener (its bytes also go through struct
 * qmp_scan, for what json-c lets through), each request is checked
 * (members, negotiation, command, arguments) and answered in order. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qmp/qmp_dispatch.h"
#include "qmp/qmp_json.h"

/* Echo the request's "id" (any JSON value, null included) into a reply. */
static void add_id(struct json_object *reply, struct json_object *req)
{
    struct json_object *id;
    if (req && json_object_is_type(req, json_type_object) &&
        json_object_object_get_ex(req, "id", &id))
        json_object_object_add(reply, "id", json_object_get(id));
}

static void send_obj(struct qmp_session *s, struct json_object *o, struct json_object *req)
{
    add_id(o, req);
    size_t len;
    char *line = qmp_json_line(o, &len);
    json_object_put(o);
    if (line)
        s->out(s->out_opaque, line, len);
}

static void reply_error(struct qmp_session *s, struct json_object *req, const char *cls,
                        const char *desc)
{
    send_obj(s, qmp_json_error(cls, desc, NULL), req);
}

/* fmt has one "%.*s": arg, cut to 200 bytes on a character boundary. */
static void reply_errorf(struct qmp_session *s, struct json_object *req, const char *cls,
                         const char *fmt, const char *arg)
{
    char d[320];
    snprintf(d, sizeof(d), fmt, qmp_utf8_prefix(arg, 200), arg);
    reply_error(s, req, cls, d);
}

/* qmp_capabilities: the only command allowed before negotiation, refused
 * after it. No capability (such as "oob") is supported. */
static const struct qmp_command caps_cmd = {
    .name = "qmp_capabilities",
    .args = { { "enable", QMP_ARG_ARRAY, false } },
};

static int check_enable(struct json_object *args, struct qmp_error *err)
{
    if (qmp_check_args(&caps_cmd, args, err) < 0)
        return -1;
    struct json_object *en = qmp_json_get(args, "enable");
    size_t n = en ? json_object_array_length(en) : 0;
    for (size_t i = 0; i < n; i++) {
        struct json_object *cap = json_object_array_get_idx(en, i);
        if (!json_object_is_type(cap, json_type_string)) {
            qmp_error_set(err, QMP_ERR_GENERIC,
                          "Invalid parameter type for 'enable[%zu]', expected: string", i);
            return -1;
        }
        const char *name = json_object_get_string(cap);
        qmp_error_set(err, QMP_ERR_GENERIC, "Parameter 'enable' does not accept value '%.*s'",
                      qmp_utf8_prefix(name, 200), name);
        return -1;
    }
    return 0;
}

/* Handles negotiation; true when the request was answered here. */
static bool negotiation_command(struct qmp_session *s, const char *name, struct json_object *args,
                                struct json_object *req)
{
    if (strcmp(name, caps_cmd.name) != 0) {
        if (s->negotiated)
            return false;
        reply_error(s, req, QMP_ERR_NOT_FOUND,
                    "Expecting capabilities negotiation with 'qmp_capabilities'");
        return true;
    }
    if (s->negotiated) {
        reply_error(s, req, QMP_ERR_NOT_FOUND,
                    "Capabilities negotiation is already complete, command ignored");
        return true;
    }
    struct qmp_error err = { 0 };
    if (args && check_enable(args, &err) < 0) {
        reply_error(s, req, err.cls, err.desc);
        return true;
    }
    s->negotiated = true;
    send_obj(s, qmp_json_return(NULL, NULL), req);
    return true;
}

/* The request's top-level members; false when answered with an error. */
static bool check_members(struct qmp_session *s, struct json_object *req)
{
    json_object_object_foreach(req, key, val) {
        (void)val;
        if (!strcmp(key, "execute") || !strcmp(key, "arguments") || !strcmp(key, "id"))
            continue;
        if (!strcmp(key, "exec-oob"))
            reply_error(s, req, QMP_ERR_GENERIC,
                        "QMP input member 'exec-oob' is not supported (no out-of-band execution)");
        else
            reply_errorf(s, req, QMP_ERR_GENERIC, "QMP input member '%.*s' is unexpected", key);
        return false;
    }
    /* Present, null included (json-c holds null as NULL). */
    struct json_object *exec, *args;
    if (!json_object_object_get_ex(req, "execute", &exec)) {
        reply_error(s, req, QMP_ERR_GENERIC, "QMP input lacks member 'execute'");
        return false;
    }
    if (!json_object_is_type(exec, json_type_string)) {
        reply_error(s, req, QMP_ERR_GENERIC, "QMP input member 'execute' must be a string");
        return false;
    }
    if (qmp_json_has_nul(exec)) { /* "quit\u0000zzz" is not quit */
        reply_error(s, req, QMP_ERR_GENERIC,
                    "QMP input member 'execute' must not contain a NUL character (\\u0000)");
        return false;
    }
    if (json_object_object_get_ex(req, "arguments", &args) &&
        !json_object_is_type(args, json_type_object)) {
        reply_error(s, req, QMP_ERR_GENERIC, "QMP input member 'arguments' must be an object");
        return false;
    }
    return true;
}

void qmp_session_request(struct qmp_session *s, struct json_object *req)
{
    if (s->closed)
        return;
    if (!json_object_is_type(req, json_type_object)) {
        reply_error(s, NULL, QMP_ERR_GENERIC, "QMP input must be a JSON object");
        return;
    }
    if (!check_members(s, req))
        return;
    const char *name = qmp_json_get_str(req, "execute");
    struct json_object *args = qmp_json_get(req, "arguments");
    if (negotiation_command(s, name, args, req))
        return;
    const struct qmp_command *c = qmp_table_find(s->table, name);
    if (!c) {
        reply_errorf(s, req, QMP_ERR_NOT_FOUND, "The command %.*s has not been found", name);
        return;
    }
    struct json_object *empty = args ? NULL : json_object_new_object();
    struct json_object *ret;
    struct qmp_error err = { 0 };
    if (qmp_dispatch(c, args ? args : empty, &ret, &err) < 0)
        reply_error(s, req, err.cls, err.desc);
    else
        send_obj(s, qmp_json_return(ret, NULL), req);
    json_object_put(empty);
}

int qmp_session_init(struct qmp_session *s, const struct qmp_table *t,
                     void (*out)(void *, char *, size_t), void *opaque)
{
    memset(s, 0, sizeof(*s));
    s->table = t;
    s->out = out;
    s->out_opaque = opaque;
    s->tok = json_tokener_new();
    return s->tok ? 0 : -ENOMEM;
}

void qmp_session_fini(struct qmp_session *s)
{
    if (s->tok)
        json_tokener_free(s->tok);
    s->tok = NULL;
    s->closed = true;
}

void qmp_session_close(struct qmp_session *s) { s->closed = true; }

/* ---- struct qmp_scan: what json-c lets through ---- */

static bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_word(char c) { return is_digit(c) || is_alpha(c) || c == '+' || c == '-' || c == '.'; }

static void scan_reset(struct qmp_scan *sc) { memset(sc, 0, sizeof(*sc)); }

__attribute__((format(printf, 2, 3)))
static void scan_bad(struct qmp_scan *sc, const char *fmt, ...)
{
    if (sc->bad[0])
        return; /* the first one is reported */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sc->bad, sizeof(sc->bad), fmt, ap);
    va_end(ap);
}

static bool word_is_number(const struct qmp_scan *sc)
{
    return sc->word[0] == '-' || is_digit(sc->word[0]);
}

static void word_add(struct qmp_scan *sc, char c)
{
    if (sc->wlen < sizeof(sc->word))
        sc->word[sc->wlen] = c;
    sc->wlen++;
    if (!word_is_number(sc))
        return;
    if (c == '.' || c == 'e' || c == 'E')
        sc->wfrac = true;
    else if (is_alpha(c))
        sc->walpha = true;                 /* -Infinity, -NaN */
    else if (is_digit(c) && !sc->wfrac && (sc->ndigits || c != '0')) {
        if (sc->ndigits < sizeof(sc->digits))
            sc->digits[sc->ndigits] = c;
        sc->ndigits++;
    }
}

/* json-c saturates an integer it cannot hold: refused instead. */
static bool word_int_too_big(const struct qmp_scan *sc)
{
    const char *lim = sc->word[0] == '-' ? "9223372036854775808" : "18446744073709551615";
    size_t n = strlen(lim);
    return sc->ndigits > n || (sc->ndigits == n && memcmp(sc->digits, lim, n) > 0);
}

static bool word_is(const struct qmp_scan *sc, const char *lit)
{
    return sc->wlen == strlen(lit) && memcmp(sc->word, lit, sc->wlen) == 0;
}

static void word_end(struct qmp_scan *sc)
{
    int n = sc->wlen < sizeof(sc->word) ? (int)sc->wlen : (int)sizeof(sc->word);
    const char *more = sc->wlen > sizeof(sc->word) ? "..." : "";
    if (!word_is_number(sc)) {
        if (!word_is(sc, "true") && !word_is(sc, "false") && !word_is(sc, "null"))
            scan_bad(sc, "'%.*s%s' is not a JSON value", n, sc->word, more);
    } else if (sc->walpha) {
        scan_bad(sc, "'%.*s%s' is not a JSON number", n, sc->word, more);
    } else if (!sc->wfrac && word_int_too_big(sc)) {
        scan_bad(sc, "integer out of range (more than 64 bits)");
    }
    sc->wlen = sc->ndigits = 0;
    sc->wfrac = sc->walpha = false;
}

static unsigned hex_value(char c)
{
    if (is_digit(c))
        return (unsigned)(c - '0');
    if ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
        return (unsigned)((c | 0x20) - 'a' + 10);
    return 1; /* not hex: json-c refuses the escape */
}

/* UTF-8 in strings (json-c's JSON_TOKENER_VALIDATE_UTF8 also checks the
 * byte after a complete value: a good request followed by a bad byte in
 * the same read was refused). Bytes that are not UTF-8 would be echoed
 * (an id) to clients that cannot decode them. */
static void scan_utf8(struct qmp_scan *sc, unsigned char c)
{
    if (sc->u8need) {
        if (c < sc->u8lo || c > sc->u8hi) {
            scan_bad(sc, "invalid UTF-8 in a string");
            sc->u8need = 0;
            return;
        }
        sc->u8need--;
        sc->u8lo = 0x80;
        sc->u8hi = 0xbf;
        return;
    }
    if (c < 0x80)
        return;
    sc->u8lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80; /* no overlong forms */
    sc->u8hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf; /* no surrogates, <= U+10FFFF */
    if (c >= 0xc2 && c <= 0xdf)
        sc->u8need = 1;
    else if (c >= 0xe0 && c <= 0xef)
        sc->u8need = 2;
    else if (c >= 0xf0 && c <= 0xf4)
        sc->u8need = 3;
    else
        scan_bad(sc, "invalid UTF-8 in a string");
}

static void scan_in_string(struct qmp_scan *sc, char c)
{
    scan_utf8(sc, (unsigned char)c);
    if (sc->esc == 1) {
        sc->esc = c == 'u' ? 5 : 0;
        sc->ucode = 0;
    } else if (sc->esc > 1) {
        sc->ucode = sc->ucode * 16 + hex_value(c);
        if (--sc->esc == 1) {
            sc->esc = 0;
            if (sc->ucode == 0)
                sc->str_nul = true;
        }
    } else if (c == '\\') {
        sc->esc = 1;
    } else if (c == sc->quote) {
        sc->quote = 0;
    }
}

static void scan_byte(struct qmp_scan *sc, char c)
{
    if (sc->quote) {
        scan_in_string(sc, c);
        return;
    }
    if (is_word(c)) {
        sc->bol = false;
        word_add(sc, c);
        return;
    }
    if (sc->wlen)
        word_end(sc);
    if (c == '\n')
        sc->newline = sc->bol = true;
    if (is_space(c))
        return;
    sc->bol = false;
    switch (c) {
    case '"':
    case '\'': /* QEMU's single-quoted strings, which json-c reads too */
        sc->quote = c;
        sc->str_nul = false;
        break;
    case '{':
    case '[':
        sc->depth++;
        break;
    case '}':
    case ']':
        if (sc->depth)
            sc->depth--;
        break;
    case ':': /* after a member's name */
        sc->colons++;
        if (sc->str_nul)
            scan_bad(sc, "a member name must not contain a NUL character (\\u0000)");
        break;
    case '/':
        scan_bad(sc, "comments are not JSON");
        break;
    }
}

static void scan_bytes(struct qmp_scan *sc, const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        scan_byte(sc, buf[i]);
}

/* Members of every object in v (borrowed). */
static size_t count_members(struct json_object *v)
{
    size_t n = 0;
    if (json_object_is_type(v, json_type_object)) {
        json_object_object_foreach(v, key, val) {
            (void)key;
            n += 1 + count_members(val);
        }
    } else if (json_object_is_type(v, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(v); i++)
            n += count_members(json_object_array_get_idx(v, i));
    }
    return n;
}

/* json-c has read v from the bytes scanned: what it let through, or NULL.
 * Without two members of one name, json-c kept one member per ':'. */
static const char *scan_verdict(struct qmp_scan *sc, struct json_object *v)
{
    if (sc->wlen)
        word_end(sc);
    if (sc->colons != count_members(v))
        scan_bad(sc, "two members of one object have the same name");
    return sc->bad[0] ? sc->bad : NULL;
}

/* ---- cutting the stream into requests ---- */

static void reply_parse_error(struct qmp_session *s, const char *why)
{
    char d[160];
    snprintf(d, sizeof(d), "JSON parse error, %s", why);
    reply_error(s, NULL, QMP_ERR_GENERIC, d);
}

/* json-c refused the value at buf[used] (the bytes before were scanned):
 * what to consume before parsing again. */
static size_t recover(struct qmp_session *s, const char *buf, size_t used, size_t len, bool fresh)
{
    struct qmp_scan *sc = &s->scan;
    if (sc->depth > 0 && sc->newline && sc->bol && used < len && buf[used] == '{') {
        /* A value left open, and a request begins the next line. */
        scan_reset(sc);
        return used;
    }
    if (used == 0 && fresh)
        scan_byte(sc, buf[used++]); /* no value starts with it */
    s->skipping = true;
    return used;
}

/* Drop the rest of a bad value: up to the bracket that closes it, or a
 * newline; outside any value, up to a '{' (kept) or a newline. */
static size_t skip_bad(struct qmp_session *s, const char *buf, size_t len)
{
    struct qmp_scan *sc = &s->scan;
    size_t i = 0;
    bool done = false;
    while (i < len && !done) {
        char c = buf[i];
        if (!sc->quote && sc->depth == 0 && c == '{')
            break;
        unsigned depth = sc->depth;
        scan_byte(sc, c);
        i++;
        done = c == '\n' || (depth == 1 && sc->depth == 0);
    }
    if (done || i < len) {
        s->skipping = false;
        scan_reset(sc);
    }
    return i;
}

/* Where the value being read ends in buf, or len: after the bracket that
 * closes it; for a value outside brackets, after its closing quote, or
 * one byte past its last (json-c needs to see where a number ends).
 * json-c is given no byte past it: after a value it reads on through
 * blanks and comments, and a bad one there was reported instead of the
 * value before it (a request lost, or not, by how the reads fell). */
static size_t value_end(const struct qmp_scan *sc, const char *buf, size_t len)
{
    struct qmp_scan t = *sc;
    for (size_t i = 0; i < len; i++) {
        unsigned depth = t.depth;
        bool top_string = t.quote && depth == 0, top_word = t.wlen && !t.quote && depth == 0;
        scan_byte(&t, buf[i]);
        if ((depth == 1 && t.depth == 0) || (top_string && !t.quote) || (top_word && !t.wlen))
            return i + 1;
    }
    return len;
}

/* Parse from buf; returns the bytes consumed (all of them when the object
 * continues in the next read). */
static size_t parse_one(struct qmp_session *s, const char *buf, size_t len)
{
    len = value_end(&s->scan, buf, len);
    int chunk = len > INT_MAX ? INT_MAX : (int)len;
    bool fresh = s->pending == 0;
    struct json_object *obj = json_tokener_parse_ex(s->tok, buf, chunk);
    enum json_tokener_error jerr = json_tokener_get_error(s->tok);
    if (jerr == json_tokener_continue) {
        scan_bytes(&s->scan, buf, (size_t)chunk);
        s->pending += (size_t)chunk;
        if (s->pending > QMP_MAX_INPUT) {
            reply_parse_error(s, "object too large");
            json_tokener_reset(s->tok);
            s->pending = 0;
            s->skipping = true; /* the scan goes on: the rest of the value is dropped */
        }
        return (size_t)chunk;
    }
    size_t used = json_tokener_get_parse_end(s->tok);
    scan_bytes(&s->scan, buf, used);
    s->pending = 0;
    json_tokener_reset(s->tok);
    if (jerr != json_tokener_success) {
        reply_parse_error(s, json_tokener_error_desc(jerr));
        return recover(s, buf, used, len, fresh);
    }
    const char *bad = scan_verdict(&s->scan, obj);
    if (bad)
        reply_parse_error(s, bad);
    else
        qmp_session_request(s, obj);
    json_object_put(obj);
    scan_reset(&s->scan);
    return used;
}

void qmp_session_input(struct qmp_session *s, const char *buf, size_t len)
{
    size_t pos = 0;
    while (pos < len && !s->closed) {
        if (s->skipping) {
            pos += skip_bad(s, buf + pos, len - pos);
            continue;
        }
        if (s->pending == 0 && is_space(buf[pos])) {
            pos++;
            continue;
        }
        pos += parse_one(s, buf + pos, len - pos);
    }
}
