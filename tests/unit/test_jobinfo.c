/* Job statistics from recorded query-migrate replies: virsh domjobinfo
 * text, --rawstats, JSON round trip, hostile replies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/jobinfo.h"

/* Recorded from a running 4 GiB migration (QEMU-compatible fields). */
static const char *const active_reply =
    "{\"status\": \"active\", \"setup-time\": 12, \"total-time\": 1234, "
    "\"expected-downtime\": 300, \"cpu-throttle-percentage\": 20, "
    "\"ram\": {\"transferred\": 1234567890, \"remaining\": 567890123, \"total\": 4295000064, "
    "\"duplicate\": 500000, \"skipped\": 0, \"normal\": 300000, \"normal-bytes\": 1228800000, "
    "\"dirty-pages-rate\": 30000, \"mbps\": 940.5, \"dirty-sync-count\": 3, "
    "\"page-size\": 4096, \"postcopy-requests\": 0, \"iteration\": 3}}";

static const char *const completed_reply =
    "{\"status\": \"completed\", \"setup-time\": 9, \"total-time\": 2804, \"downtime\": 41, "
    "\"switchover-retries\": 1, \"rounds-ended-early\": 2, \"switchover-deferrals\": 3, "
    "\"downtime-phases\": {\"stop-us\": 90, \"sync-us\": 120, \"pages-us\": 36500, "
    "\"state-us\": 310, \"load-us\": 3600, \"resume-us\": 480}, "
    "\"ram\": {\"transferred\": 318767104, \"remaining\": 0, \"total\": 1074003968, "
    "\"duplicate\": 185000, \"skipped\": 0, \"normal\": 77800, \"normal-bytes\": 318668800, "
    "\"dirty-pages-rate\": 120, \"mbps\": 9123.4, \"dirty-sync-count\": 2, \"page-size\": 4096, "
    "\"postcopy-requests\": 17}}";

static const char *const failed_reply =
    "{\"status\": \"failed\", \"total-time\": 700, \"setup-time\": 5, "
    "\"error-desc\": \"Unable to write to socket: Connection reset by peer\", "
    "\"ram\": {\"transferred\": 52428800, \"remaining\": 1021575168, \"total\": 1074003968, "
    "\"duplicate\": 10, \"normal\": 12800, \"normal-bytes\": 52428800, \"dirty-pages-rate\": 0, "
    "\"mbps\": 600, \"dirty-sync-count\": 1, \"page-size\": 4096}}";

static void parse(struct jobinfo *ji, const char *text, enum jobinfo_op op, uint64_t elapsed)
{
    struct json_object *o = json_tokener_parse(text);
    struct gw_error e;
    gw_error_init(&e);
    assert_non_null(o);
    int rc = jobinfo_from_query_migrate(ji, o, op, elapsed, &e);
    json_object_put(o);
    if (rc != 0)
        fail_msg("%s", e.msg);
}

