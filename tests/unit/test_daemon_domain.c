/* Domain definitions (validation, defaults, round trip), libvirt's name
 * tables, the job slot's refusal, how a VMM's exit is classified, the
 * event bus's filters, and the state directory's atomic files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <pthread.h>
#include <unistd.h>

#include "common/log.h"
#include "control/control.h"
#include "daemon/daemon.h"
#include "daemon/domain_def.h"
#include "daemon/domain_store.h"
#include "daemon/events.h"
#include "daemon/lifecycle.h"
#include "daemon/vmm_proc.h"

/* fsync as the state directory's writers (linked from libgodwit.a) see
 * it: this definition takes the place of libc's, records what each call
 * synced, and fails the syncs of directories when told to. */
#define MAX_SYNCED 64
static char synced[MAX_SYNCED][PATH_MAX];
static int nsynced;
static bool fail_dir_sync;

int fsync(int fd)
{
    char link[64];
    struct stat st;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    if (nsynced < MAX_SYNCED) {
        ssize_t n = readlink(link, synced[nsynced], PATH_MAX - 1);
        synced[nsynced++][n > 0 ? n : 0] = '\0';
    }
    if (fail_dir_sync && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_fsync, fd);
}

/* Was the directory dir/sub (sub may be "") synced since nsynced = 0? */
static bool dir_synced(const char *dir, const char *sub)
{
    char path[PATH_MAX], real[PATH_MAX];
    snprintf(path, sizeof(path), "%s%s%s", dir, sub[0] ? "/" : "", sub);
    assert_non_null(realpath(path, real));
    for (int i = 0; i < nsynced; i++)
        if (strcmp(synced[i], real) == 0)
            return true;
    return false;
}

static void rm_rf(const char *dir)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static int parse(const char *text, struct dom_def *def, struct gw_error *err)
{
    struct json_object *o = json_tokener_parse(text);
    assert_non_null(o);
    gw_error_init(err);
    int r = dom_def_from_json(o, def, err);
    json_object_put(o);
    return r;
}

static void test_minimal(void **state)
{
    struct dom_def d;
    struct gw_error err;
    assert_int_equal(parse("{\"name\": \"vm-1\", \"memory_mib\": 256, \"test_guest\": true}", &d, &err), 0);
    assert_string_equal(d.name, "vm-1");
    assert_int_equal(d.vcpus, 1);
    assert_int_equal(d.memory_mib, 256);
    char uuid[DOM_UUID_LEN + 1];
    assert_true(dom_uuid_parse(d.uuid, uuid)); /* generated, well formed */
    assert_int_equal(d.uuid[14], '4');
    assert_true(d.policy.permit_postcopy);
    assert_int_equal(d.policy.max_downtime_ms, 300);
    assert_int_equal(d.policy.completion_timeout_s, 800);
    assert_int_equal(d.policy.timeout_action, DOM_TIMEOUT_ABORT);
    assert_int_equal(d.policy.switchover_retries, 2);
    assert_null(d.serial_log);
    assert_false(d.memory_prealloc);
    dom_def_fini(&d);
}

static void test_full_round_trip(void **state)
{
    const char *text =
        "{\"name\": \"db\", \"uuid\": \"0D0C0B0A-1111-4222-8333-444455556666\", \"memory_mib\": 1024,"
        " \"memory_prealloc\": true,"
        " \"vcpus\": 4, \"test_guest\": true, \"cmdline\": \"workload=mem-invariant beat-ms=500\","
        " \"serial_log\": \"/var/log/db.log\", \"cpu\": \"host,-avx512f,-invtsc\","
        " \"migration\": {\"permit_postcopy\": true,"
        " \"permit_auto_converge\": false, \"max_downtime_ms\": 50, \"bandwidth_mib_s\": 100,"
        " \"completion_timeout_s\": 30, \"timeout_action\": \"postcopy\", \"switchover_retries\": 0}}";
    struct dom_def d, e;
    struct gw_error err;
    assert_int_equal(parse(text, &d, &err), 0);
    assert_string_equal(d.uuid, "0d0c0b0a-1111-4222-8333-444455556666");
    assert_int_equal(d.policy.timeout_action, DOM_TIMEOUT_POSTCOPY);
    assert_false(d.policy.permit_auto_converge);
    assert_int_equal(d.policy.bandwidth_mib_s, 100);
    assert_int_equal(d.policy.switchover_retries, 0);
    assert_true(d.memory_prealloc);
    assert_string_equal(d.cpu, "host,-avx512f,-invtsc");
    struct json_object *o = dom_def_to_json(&d);
    assert_int_equal(dom_def_from_json(o, &e, &err), 0);
    struct json_object *o2 = dom_def_to_json(&e);
    assert_string_equal(json_object_to_json_string(o), json_object_to_json_string(o2));
    json_object_put(o);
    json_object_put(o2);
    dom_def_fini(&d);
    dom_def_fini(&e);
}

static void expect_invalid(const char *text, const char *needle)
{
    struct dom_def d;
    struct gw_error err;
    int r = parse(text, &d, &err);
    dom_def_fini(&d);
    if (r != -EINVAL || !strstr(err.msg, needle))
        fail_msg("%s: got %d '%s', wanted '%s'", text, r, err.msg, needle);
}

#define BASE "\"memory_mib\": 64, \"test_guest\": true"

