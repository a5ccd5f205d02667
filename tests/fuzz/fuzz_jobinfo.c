/* libFuzzer target: the VMM's query-migrate reply as the daemon reads it
 * (jobinfo_from_query_migrate, every 200 ms of a migration on both sides),
 * and the job statistics the daemon sends on (domain-jobinfo, the
 * job-completed event, the Finish cookie) as godwit reads them back
 * (jobinfo_from_json). Input: byte 0 = bit 0: which reader; bits 1-4: the
 * operation; bit 5: complete the job (success or, with bit 6, failure)
 * before it is sent on; then the JSON text of the reply.
 * Oracles: a refusal carries an errno and a message; accepted statistics
 * are consistent (type from status, throttle <= 100, status fits); what
 * jobinfo_to_json makes of them, over the wire, reads back to the same
 * statistics, so godwit prints (text, every flag combination, and
 * --rawstats) exactly what the daemon measured; the text shows every
 * downtime phase it was given, whole; the phase drivers' decisions on the
 * status are in range. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/jobinfo.h"
#include "daemon/job.h"
#include "daemon/migrate_peer.h"
#include "fuzz_util.h"

static bool same(const struct jobinfo *a, const struct jobinfo *b)
{
    return a->type == b->type && a->op == b->op && !strcmp(a->status, b->status) &&
           a->time_elapsed_ms == b->time_elapsed_ms && a->vmm_total_time_ms == b->vmm_total_time_ms &&
           a->downtime_set == b->downtime_set && a->downtime_ms == b->downtime_ms &&
           a->setup_time_set == b->setup_time_set && a->setup_time_ms == b->setup_time_ms &&
           a->mem_total == b->mem_total && a->mem_processed == b->mem_processed &&
           a->mem_remaining == b->mem_remaining && a->mem_bps == b->mem_bps &&
           a->mem_pages_set == b->mem_pages_set && a->mem_constant == b->mem_constant &&
           a->mem_normal == b->mem_normal && a->mem_normal_bytes == b->mem_normal_bytes &&
           a->mem_dirty_rate == b->mem_dirty_rate && a->mem_iteration == b->mem_iteration &&
           a->mem_postcopy_requests == b->mem_postcopy_requests &&
           a->mem_page_size == b->mem_page_size && a->switchover_retries == b->switchover_retries &&
           a->rounds_ended_early == b->rounds_ended_early &&
           a->switchover_deferrals == b->switchover_deferrals &&
           a->downtime_phases_set == b->downtime_phases_set &&
           !memcmp(a->downtime_phase_us, b->downtime_phase_us, sizeof(a->downtime_phase_us)) &&
           a->auto_converge_throttle == b->auto_converge_throttle && !strcmp(a->errmsg, b->errmsg);
}

static void check_consistent(const struct jobinfo *ji)
{
    FUZZ_CHECK((unsigned)ji->type < JOBINFO_TYPE__COUNT && (unsigned)ji->op < JOBINFO_OP__COUNT);
    FUZZ_CHECK(memchr(ji->status, 0, sizeof(ji->status)) && memchr(ji->errmsg, 0, sizeof(ji->errmsg)));
    FUZZ_CHECK(ji->auto_converge_throttle >= 0 && ji->auto_converge_throttle <= 100);
}

/* What godwit prints for a and b is the same; every phase is named. */
static void same_output(const struct jobinfo *a, const struct jobinfo *b)
{
    for (unsigned fl = 0; fl < 4; fl++) {
        char *x = jobinfo_format_text(a, fl), *y = jobinfo_format_text(b, fl);
        FUZZ_CHECK(x && y && !strcmp(x, y));
        if (a->downtime_phases_set && strstr(x, "Downtime phases:"))
            for (unsigned i = 0; i < MIG_NPHASES; i++) { /* each phase whole, with its value */
                char want[64];
                snprintf(want, sizeof(want), " %s %llu us", mig_phase_names[i],
                         (unsigned long long)a->downtime_phase_us[i]);
                FUZZ_CHECK(strstr(x, want));
            }
        free(x);
        free(y);
    }
    char *x = jobinfo_format_raw(a), *y = jobinfo_format_raw(b);
    FUZZ_CHECK(x && y && !strcmp(x, y));
    free(x);
    free(y);
}

