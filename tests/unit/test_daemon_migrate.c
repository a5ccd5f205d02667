/* The migration messages between daemons (building, parsing, hostile
 * input), the destination's Prepare checks, and the phase drivers'
 * decisions (source Perform loop, destination watcher). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "daemon/migrate.h"
#include "daemon/migrate_peer.h"

#define UUID "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab"

static void make_def(struct dom_def *d)
{
    struct gw_error e;
    gw_error_init(&e);
    struct json_object *o = json_tokener_parse(
        "{\"name\": \"vm1\", \"uuid\": \"" UUID "\", \"memory_mib\": 64, \"vcpus\": 2,"
        " \"test_guest\": true, \"cmdline\": \"workload=dirty\", \"serial_log\": \"/var/log/x.log\"}");
    assert_int_equal(dom_def_from_json(o, d, &e), 0);
    json_object_put(o);
}

static void make_begin(struct mig_begin *b, unsigned flags)
{
    struct job j;
    struct dom_def d;
    struct gw_error e;
    gw_error_init(&e);
    assert_int_equal(job_init(&j, JOB_KIND_MIGRATION_OUT, "m-1", UUID, "vm1", 1, &e), 0);
    j.flags = flags;
    make_def(&d);
    assert_int_equal(mig_begin_init(b, &j, &d, "hostA", "10.0.0.2", true, &e), 0);
    dom_def_fini(&d);
}

static void test_begin_round_trip(void **state)
{
    struct mig_begin b, back;
    struct gw_error e;
    gw_error_init(&e);
    make_begin(&b, JOB_F_LIVE | JOB_F_POSTCOPY);
    assert_null(b.def.serial_log); /* the destination picks its own */
    struct json_object *o = mig_begin_to_json(&b);
    /* over the wire as text */
    struct json_object *wire = json_tokener_parse(json_object_to_json_string(o));
    assert_int_equal(mig_begin_from_json(wire, &back, &e), 0);
    assert_string_equal(back.head.job, "m-1");
    assert_string_equal(back.head.uuid, UUID);
    assert_string_equal(back.dest_host, "10.0.0.2");
    assert_string_equal(back.src_host, "hostA");
    assert_string_equal(back.def.name, "vm1");
    assert_int_equal(back.def.vcpus, 2);
    assert_int_equal(back.mem_size, 64ull << 20);
    assert_int_equal(back.page_size, 4096);
    assert_true(back.src_postcopy);
    assert_int_equal(back.flags, JOB_F_LIVE | JOB_F_POSTCOPY);
    json_object_put(o);
    json_object_put(wire);
    mig_begin_fini(&b);
    mig_begin_fini(&back);
}

/* Every member broken in turn is refused with a message, never a crash. */
static void test_begin_hostile(void **state)
{
    static const char *const bad[] = {
        "{}",
        "{\"version\": 2, \"job\": \"m-1\", \"uuid\": \"" UUID "\"}",
        "{\"version\": 1, \"job\": \"../x\", \"uuid\": \"" UUID "\"}",
        "{\"version\": 1, \"job\": \"m-1\\u0000../x\", \"uuid\": \"" UUID "\"}", /* fuzz_peer */
        "{\"version\": 1, \"job\": \"m-1\", \"uuid\": \"not-a-uuid\"}",
        "{\"version\": 1, \"job\": \"m-1\", \"uuid\": \"" UUID "\", \"dest_host\": \"h\"}",
        "{\"version\": 1, \"job\": \"m-1\", \"uuid\": \"" UUID "\", \"dest_host\": \"h\", \"cookie\": 3}",
        "{\"version\": 1, \"job\": \"m-1\", \"uuid\": \"" UUID "\", \"dest_host\": \"h\", \"cookie\": {}}",
        "{\"version\": 1, \"job\": \"m-1\", \"uuid\": \"" UUID "\", \"dest_host\": \"h\", \"cookie\":"
        " {\"domain\": {\"name\": \"vm1\", \"uuid\": \"" UUID "\", \"memory_mib\": 64, \"test_guest\": true}}}",
        "{\"version\": 1, \"job\": \"m-1\", \"uuid\": \"" UUID "\", \"dest_host\": \"h\", \"cookie\":"
        " {\"domain\": {\"name\": \"vm1\", \"uuid\": \"0d0c0b0a-1111-4222-8333-444455556666\","
        " \"memory_mib\": 64, \"test_guest\": true}, \"memory\": {\"size\": 67108864, \"page_size\": 4096}}}",
        "{\"version\": 1, \"job\": \"m-1\", \"uuid\": \"" UUID "\", \"dest_host\": \"h\", \"cookie\":"
        " {\"domain\": {\"name\": \"vm1\", \"uuid\": \"" UUID "\", \"memory_mib\": 64, \"test_guest\": true},"
        " \"memory\": {\"size\": 67108864, \"page_size\": 4096}, \"flags\": [\"teleport\"]}}",
        /* a stream this host cannot read */
        "{\"version\": 1, \"job\": \"m-1\", \"uuid\": \"" UUID "\", \"dest_host\": \"h\", \"cookie\":"
        " {\"domain\": {\"name\": \"vm1\", \"uuid\": \"" UUID "\", \"memory_mib\": 64, \"test_guest\": true},"
        " \"memory\": {\"size\": 67108864, \"page_size\": 4096}, \"features\": {\"stream_version\": 2}}}",
        "{\"version\": 1, \"job\": \"m-1\", \"uuid\": \"" UUID "\", \"dest_host\": \"h\", \"cookie\":"
        " {\"domain\": {\"name\": \"vm1\", \"uuid\": \"" UUID "\", \"memory_mib\": 64, \"test_guest\": true},"
        " \"memory\": {\"size\": 67108864, \"page_size\": 4096}, \"features\": {\"stream_version\": \"1\"}}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct mig_begin b;
        struct gw_error e;
        gw_error_init(&e);
        struct json_object *o = json_tokener_parse(bad[i]);
        assert_non_null(o);
        assert_true(mig_begin_from_json(o, &b, &e) < 0);
        assert_true(e.msg[0] != '\0');
        mig_begin_fini(&b);
        json_object_put(o);
    }
}