static void test_invalid(void **state)
{
    expect_invalid("{" BASE "}", "'name'");
    expect_invalid("{\"name\": \"../etc\", " BASE "}", "invalid domain name");
    expect_invalid("{\"name\": \"\", " BASE "}", "invalid domain name");
    expect_invalid("{\"name\": \"a b\", " BASE "}", "invalid domain name");
    expect_invalid("{\"name\": \"v\", \"test_guest\": true}", "'memory_mib'");
    expect_invalid("{\"name\": \"v\", \"memory_mib\": 63, \"test_guest\": true}", "multiple of 2");
    expect_invalid("{\"name\": \"v\", \"memory_mib\": \"64\", \"test_guest\": true}", "integer");
    expect_invalid("{\"name\": \"v\", \"memory_mib\": 64}", "'kernel' or 'test_guest'");
    expect_invalid("{\"name\": \"v\", " BASE ", \"kernel\": \"/k\"}", "'kernel' or 'test_guest'");
    expect_invalid("{\"name\": \"v\", " BASE ", \"initrd\": \"/i\"}", "needs a 'kernel'");
    expect_invalid("{\"name\": \"v\", " BASE ", \"vcpus\": 0}", "'vcpus' must be between");
    expect_invalid("{\"name\": \"v\", " BASE ", \"uuid\": \"not-a-uuid\"}", "invalid UUID");
    expect_invalid("{\"name\": \"v\", " BASE ", \"memroy\": 1}", "unknown key 'memroy'");
    /* A NUL byte would cut a string short (fuzz_domain). */
    expect_invalid("{\"name\": \"vm\\u0000x\", " BASE "}", "invalid domain name");
    expect_invalid("{\"name\": \"v\", " BASE ", \"cmdline\": \"a\\u0000b\"}", "'cmdline' contains a NUL byte");
    expect_invalid("{\"name\": \"v\", \"memory_mib\": 64, \"kernel\": \"/boot/k\\u0000.old\"}",
                   "'kernel' contains a NUL byte");
    expect_invalid("{\"name\": \"v\", " BASE ", \"uuid\": \"0d0c0b0a-1111-4222-8333-444455556666\\u0000\"}",
                   "invalid UUID");
    expect_invalid("{\"name\": \"v\", " BASE ", \"migration\": 5}", "must be an object");
    /* godwit-vmm --cpu's words, checked at define, not when the VM starts */
    expect_invalid("{\"name\": \"v\", " BASE ", \"cpu\": \"max\"}", "unknown CPU model 'max'");
    expect_invalid("{\"name\": \"v\", " BASE ", \"cpu\": \"host,-avx5\"}",
                   "unknown feature 'avx5'");
    expect_invalid("{\"name\": \"v\", " BASE ", \"cpu\": 3}", "'cpu'");
    expect_invalid("{\"name\": \"v\", " BASE ", \"migration\": {\"timeout_action\": \"explode\"}}",
                   "'timeout_action'");
    expect_invalid("{\"name\": \"v\", " BASE ", \"migration\": {\"max_downtime_ms\": 0}}",
                   "'max_downtime_ms'");
    /* over the VMM's downtime-limit range: every migration would fail */
    expect_invalid("{\"name\": \"v\", " BASE ", \"migration\": {\"max_downtime_ms\": 2000001}}",
                   "'max_downtime_ms'");
    expect_invalid("{\"name\": \"v\", " BASE ", \"migration\": {\"switchover_retries\": 101}}",
                   "'switchover_retries'");
    expect_invalid("{\"name\": \"v\", " BASE ", \"migration\": {\"permit_postcopy\": 1}}",
                   "true or false");
    expect_invalid("{\"name\": \"v\", " BASE ", \"migration\": {\"permit_postcopy\": false,"
                   " \"timeout_action\": \"postcopy\"}}", "needs 'permit_postcopy'");
    expect_invalid("{\"name\": \"v\", " BASE ", \"migration\": {\"downtime\": 1}}",
                   "unknown key 'downtime' in 'migration'");
}

static void test_names(void **state)
{
    assert_string_equal(dom_state_name(DOM_STATE_SHUTOFF), "shut off");
    assert_string_equal(dom_reason_name(DOM_REASON_POSTCOPY_FAILED), "post-copy failed");
    assert_int_equal(dom_state_from_name("paused"), DOM_STATE_PAUSED);
    assert_int_equal(dom_reason_from_name("booted"), DOM_REASON_BOOTED);
    assert_int_equal(dom_reason_from_name("nonsense"), -1);
    assert_string_equal(dom_event_name(DOM_EVENT_STOPPED), "Stopped");
    assert_string_equal(dom_event_detail_name(DOM_DETAIL_FAILED), "Failed");
    assert_string_equal(dom_event_detail_name(DOM_DETAIL_POSTCOPY_ERROR), "Post-copy Error");
    assert_true(dom_state_active(DOM_STATE_PAUSED));
    assert_false(dom_state_active(DOM_STATE_SHUTOFF));
    assert_true(dom_transition_ok(DOM_STATE_SHUTOFF, DOM_STATE_RUNNING));
    assert_false(dom_transition_ok(DOM_STATE_SHUTOFF, DOM_STATE_SHUTDOWN));
    assert_true(dom_transition_ok(DOM_STATE_RUNNING, DOM_STATE_PAUSED));
}

