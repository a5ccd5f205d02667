/* The source of a migration: the domain-migrate request (Begin, Prepare on
 * the peer, Perform) and the Perform loop that drives the VMM with the
 * policy (mig_policy_decide). Finish and Confirm are in migrate_confirm.c.
 * See migrate.h and docs/migration-protocol.md. */
#define LOG_PREFIX "migrate-src"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "control/control.h"
#include "control/control_client.h"
#include "daemon/lifecycle.h"
#include "daemon/migrate_src.h"

/* ---- Begin ---- */

struct migrate_args {
    const char *desturi;
    unsigned flags;                 /* JOB_F_* */
    struct mig_flags mf;
};

static int parse_args(struct json_object *args, struct migrate_args *m, struct gw_error *err)
{
    static const struct { const char *key; unsigned flag; } bools[] = {
        { "live", JOB_F_LIVE }, { "postcopy", JOB_F_POSTCOPY },
        { "postcopy_after_precopy", JOB_F_POSTCOPY_AFTER_PRECOPY },
        { "auto_converge", JOB_F_AUTO_CONVERGE }, { "postcopy_resume", JOB_F_POSTCOPY_RESUME },
        { "suspend", JOB_F_PAUSED },
    };
    memset(m, 0, sizeof(*m));
    int r = ctl_arg_str(args, "desturi", true, &m->desturi, err);
    for (size_t i = 0; r == 0 && i < sizeof(bools) / sizeof(bools[0]); i++) {
        bool v = false;
        if ((r = ctl_arg_bool(args, bools[i].key, &v, err)) == 0 && v)
            m->flags |= bools[i].flag;
    }
    int64_t timeout = 0, bw = 0;
    bool tpost = false, tsusp = false;
    if (r < 0 || (r = ctl_arg_int(args, "timeout", false, &timeout, err)) < 0 ||
        (r = ctl_arg_int(args, "bandwidth", false, &bw, err)) < 0 ||
        (r = ctl_arg_bool(args, "timeout_postcopy", &tpost, err)) < 0 ||
        (r = ctl_arg_bool(args, "timeout_suspend", &tsusp, err)) < 0)
        return r;
    if (timeout < 0 || bw < 0 || (tpost && tsusp))
        return gw_error_set(err, EINVAL, "invalid migration options (negative value, or both "
                            "--timeout-postcopy and --timeout-suspend)");
    if ((tpost || tsusp) && !timeout)
        return gw_error_set(err, EINVAL, "--timeout-postcopy and --timeout-suspend need --timeout");
    if ((m->flags & JOB_F_POSTCOPY_AFTER_PRECOPY) && !(m->flags & JOB_F_POSTCOPY))
        return gw_error_set(err, EINVAL, "--postcopy-after-precopy requires --postcopy");
    if (tpost && !(m->flags & JOB_F_POSTCOPY))
        return gw_error_set(err, EINVAL, "--timeout-postcopy requires --postcopy");
    m->mf.postcopy = m->flags & JOB_F_POSTCOPY;
    m->mf.postcopy_after_precopy = m->flags & JOB_F_POSTCOPY_AFTER_PRECOPY;
    m->mf.auto_converge = m->flags & JOB_F_AUTO_CONVERGE;
    m->mf.timeout_s = (uint64_t)timeout;
    m->mf.timeout_action_set = tpost || tsusp;
    m->mf.timeout_action = tpost ? MIG_TIMEOUT_POSTCOPY : MIG_TIMEOUT_PAUSE;
    m->mf.bandwidth_mib_s = (uint64_t)bw;
    return 0;
}

static void policy_of(const struct dom_def *def, const struct mig_run *run, struct mig_policy *p)
{
    const struct dom_policy *d = &def->policy;
    p->permit_postcopy = d->permit_postcopy;
    p->permit_auto_converge = d->permit_auto_converge;
    p->max_downtime_ms = run->downtime_ms ? run->downtime_ms : d->max_downtime_ms;
    p->bandwidth_mib_s = d->bandwidth_mib_s;
    p->completion_timeout_s = d->completion_timeout_s;
    p->switchover_retries = d->switchover_retries;
    p->timeout_action = d->timeout_action == DOM_TIMEOUT_PAUSE      ? MIG_TIMEOUT_PAUSE
                        : d->timeout_action == DOM_TIMEOUT_POSTCOPY ? MIG_TIMEOUT_POSTCOPY
                                                                    : MIG_TIMEOUT_ABORT;
}