static void test_version_refused(void **state)
{
    struct mig_msg_head h;
    struct gw_error e;
    gw_error_init(&e);
    struct json_object *o = json_tokener_parse("{\"version\": 7, \"job\": \"m-1\", \"uuid\": \"" UUID "\"}");
    assert_int_equal(mig_head_from_json(o, &h, &e), -EPROTONOSUPPORT);
    assert_non_null(strstr(e.msg, "version 7"));
    json_object_put(o);
}

static void test_prepare_checks(void **state)
{
    struct mig_begin b;
    struct mig_prepare_facts f = { .local_postcopy = true };
    struct gw_error e;
    make_begin(&b, JOB_F_LIVE | JOB_F_POSTCOPY);
    gw_error_init(&e);
    assert_int_equal(mig_prepare_check(&b, &f, &e), 0);
    f.uuid_defined = true; /* an inactive definition of the same domain: fine */
    assert_int_equal(mig_prepare_check(&b, &f, &e), 0);
    f.uuid_name = b.def.name;
    assert_int_equal(mig_prepare_check(&b, &f, &e), 0);
    f.uuid_name = "old"; /* the same UUID under another name: never renamed */
    assert_int_equal(mig_prepare_check(&b, &f, &e), -EEXIST);
    assert_non_null(strstr(e.msg, "domain 'old' is already defined on the destination"));
    assert_non_null(strstr(e.msg, UUID));
    f.uuid_name = NULL;
    gw_error_init(&e);
    struct { struct mig_prepare_facts f; int err; const char *words; } cases[] = {
        { { .uuid_active = true, .local_postcopy = true }, -EEXIST, "already active" },
        { { .uuid_job = true, .local_postcopy = true }, -EEXIST, "busy with a job" },
        { { .name_other_uuid = true, .name_other_active = true, .local_postcopy = true }, -EEXIST,
          "already running" },
        { { .name_other_uuid = true, .local_postcopy = true }, -EEXIST, "another uuid" },
        { { .local_postcopy = false }, -ENOTSUP, "not supported on the destination" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gw_error_init(&e);
        assert_int_equal(mig_prepare_check(&b, &cases[i].f, &e), cases[i].err);
        assert_non_null(strstr(e.msg, cases[i].words));
    }
    gw_error_init(&e);
    b.mem_size = 32ull << 20;
    assert_int_equal(mig_prepare_check(&b, &f, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "memory layout"));
    b.mem_size = 64ull << 20;
    b.page_size = 2 << 20;
    gw_error_init(&e);
    assert_int_equal(mig_prepare_check(&b, &f, &e), -EINVAL);
    b.page_size = 4096;
    b.def.policy.permit_postcopy = false;
    gw_error_init(&e);
    assert_int_equal(mig_prepare_check(&b, &f, &e), -ENOTSUP);
    b.flags = JOB_F_LIVE; /* pre-copy needs no post-copy support anywhere */
    f.local_postcopy = false;
    assert_int_equal(mig_prepare_check(&b, &f, &e), 0);
    mig_begin_fini(&b);
}

/* A watcher clears the run's watcher flag only while it is its own: a
 * stale watcher (an earlier job's, still ending) leaves a newer one's. */
static void test_watch_generation(void **state)
{
    struct mig_run run;
    memset(&run, 0, sizeof(run));
    unsigned old = mig_watch_claim(&run);
    assert_true(run.watcher);
    assert_true(mig_watch_release(&run, old));
    assert_false(run.watcher);
    old = mig_watch_claim(&run);
    unsigned now = mig_watch_claim(&run); /* the next job's watcher */
    assert_int_not_equal(old, now);
    assert_false(mig_watch_release(&run, old)); /* the stale one ends */
    assert_true(run.watcher);
    assert_true(mig_watch_release(&run, now));
    assert_false(run.watcher);
}

static void test_finish_messages(void **state)
{
    struct job j;
    struct gw_error e;
    gw_error_init(&e);
    assert_int_equal(job_init(&j, JOB_KIND_MIGRATION_OUT, "m-2", UUID, "vm1", 1, &e), 0);
    struct json_object *stats = json_tokener_parse("{\"type\": \"completed\"}");
    struct json_object *o = mig_finish_to_json(&j, false, true, stats);
    struct mig_finish f;
    assert_int_equal(mig_finish_from_json(o, &f, &e), 0);
    assert_false(f.cancelled);
    assert_true(f.postcopy);
    assert_non_null(f.stats);
    assert_string_equal(f.head.job, "m-2");
    json_object_put(o);
    struct json_object *bad = json_tokener_parse("{\"version\": 1, \"job\": \"m-2\", \"uuid\": \"" UUID
                                                 "\", \"cookie\": {\"cancelled\": \"yes\"}}");
    gw_error_init(&e);
    assert_true(mig_finish_from_json(bad, &f, &e) < 0);
    json_object_put(bad);
    enum job_peer_outcome out;
    struct json_object *r = json_tokener_parse("{\"outcome\": \"running\"}");
    assert_int_equal(mig_outcome_from_reply(r, &out, &e), 0);
    assert_int_equal(out, JOB_PEER_RUNNING);
    json_object_put(r);
    r = json_tokener_parse("{\"outcome\": \"maybe\"}");
    gw_error_init(&e);
    assert_true(mig_outcome_from_reply(r, &out, &e) < 0);
    json_object_put(r);
}

static void test_uris(void **state)
{
    char buf[128], host[64];
    struct gw_error e;
    /* The uri of a Prepare answer: present, a string, and fitting. */
    struct json_object *r = json_tokener_parse("{\"uri\": \"tcp:10.0.0.2:49152\"}");
    gw_error_init(&e);
    assert_int_equal(mig_uri_from_reply(r, "Prepare answer", buf, sizeof(buf), &e), 0);
    assert_string_equal(buf, "tcp:10.0.0.2:49152");
    assert_true(mig_uri_from_reply(r, "Prepare answer", buf, 8, &e) < 0);
    assert_non_null(strstr(e.msg, "Prepare answer has no valid 'uri'"));
    json_object_put(r);
    r = json_tokener_parse("{\"uri\": 5}");
    gw_error_init(&e);
    assert_true(mig_uri_from_reply(r, "answer", buf, sizeof(buf), &e) < 0);
    json_object_put(r);
    /* The uri goes to the source VMM's migrate: a peer must not make it
     * write the guest into a file or a socket here (found by fuzz_peer). */
    static const char *const not_tcp[] = {
        "{\"uri\": \"file:/etc/passwd\"}", "{\"uri\": \"unix:/run/x.sock\"}",
        "{\"uri\": \"tcp:10.0.0.2:49)52\"}", "{\"uri\": \"tcp:[]:49152\"}", "{\"uri\": \"\"}",
    };
    for (size_t i = 0; i < sizeof(not_tcp) / sizeof(not_tcp[0]); i++) {
        r = json_tokener_parse(not_tcp[i]);
        gw_error_init(&e);
        assert_int_equal(mig_uri_from_reply(r, "Prepare answer", buf, sizeof(buf), &e), -EPROTO);
        assert_non_null(strstr(e.msg, "not a tcp:HOST:PORT address"));
        json_object_put(r);
    }
    r = json_tokener_parse("{\"uri\": \"tcp:[fd00::2]:49153\"}");
    assert_int_equal(mig_uri_from_reply(r, "Prepare answer", buf, sizeof(buf), &e), 0);
    json_object_put(r);
    mig_tcp_uri(buf, sizeof(buf), "10.0.0.2", 49152);
    assert_string_equal(buf, "tcp:10.0.0.2:49152");
    mig_tcp_uri(buf, sizeof(buf), "fd00::2", 49153);
    assert_string_equal(buf, "tcp:[fd00::2]:49153");
    gw_error_init(&e);
    assert_int_equal(mig_uri_host("tcp:10.77.0.2:16509", host, sizeof(host), &e), 0);
    assert_string_equal(host, "10.77.0.2");
    assert_int_equal(mig_uri_host("tcp:[fd00::2]:16509", host, sizeof(host), &e), 0);
    assert_string_equal(host, "fd00::2");
    gw_error_init(&e);
    assert_true(mig_uri_host("unix:/run/x.sock", host, sizeof(host), &e) < 0);
}

static void test_perform_decisions(void **state)
{
    struct { const char *status; bool switched; enum mig_perform_step want; } t[] = {
        { "setup", false, MIG_PERFORM_CONTINUE },     { "active", false, MIG_PERFORM_CONTINUE },
        { "device", false, MIG_PERFORM_CONTINUE },    { "cancelling", false, MIG_PERFORM_CONTINUE },
        { "completed", false, MIG_PERFORM_COMPLETED },{ "failed", false, MIG_PERFORM_FAILED },
        { "cancelled", false, MIG_PERFORM_FAILED },   { "", false, MIG_PERFORM_FAILED },
        { NULL, false, MIG_PERFORM_FAILED },
        /* switch ordered but not effective yet */
        { "active", true, MIG_PERFORM_CONTINUE },
        { "postcopy-active", true, MIG_PERFORM_POSTCOPY },
        { "completed", true, MIG_PERFORM_POSTCOPY },
        { "postcopy-paused", true, MIG_PERFORM_BROKEN },
        { "postcopy-recover", true, MIG_PERFORM_BROKEN },
        { "failed", true, MIG_PERFORM_BROKEN },
        /* post-copy never ordered by us: not ours to finish */
        { "postcopy-active", false, MIG_PERFORM_CONTINUE },
        { "postcopy-paused", false, MIG_PERFORM_FAILED },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        assert_int_equal(mig_perform_classify(t[i].status, t[i].switched), t[i].want);
}

static void test_watch_decisions(void **state)
{
    const uint64_t W = 60000;
    assert_int_equal(mig_watch_classify(JOB_PHASE_PREPARE, "active", 0, 5000, W), MIG_WATCH_GO_ON);
    assert_int_equal(mig_watch_classify(JOB_PHASE_PREPARE, "failed", 0, 5000, W), MIG_WATCH_DISCARD);
    assert_int_equal(mig_watch_classify(JOB_PHASE_PREPARE, "completed", 1000, 5000, W), MIG_WATCH_GO_ON);
    assert_int_equal(mig_watch_classify(JOB_PHASE_PREPARE, "completed", 1000, 1000 + W + 1, W),
                     MIG_WATCH_DISCARD);
    /* a post-copy destination runs once Finish resumed it, until the last page */
    assert_int_equal(mig_watch_classify(JOB_PHASE_FINISH, "postcopy-active", 0, 1, W), MIG_WATCH_GO_ON);
    assert_int_equal(mig_watch_classify(JOB_PHASE_FINISH, "completed", 0, 1, W), MIG_WATCH_COMPLETE);
    assert_int_equal(mig_watch_classify(JOB_PHASE_FINISH, "postcopy-paused", 0, 1, W),
                     MIG_WATCH_POSTCOPY_FAILED);
    /* paused: only a recovery moves it on; never discarded by the watcher */
    assert_int_equal(mig_watch_classify(JOB_PHASE_POSTCOPY_FAILED, "failed", 1, 1 + 2 * W, W),
                     MIG_WATCH_GO_ON);
}

/* After a post-copy switch the guest is (or may be) the destination's
 * alone: in prepare, no timer discards it, and a paused one (also one that
 * paused after loading the state, before the source's commit) waits,
 * paused, for the source's decision. */
static void test_watch_postcopy_prepare(void **state)
{
    const uint64_t W = 60000;
    assert_int_equal(mig_watch_classify(JOB_PHASE_PREPARE, "postcopy-active", 1000, 1000 + W + 1, W),
                     MIG_WATCH_GO_ON);
    assert_int_equal(mig_watch_classify(JOB_PHASE_PREPARE, "postcopy-active", 1000, 1000 + 10 * W, W),
                     MIG_WATCH_GO_ON);
    static const char *const broken[] = { "postcopy-paused", "postcopy-recover",
                                          "postcopy-recover-setup" };
    for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
        assert_int_equal(mig_watch_classify(JOB_PHASE_PREPARE, broken[i], 0, 5000, W),
                         MIG_WATCH_POSTCOPY_FAILED);
        assert_int_equal(mig_watch_classify(JOB_PHASE_PREPARE, broken[i], 1000, 1000 + 10 * W, W),
                         MIG_WATCH_POSTCOPY_FAILED);
    }
    /* the source's abort discards it only if the guest was never handed over */
    assert_true(mig_abort_allowed(JOB_PHASE_PREPARE, false));
    /* a prepared VMM that reports the switch (the source's VMM switched
     * between two of its polls) is never discarded, not even in prepare */
    assert_false(mig_abort_allowed(JOB_PHASE_PREPARE, true));
    assert_true(mig_abort_allowed(JOB_PHASE_POSTCOPY_FAILED, false));
    assert_false(mig_abort_allowed(JOB_PHASE_POSTCOPY_FAILED, true));
    assert_false(mig_abort_allowed(JOB_PHASE_FINISH, false));
}

/* Perform: a failed query-migrate is retried (bounded), as Confirm does;
 * before cancelling, a post-copy-capable source asks whether its VMM
 * switched, and an unknown answer counts as switched. */
static void test_perform_unanswered(void **state)
{
    (void)state;
    assert_int_equal(mig_perform_unanswered(false, 1, 10), MIG_PERFORM_CONTINUE);
    assert_int_equal(mig_perform_unanswered(true, 9, 10), MIG_PERFORM_CONTINUE);
    assert_int_equal(mig_perform_unanswered(false, 10, 10), MIG_PERFORM_FAILED);
    assert_int_equal(mig_perform_unanswered(true, 10, 10), MIG_PERFORM_BROKEN);
    /* no answer, or a migration without postcopy-started: may have switched */
    assert_true(mig_vmm_may_have_switched(false, NULL, false, false));
    assert_true(mig_vmm_may_have_switched(true, "active", false, false));
    assert_true(mig_vmm_may_have_switched(true, "failed", true, true));
    assert_true(mig_vmm_may_have_switched(true, "postcopy-active", true, true));
    /* it says it did not; or it has no migration at all */
    assert_false(mig_vmm_may_have_switched(true, "failed", true, false));
    assert_false(mig_vmm_may_have_switched(true, "cancelled", true, false));
    assert_false(mig_vmm_may_have_switched(true, NULL, false, false));
    assert_false(mig_vmm_may_have_switched(true, "", false, false));
    assert_false(mig_vmm_may_have_switched(true, "none", false, false));
}

/* domain-jobabort is read only by the Perform loop: refused elsewhere. */
static void test_jobabort_phases(void **state)
{
    (void)state;
    assert_true(mig_jobabort_allowed(JOB_PHASE_PERFORM));
    assert_true(mig_jobabort_allowed(JOB_PHASE_PERFORM_POSTCOPY));
    assert_false(mig_jobabort_allowed(JOB_PHASE_BEGIN));
    assert_false(mig_jobabort_allowed(JOB_PHASE_PERFORM_DONE));
    assert_false(mig_jobabort_allowed(JOB_PHASE_CONFIRM));
    assert_false(mig_jobabort_allowed(JOB_PHASE_CONFIRM_CANCELLED));
}

/* An incoming stream that never starts (the source gave up after Prepare
 * without telling us) is discarded after a bound. */
/* domain-jobabort --force-resume: only a source job in perform-done
 * without a post-copy switch, whose VMM says explicitly that it did not
 * hand the guest over; every refusal names its reason. */
static void test_force_resume_rule(void **state)
{
    struct mig_force_facts f = { .kind = JOB_KIND_MIGRATION_OUT, .phase = JOB_PHASE_PERFORM_DONE };
    /* the job alone (the VMM not asked yet) */
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_RESUME);
    f.kind = JOB_KIND_MIGRATION_IN;
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_INCOMING);
    f.kind = JOB_KIND_MODIFY;
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_PHASE);
    f.kind = JOB_KIND_MIGRATION_OUT;
    f.job_switched = true; /* recorded: whatever the phase */
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_JOB_SWITCHED);
    f.phase = JOB_PHASE_PERFORM_POSTCOPY;
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_JOB_SWITCHED);
    f.phase = JOB_PHASE_POSTCOPY_FAILED;
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_JOB_SWITCHED);
    f.job_switched = false;
    /* plain domjobabort cancels these */
    f.phase = JOB_PHASE_PERFORM;
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_USE_ABORT);
    f.phase = JOB_PHASE_PERFORM_POSTCOPY;
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_USE_ABORT);
    /* not waiting on the destination */
    static const enum job_phase others[] = { JOB_PHASE_NONE, JOB_PHASE_BEGIN, JOB_PHASE_CONFIRM,
                                             JOB_PHASE_CONFIRM_CANCELLED, JOB_PHASE_POSTCOPY_FAILED,
                                             JOB_PHASE_DONE, JOB_PHASE_FAILED };
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        f.phase = others[i];
        assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_PHASE);
        f.vmm_asked = f.vmm_answered = f.vmm_said = true; /* the VMM's word does not help */
        f.vmm_status = "completed";
        assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_PHASE);
        f.vmm_asked = f.vmm_answered = f.vmm_said = false;
        f.vmm_status = NULL;
    }
    /* perform-done: the VMM's word */
    f.phase = JOB_PHASE_PERFORM_DONE;
    f.vmm_asked = true;
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_VMM_UNKNOWN); /* no answer */
    f.vmm_answered = true;
    f.vmm_status = "completed";
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_VMM_UNKNOWN); /* does not say */
    f.vmm_status = "";
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_VMM_UNKNOWN); /* no migration at all */
    f.vmm_status = "postcopy-active";
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_VMM_SWITCHED); /* its status says */
    f.vmm_said = true;
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_VMM_SWITCHED);
    f.vmm_status = "completed";
    f.vmm_started = true;
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_VMM_SWITCHED);
    f.vmm_started = false;
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_RESUME);
    f.vmm_status = NULL;
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_RESUME);
    f.job_switched = true; /* the job's record wins over the VMM's denial */
    assert_int_equal(mig_force_resume_allowed(&f), MIG_FORCE_JOB_SWITCHED);
}