static void test_job_slot(void **state)
{
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(dom_job_check(DOM_JOB_NONE, "vm", "start", &err), 0);
    assert_int_equal(dom_job_check(DOM_JOB_MODIFY, "vm", "start", &err), -EAGAIN);
    assert_false(gw_error_is_set(&err));
    assert_int_equal(dom_job_check(DOM_JOB_MIGRATION_OUT, "vm", "destroy", &err), -EBUSY);
    assert_non_null(strstr(err.msg, "cannot destroy domain 'vm': a migration out job is running"));
    assert_string_equal(ctl_error_class(err.code), CTL_ERR_JOB_ACTIVE);
    gw_error_init(&err);
    assert_int_equal(dom_job_check(DOM_JOB_MIGRATION_IN, "vm", "start", &err), -EBUSY);
}

static void classify(bool destroy, bool shutdown, bool known, int status, enum dom_reason want,
                     enum dom_event_detail want_detail)
{
    struct dom_exit_facts f = { destroy, shutdown, known, status };
    enum dom_reason r;
    enum dom_event_detail d;
    dom_exit_classify(&f, &r, &d);
    assert_int_equal(r, want);
    assert_int_equal(d, want_detail);
}

static void test_exit_classify(void **state)
{
    int ok = 0, killed = SIGKILL, failed = 1 << 8;
    classify(true, true, true, ok, DOM_REASON_DESTROYED, DOM_DETAIL_DESTROYED);
    classify(true, false, true, killed, DOM_REASON_DESTROYED, DOM_DETAIL_DESTROYED);
    classify(false, true, true, ok, DOM_REASON_SHUTDOWN, DOM_DETAIL_SHUTDOWN);
    classify(false, true, false, 0, DOM_REASON_SHUTDOWN, DOM_DETAIL_SHUTDOWN);
    classify(false, false, true, killed, DOM_REASON_CRASHED, DOM_DETAIL_FAILED);
    classify(false, false, false, 0, DOM_REASON_CRASHED, DOM_DETAIL_FAILED);
    classify(false, true, true, failed, DOM_REASON_CRASHED, DOM_DETAIL_FAILED);
}

static void count(void *opaque, struct json_object *ev, const char *text, size_t len)
{
    assert_int_equal(strlen(text), len);
    (*(int *)opaque)++;
}

static void test_event_bus(void **state)
{
    struct event_bus *bus = event_bus_new();
    int all = 0, vm1 = 0, mig = 0;
    struct event_sub *s1 = event_bus_subscribe(bus, NULL, NULL, count, &all);
    struct event_sub *s2 = event_bus_subscribe(bus, "vm1", "lifecycle", count, &vm1);
    struct event_sub *s3 = event_bus_subscribe(bus, NULL, "job-completed", count, &mig);
    event_bus_publish(bus, ctl_event_new("lifecycle", "vm1", "u-1", NULL));
    event_bus_publish(bus, ctl_event_new("lifecycle", "vm2", "u-2", NULL));
    event_bus_publish(bus, ctl_event_new("job-completed", "vm1", "u-1", NULL));
    assert_int_equal(all, 3);
    assert_int_equal(vm1, 1);
    assert_int_equal(mig, 1);
    event_bus_unsubscribe(bus, s2);
    event_bus_publish(bus, ctl_event_new("lifecycle", "vm1", "u-1", NULL));
    assert_int_equal(vm1, 1);
    assert_int_equal(all, 4);
    event_bus_unsubscribe(bus, s1);
    event_bus_unsubscribe(bus, s3);
    event_bus_free(bus);
}

static void collect(void *opaque, struct dom_def *def)
{
    (*(int *)opaque)++;
    dom_def_fini(def);
}

static void keep_uuid(void *opaque, struct dom_def *def)
{
    strcpy(opaque, def->uuid);
    dom_def_fini(def);
}

/* A stored definition without a uuid was given a new one at every load:
 * the domain changed identity at each restart (found by fuzz_store). */
