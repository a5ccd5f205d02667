/* godwit-vmm's QMP command handlers (src/vmm/vmm_control.c) over a
 * socketpair, without KVM: the machine and migration functions they call
 * are replaced by the fakes below, which record what was asked of them.
 * (The library's machine and migration objects are not linked in: every
 * symbol vmm_control.o needs from them is defined here.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/machine.h"
#include "vmm/vmm_control.h"
#include "vmm/vmm_control_internal.h"

/* ---- fakes ---- */

static struct {
    enum runstate state;
    int shutdowns, stops, stops_nowait, resumes, resets, powerdowns, pmemsaves;
    bool memory_incomplete; /* a post-copy destination with pages missing */
    uint64_t pmem_gpa, pmem_size;
} fake;

enum runstate machine_state(struct machine *m) { return fake.state; }

int machine_stop(struct machine *m, struct gw_error *err)
{
    fake.stops++;
    if (fake.state == RUNSTATE_RUNNING)
        fake.state = RUNSTATE_PAUSED;
    return 0;
}

int machine_stop_nowait(struct machine *m, enum runstate state, struct gw_error *err)
{
    fake.stops_nowait++;
    fake.state = state;
    return 0;
}

int machine_resume(struct machine *m, struct gw_error *err)
{
    fake.resumes++;
    fake.state = RUNSTATE_RUNNING;
    return 0;
}

void machine_shutdown(struct machine *m, bool guest, const char *reason)
{
    fake.shutdowns++;
    fake.state = RUNSTATE_SHUTDOWN;
}

int machine_reset(struct machine *m, struct gw_error *err)
{
    fake.resets++;
    return 0;
}

int machine_powerdown(struct machine *m, struct gw_error *err)
{
    fake.powerdowns++;
    return 0;
}

int machine_pmemsave(struct machine *m, uint64_t gpa, uint64_t size, const char *path,
                     struct gw_error *err)
{
    fake.pmemsaves++;
    fake.pmem_gpa = gpa;
    fake.pmem_size = size;
    return 0;
}

void vmm_uuid_format(const uint8_t u[16], char *buf) { snprintf(buf, 37, "%s", "uuid"); }

int vmm_migration_init(struct vmm_control *c, struct gw_error *err) { return 0; }
void vmm_migration_fini(struct vmm_control *c) {}
bool vmm_migration_incoming_postcopy(struct vmm_control *c) { return false; }
bool vmm_control_busy(struct vmm_control *c, struct qmp_error *err) { return false; }
bool vmm_migration_handed_over(struct vmm_control *c, struct qmp_error *err) { return false; }
bool vmm_migration_memory_incomplete(struct vmm_control *c, struct qmp_error *err)
{
    return fake.memory_incomplete;
}

/* ---- fixture ---- */

struct fx {
    struct evloop *loop;
    struct machine *m;
    struct vmm_control *c;
    int fd; /* the client's end */
};

static int setup(void **state)
{
    memset(&fake, 0, sizeof(fake));
    fake.state = RUNSTATE_RUNNING;
    struct fx *f = calloc(1, sizeof(*f));
    f->loop = evloop_new();
    f->m = calloc(1, sizeof(*f->m));
    f->m->cfg.name = "vm";
    struct gw_error err;
    gw_error_init(&err);
    f->c = vmm_control_new(f->loop, f->m, &err);
    assert_non_null(f->c);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(qmp_server_add_client(f->c->qmp, sv[0]), 0);
    f->fd = sv[1];
    struct timeval tv = { 2, 0 };
    setsockopt(f->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    vmm_control_free(f->c);
    evloop_run_once(f->loop, 0);
    evloop_free(f->loop);
    close(f->fd);
    free(f->m);
    free(f);
    return 0;
}

/* Send, turn the loop until `count` lines came back (or give up); the
 * replies are left in buf. */
static void exchange(struct fx *f, const char *req, int count, char *buf, size_t cap)
{
    assert_int_equal(write(f->fd, req, strlen(req)), (ssize_t)strlen(req));
    size_t n = 0;
    buf[0] = 0;
    for (int turn = 0; turn < 100; turn++) {
        evloop_run_once(f->loop, 10);
        ssize_t r = recv(f->fd, buf + n, cap - n - 1, MSG_DONTWAIT);
        if (r > 0) {
            n += (size_t)r;
            buf[n] = 0;
        }
        int lines = 0;
        for (const char *p = buf; (p = strstr(p, "\r\n")); p += 2)
            lines++;
        if (lines >= count)
            return;
    }
    fail_msg("wanted %d replies, got: %s", count, buf);
}

static void negotiate(struct fx *f)
{
    char buf[4096];
    exchange(f, "", 1, buf, sizeof(buf)); /* the greeting */
    exchange(f, "{\"execute\": \"qmp_capabilities\"}", 1, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"return\":{}"));
}