/* The thread that drives a source job acts on it only while it owns it:
 * a forced resume takes the job over (a new owner), and from then on that
 * thread's claims fail; a new job's driver does not inherit an old one's. */
static void test_src_ownership(void **state)
{
    struct mig_run run;
    memset(&run, 0, sizeof(run));
    unsigned worker = mig_run_own(&run);
    assert_true(mig_run_claim(&run, worker));
    assert_true(run.src_busy);
    assert_true(mig_run_claim(&run, worker)); /* again: still its own */
    mig_run_release(&run, worker);
    assert_false(run.src_busy);
    unsigned forced = mig_run_own(&run); /* the operator takes it over */
    assert_int_not_equal(worker, forced);
    assert_false(mig_run_claim(&run, worker));
    assert_false(run.src_busy);
    assert_true(mig_run_claim(&run, forced));
    mig_run_release(&run, worker); /* a stale release leaves the owner's claim */
    assert_true(run.src_busy);
    mig_run_release(&run, forced);
    assert_false(run.src_busy);
    unsigned next = mig_run_own(&run); /* the next job's driver */
    assert_false(mig_run_claim(&run, forced));
    assert_false(mig_run_claim(&run, worker));
    assert_true(mig_run_claim(&run, next));
    assert_int_equal(mig_run_own(&run), next + 1); /* a new owner clears the old one's busy flag */
    assert_false(run.src_busy);
}