static void test_store_uuid_kept(void **state)
{
    char dir[] = "/tmp/godwit-store-XXXXXX", path[PATH_MAX];
    char first[DOM_UUID_LEN + 1] = "", second[DOM_UUID_LEN + 1] = "";
    assert_non_null(mkdtemp(dir));
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(store_init(dir, &err), 0);
    assert_int_equal(store_path(dir, STORE_DEF, "hand", path, sizeof(path)), 0);
    const char *text = "{\"name\": \"hand\", \"memory_mib\": 64, \"test_guest\": true}";
    assert_int_equal(store_write_atomic(path, text, strlen(text), &err), 0);
    assert_int_equal(store_load_defs(dir, keep_uuid, first, &err), 0);
    assert_int_equal(store_load_defs(dir, keep_uuid, second, &err), 0);
    assert_int_equal(strlen(first), DOM_UUID_LEN);
    assert_string_equal(first, second);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_store(void **state)
{
    char dir[] = "/tmp/godwit-store-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(store_init(dir, &err), 0);
    struct dom_def d;
    assert_int_equal(parse("{\"name\": \"a\", \"memory_mib\": 64, \"test_guest\": true}", &d, &err), 0);
    assert_int_equal(store_save_def(dir, &d, &err), 0);
    char path[PATH_MAX];
    assert_int_equal(store_path(dir, STORE_DEF, "broken", path, sizeof(path)), 0);
    assert_int_equal(store_write_atomic(path, "{\"name\": 5}", 11, &err), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    int n = 0;
    assert_int_equal(store_load_defs(dir, collect, &n, &err), 0);
    assert_int_equal(n, 1); /* the broken one is skipped */
    store_remove_domain(dir, "a");
    store_remove_domain(dir, "broken");
    n = 0;
    assert_int_equal(store_load_defs(dir, collect, &n, &err), 0);
    assert_int_equal(n, 0);
    dom_def_fini(&d);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* A state file read back must be one JSON object and nothing after it but
 * white space. Before, json-c stopped at the end of the first object:
 * `{...} xyz`, two objects or a NUL byte after it were loaded as if the
 * rest were not there (and a definition without a uuid was then written
 * back with the rest dropped). */
static void expect_refused_file(const char *path, const char *text, size_t len, const char *found)
{
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(store_write_atomic(path, text, len, &err), 0);
    struct json_object *o = (void *)1;
    assert_int_equal(store_read_json(path, &o, &err), -EINVAL);
    assert_null(o);
    if (strncmp(err.msg, path, strlen(path)) != 0 || !strstr(err.msg, found))
        fail_msg("%s: got '%s', wanted the path and '%s'", path, err.msg, found);
}

static char *read_text(const char *path)
{
    static char buf[4096];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

#define HAND "{\"name\": \"hand\", \"memory_mib\": 64, \"test_guest\": true}"

/* A new state directory in dir (a mkdtemp template), made by store_init. */
static void new_store(char *dir, struct gw_error *err)
{
    assert_non_null(mkdtemp(dir));
    gw_error_init(err);
    assert_int_equal(store_init(dir, err), 0);
}

static void test_store_trailing(void **state)
{
    char dir[] = "/tmp/godwit-store-XXXXXX", path[PATH_MAX];
    struct gw_error err;
    new_store(dir, &err);

    /* Definitions: the offset, line and column of what follows, and what it is. */
    assert_int_equal(store_path(dir, STORE_DEF, "junk", path, sizeof(path)), 0);
    expect_refused_file(path, HAND " xyz", strlen(HAND) + 4,
                        "unexpected data after the JSON object at offset 55 (line 1, column 56): \"xyz\"");
    assert_int_equal(store_path(dir, STORE_DEF, "two", path, sizeof(path)), 0);
    expect_refused_file(path, HAND "\n" HAND "\n", 2 * strlen(HAND) + 2,
                        "at offset 55 (line 2, column 1): \"{\\\"name\\\": \\\"hand\\\",\" and 39 more bytes");
    assert_int_equal(store_path(dir, STORE_DEF, "nul", path, sizeof(path)), 0);
    expect_refused_file(path, HAND "\n\0", strlen(HAND) + 2, "a NUL byte at offset 55 (line 2, column 1)");
    assert_int_equal(store_path(dir, STORE_DEF, "cut", path, sizeof(path)), 0);
    expect_refused_file(path, "{\"name\": \"cut\",\n", 16,
                        "the text ends at offset 16 (line 2, column 1) before the JSON object does");
    assert_int_equal(store_path(dir, STORE_DEF, "nul-in", path, sizeof(path)), 0);
    expect_refused_file(path, "{\"name\": \"x\0y\"}", 15, "a NUL byte at offset 11 (line 1, column 12)");
    expect_refused_file(path, "{} // x\0\n", 9, "a NUL byte at offset 7 (line 1, column 8)"); /* json-c took it */
    assert_int_equal(store_path(dir, STORE_DEF, "bad", path, sizeof(path)), 0);
    expect_refused_file(path, "{\"name\": \"bad\",\n  ]", 19, "at offset 18 (line 2, column 3)");
    assert_int_equal(store_path(dir, STORE_DEF, "array", path, sizeof(path)), 0);
    expect_refused_file(path, "[1]", 3, "a JSON array, not an object");
    assert_int_equal(store_path(dir, STORE_DEF, "empty", path, sizeof(path)), 0);
    expect_refused_file(path, " \n", 2, "empty");
    /* White space after the object is fine, as the daemon writes it. */
    assert_int_equal(store_path(dir, STORE_DEF, "hand", path, sizeof(path)), 0);
    assert_int_equal(store_write_atomic(path, HAND " \t\r\n\n", strlen(HAND) + 5, &err), 0);
    int n = 0;
    assert_int_equal(store_load_defs(dir, collect, &n, &err), 0);
    assert_int_equal(n, 1); /* only "hand": the others are logged and skipped */
    assert_int_equal(store_path(dir, STORE_DEF, "junk", path, sizeof(path)), 0);
    assert_string_equal(read_text(path), HAND " xyz"); /* not rewritten with a uuid */

    /* A status is read through the same reader. */
    assert_int_equal(store_path(dir, STORE_STATUS, "hand", path, sizeof(path)), 0);
    const char *text = "{\"state\": \"running\", \"pid\": 4242} {\"pid\": 1}";
    expect_refused_file(path, text, strlen(text),
                        "unexpected data after the JSON object at offset 34 (line 1, column 35): \"{\\\"pid\\\": 1}\"");
    assert_int_equal(store_write_atomic(path, "{\"state\": \"running\"}\n", 21, &err), 0);
    struct json_object *o;
    assert_int_equal(store_read_json(path, &o, &err), 0);
    json_object_put(o);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void read_status(const char *text, struct store_status *s)
{
    struct json_object *o = json_tokener_parse(text);
    assert_non_null(o);
    assert_int_equal(store_status_from_json(o, s, NULL), 0);
    json_object_put(o);
}

/* The status a restarted daemon reads back (STATE/run/NAME.json): what it
 * wrote comes back, and a damaged member is taken as absent, never
 * converted or half-read. Before, "id": 2147483647 made the daemon's next
 * id overflow (INT_MAX + 1) when the VMM was found again, and "pid": "1"
 * was read as pid 1. */
static void test_status(void **state)
{
    struct store_status s, back;
    read_status("{\"uuid\": \"0D0C0B0A-1111-4222-8333-444455556666\", \"state\": \"paused\","
                " \"reason\": \"post-copy failed\", \"id\": 7, \"pid\": 4242, \"qmp\": \"/run/vm1.qmp\"}", &s);
    assert_string_equal(s.uuid, "0d0c0b0a-1111-4222-8333-444455556666");
    assert_int_equal(s.state, DOM_STATE_PAUSED);
    assert_int_equal(s.reason, DOM_REASON_POSTCOPY_FAILED);
    assert_int_equal(s.id, 7);
    assert_int_equal(s.pid, 4242);
    assert_string_equal(s.qmp, "/run/vm1.qmp");
    struct json_object *o = store_status_to_json(&s);
    assert_int_equal(store_status_from_json(o, &back, NULL), 0);
    assert_memory_equal(&s, &back, sizeof(s));
    json_object_put(o);

    read_status("{\"state\": \"running\", \"id\": 2147483647, \"pid\": \"4242\", \"reason\": 3,"
                " \"qmp\": \"/run/vm1\\u0000.qmp\", \"uuid\": \"nope\"}", &s);
    assert_int_equal(s.state, DOM_STATE_RUNNING);
    assert_int_equal(s.reason, -1);
    assert_int_equal(s.id, -1);
    assert_int_equal(s.pid, 0);
    assert_string_equal(s.qmp, "");
    assert_string_equal(s.uuid, "");
    read_status("{\"state\": \"exploded\", \"id\": -4, \"pid\": 0}", &s);
    assert_int_equal(s.state, -1);
    assert_int_equal(s.id, -1);
    assert_int_equal(s.pid, 0);
    struct gw_error err;
    gw_error_init(&err);
    o = json_object_new_array();
    assert_int_equal(store_status_from_json(o, &s, &err), -EINVAL);
    assert_true(err.msg[0] != '\0');
    json_object_put(o);
}

/* Strings bounded at define: before, a ~1 MiB cmdline was accepted, then
 * its domain-info reply was over CTL_MAX_MSG (the connection closed
 * without a word) and its VMM's execve failed with E2BIG. */
static void test_def_limits(void **state)
{
    size_t big = (64u << 10) + 1;
    char *text = malloc(big + 200), *s = malloc(big + 1);
    memset(s, 'x', big);
    s[big] = '\0';
    snprintf(text, big + 200, "{\"name\": \"v\", " BASE ", \"cmdline\": \"%s\"}", s);
    expect_invalid(text, "'cmdline' is 65537 bytes long, over the limit of 65536");
    s[big - 1] = '\0'; /* 64 KiB: fine */
    snprintf(text, big + 200, "{\"name\": \"v\", " BASE ", \"cmdline\": \"%s\"}", s);
    struct json_object *o = json_tokener_parse(text);
    struct dom_def def;
    assert_int_equal(dom_def_from_json(o, &def, NULL), 0);
    dom_def_fini(&def);
    json_object_put(o);
    s[4096] = '\0';
    snprintf(text, big + 200, "{\"name\": \"v\", " BASE ", \"serial_log\": \"%s\"}", s);
    expect_invalid(text, "'serial_log' is 4096 bytes long");
    snprintf(text, big + 200, "{\"name\": \"v\", \"memory_mib\": 64, \"kernel\": \"%s\"}", s);
    expect_invalid(text, "'kernel' is 4096 bytes long");
    free(s);
    free(text);
}

/* A VMM being started is recorded (starting, pid, its start time) and read
 * back as written. */
static void test_status_starting(void **state)
{
    struct store_status s, back;
    read_status("{\"state\": \"shut off\", \"starting\": true, \"pid\": 99, \"pid_start\": 123456789,"
                " \"qmp\": \"/run/vm1.qmp\"}", &s);
    assert_true(s.starting);
    assert_int_equal(s.pid, 99);
    assert_true(s.pid_start == 123456789ULL);
    struct json_object *o = store_status_to_json(&s);
    assert_int_equal(store_status_from_json(o, &back, NULL), 0);
    assert_memory_equal(&s, &back, sizeof(s));
    json_object_put(o);
    read_status("{\"state\": \"shut off\", \"starting\": \"yes\", \"pid_start\": -5}", &s);
    assert_false(s.starting);
    assert_true(s.pid_start == 0);
}

/* Only the process started with our exact --qmp path, and (when recorded)
 * started at the recorded time, is ours: another daemon's VMM of the same
 * name that reused the pid is not (recovery used to SIGKILL it). */
static void test_vmm_is_ours(void **state)
{
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", "sleep 10", "sh", "--name", "vm1", "--qmp", "/st/run/vm1.qmp",
              (char *)NULL);
        _exit(127);
    }
    assert_true(pid > 0);
    unsigned long long t = 0;
    for (int i = 0; i < 100 && !vmm_is_ours(pid, "/st/run/vm1.qmp", 0); i++)
        usleep(10000); /* until it has exec'd */
    t = vmm_start_time(pid);
    assert_true(t > 0);
    assert_true(vmm_is_ours(pid, "/st/run/vm1.qmp", 0));
    assert_true(vmm_is_ours(pid, "/st/run/vm1.qmp", t));
    assert_false(vmm_is_ours(pid, "/st/run/vm1.qmp", t + 1)); /* a reused pid */
    assert_false(vmm_is_ours(pid, "/other/run/vm1.qmp", 0)); /* another daemon's */
    assert_false(vmm_is_ours(pid, "/st/run/vm1", 0));
    assert_false(vmm_is_ours(getpid(), "/st/run/vm1.qmp", 0));
    assert_int_equal(vmm_socket_owner("/nonexistent/sock"), 0);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void put_text(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(fchmod(fd, mode), 0); /* whatever the umask */
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* An undefined domain must stay undefined after a power cut: before, only
 * run/ was synced after the unlinks, not domains/ where the definition was
 * (a domain Prepare had defined and a failed migration removed came back
 * on the destination, shut off, beside the guest running on the source). */
static void test_store_remove_durable(void **state)
{
    char dir[] = "/tmp/godwit-store-XXXXXX", path[PATH_MAX];
    struct gw_error err;
    new_store(dir, &err);
    assert_int_equal(store_path(dir, STORE_DEF, "hand", path, sizeof(path)), 0);
    assert_int_equal(store_write_atomic(path, HAND, strlen(HAND), &err), 0);
    assert_int_equal(store_path(dir, STORE_STATUS, "hand", path, sizeof(path)), 0);
    assert_int_equal(store_write_atomic(path, "{}", 2, &err), 0);
    nsynced = 0;
    store_remove_domain(dir, "hand");
    assert_true(dir_synced(dir, "domains"));
    assert_true(dir_synced(dir, "run"));
    rm_rf(dir);
}

/* The rename is durable only once its directory is synced: a failure there
 * was ignored, and a job phase that a power cut could undo was acted on. */
static void test_store_dir_sync_error(void **state)
{
    char dir[] = "/tmp/godwit-store-XXXXXX", path[PATH_MAX];
    struct gw_error err;
    new_store(dir, &err);
    assert_int_equal(store_path(dir, STORE_STATUS, "a", path, sizeof(path)), 0);
    fail_dir_sync = true;
    int r = store_write_atomic(path, "{}", 2, &err);
    fail_dir_sync = false;
    assert_int_equal(r, -EIO);
    assert_non_null(strstr(err.msg, "cannot sync the directory of"));
    rm_rf(dir);
}

/* A file left at the old fixed temporary name (NAME.json.tmp) was opened
 * with O_TRUNC and reused: a symbolic link there was followed (the daemon
 * wrote its state into the file it named), and a stale file kept its mode
 * (0666 became the state file's). */
static void test_store_tmp_not_reused(void **state)
{
    char dir[] = "/tmp/godwit-store-XXXXXX", path[PATH_MAX], tmp[PATH_MAX + 8], victim[PATH_MAX];
    assert_non_null(mkdtemp(dir));
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(store_init(dir, &err), 0);
    snprintf(victim, sizeof(victim), "%s/victim", dir);
    put_text(victim, "precious", 0600);
    assert_int_equal(store_path(dir, STORE_STATUS, "a", path, sizeof(path)), 0);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    assert_int_equal(symlink(victim, tmp), 0);
    assert_int_equal(store_write_atomic(path, "{}\n", 3, &err), 0);
    assert_string_equal(read_text(victim), "precious");
    assert_string_equal(read_text(path), "{}\n");
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(store_path(dir, STORE_DEF, "b", path, sizeof(path)), 0);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    put_text(tmp, "stale", 0666);
    assert_int_equal(store_write_atomic(path, HAND, strlen(HAND), &err), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    rm_rf(dir);
}

/* Temporary files a crash left behind are removed at load (the daemon
 * holds the state directory then); other files are left alone. */
static void test_store_stale_tmp_removed(void **state)
{
    char dir[] = "/tmp/godwit-store-XXXXXX", path[PATH_MAX];
    static const char *const stale[] = { "domains/a.json.tmp", "domains/b.json.tmp.Ab3dE9",
                                         "run/a.json.tmp", "run/a.def.tmp.zz09QQ" };
    static const char *const kept[] = { "domains/notes.txt", "run/a.json.bad", "run/x.tmp.json" };
    assert_non_null(mkdtemp(dir));
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(store_init(dir, &err), 0);
    for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, stale[i]);
        put_text(path, "{\"na", 0600);
    }
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, kept[i]);
        put_text(path, "{}", 0600);
    }
    int n = 0;
    assert_int_equal(store_load_defs(dir, collect, &n, &err), 0);
    for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, stale[i]);
        if (access(path, F_OK) == 0)
            fail_msg("%s was not removed", stale[i]);
    }
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, kept[i]);
        assert_int_equal(access(path, F_OK), 0);
    }
    rm_rf(dir);
}