/* (locked) Did the domain's user pause it (not a migration, not the VMM)? */
static bool mig_src_user_paused(const struct domain *dom)
{
    return dom->state == DOM_STATE_PAUSED && dom->reason == DOM_REASON_USER;
}

/* (locked) Can this domain start this migration? */
static int begin_check(struct daemon *dm, struct domain *dom, const struct migrate_args *m,
                       struct mig_run *run, struct gw_error *err)
{
    const char *n = dom->def.name;
    if (m->flags & JOB_F_POSTCOPY_RESUME) {
        if (!run || run->job.kind != JOB_KIND_MIGRATION_OUT ||
            run->job.phase != JOB_PHASE_POSTCOPY_FAILED || dom->reason != DOM_REASON_POSTCOPY_FAILED)
            return gw_error_set(err, ENOTCONN, "Requested operation is not valid: domain '%s' is "
                                "not paused with reason post-copy failed", n);
        return 0;
    }
    if (!dom_state_active(dom->state))
        return gw_error_set(err, ENOTCONN, "Requested operation is not valid: domain '%s' is not "
                            "running", n);
    if ((m->flags & JOB_F_POSTCOPY) && ((m->flags & JOB_F_PAUSED) || mig_src_user_paused(dom)))
        return gw_error_set(err, EINVAL, "post-copy needs the guest to run on the destination: not "
                            "with --suspend, nor for domain '%s' while it is suspended", n);
    if ((m->flags & JOB_F_POSTCOPY) && !dom->def.policy.permit_postcopy)
        return gw_error_set(err, ENOTSUP, "post-copy migration is not permitted by the policy of "
                            "domain '%s' (migration.permit_postcopy)", n);
    if ((m->flags & JOB_F_POSTCOPY) && !mig_host_postcopy_supported())
        return gw_error_set(err, ENOTSUP, "post-copy is not supported on this host (userfaultfd)");
    return 0;
}

static int begin(struct daemon *dm, struct json_object *args, const struct migrate_args *m,
                 struct src_job *s, struct gw_error *err)
{
    pthread_mutex_lock(&dm->lock);
    int r = daemon_lookup(dm, args, &s->dom, err);
    struct mig_run *run = r == 0 ? mig_run_find(dm, s->dom->def.uuid) : NULL;
    if (r == 0)
        r = begin_check(dm, s->dom, m, run, err);
    if (r < 0 || (m->flags & JOB_F_POSTCOPY_RESUME)) {
        s->run = run;
        if (r == 0)
            mig_src_take(s);
        pthread_mutex_unlock(&dm->lock);
        return r;
    }
    if ((r = domain_job_begin(dm, &s->dom, DOM_JOB_MIGRATION_OUT, "migrate", err)) < 0)
        goto out;
    char id[JOB_ID_MAX];
    snprintf(id, sizeof(id), "m-%llu-%d-%u", (unsigned long long)mig_wall_ms(), (int)getpid(),
             mig_next_job_seq(dm));
    s->run = run = mig_run_get(dm, s->dom->def.uuid);
    r = run ? job_init(&run->job, JOB_KIND_MIGRATION_OUT, id, s->dom->def.uuid, s->dom->def.name,
                       mig_wall_ms(), err)
            : gw_error_set(err, ENOMEM, "out of memory");
    if (r == 0) {
        /* A guest its user paused stays paused over there too (libvirt). */
        run->job.flags = m->flags | (mig_src_user_paused(s->dom) ? JOB_F_PAUSED : 0);
        run->job.vmm_pid = s->dom->pid;
        snprintf(run->job.peer_uri, sizeof(run->job.peer_uri), "%s", m->desturi);
        run->flags = m->mf;
        if (!run->flags.bandwidth_mib_s)
            run->flags.bandwidth_mib_s = run->speed_mib_s;
        policy_of(&s->dom->def, run, &run->policy);
        run->t0_ms = mig_mono_ms();
        run->have_info = run->want_abort = run->want_postcopy = false;
        mig_src_take(s);
        r = mig_job_save(dm, run);
    }
    if (r < 0)
        domain_job_end(dm, s->dom);
out:
    pthread_mutex_unlock(&dm->lock);
    return r;
}