static void test_watch_start_overdue(void **state)
{
    const uint64_t W = 60000;
    assert_false(mig_watch_start_overdue("setup", 1000, 1000 + W, W));
    assert_true(mig_watch_start_overdue("setup", 1000, 1000 + W + 1, W));
    assert_true(mig_watch_start_overdue("none", 1000, 1000 + W + 1, W));
    assert_true(mig_watch_start_overdue("", 1000, 1000 + W + 1, W));
    assert_true(mig_watch_start_overdue(NULL, 1000, 1000 + W + 1, W));
    /* once the stream runs, the other rules apply */
    static const char *const started[] = { "active", "device", "completed", "postcopy-active",
                                           "postcopy-paused", "failed" };
    for (size_t i = 0; i < sizeof(started) / sizeof(started[0]); i++)
        assert_false(mig_watch_start_overdue(started[i], 1000, 1000 + 10 * W, W));
}

/* Confirm's post-copy wait: one failed query-migrate decides nothing. */
static void test_confirm_decisions(void **state)
{
    assert_int_equal(mig_confirm_classify("postcopy-active", 0, 10), MIG_CONFIRM_WAIT);
    assert_int_equal(mig_confirm_classify("postcopy-recover", 0, 10), MIG_CONFIRM_WAIT);
    assert_int_equal(mig_confirm_classify("completed", 0, 10), MIG_CONFIRM_DONE);
    assert_int_equal(mig_confirm_classify(NULL, 1, 10), MIG_CONFIRM_WAIT);
    assert_int_equal(mig_confirm_classify(NULL, 9, 10), MIG_CONFIRM_WAIT);
    assert_int_equal(mig_confirm_classify(NULL, 10, 10), MIG_CONFIRM_BROKEN);
    assert_int_equal(mig_confirm_classify("postcopy-paused", 0, 10), MIG_CONFIRM_BROKEN);
    assert_int_equal(mig_confirm_classify("failed", 0, 10), MIG_CONFIRM_BROKEN);
    assert_int_equal(mig_confirm_classify("", 0, 10), MIG_CONFIRM_BROKEN);
}