/* Two writers of one file: each write is whole (before, both used
 * NAME.json.tmp: one truncated what the other was about to rename, a
 * reader saw a cut file, and the other's rename failed). */
#define WRITES 200
static void writer(const char *path, char c, size_t len)
{
    char *buf = malloc(len);
    memset(buf, c, len);
    for (int i = 0; i < WRITES; i++)
        if (store_write_atomic(path, buf, len, NULL) < 0)
            _exit(1);
    _exit(0);
}

static bool whole(const char *path)
{
    static char buf[64 << 10];
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT;
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    if (n != 20000 && n != 30000)
        return false;
    for (size_t i = 1; i < n; i++)
        if (buf[i] != buf[0])
            return false;
    return true;
}

static void test_store_concurrent_writers(void **state)
{
    char dir[] = "/tmp/godwit-store-XXXXXX", path[PATH_MAX];
    struct gw_error err;
    new_store(dir, &err);
    assert_int_equal(store_path(dir, STORE_STATUS, "a", path, sizeof(path)), 0);
    pid_t a = fork();
    if (a == 0)
        writer(path, 'a', 20000);
    pid_t b = fork();
    if (b == 0)
        writer(path, 'b', 30000);
    int cut = 0, sa, sb;
    while (waitpid(a, &sa, WNOHANG) == 0 || waitpid(b, &sb, WNOHANG) == 0)
        cut += !whole(path);
    waitpid(a, &sa, 0);
    waitpid(b, &sb, 0);
    assert_true(WIFEXITED(sa) && WEXITSTATUS(sa) == 0);
    assert_true(WIFEXITED(sb) && WEXITSTATUS(sb) == 0);
    assert_int_equal(cut, 0);
    assert_true(whole(path));
    rm_rf(dir);
}