int mig_src_connect(struct src_job *s, const char *peer_uri, struct gw_error *err)
{
    int r = mig_uri_host(peer_uri, s->dest_host, sizeof(s->dest_host), err);
    if (r < 0)
        return r;
    s->peer = ctl_client_connect(peer_uri, &s->dm->cfg.tls, "godwitd " GODWIT_VERSION " (peer)",
                                 MIG_PEER_CONNECT_MS, err);
    if (!s->peer)
        gw_error_prefix(err, "cannot reach the destination daemon at %s", peer_uri);
    return s->peer ? 0 : -(err && err->code ? err->code : EHOSTUNREACH);
}

/* ---- Prepare (asked of the peer) ---- */

static int prepare(struct src_job *s, char *uri, size_t len, struct gw_error *err)
{
    struct mig_begin b;
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    pthread_mutex_lock(&s->dm->lock);
    int r = mig_begin_init(&b, &s->run->job, &s->dom->def, host, s->dest_host,
                           mig_host_postcopy_supported(), err);
    pthread_mutex_unlock(&s->dm->lock);
    if (r < 0)
        return r;
    struct json_object *ret = NULL;
    r = ctl_client_call(s->peer, "migration-prepare", mig_begin_to_json(&b), &ret, MIG_PEER_CALL_MS, err);
    mig_begin_fini(&b);
    if (r == 0)
        r = mig_uri_from_reply(ret, "Prepare answer", uri, len, err);
    json_object_put(ret);
    return r;
}

/* ---- Perform ---- */

static int qmp_set_caps(struct domain *dom, const struct mig_vmm_setup *v, struct gw_error *err)
{
    static const char *const names[] = { "events", "auto-converge", "postcopy-ram",
                                         "postcopy-after-precopy" };
    bool on[] = { v->cap_events, v->cap_auto_converge, v->cap_postcopy_ram,
                  v->cap_postcopy_after_precopy };
    return mig_vmm_set_caps(dom, names, on, 4, err);
}

static int qmp_set_params(struct domain *dom, const struct mig_vmm_setup *v, struct gw_error *err)
{
    struct json_object *a = json_object_new_object();
    json_object_object_add(a, "downtime-limit", json_object_new_int64((int64_t)v->downtime_limit_ms));
    json_object_object_add(a, "max-bandwidth", json_object_new_int64((int64_t)v->max_bandwidth_bps));
    json_object_object_add(a, "max-postcopy-bandwidth",
                           json_object_new_int64((int64_t)v->max_postcopy_bandwidth_bps));
    json_object_object_add(a, "max-switchover-retries",
                           json_object_new_int64((int64_t)v->max_switchover_retries));
    if (v->cap_auto_converge)
        json_object_object_add(a, "throttle-trigger-threshold",
                               json_object_new_int64((int64_t)v->throttle_trigger_pct));
    return domain_qmp(dom, "migrate-set-parameters", a, NULL, NULL, err);
}

static int start_stream(struct src_job *s, const char *uri, struct gw_error *err)
{
    struct mig_vmm_setup v;
    pthread_mutex_lock(&s->dm->lock);
    mig_policy_vmm_setup(&s->run->policy, &s->run->flags, &v);
    mig_policy_state_init(&s->pst, &s->run->flags);
    s->dom->pause_reason = DOM_REASON_MIGRATING; /* the switch-over's STOP */
    pthread_mutex_unlock(&s->dm->lock);
    int r = qmp_set_caps(s->dom, &v, err);
    if (r == 0)
        r = qmp_set_params(s->dom, &v, err);
    if (r == 0 && v.cap_postcopy_after_precopy) {
        /* The VMM may switch from the end of its first pass on: saved before
         * it can (postcopy_started waits for the VMM to report a switch). */
        pthread_mutex_lock(&s->dm->lock);
        r = mig_job_phase(s->dm, s->run, JOB_PHASE_PERFORM_POSTCOPY, err);
        pthread_mutex_unlock(&s->dm->lock);
    }
    struct json_object *a = json_object_new_object();
    json_object_object_add(a, "uri", json_object_new_string(uri));
    if (r == 0)
        r = domain_qmp(s->dom, "migrate", a, NULL, NULL, err);
    else
        json_object_put(a);
    return r;
}