/* --postcopy-resume: what the real VMM says when its recovery fails
 * (src/migration/postcopy_src.c: back to postcopy-paused, error-desc
 * "recovery failed: ...", one more postcopy-pauses), and a bounded wait. */
static void test_resume_decisions(void **state)
{
    struct mig_resume_facts f = { .status = "postcopy-paused", .errmsg = "connection broken",
                                  .pauses_before = 1, .pauses_now = 1, .limit_ms = 60000 };
    /* not taken yet: still the old pause (even an older failed recovery's text) */
    assert_int_equal(mig_resume_classify(&f), MIG_RESUME_WAIT);
    f.errmsg = "recovery failed: Connection refused";
    assert_int_equal(mig_resume_classify(&f), MIG_RESUME_WAIT);
    f.status = "postcopy-recover";
    f.errmsg = "";
    f.seen_recover = true;
    assert_int_equal(mig_resume_classify(&f), MIG_RESUME_WAIT);
    /* the real VMM's failed recovery */
    f.status = "postcopy-paused";
    f.errmsg = "recovery failed: Connection refused";
    f.pauses_now = 2;
    assert_int_equal(mig_resume_classify(&f), MIG_RESUME_FAILED);
    /* without a count: the error-desc, once postcopy-recover was seen */
    f.pauses_before = f.pauses_now = -1;
    assert_int_equal(mig_resume_classify(&f), MIG_RESUME_FAILED);
    f.seen_recover = false;
    assert_int_equal(mig_resume_classify(&f), MIG_RESUME_WAIT);
    f.status = "postcopy-active";
    assert_int_equal(mig_resume_classify(&f), MIG_RESUME_RUNNING);
    f.status = "completed";
    assert_int_equal(mig_resume_classify(&f), MIG_RESUME_RUNNING);
    f.status = "failed";
    assert_int_equal(mig_resume_classify(&f), MIG_RESUME_FAILED);
    /* bounded */
    f.status = "postcopy-recover";
    f.elapsed_ms = 60001;
    assert_int_equal(mig_resume_classify(&f), MIG_RESUME_TIMEOUT);
}

