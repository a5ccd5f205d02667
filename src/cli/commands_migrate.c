/* godwit's migration commands, with virsh's options and output: migrate,
 * migrate-postcopy, migrate-setmaxdowntime, migrate-getmaxdowntime,
 * migrate-setspeed, migrate-getspeed, domjobinfo, domjobabort [--force-resume]. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "control/control_client.h"
#include "daemon/jobinfo.h"
#include "qmp/qmp_json.h"

#define PROGRESS_MS 500

static const struct cli_opt opt_domain[] = {
    { "domain", CLI_STRING, CLI_POS | CLI_REQ, "domain name, id or uuid" },
    { NULL },
};

static const struct cli_opt opt_migrate[] = {
    { "domain", CLI_STRING, CLI_POS | CLI_REQ, "domain name, id or uuid" },
    { "desturi", CLI_STRING, CLI_POS | CLI_REQ, "the destination daemon: tcp:HOST:PORT" },
    { "live", CLI_BOOL, 0, "live migration (always: accepted for virsh's sake)" },
    { "postcopy", CLI_BOOL, 0, "enable post-copy migration; switch with migrate-postcopy" },
    { "postcopy-after-precopy", CLI_BOOL, 0, "switch to post-copy after the first pre-copy pass" },
    { "postcopy-resume", CLI_BOOL, 0, "recover a failed post-copy migration" },
    { "auto-converge", CLI_BOOL, 0, "force convergence (throttle the guest's vCPUs)" },
    { "suspend", CLI_BOOL, 0, "do not restart the domain on the destination host" },
    { "timeout", CLI_INT, 0, "run the timeout action if live migration exceeds timeout (seconds)" },
    { "timeout-suspend", CLI_BOOL, 0, "suspend the guest after the timeout" },
    { "timeout-postcopy", CLI_BOOL, 0, "switch to post-copy after the timeout" },
    { "bandwidth", CLI_INT, 0, "migration bandwidth limit in MiB/s" },
    { "verbose", CLI_BOOL, 0, "display the progress of migration" },
    { NULL },
};

/* ---- migrate ---- */

static struct json_object *migrate_args(const struct cli_args *a, int64_t timeout, int64_t bw)
{
    static const struct { const char *opt, *key; } flags[] = {
        { "live", "live" }, { "postcopy", "postcopy" },
        { "postcopy-after-precopy", "postcopy_after_precopy" },
        { "postcopy-resume", "postcopy_resume" }, { "auto-converge", "auto_converge" },
        { "timeout-suspend", "timeout_suspend" }, { "timeout-postcopy", "timeout_postcopy" },
        { "suspend", "suspend" },
    };
    struct json_object *o = cli_domain_args(cli_arg(a, "domain"));
    json_object_object_add(o, "desturi", json_object_new_string(cli_arg(a, "desturi")));
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        if (cli_flag(a, flags[i].opt))
            json_object_object_add(o, flags[i].key, json_object_new_boolean(1));
    if (timeout)
        json_object_object_add(o, "timeout", json_object_new_int64(timeout));
    if (bw)
        json_object_object_add(o, "bandwidth", json_object_new_int64(bw));
    return o;
}

struct migrate_call {
    struct cli *cli;
    struct json_object *args;
    struct gw_error err;
    int r;
    pthread_mutex_t lock;
    bool done;
};