/* domains/NAME.json must define NAME: a copy under another name (vm1.json
 * copied to vm2.json and not edited) was loaded as a second file of
 * domain vm1, which undefine then removed only in part (its next
 * definition came back at the next start). */
static void test_store_name_mismatch(void **state)
{
    char dir[] = "/tmp/godwit-store-XXXXXX", path[PATH_MAX];
    struct gw_error err;
    new_store(dir, &err);
    const char *other = "{\"name\": \"hand\", \"uuid\": \"0d0c0b0a-1111-4222-8333-444455556666\","
                        " \"memory_mib\": 64, \"test_guest\": true}\n";
    const char *own = "{\"name\": \"hand\", \"uuid\": \"0d0c0b0a-1111-4222-8333-444455556667\","
                      " \"memory_mib\": 64, \"test_guest\": true}\n";
    assert_int_equal(store_path(dir, STORE_DEF, "copy", path, sizeof(path)), 0);
    put_text(path, other, 0600);
    assert_int_equal(store_path(dir, STORE_DEF, "hand", path, sizeof(path)), 0);
    put_text(path, own, 0600);
    int n = 0;
    assert_int_equal(store_load_defs(dir, collect, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_path(dir, STORE_DEF, "copy", path, sizeof(path)), 0);
    assert_string_equal(read_text(path), other); /* left as it is */
    rm_rf(dir);
}

/* A state file must be a regular file: a FIFO in its place hung the
 * daemon's start for ever (open() waited for a writer). */
static void test_store_fifo(void **state)
{
    char dir[] = "/tmp/godwit-store-XXXXXX", path[PATH_MAX];
    struct gw_error err;
    new_store(dir, &err);
    assert_int_equal(store_path(dir, STORE_DEF, "pipe", path, sizeof(path)), 0);
    assert_int_equal(mkfifo(path, 0600), 0);
    assert_int_equal(store_path(dir, STORE_DEF, "hand", path, sizeof(path)), 0);
    put_text(path, HAND, 0600);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(5);
        int n = 0;
        struct json_object *o;
        store_load_defs(dir, collect, &n, NULL);
        store_path(dir, STORE_DEF, "pipe", path, sizeof(path));
        int r = store_read_json(path, &o, &err);
        _exit(n == 1 && r == -EINVAL && strstr(err.msg, "not a regular file") ? 0 : 1);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    rm_rf(dir);
}

/* The state directory and its subdirectories are created durably: the
 * directory that holds each new one is synced (before, a power cut could
 * take jobs/ and the job file in it away after job_save returned). */
static void test_store_init_durable(void **state)
{
    char dir[] = "/tmp/godwit-store-XXXXXX", state_dir[PATH_MAX];
    assert_non_null(mkdtemp(dir));
    struct gw_error err;
    gw_error_init(&err);
    snprintf(state_dir, sizeof(state_dir), "%s/state", dir);
    nsynced = 0;
    assert_int_equal(store_init(state_dir, &err), 0);
    assert_true(dir_synced(dir, ""));
    assert_true(dir_synced(state_dir, ""));
    rm_rf(dir);
}

/* Anyone who can write in the state directory defines what the daemon
 * runs (as root): one writable by others, or owned by another user, is
 * refused. */
static void test_store_init_perms(void **state)
{
    char dir[] = "/tmp/godwit-store-XXXXXX", state_dir[PATH_MAX], path[PATH_MAX];
    assert_non_null(mkdtemp(dir));
    struct gw_error err;
    gw_error_init(&err);
    snprintf(state_dir, sizeof(state_dir), "%s/state", dir);
    assert_int_equal(store_init(state_dir, &err), 0);
    assert_int_equal(store_init(state_dir, &err), 0);
    assert_int_equal(chmod(state_dir, 0755), 0);
    assert_int_equal(store_init(state_dir, &err), 0);
    assert_int_equal(chmod(state_dir, 0777), 0);
    gw_error_init(&err);
    assert_int_equal(store_init(state_dir, &err), -EPERM);
    assert_non_null(strstr(err.msg, "writable by other users"));
    assert_int_equal(chmod(state_dir, 0700), 0);
    snprintf(path, sizeof(path), "%s/run", state_dir);
    assert_int_equal(chmod(path, 0720), 0);
    assert_int_equal(store_init(state_dir, &err), -EPERM);
    assert_int_equal(chmod(path, 0700), 0);
    if (geteuid() == 0) { /* only root can give it away */
        assert_int_equal(chown(state_dir, 12345, (gid_t)-1), 0);
        gw_error_init(&err);
        assert_int_equal(store_init(state_dir, &err), -EPERM);
        assert_non_null(strstr(err.msg, "owned by uid 12345"));
    }
    rm_rf(dir);
}

/* ---- destroy and a pid that names another process by now ---- */

struct monitor_sim {
    struct daemon *dm;
    struct domain *dom;
};

/* The monitor that was waiting for dm->lock marks its VMM gone. */
static void *monitor_ends(void *p)
{
    struct monitor_sim *m = p;
    usleep(200 * 1000);
    pthread_mutex_lock(&m->dm->lock);
    m->dom->monitor_running = false;
    pthread_cond_broadcast(&m->dm->cond);
    pthread_mutex_unlock(&m->dm->lock);
    return NULL;
}

/* A destroy that comes after the VMM exited and was reaped (by its monitor,
 * or by init for a VMM of an earlier daemon) but before the monitor marked
 * the domain shut off: dom->pid may name another process by then. The
 * signal goes through the pidfd, which names the VMM for ever: destroy
 * used kill(dom->pid), and SIGTERMed (then SIGKILLed) that process. */
static void test_destroy_pid_reused(void **state)
{
    int gate[2];
    assert_int_equal(pipe(gate), 0);
    pid_t vmm = fork();
    if (vmm == 0) { /* the VMM: exits when the gate closes */
        char c;
        close(gate[1]);
        _exit(read(gate[0], &c, 1) == 0 ? 0 : 1);
    }
    close(gate[0]);
    int pidfd = vmm_pidfd(vmm);
    assert_true(pidfd >= 0);
    close(gate[1]);
    assert_int_equal(waitpid(vmm, NULL, 0), vmm); /* gone and reaped */
    pid_t other = fork(); /* holds the pid now, as far as dom->pid says */
    if (other == 0) {
        for (;;)
            pause();
    }

    struct dom_def def;
    struct gw_error err;
    assert_int_equal(parse("{\"name\": \"vm1\", \"memory_mib\": 64, \"test_guest\": true}", &def,
                           &err), 0);
    struct daemon dm;
    memset(&dm, 0, sizeof(dm));
    pthread_mutex_init(&dm.lock, NULL);
    pthread_cond_init(&dm.cond, NULL);
    dm.bus = event_bus_new();
    struct domain *dom = domain_new(&def);
    dom->state = DOM_STATE_RUNNING;
    dom->reason = DOM_REASON_BOOTED;
    dom->id = 1;
    dom->pid = other;
    dom->pidfd = pidfd;
    dom->monitor_running = true;
    dm.domains = dom;
    struct monitor_sim sim = { &dm, dom };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, monitor_ends, &sim), 0);

    daemon_handler_fn destroy = NULL;
    for (size_t i = 0; i < lifecycle_ncommands; i++)
        if (strcmp(lifecycle_commands[i].name, "domain-destroy") == 0)
            destroy = lifecycle_commands[i].fn;
    assert_non_null(destroy);
    struct json_object *args = json_object_new_object(), *ret = NULL;
    json_object_object_add(args, "domain", json_object_new_string("vm1"));
    gw_error_init(&err);
    assert_int_equal(destroy(&dm, NULL, args, &ret, &err), 0);
    pthread_join(t, NULL);
    int status;
    assert_int_equal(waitpid(other, &status, WNOHANG), 0); /* not signalled */

    kill(other, SIGKILL);
    waitpid(other, NULL, 0);
    json_object_put(args);
    close(pidfd);
    domain_free(dom);
    dom_def_fini(&def);
    event_bus_free(dm.bus);
    pthread_mutex_destroy(&dm.lock);
    pthread_cond_destroy(&dm.cond);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal),       cmocka_unit_test(test_full_round_trip),
        cmocka_unit_test(test_invalid),       cmocka_unit_test(test_names),
        cmocka_unit_test(test_job_slot),      cmocka_unit_test(test_exit_classify),
        cmocka_unit_test(test_event_bus),     cmocka_unit_test(test_store),
        cmocka_unit_test(test_status),        cmocka_unit_test(test_store_uuid_kept),
        cmocka_unit_test(test_store_trailing), cmocka_unit_test(test_def_limits),
        cmocka_unit_test(test_status_starting), cmocka_unit_test(test_vmm_is_ours),
        cmocka_unit_test(test_store_remove_durable), cmocka_unit_test(test_store_dir_sync_error),
        cmocka_unit_test(test_store_tmp_not_reused), cmocka_unit_test(test_store_stale_tmp_removed),
        cmocka_unit_test(test_store_concurrent_writers), cmocka_unit_test(test_store_name_mismatch),
        cmocka_unit_test(test_store_fifo),    cmocka_unit_test(test_store_init_durable),
        cmocka_unit_test(test_store_init_perms), cmocka_unit_test(test_destroy_pid_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