/* Finish sent again (its first answer was lost, then Status said
 * prepared) after the destination completed the job: the answer must be
 * running, never an error (the source would resume: two guests). */
static void test_finish_again(void **state)
{
    struct job j;
    struct gw_error e;
    gw_error_init(&e);
    assert_int_equal(job_init(&j, JOB_KIND_MIGRATION_IN, "m-1", UUID, "vm1", 1, &e), 0);
    struct mig_finish f = { .cancelled = false };
    snprintf(f.head.job, sizeof(f.head.job), "m-1");
    snprintf(f.head.uuid, sizeof(f.head.uuid), UUID);
    j.phase = JOB_PHASE_DONE;
    assert_true(mig_finish_already_running(&j, &f, true));
    assert_true(mig_finish_already_running(&j, &f, false)); /* it ran here */
    assert_true(mig_finish_already_running(NULL, &f, true)); /* restarted here, guest runs */
    assert_false(mig_finish_already_running(NULL, &f, false));
    j.phase = JOB_PHASE_FAILED;
    assert_false(mig_finish_already_running(&j, &f, false));
    j.phase = JOB_PHASE_PREPARE; /* active: the normal path */
    assert_false(mig_finish_already_running(&j, &f, false));
    j.phase = JOB_PHASE_DONE;
    f.cancelled = true;
    assert_false(mig_finish_already_running(&j, &f, true));
    f.cancelled = false;
    snprintf(f.head.job, sizeof(f.head.job), "m-2"); /* another job: only whether it runs */
    assert_false(mig_finish_already_running(&j, &f, false));
    assert_true(mig_finish_already_running(&j, &f, true));
}