int mig_src_sample(struct src_job *s, struct jobinfo *ji, struct gw_error *err)
{
    int r = mig_query(s->dm, s->dom, s->run, JOBINFO_OP_MIGRATION_OUT, mig_mono_ms() - s->run->t0_ms, ji, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&s->dm->lock);
    s->run->info = *ji;
    s->run->have_info = true;
    if (ji->mem_iteration > s->last_iteration) {
        s->last_iteration = ji->mem_iteration;
        struct json_object *d = json_object_new_object();
        json_object_object_add(d, "iteration", json_object_new_int64((int64_t)ji->mem_iteration));
        daemon_emit(s->dm, s->dom, "migration-iteration", d);
    }
    pthread_mutex_unlock(&s->dm->lock);
    return 0;
}

/* The post-copy switch: saved before it is asked of the VMM (the phase is
 * already saved where the VMM was armed to switch after its first pass). */
static int switch_postcopy(struct src_job *s, const char *why, struct gw_error *err)
{
    pthread_mutex_lock(&s->dm->lock);
    s->run->job.postcopy_started = true;
    int r = s->run->job.phase == JOB_PHASE_PERFORM_POSTCOPY
                ? mig_job_save(s->dm, s->run)
                : mig_job_phase(s->dm, s->run, JOB_PHASE_PERFORM_POSTCOPY, err);
    if (r < 0 && err && !err->msg[0])
        gw_error_set(err, -r, "cannot save the job");
    s->dom->pause_reason = DOM_REASON_POSTCOPY;
    pthread_mutex_unlock(&s->dm->lock);
    if (r < 0)
        return r;
    log_info("domain '%s': switching to post-copy (%s)", s->dom->def.name, why);
    s->switched = true;
    return domain_qmp(s->dom, "migrate-start-postcopy", NULL, NULL, NULL, err);
}

static int act(struct src_job *s, const struct mig_decision *d, struct gw_error *err)
{
    struct json_object *a;
    if (d->action != MIG_ACT_CONTINUE)
        log_info("domain '%s': policy: %s (%s)", s->dom->def.name, mig_action_name(d->action), d->reason);
    switch (d->action) {
    case MIG_ACT_POSTCOPY:
        return switch_postcopy(s, d->reason, err);
    case MIG_ACT_AUTO_CONVERGE:
        a = json_object_new_object();
        json_object_object_add(a, "throttle-trigger-threshold",
                               json_object_new_int64(MIG_POLICY_ARMED_TRIGGER));
        return domain_qmp(s->dom, "migrate-set-parameters", a, NULL, NULL, err);
    case MIG_ACT_PAUSE:
        return domain_qmp(s->dom, "stop", NULL, NULL, NULL, err);
    case MIG_ACT_ABORT:
        pthread_mutex_lock(&s->dm->lock);
        job_set_error(&s->run->job, d->reason);
        pthread_mutex_unlock(&s->dm->lock);
        return domain_qmp(s->dom, "migrate_cancel", NULL, NULL, NULL, err);
    default:
        return 0;
    }
}

/* The operator's requests, then the policy. */
static int decide(struct src_job *s, const struct jobinfo *ji, struct gw_error *err)
{
    pthread_mutex_lock(&s->dm->lock);
    bool abort_req = s->run->want_abort, pc_req = s->run->want_postcopy;
    s->run->want_abort = s->run->want_postcopy = false;
    struct mig_policy p = s->run->policy;
    struct mig_flags f = s->run->flags;
    pthread_mutex_unlock(&s->dm->lock);
    struct mig_decision d = { .action = MIG_ACT_CONTINUE };
    if (abort_req && !s->switched) {
        d.action = MIG_ACT_ABORT;
        snprintf(d.reason, sizeof(d.reason), "operation aborted: migration out job: canceled by client");
    } else if (pc_req && !s->switched && strcmp(ji->status, "active") == 0) {
        s->pst.postcopy_ordered = true;
        return switch_postcopy(s, "requested by the operator", err);
    } else {
        struct mig_sample sm;
        jobinfo_policy_sample(ji, &sm);
        mig_policy_decide(&p, &f, &s->pst, &sm, &d);
    }
    return act(s, &d, err);
}