static void *migrate_thread(void *p)
{
    struct migrate_call *m = p;
    int r = cli_call(m->cli, "domain-migrate", m->args, NULL, &m->err);
    pthread_mutex_lock(&m->lock);
    m->r = r;
    m->done = true;
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

static bool call_done(struct migrate_call *m)
{
    pthread_mutex_lock(&m->lock);
    bool d = m->done;
    pthread_mutex_unlock(&m->lock);
    return d;
}

/* virsh: "\rMigration: [ 45 %]" from the job's data total and remaining. */
static void print_progress(struct ctl_client *c, const char *dom)
{
    struct json_object *ret = NULL;
    if (!c || ctl_client_call(c, "domain-jobinfo", cli_domain_args(dom), &ret, 10000, NULL) < 0)
        return;
    struct json_object *t = qmp_json_get(ret, "data_total"), *rem = qmp_json_get(ret, "data_remaining");
    int64_t total = t ? json_object_get_int64(t) : 0, left = rem ? json_object_get_int64(rem) : 0;
    const char *type = qmp_json_get_str(ret, "type");
    if (total > 0 && type && strcmp(type, "unbounded") == 0) {
        int pct = left <= 0 ? 100 : (int)(100 - left * 100 / total);
        fprintf(stderr, "\rMigration: [%3d %%]", pct < 0 ? 0 : pct);
        fflush(stderr);
    }
    json_object_put(ret);
}

static void watch_progress(struct cli *cli, struct migrate_call *m, const char *dom)
{
    struct gw_error e;
    gw_error_init(&e);
    struct ctl_client *c = ctl_client_connect(cli->uri, &cli->tls, "godwit " GODWIT_VERSION, 10000, &e);
    while (!call_done(m)) {
        print_progress(c, dom);
        struct timespec ts = { 0, PROGRESS_MS * 1000000L };
        for (int i = 0; i < 10 && !call_done(m); i++) {
            ts.tv_nsec = PROGRESS_MS * 100000L;
            nanosleep(&ts, NULL);
        }
    }
    ctl_client_free(c);
}

static int run_migrate(struct cli *cli, const struct cli_args *a)
{
    int64_t timeout, bw;
    if (cli_arg_int(a, "timeout", 0, &timeout) < 0 || cli_arg_int(a, "bandwidth", 0, &bw) < 0)
        return 1;
    if (timeout < 0)
        return cli_fail("migrate: invalid timeout");
    struct migrate_call m = { .cli = cli, .args = migrate_args(a, timeout, bw) };
    gw_error_init(&m.err);
    pthread_mutex_init(&m.lock, NULL);
    pthread_t t;
    if (pthread_create(&t, NULL, migrate_thread, &m) != 0)
        return cli_fail("cannot start a thread");
    if (cli_flag(a, "verbose"))
        watch_progress(cli, &m, cli_arg(a, "domain"));
    pthread_join(t, NULL);
    pthread_mutex_destroy(&m.lock);
    if (m.r < 0) {
        if (cli_flag(a, "verbose"))
            fputc('\n', stderr);
        return cli_fail_err(&m.err);
    }
    if (cli_flag(a, "verbose"))
        fprintf(stderr, "\rMigration: [100 %%]\n");
    fputc('\n', cli->out);
    return 0;
}

/* ---- job control ---- */

static int simple(struct cli *cli, const struct cli_args *a, const char *command,
                  struct json_object *args)
{
    struct gw_error err;
    gw_error_init(&err);
    if (!args)
        args = cli_domain_args(cli_arg(a, "domain"));
    if (cli_call(cli, command, args, NULL, &err) < 0)
        return cli_fail_err(&err);
    fputc('\n', cli->out);
    return 0;
}

static int run_postcopy(struct cli *c, const struct cli_args *a) { return simple(c, a, "domain-migrate-postcopy", NULL); }

static int run_jobabort(struct cli *c, const struct cli_args *a)
{
    struct json_object *args = cli_domain_args(cli_arg(a, "domain"));
    if (cli_flag(a, "force-resume"))
        json_object_object_add(args, "force_resume", json_object_new_boolean(1));
    return simple(c, a, "domain-jobabort", args);
}

static const struct cli_opt opt_jobabort[] = {
    { "domain", CLI_STRING, CLI_POS | CLI_REQ, "domain name, id or uuid" },
    { "force-resume", CLI_BOOL, 0, "give up a migration waiting for its destination's answer and "
      "resume the guest here (only if the destination does not run it)" },
    { NULL },
};

static int run_set(struct cli *cli, const struct cli_args *a, const char *command, const char *opt,
                   const char *key)
{
    int64_t v;
    if (cli_arg_int(a, opt, -1, &v) < 0)
        return 1;
    struct json_object *args = cli_domain_args(cli_arg(a, "domain"));
    json_object_object_add(args, key, json_object_new_int64(v));
    return simple(cli, a, command, args);
}

static int run_setdowntime(struct cli *c, const struct cli_args *a)
{
    return run_set(c, a, "domain-migrate-setmaxdowntime", "downtime", "downtime");
}

static int run_setspeed(struct cli *c, const struct cli_args *a)
{
    return run_set(c, a, "domain-migrate-setspeed", "bandwidth", "bandwidth");
}

static int run_get(struct cli *cli, const struct cli_args *a, const char *command, const char *key)
{
    struct json_object *ret;
    struct gw_error err;
    gw_error_init(&err);
    if (cli_call(cli, command, cli_domain_args(cli_arg(a, "domain")), &ret, &err) < 0)
        return cli_fail_err(&err);
    fprintf(cli->out, "%lld\n\n", (long long)json_object_get_int64(qmp_json_get(ret, key)));
    json_object_put(ret);
    return 0;
}

static int run_getdowntime(struct cli *c, const struct cli_args *a)
{
    return run_get(c, a, "domain-migrate-getmaxdowntime", "downtime");
}

static int run_getspeed(struct cli *c, const struct cli_args *a)
{
    return run_get(c, a, "domain-migrate-getspeed", "bandwidth");
}

/* godwit's addition (no virsh label): a post-copy destination's faults. */
static void print_faults(FILE *out, struct json_object *ret)
{
    struct json_object *pc = qmp_json_get(ret, "postcopy_faults");
    struct json_object *lat = pc ? qmp_json_get(pc, "latency") : NULL;
    if (!lat)
        return;
#define F(o, k) ((long long)json_object_get_int64(qmp_json_get(o, k)))
    fprintf(out, "%-17s %lld\n", "Postcopy faults:", F(lat, "faults"));
    fprintf(out, "%-17s p50 %lld us, p99 %lld us, max %lld us\n", "Fault latency:", F(lat, "p50-us"),
            F(lat, "p99-us"), F(lat, "max-us"));
    if (qmp_json_get(pc, "blocktime_ms"))
        fprintf(out, "%-17s %lld ms\n", "Postcopy blocktime:", F(pc, "blocktime_ms"));
    struct json_object *nv = qmp_json_get(pc, "non_vcpu");
    if (nv)
        fprintf(out, "%-17s %lld faults, %lld ms waited\n", "Async PF waits:", F(nv, "faults"),
                F(nv, "wait-ms"));
#undef F
}

static int run_domjobinfo(struct cli *cli, const struct cli_args *a)
{
    struct json_object *args = cli_domain_args(cli_arg(a, "domain")), *ret;
    bool completed = cli_flag(a, "completed");
    json_object_object_add(args, "completed", json_object_new_boolean(completed));
    struct gw_error err;
    gw_error_init(&err);
    if (cli_call(cli, "domain-jobinfo", args, &ret, &err) < 0)
        return cli_fail_err(&err);
    struct jobinfo ji;
    int r = jobinfo_from_json(&ji, ret, &err);
    if (r < 0) {
        json_object_put(ret);
        return cli_fail("bad job statistics from the daemon: %s", err.msg);
    }
    char *text = cli_flag(a, "rawstats") ? jobinfo_format_raw(&ji)
                 : jobinfo_format_text(&ji, (completed ? JOBINFO_FMT_COMPLETED : 0) |
                                                (cli_flag(a, "anystats") ? JOBINFO_FMT_ANYSTATS : 0));
    if (!text) {
        json_object_put(ret);
        return cli_fail("out of memory");
    }
    fputs(text, cli->out);
    if (!cli_flag(a, "rawstats"))
        print_faults(cli->out, ret);
    fputc('\n', cli->out);
    free(text);
    json_object_put(ret);
    return 0;
}

static const struct cli_opt opt_downtime[] = {
    { "domain", CLI_STRING, CLI_POS | CLI_REQ, "domain name, id or uuid" },
    { "downtime", CLI_INT, CLI_POS | CLI_REQ, "maximum tolerable downtime (in milliseconds) for migration" },
    { NULL },
};
static const struct cli_opt opt_speed[] = {
    { "domain", CLI_STRING, CLI_POS | CLI_REQ, "domain name, id or uuid" },
    { "bandwidth", CLI_INT, CLI_POS | CLI_REQ, "migration bandwidth limit in MiB/s" },
    { NULL },
};
static const struct cli_opt opt_jobinfo[] = {
    { "domain", CLI_STRING, CLI_POS | CLI_REQ, "domain name, id or uuid" },
    { "completed", CLI_BOOL, 0, "return statistics of a recently completed job" },
    { "anystats", CLI_BOOL, 0, "print statistics for any kind of job (even failed ones)" },
    { "rawstats", CLI_BOOL, 0, "print the raw data returned by the daemon" },
    { NULL },
};

const struct cli_cmd cli_migrate_cmds[] = {
    { "migrate", "migrate domain to another host", opt_migrate, run_migrate },
    { "migrate-postcopy", "switch running migration from pre-copy to post-copy", opt_domain, run_postcopy },
    { "migrate-setmaxdowntime", "set maximum tolerable downtime", opt_downtime, run_setdowntime },
    { "migrate-getmaxdowntime", "get maximum tolerable downtime", opt_domain, run_getdowntime },
    { "migrate-setspeed", "set the maximum migration bandwidth", opt_speed, run_setspeed },
    { "migrate-getspeed", "get the maximum migration bandwidth", opt_domain, run_getspeed },
    { "domjobinfo", "domain job information", opt_jobinfo, run_domjobinfo },
    { "domjobabort", "abort active domain job", opt_jobabort, run_jobabort },
    { NULL },
};