/* Finish sent again for a pre-copy job labelled post-copy (by a restarted
 * source), or the other way round: the destination resumes the guest in
 * the mode its VMM says, and a post-copy guest is never handled as a
 * pre-copy one (whose failure would discard it). */
static void test_finish_mode(void **state)
{
    /* the VMM arrived without a switch: pre-copy, whatever Finish said */
    assert_false(mig_finish_postcopy(true, "completed", false));
    assert_false(mig_finish_postcopy(false, "completed", false));
    /* it switched: post-copy, whatever Finish said */
    assert_true(mig_finish_postcopy(false, "postcopy-active", true));
    assert_true(mig_finish_postcopy(false, "postcopy-active", false));
    assert_true(mig_finish_postcopy(false, "completed", true));
    assert_true(mig_finish_postcopy(false, "postcopy-paused", false));
    assert_true(mig_finish_postcopy(false, "failed", true));
    /* no word from the VMM: what Finish (or the job) said */
    assert_true(mig_finish_postcopy(true, "failed", false));
    assert_false(mig_finish_postcopy(false, "failed", false));
    assert_true(mig_finish_postcopy(true, "", false));
    assert_true(mig_finish_postcopy(true, NULL, false));
    assert_false(mig_finish_postcopy(false, NULL, false));
}

/* A VMM that does not answer the watcher is discarded only in prepare,
 * before any post-copy status: never a restarted destination's post-copy
 * (finish) or post-copy failed one, whose VMM the watcher starts without
 * having seen a status yet. */
static void test_watch_unanswered(void **state)
{
    assert_false(mig_watch_unanswered_discard(JOB_PHASE_PREPARE, false, 9, 10));
    assert_true(mig_watch_unanswered_discard(JOB_PHASE_PREPARE, false, 10, 10));
    assert_false(mig_watch_unanswered_discard(JOB_PHASE_PREPARE, true, 100, 10));
    assert_false(mig_watch_unanswered_discard(JOB_PHASE_FINISH, false, 100, 10));
    assert_false(mig_watch_unanswered_discard(JOB_PHASE_POSTCOPY_FAILED, false, 100, 10));
}

/* migration-prepare-resume: a paused post-copy job recovers as before; a
 * VMM that completed a post-copy migration listens once for a source that
 * lost the last message, whatever became of the job here (still finishing,
 * done, or forgotten by a restart), never for a discarded or another
 * active job, nor for a VMM that completed without a switch. */