static bool vmm_gone(struct src_job *s)
{
    pthread_mutex_lock(&s->dm->lock);
    bool gone = !dom_state_active(s->dom->state);
    pthread_mutex_unlock(&s->dm->lock);
    return gone;
}

/* A switch the VMM made by itself (postcopy-after-precopy): from now on the
 * guest is the destination's. */
static void note_switch(struct src_job *s, const struct jobinfo *ji)
{
    if (s->switched || !(ji->postcopy_started || strncmp(ji->status, "postcopy-", 9) == 0))
        return;
    s->switched = true;
    pthread_mutex_lock(&s->dm->lock);
    s->run->job.postcopy_started = true;
    mig_job_save(s->dm, s->run);
    pthread_mutex_unlock(&s->dm->lock);
    log_info("domain '%s': the VMM switched to post-copy after its first pass", s->dom->def.name);
}

static int classify(struct src_job *s, const struct jobinfo *ji, struct gw_error *err)
{
    const char *why;
    switch (mig_perform_classify(ji->status, s->switched)) {
    case MIG_PERFORM_COMPLETED:
        return PERFORM_COMPLETED;
    case MIG_PERFORM_POSTCOPY:
        return PERFORM_POSTCOPY;
    case MIG_PERFORM_BROKEN:
        gw_error_set(err, EIO, "post-copy migration broke: %s", ji->errmsg[0] ? ji->errmsg : ji->status);
        return PERFORM_BROKEN;
    case MIG_PERFORM_FAILED:
        pthread_mutex_lock(&s->dm->lock);
        why = s->run->job.error[0] ? s->run->job.error : ji->errmsg;
        gw_error_set(err, EIO, "%s", why[0] ? why : "migration failed");
        pthread_mutex_unlock(&s->dm->lock);
        return PERFORM_FAILED;
    default:
        return -1;
    }
}

/* Perform failed before the daemon saw a switch. A post-copy-capable job
 * asks its VMM first (postcopy_after_precopy may have switched between two
 * polls; a `migrate` that timed out may have started): unless the VMM says
 * it did not hand the guest over, it is post-copy failed, never cancelled
 * (the destination may run the guest). */
static enum perform_end failed_or_broken(struct src_job *s, struct gw_error *err)
{
    if (!(s->run->job.flags & JOB_F_POSTCOPY))
        return PERFORM_FAILED;
    struct mig_vmm_view v;
    mig_vmm_view(s->dom, &v);
    if (!mig_vmm_may_have_switched(v.answered, v.status, v.said, v.started))
        return PERFORM_FAILED;
    const char *what = !v.answered ? "no answer" : v.status[0] ? v.status : "no migration";
    log_error("domain '%s': the migration failed (%s), and the VMM (%s, postcopy-started %s) may "
              "have handed the guest over: not resumed here", s->dom->def.name, err->msg, what,
              v.said ? (v.started ? "true" : "false") : "unknown");
    pthread_mutex_lock(&s->dm->lock);
    s->run->job.postcopy_started = true;
    if (s->run->job.phase == JOB_PHASE_PERFORM_POSTCOPY)
        mig_job_save(s->dm, s->run);
    else
        mig_job_phase(s->dm, s->run, JOB_PHASE_PERFORM_POSTCOPY, NULL);
    pthread_mutex_unlock(&s->dm->lock);
    s->switched = true;
    gw_error_prefix(err, "post-copy migration failed (the source VMM may have switched)");
    return PERFORM_BROKEN;
}

/* One poll: -1 to go on, else how Perform ended. *failed: failed samples
 * in a row. */
