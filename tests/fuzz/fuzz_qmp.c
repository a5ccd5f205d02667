/* libFuzzer target: bytes from a QMP client through the session parser and
 * dispatcher (framing, negotiation, member and argument checks), no sockets.
 * The first byte chooses how the rest is cut into reads; every reply must
 * be one JSON object per "\r\n"-terminated line. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "qmp/qmp_dispatch.h"

static char out[1 << 16];
static size_t out_len;

static void sink(void *o, char *line, size_t len)
{
    if (len < 2 || line[len - 2] != '\r' || line[len - 1] != '\n')
        abort();
    if (line[0] != '{')
        abort();
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
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct qmp_table t;
    static int init;
    if (!init) {
        init_table(&t);
        init = 1;
    }
    if (size == 0)
        return 0;
    struct qmp_session s;
    if (qmp_session_init(&s, &t, sink, NULL) < 0)
        return 0;
    out_len = 0;
    /* Read size: 1..256 bytes, or everything at once. */
    size_t step = data[0] == 0 ? size : data[0];
    const char *p = (const char *)data + 1;
    size_t left = size - 1;
    while (left) {
        size_t n = left < step ? left : step;
        qmp_session_input(&s, p, n);
        p += n;
        left -= n;
    }
    qmp_session_fini(&s);
    return 0;
}