/* Sent on as JSON (the daemon) and read back (godwit). */
static void round_trip(const struct jobinfo *ji)
{
    struct jobinfo back;
    struct gw_error err;
    gw_error_init(&err);
    struct json_object *o = jobinfo_to_json(ji);
    FUZZ_CHECK(o);
    struct json_object *wire = fuzz_over_the_wire(o, JSON_C_TO_STRING_PLAIN);
    FUZZ_CHECK(jobinfo_from_json(&back, wire, &err) == 0);
    FUZZ_CHECK(same(ji, &back));
    same_output(ji, &back);
    json_object_put(wire);
    json_object_put(o);
}

static void decisions(const struct jobinfo *ji)
{
    const char *st = ji->status[0] ? ji->status : NULL;
    struct mig_sample s;
    jobinfo_policy_sample(ji, &s);
    FUZZ_CHECK(mig_perform_classify(st, false) <= MIG_PERFORM_BROKEN);
    FUZZ_CHECK(mig_perform_classify(st, true) <= MIG_PERFORM_BROKEN);
    FUZZ_CHECK(mig_perform_classify(st, true) != MIG_PERFORM_FAILED); /* never resume after a switch */
    FUZZ_CHECK(mig_watch_classify(JOB_PHASE_PREPARE, st, 1, 2, 60000) <= MIG_WATCH_POSTCOPY_FAILED);
    FUZZ_CHECK(mig_watch_classify(JOB_PHASE_FINISH, st, 0, 0, 60000) <= MIG_WATCH_POSTCOPY_FAILED);
    struct job j;
    FUZZ_CHECK(job_init(&j, JOB_KIND_MIGRATION_OUT, "m-1", "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab",
                        "vm", 1, NULL) == 0);
    for (unsigned p = 0; p < JOB_PHASE__COUNT; p++) {
        j.phase = (enum job_phase)p;
        j.kind = JOB_KIND_MIGRATION_OUT;
        FUZZ_CHECK(job_recovery_action(&j, true, st, ji->postcopy_started) < JOB_RECOVER__COUNT);
        j.kind = JOB_KIND_MIGRATION_IN;
        FUZZ_CHECK(job_recovery_action(&j, true, st, ji->postcopy_started) < JOB_RECOVER__COUNT);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    struct json_object *o = fuzz_parse_json(data + 1, size - 1);
    if (!o)
        return 0;
    struct jobinfo ji;
    struct gw_error err;
    gw_error_init(&err);
    enum jobinfo_op op = (enum jobinfo_op)(((mode >> 1) & 15) % JOBINFO_OP__COUNT);
    int r = mode & 1 ? jobinfo_from_json(&ji, o, &err)
                     : jobinfo_from_query_migrate(&ji, o, op, 1500, &err);
    if (r < 0) {
        fuzz_check_refused(r, &err);
    } else {
        check_consistent(&ji);
        if (!(mode & 1)) {
            FUZZ_CHECK(ji.op == op && ji.time_elapsed_ms == 1500);
            FUZZ_CHECK(ji.type == (!ji.status[0] ? JOBINFO_NONE
                                   : !strcmp(ji.status, "completed") ? JOBINFO_COMPLETED
                                   : !strcmp(ji.status, "failed") ? JOBINFO_FAILED
                                   : !strcmp(ji.status, "cancelled") ? JOBINFO_CANCELLED
                                   : JOBINFO_UNBOUNDED));
            decisions(&ji);
        }
        round_trip(&ji);
        if (mode & 32) {
            jobinfo_complete(&ji, !(mode & 64), "the destination went away");
            FUZZ_CHECK(ji.type == (mode & 64 ? JOBINFO_FAILED : JOBINFO_COMPLETED));
            FUZZ_CHECK(mode & 64 ? ji.errmsg[0] != 0 : ji.mem_remaining == 0 && !ji.errmsg[0]);
            round_trip(&ji);
        }
    }
    json_object_put(o);
    return 0;
}
