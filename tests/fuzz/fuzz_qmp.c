/* libFuzzer target: bytes from a QMP client, through the session parser
 * and dispatcher (negotiation, argument checks), replies discarded. */
#include <stdint.h>
#include <stdlib.h>

#include "common/log.h"
#include "qmp/qmp_dispatch.h"

static void sink(void *o, char *line, size_t len) { free(line); }

static int cmd_ok(void *opaque, struct json_object *args, struct json_object **ret,
                  struct qmp_error *err)
{
    *ret = json_object_get(args);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct qmp_table t;
    static int init;
    if (!init) {
        gw_log_set_level(GW_LOG_ERROR);
        qmp_table_init(&t);
        struct qmp_command c = { .name = "echo", .fn = cmd_ok,
                                 .args = { { "text", QMP_ARG_STR, true }, { "n", QMP_ARG_INT, false },
                                           { "any", QMP_ARG_ANY, false } } };
        qmp_table_add(&t, &c);
        init = 1;
    }
    struct qmp_session s;
    if (qmp_session_init(&s, &t, sink, NULL) < 0)
        return 0;
    /* Feed in two pieces to exercise objects split across reads. */
    size_t half = size / 2;
    qmp_session_input(&s, (const char *)data, half);
    qmp_session_input(&s, (const char *)data + half, size - half);
    qmp_session_fini(&s);
    return 0;
}