static int perform_poll(struct src_job *s, unsigned *failed, struct gw_error *err)
{
    struct jobinfo ji;
    struct gw_error e;
    gw_error_init(&e);
    if (mig_src_sample(s, &ji, &e) < 0) {
        if (vmm_gone(s))
            return gw_error_set(err, ESRCH, "the source VMM exited during the migration"),
                   PERFORM_VMM_GONE;
        ++*failed;
        switch (mig_perform_unanswered(s->switched, *failed, SRC_SAMPLE_TRIES)) {
        case MIG_PERFORM_CONTINUE:
            log_warn("domain '%s': query-migrate failed (%u in a row): %s", s->dom->def.name,
                     *failed, e.msg);
            return -1;
        case MIG_PERFORM_BROKEN:
            gw_error_set(err, EIO, "post-copy: the source VMM does not answer: %s", e.msg);
            return PERFORM_BROKEN;
        default:
            gw_error_set(err, EIO, "the source VMM does not answer: %s", e.msg);
            return failed_or_broken(s, err);
        }
    }
    *failed = 0;
    note_switch(s, &ji);
    int end = classify(s, &ji, err);
    if (end == PERFORM_FAILED)
        return failed_or_broken(s, err);
    if (end >= 0)
        return end;
    if (decide(s, &ji, &e) < 0)
        log_warn("domain '%s': acting on the migration: %s", s->dom->def.name, e.msg);
    return -1;
}

enum perform_end mig_src_perform(struct src_job *s, const char *uri, struct gw_error *err)
{
    unsigned failed = 0;
    if (start_stream(s, uri, err) < 0)
        return vmm_gone(s) ? PERFORM_VMM_GONE : failed_or_broken(s, err);
    for (;;) {
        usleep(MIG_POLL_MS * 1000);
        if (atomic_load(&s->dm->stopping))
            return gw_error_set(err, ESHUTDOWN, "the daemon is stopping"), PERFORM_STOPPING;
        int end = perform_poll(s, &failed, err);
        if (end >= 0)
            return (enum perform_end)end;
    }
}

/* ---- the request ---- */

static int migrate_new(struct src_job *s, struct gw_error *err)
{
    char uri[JOB_URI_MAX];
    int r = prepare(s, uri, sizeof(uri), err);
    if (r < 0) {
        gw_error_prefix(err, "the destination refused the migration");
        pthread_mutex_lock(&s->dm->lock);
        mig_job_end(s->dm, s->dom, s->run, false, err->msg);
        pthread_mutex_unlock(&s->dm->lock);
        return r;
    }
    pthread_mutex_lock(&s->dm->lock);
    snprintf(s->run->job.migrate_uri, sizeof(s->run->job.migrate_uri), "%s", uri);
    r = mig_job_phase(s->dm, s->run, JOB_PHASE_PERFORM, err);
    pthread_mutex_unlock(&s->dm->lock);
    if (r < 0) {
        mig_src_cancel(s, err->msg);
        return r;
    }
    log_info("domain '%s': migrating to %s (stream %s)", s->dom->def.name, s->run->job.peer_uri, uri);
    enum perform_end end = mig_src_perform(s, uri, err);
    return mig_src_finish_confirm(s, end, err);
}

static int h_migrate(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                     struct json_object **ret, struct gw_error *err)
{
    struct migrate_args m;
    struct src_job s = { .dm = dm };
    int r = parse_args(args, &m, err);
    if (r < 0 || (r = begin(dm, args, &m, &s, err)) < 0)
        return r;
    if (m.flags & JOB_F_POSTCOPY_RESUME) {
        if ((r = mig_src_connect(&s, m.desturi, err)) == 0)
            r = mig_src_recover_postcopy(&s, err);
    } else if ((r = mig_src_connect(&s, m.desturi, err)) < 0) {
        pthread_mutex_lock(&dm->lock);
        mig_job_end(dm, s.dom, s.run, false, err->msg);
        pthread_mutex_unlock(&dm->lock);
    } else {
        r = migrate_new(&s, err);
    }
    ctl_client_free(s.peer);
    return r;
}

const struct daemon_command migrate_src_commands[] = {
    { "domain-migrate", h_migrate },
};
const size_t migrate_src_ncommands = sizeof(migrate_src_commands) / sizeof(migrate_src_commands[0]);