/* Two quits (a retry, two clients, a script): the second ran
 * machine_shutdown again, a second SHUTDOWN event and exit request. */
static void test_quit_once(void **state)
{
    struct fx *f = *state;
    negotiate(f);
    char buf[4096];
    exchange(f, "{\"execute\": \"quit\", \"id\": 1}{\"execute\": \"quit\", \"id\": 2}", 2, buf,
             sizeof(buf));
    assert_non_null(strstr(buf, "{\"return\":{},\"id\":1}"));
    assert_non_null(strstr(buf, "{\"return\":{},\"id\":2}"));
    for (int i = 0; i < 5; i++)
        evloop_run_once(f->loop, 10); /* the posted shutdowns */
    assert_int_equal(fake.shutdowns, 1);
}

/* `stop` on a post-copy destination with pages missing does not wait for
 * the vCPUs to park (one waiting for a page leaves KVM_RUN only when the
 * page comes: never, while the migration is paused); elsewhere it does. */
static void test_stop_while_pages_missing(void **state)
{
    struct fx *f = *state;
    negotiate(f);
    char buf[4096];
    fake.memory_incomplete = true;
    exchange(f, "{\"execute\": \"stop\"}", 1, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"return\":{}"));
    assert_int_equal(fake.stops_nowait, 1);
    assert_int_equal(fake.stops, 0);
    assert_int_equal(fake.state, RUNSTATE_PAUSED);
    fake.memory_incomplete = false;
    fake.state = RUNSTATE_RUNNING;
    exchange(f, "{\"execute\": \"stop\"}", 1, buf, sizeof(buf));
    assert_int_equal(fake.stops, 1);
    assert_int_equal(fake.stops_nowait, 1);
}

/* pmemsave's address and size are signed 64-bit (QEMU's 'int'): 2^63 and
 * above were clamped to 2^63-1 and passed on. */
static void test_pmemsave_arguments(void **state)
{
    struct fx *f = *state;
    negotiate(f);
    char buf[4096];
    const struct { const char *in, *want; } cases[] = {
        { "{\"execute\": \"pmemsave\", \"arguments\": {\"val\": 9223372036854775808, \"size\": 1, "
          "\"filename\": \"/dev/null\"}}", "Invalid parameter type for 'val', expected: integer" },
        { "{\"execute\": \"pmemsave\", \"arguments\": {\"val\": 0, \"size\": 18446744073709551615, "
          "\"filename\": \"/dev/null\"}}", "Invalid parameter type for 'size', expected: integer" },
        { "{\"execute\": \"pmemsave\", \"arguments\": {\"val\": -1, \"size\": 1, "
          "\"filename\": \"/dev/null\"}}", "must not be negative" },
        { "{\"execute\": \"pmemsave\", \"arguments\": {\"val\": 0, \"size\": 1}}",
          "Parameter 'filename' is missing" },
        { "{\"execute\": \"pmemsave\", \"arguments\": {\"val\": 0, \"size\": 1.0, "
          "\"filename\": \"/dev/null\"}}", "Invalid parameter type for 'size', expected: integer" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        exchange(f, cases[i].in, 1, buf, sizeof(buf));
        if (!strstr(buf, cases[i].want))
            fail_msg("%s -> %s (wanted %s)", cases[i].in, buf, cases[i].want);
    }
    assert_int_equal(fake.pmemsaves, 0);
    exchange(f, "{\"execute\": \"pmemsave\", \"arguments\": {\"val\": 9223372036854775807, "
             "\"size\": 0, \"filename\": \"/dev/null\", \"cpu-index\": 0}}", 1, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"return\":{}"));
    assert_int_equal(fake.pmemsaves, 1);
    assert_true(fake.pmem_gpa == INT64_MAX && fake.pmem_size == 0);
}

int main(void)
{
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stop_while_pages_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quit_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pmemsave_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