static void test_resume_target(void **state)
{
    struct job j;
    struct gw_error e;
    gw_error_init(&e);
    assert_int_equal(job_init(&j, JOB_KIND_MIGRATION_IN, "m-1", UUID, "vm1", 1, &e), 0);
    struct mig_resume_target_facts f = { .job = &j, .job_id = "m-1", .domain_active = true,
                                         .vmm_status = "postcopy-paused", .vmm_switched = true };
    /* a broken post-copy: recovery, as before */
    j.phase = JOB_PHASE_POSTCOPY_FAILED;
    assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_RECOVER);
    f.only_completed = true; /* Confirm asks only for a completed one */
    assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_REFUSE);
    f.only_completed = false;
    f.domain_active = false;
    assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_REFUSE);
    f.domain_active = true;
    /* completed after post-copy: in every phase it may be seen in, or no record */
    f.vmm_status = "completed";
    static const enum job_phase phases[] = { JOB_PHASE_PREPARE, JOB_PHASE_FINISH, JOB_PHASE_DONE,
                                             JOB_PHASE_POSTCOPY_FAILED };
    for (size_t i = 0; i < sizeof(phases) / sizeof(phases[0]); i++) {
        j.phase = phases[i];
        f.only_completed = false;
        assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_COMPLETED);
        f.only_completed = true;
        assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_COMPLETED);
    }
    f.job = NULL; /* the job ended and the daemon restarted since */
    assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_COMPLETED);
    /* never without the switch, or without a VMM */
    f.vmm_switched = false;
    assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_REFUSE);
    f.vmm_switched = true;
    f.domain_active = false;
    assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_REFUSE);
    f.domain_active = true;
    /* not completed: a job that is not post-copy failed, or none, refuses */
    static const char *const other[] = { "postcopy-active", "postcopy-paused", "active", "failed",
                                         "", NULL };
    f.job = &j;
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        f.vmm_status = other[i];
        f.only_completed = false;
        j.phase = JOB_PHASE_FINISH;
        assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_REFUSE);
        j.phase = JOB_PHASE_DONE;
        assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_REFUSE);
        f.job = NULL;
        assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_REFUSE);
        f.job = &j;
    }
    /* this job discarded here */
    f.vmm_status = "completed";
    j.phase = JOB_PHASE_FAILED;
    assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_REFUSE);
    /* another job's record: an active one holds the domain; an ended one
     * says nothing about this job (the VMM checks the migration's id) */
    f.job_id = "m-0";
    j.phase = JOB_PHASE_FINISH;
    assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_REFUSE);
    j.phase = JOB_PHASE_POSTCOPY_FAILED;
    assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_REFUSE);
    j.phase = JOB_PHASE_DONE;
    assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_COMPLETED);
    j.kind = JOB_KIND_MIGRATION_OUT; /* an outgoing migration that failed before its stream */
    j.phase = JOB_PHASE_FAILED;
    assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_COMPLETED);
    j.phase = JOB_PHASE_PERFORM;
    assert_int_equal(mig_resume_target_classify(&f), MIG_RESUME_TARGET_REFUSE);
}

/* Confirm's post-copy wait ended on a break: only a paused VMM whose
 * destination says it runs the guest is resumed (the destination's VMM
 * may have completed and its last message been lost), once; the
 * destination is asked first. */
static void test_paused_decisions(void **state)
{
    struct mig_paused_facts f = { .vmm_status = "postcopy-paused", .peer = JOB_PEER_UNREACHABLE,
                                  .max_resumes = 1 };
    assert_int_equal(mig_paused_classify(&f), MIG_PAUSED_ASK_PEER);
    f.asked = true;
    f.peer = JOB_PEER_RUNNING;
    assert_int_equal(mig_paused_classify(&f), MIG_PAUSED_RESUME);
    static const enum job_peer_outcome no[] = { JOB_PEER_UNREACHABLE, JOB_PEER_UNKNOWN,
                                                JOB_PEER_PREPARED, JOB_PEER_FAILED,
                                                JOB_PEER_POSTCOPY_FAILED };
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        f.peer = no[i];
        assert_int_equal(mig_paused_classify(&f), MIG_PAUSED_FAILED);
    }
    /* once */
    f.peer = JOB_PEER_RUNNING;
    f.resumes = 1;
    assert_int_equal(mig_paused_classify(&f), MIG_PAUSED_FAILED);
    f.resumes = 0;
    /* a stream that failed, or a VMM that does not answer: nothing to resume, nobody asked */
    static const char *const broken[] = { "failed", "cancelled", "postcopy-active", "", NULL };
    for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
        f.vmm_status = broken[i];
        f.asked = false;
        assert_int_equal(mig_paused_classify(&f), MIG_PAUSED_FAILED);
        f.asked = true;
        assert_int_equal(mig_paused_classify(&f), MIG_PAUSED_FAILED);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_begin_round_trip),
        cmocka_unit_test(test_begin_hostile),
        cmocka_unit_test(test_version_refused),
        cmocka_unit_test(test_prepare_checks), cmocka_unit_test(test_watch_generation),
        cmocka_unit_test(test_finish_messages),
        cmocka_unit_test(test_uris),
        cmocka_unit_test(test_perform_decisions),
        cmocka_unit_test(test_watch_decisions),
        cmocka_unit_test(test_confirm_decisions),
        cmocka_unit_test(test_watch_postcopy_prepare),
        cmocka_unit_test(test_watch_start_overdue),
        cmocka_unit_test(test_resume_decisions),
        cmocka_unit_test(test_finish_again),
        cmocka_unit_test(test_finish_mode),
        cmocka_unit_test(test_watch_unanswered),
        cmocka_unit_test(test_resume_target),
        cmocka_unit_test(test_paused_decisions),
        cmocka_unit_test(test_perform_unanswered),
        cmocka_unit_test(test_jobabort_phases),
        cmocka_unit_test(test_force_resume_rule),
        cmocka_unit_test(test_src_ownership),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