static void expect_text(const struct jobinfo *ji, unsigned flags, const char *want)
{
    char *got = jobinfo_format_text(ji, flags);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static const char *const active_text =
    "Job type:         Unbounded   \n"
    "Operation:        Outgoing migration\n"
    "Time elapsed:     1500         ms\n"
    "Data processed:   1.150 GiB\n"
    "Data remaining:   541.582 MiB\n"
    "Data total:       4.000 GiB\n"
    "Memory processed: 1.150 GiB\n"
    "Memory remaining: 541.582 MiB\n"
    "Memory total:     4.000 GiB\n"
    "Memory bandwidth: 112.116 MiB/s\n"
    "Dirty rate:       30000        pages/s\n"
    "Page size:        4096         bytes\n"
    "Iteration:        3           \n"
    "Postcopy requests: 0           \n"
    "Constant pages:   500000      \n"
    "Normal pages:     300000      \n"
    "Normal data:      1.144 GiB\n"
    "Expected downtime: 300          ms\n"
    "Setup time:       12           ms\n"
    "Auto converge throttle: 20           \n";

static void test_active_text(void **state)
{
    struct jobinfo ji;
    parse(&ji, active_reply, JOBINFO_OP_MIGRATION_OUT, 1500);
    assert_int_equal(ji.type, JOBINFO_UNBOUNDED);
    assert_int_equal(ji.mem_bps, 117562500);
    assert_int_equal(ji.vmm_total_time_ms, 1234);
    expect_text(&ji, 0, active_text);
}

static void test_active_rawstats(void **state)
{
    struct jobinfo ji;
    parse(&ji, active_reply, JOBINFO_OP_MIGRATION_OUT, 1500);
    char *raw = jobinfo_format_raw(&ji);
    assert_string_equal(raw,
        "Job type: 2\n\n"
        "operation: 5\n"
        "time_elapsed: 1500\n"
        "downtime: 300\n"
        "setup_time: 12\n"
        "data_total: 4295000064\n"
        "data_processed: 1234567890\n"
        "data_remaining: 567890123\n"
        "memory_total: 4295000064\n"
        "memory_processed: 1234567890\n"
        "memory_remaining: 567890123\n"
        "memory_bps: 117562500\n"
        "memory_constant: 500000\n"
        "memory_normal: 300000\n"
        "memory_normal_bytes: 1228800000\n"
        "memory_dirty_rate: 30000\n"
        "memory_iteration: 3\n"
        "memory_postcopy_requests: 0\n"
        "memory_page_size: 4096\n"
        "disk_total: 0\n"
        "disk_processed: 0\n"
        "disk_remaining: 0\n"
        "auto_converge_throttle: 20\n");
    free(raw);
}

static void test_completed(void **state)
{
    struct jobinfo ji;
    parse(&ji, completed_reply, JOBINFO_OP_MIGRATION_OUT, 3120);
    assert_int_equal(ji.type, JOBINFO_COMPLETED);
    /* the current-job query of a finished job: header only */
    expect_text(&ji, 0, "Job type:         Completed   \nOperation:        Outgoing migration\n");
    expect_text(&ji, JOBINFO_FMT_COMPLETED,
        "Job type:         Completed   \n"
        "Operation:        Outgoing migration\n"
        "Time elapsed:     3120         ms\n"
        "Data processed:   304.000 MiB\n"
        "Data remaining:   0.000 B\n"
        "Data total:       1.000 GiB\n"
        "Memory processed: 304.000 MiB\n"
        "Memory remaining: 0.000 B\n"
        "Memory total:     1.000 GiB\n"
        "Memory bandwidth: 1.062 GiB/s\n"
        "Dirty rate:       120          pages/s\n"
        "Page size:        4096         bytes\n"
        "Iteration:        2           \n"
        "Postcopy requests: 17          \n"
        "Constant pages:   185000      \n"
        "Normal pages:     77800       \n"
        "Normal data:      303.906 MiB\n"
        "Total downtime:   41           ms\n"
        "Setup time:       9            ms\n"
        "Switch-over retries: 1           \n"
        "Rounds ended early: 2           \n"
        "Switch-over deferrals: 3           \n"
        "Downtime phases:  stop 90 us, sync 120 us, pages 36500 us, state 310 us, load 3600 us, "
        "resume 480 us\n");
    char *raw = jobinfo_format_raw(&ji);
    assert_non_null(strstr(raw, "disk_remaining: 0\nswitchover_retries: 1\nrounds_ended_early: 2\n"
                               "switchover_deferrals: 3\ndowntime_stop_us: 90\n"
                               "downtime_sync_us: 120\n"
                               "downtime_pages_us: 36500\ndowntime_state_us: 310\n"
                               "downtime_load_us: 3600\ndowntime_resume_us: 480\n"));
    free(raw);
}

static void test_failed_and_none(void **state)
{
    struct jobinfo ji;
    parse(&ji, failed_reply, JOBINFO_OP_MIGRATION_OUT, 800);
    assert_int_equal(ji.type, JOBINFO_FAILED);
    assert_false(ji.downtime_set); /* failed: no expected-downtime */
    expect_text(&ji, JOBINFO_FMT_COMPLETED, "Job type:         Failed      \nOperation:        Outgoing migration\n");
    char *t = jobinfo_format_text(&ji, JOBINFO_FMT_ANYSTATS);
    assert_non_null(strstr(t, "Iteration:        1           \n"));
    assert_non_null(strstr(t, "Error message:    Unable to write to socket: Connection reset by peer\n"));
    free(t);
    char *raw = jobinfo_format_raw(&ji);
    assert_non_null(strstr(raw, "Job type: 4\n\noperation: 5\n"));
    assert_non_null(strstr(raw, "errmsg: Unable to write to socket: Connection reset by peer\n"));
    free(raw);

    parse(&ji, "{}", JOBINFO_OP_MIGRATION_OUT, 0);
    assert_int_equal(ji.type, JOBINFO_NONE);
    expect_text(&ji, 0, "Job type:         None        \n");
    raw = jobinfo_format_raw(&ji);
    assert_string_equal(raw, "Job type: 0\n\n");
    free(raw);
}

static void test_incoming_postcopy(void **state)
{
    struct jobinfo ji;
    parse(&ji, "{\"status\": \"postcopy-active\", \"total-time\": 5000, "
               "\"ram\": {\"transferred\": 2048, \"remaining\": 1024, \"total\": 1048576, "
               "\"postcopy-requests\": 3, \"mbps\": 0}}",
          JOBINFO_OP_MIGRATION_IN, 5100);
    assert_int_equal(ji.type, JOBINFO_UNBOUNDED);
    expect_text(&ji, 0,
        "Job type:         Unbounded   \n"
        "Operation:        Incoming migration\n"
        "Time elapsed:     5100         ms\n"
        "Data processed:   2.000 KiB\n"
        "Data remaining:   1.000 KiB\n"
        "Data total:       1.000 MiB\n"
        "Memory processed: 2.000 KiB\n"
        "Memory remaining: 1.000 KiB\n"
        "Memory total:     1.000 MiB\n"
        "Dirty rate:       0            pages/s\n"
        "Iteration:        0           \n"
        "Postcopy requests: 3           \n");
}

static void test_json_round_trip(void **state)
{
    struct jobinfo ji, back;
    struct gw_error e;
    const char *replies[] = { active_reply, completed_reply, failed_reply, "{}" };
    for (size_t i = 0; i < 4; i++) {
        parse(&ji, replies[i], JOBINFO_OP_MIGRATION_OUT, 1500);
        if (i == 1)
            jobinfo_complete(&ji, true, NULL);
        struct json_object *o = jobinfo_to_json(&ji);
        /* through text, as the control protocol carries it */
        struct json_object *o2 = json_tokener_parse(json_object_to_json_string(o));
        gw_error_init(&e);
        assert_int_equal(jobinfo_from_json(&back, o2, &e), 0);
        for (unsigned fl = 0; fl < 4; fl++) {
            char *a = jobinfo_format_text(&ji, fl), *b = jobinfo_format_text(&back, fl);
            assert_string_equal(a, b);
            free(a);
            free(b);
        }
        char *a = jobinfo_format_raw(&ji), *b = jobinfo_format_raw(&back);
        assert_string_equal(a, b);
        free(a);
        free(b);
        json_object_put(o);
        json_object_put(o2);
    }
    struct json_object *bad = json_tokener_parse("{\"type\": \"exploded\", \"operation\": \"dump\"}");
    gw_error_init(&e);
    assert_int_equal(jobinfo_from_json(&back, bad, &e), -EINVAL);
    assert_string_equal(e.msg, "job info: unknown type 'exploded'");
    json_object_put(bad);
}

/* "normal-bytes" alone (no "duplicate" or "normal") was read but not shown,
 * nor sent on to godwit, which then printed other statistics than the
 * daemon had (found by fuzz_jobinfo). */
static void test_normal_bytes_alone(void **state)
{
    struct jobinfo ji, back;
    struct gw_error e;
    gw_error_init(&e);
    parse(&ji, "{\"status\": \"active\", \"ram\": {\"normal-bytes\": 3}}", JOBINFO_OP_MIGRATION_OUT, 10);
    assert_true(ji.mem_pages_set);
    assert_int_equal(ji.mem_normal_bytes, 3);
    struct json_object *o = jobinfo_to_json(&ji);
    assert_int_equal(jobinfo_from_json(&back, o, &e), 0);
    assert_int_equal(back.mem_normal_bytes, 3);
    char *a = jobinfo_format_text(&ji, 0), *b = jobinfo_format_text(&back, 0);
    assert_non_null(strstr(a, "Normal data:      3.000 B"));
    assert_string_equal(a, b);
    free(a);
    free(b);
    json_object_put(o);
}

/* The text showed only the first 159 bytes of the phases: the last ones
 * were cut when the times were large (found by fuzz_jobinfo's oracle). */
static void test_phases_text_whole(void **state)
{
    struct jobinfo ji;
    parse(&ji, "{\"status\": \"completed\", \"downtime-phases\": {\"stop-us\": 9223372036854775807,"
               " \"sync-us\": 9223372036854775807, \"pages-us\": 9223372036854775807,"
               " \"state-us\": 9223372036854775807, \"load-us\": 9223372036854775807,"
               " \"resume-us\": 9223372036854775806}}", JOBINFO_OP_MIGRATION_OUT, 10);
    char *t = jobinfo_format_text(&ji, JOBINFO_FMT_COMPLETED);
    assert_non_null(strstr(t, ", resume 9223372036854775806 us\n"));
    free(t);
}

static void test_hostile_replies(void **state)
{
    static const char *const bad[] = {
        "[]",
        "{\"status\": 3}",
        "{\"status\": \"active\", \"ram\": 5}",
        "{\"status\": \"active\", \"ram\": {\"total\": -1}}",
        "{\"status\": \"active\", \"ram\": {\"mbps\": \"fast\"}}",
        "{\"status\": \"active\", \"ram\": {\"mbps\": -3.5}}",
        "{\"status\": \"active\", \"total-time\": 1.5}",
        "{\"status\": \"active\", \"cpu-throttle-percentage\": 400}",
        "{\"status\": \"active\", \"error-desc\": {}}",
        "{\"status\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
        "{\"status\": \"completed\", \"downtime\": true}",
        "{\"status\": \"completed\", \"downtime-phases\": []}",
        "{\"status\": \"completed\", \"downtime-phases\": {\"sync-us\": 1}}",
        "{\"status\": \"completed\", \"downtime-phases\": {\"stop-us\": 0, \"sync-us\": 1, "
        "\"pages-us\": 2, \"state-us\": 3, \"load-us\": -4, \"resume-us\": 5}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct json_object *o = json_tokener_parse(bad[i]);
        struct jobinfo ji;
        struct gw_error e;
        gw_error_init(&e);
        assert_non_null(o);
        if (jobinfo_from_query_migrate(&ji, o, JOBINFO_OP_MIGRATION_OUT, 0, &e) != -EINVAL)
            fail_msg("accepted %s", bad[i]);
        assert_true(strncmp(e.msg, "query-migrate: ", 15) == 0);
        assert_int_equal(ji.type, JOBINFO_NONE);
        json_object_put(o);
    }
}

static void test_complete_and_policy_sample(void **state)
{
    struct jobinfo ji;
    struct mig_sample s;
    parse(&ji, active_reply, JOBINFO_OP_MIGRATION_OUT, 1500);
    jobinfo_policy_sample(&ji, &s);
    assert_string_equal(s.status, "active");
    assert_int_equal(s.elapsed_ms, 1234);
    assert_int_equal(s.iteration, 3);
    assert_int_equal(s.ram_remaining, 567890123);
    assert_int_equal(s.bandwidth_bps, 117562500);
    assert_int_equal(s.throttle_pct, 20);
    jobinfo_complete(&ji, false, "destination refused Finish");
    assert_int_equal(ji.type, JOBINFO_FAILED);
    assert_string_equal(ji.errmsg, "destination refused Finish");
    jobinfo_complete(&ji, true, NULL);
    assert_int_equal(ji.mem_remaining, 0);
    assert_string_equal(ji.errmsg, "");
    assert_string_equal(jobinfo_op_name(JOBINFO_OP_MIGRATION_IN), "Incoming migration");
    assert_string_equal(jobinfo_type_name(JOBINFO_CANCELLED), "Cancelled");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_active_text),
        cmocka_unit_test(test_active_rawstats),
        cmocka_unit_test(test_completed),
        cmocka_unit_test(test_failed_and_none),
        cmocka_unit_test(test_incoming_postcopy),
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_hostile_replies),
        cmocka_unit_test(test_normal_bytes_alone),
        cmocka_unit_test(test_phases_text_whole),
        cmocka_unit_test(test_complete_and_policy_sample),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
