/* godwit event: wait for and print the daemon's events, as virsh does:
 *   event 'lifecycle' for domain 'vm1': Started Booted
 * lifecycle, migration-iteration and job-completed print as virsh prints
 * them; other event types print their data as JSON. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "qmp/qmp_json.h"

typedef void (*event_fmt_fn)(FILE *out, struct json_object *data);

static void fmt_lifecycle(FILE *out, struct json_object *data)
{
    const char *e = qmp_json_get_str(data, "event"), *d = qmp_json_get_str(data, "detail");
    fprintf(out, "%s %s", e ? e : "?", d ? d : "?");
}

/* virsh: "event 'migration-iteration' for domain 'vm1': iteration: '3'" */
static void fmt_iteration(FILE *out, struct json_object *data)
{
    fprintf(out, "iteration: '%lld'", (long long)json_object_get_int64(qmp_json_get(data, "iteration")));
}

/* virsh: the typed parameters of the completed job, one per line. */
static void fmt_job_completed(FILE *out, struct json_object *data)
{
    if (!json_object_is_type(data, json_type_object))
        return;
    json_object_object_foreach(data, key, val) {
        const char *v = json_object_is_type(val, json_type_string) ? json_object_get_string(val)
                        : json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN);
        fprintf(out, "\n\t%s: %s", key, v);
    }
}

static const struct {
    const char *type;
    event_fmt_fn fn;
} formatters[] = {
    { "lifecycle", fmt_lifecycle },
    { "migration-iteration", fmt_iteration },
    { "job-completed", fmt_job_completed },
};

static void print_event(FILE *out, struct json_object *ev, bool timestamp)
{
    const char *type = qmp_json_get_str(ev, "event"), *dom = qmp_json_get_str(ev, "domain");
    struct json_object *data = qmp_json_get(ev, "data");
    if (timestamp) {
        struct json_object *ts = qmp_json_get(ev, "timestamp");
        time_t sec = (time_t)json_object_get_int64(qmp_json_get(ts, "seconds"));
        long usec = (long)json_object_get_int64(qmp_json_get(ts, "microseconds"));
        struct tm tm;
        char buf[64];
        if (gmtime_r(&sec, &tm)) {
            strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
            fprintf(out, "%s.%03ld+0000: ", buf, usec / 1000);
        } else { /* no calendar date (tm would be left as it was): the seconds as sent */
            fprintf(out, "%lld.%03ld: ", (long long)sec, usec / 1000);
        }
    }
    fprintf(out, "event '%s' for domain '%s': ", type ? type : "?", dom ? dom : "?");
    size_t i;
    for (i = 0; i < sizeof(formatters) / sizeof(formatters[0]); i++)
        if (type && strcmp(type, formatters[i].type) == 0)
            break;
    if (i < sizeof(formatters) / sizeof(formatters[0]))
        formatters[i].fn(out, data);
    else
        fputs(json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN), out);
    fputc('\n', out);
    fflush(out);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int subscribe(struct cli *cli, const struct cli_args *a, struct gw_error *err)
{
    struct json_object *args = json_object_new_object();
    if (cli_arg(a, "domain"))
        json_object_object_add(args, "domain", json_object_new_string(cli_arg(a, "domain")));
    if (cli_arg(a, "event"))
        json_object_object_add(args, "event", json_object_new_string(cli_arg(a, "event")));
    return cli_call(cli, "events-subscribe", args, NULL, err);
}

static int run_event(struct cli *cli, const struct cli_args *a)
{
    int64_t timeout_s;
    if (cli_arg_int(a, "timeout", 0, &timeout_s) < 0)
        return 1;
    if (!cli_flag(a, "all") && !cli_arg(a, "event"))
        return cli_fail("one of --all or --event <type> is required");
    if (cli_flag(a, "all") && cli_arg(a, "event"))
        return cli_fail("--all and --event are mutually exclusive");
    struct gw_error err;
    gw_error_init(&err);
    if (subscribe(cli, a, &err) < 0)
        return cli_fail_err(&err);
    if (timeout_s > INT64_MAX / 2000) /* keep the deadline in range; still "for ever" */
        timeout_s = INT64_MAX / 2000;
    int64_t deadline = timeout_s > 0 ? mono_ms() + timeout_s * 1000 : -1;
    unsigned count = 0;
    for (;;) {
        int64_t rest = deadline < 0 ? -1 : deadline - mono_ms();
        int left = rest > INT_MAX ? INT_MAX : (int)rest; /* one wait at most ~24 days */
        if (deadline >= 0 && left <= 0) {
            fprintf(cli->out, "event loop timed out\n");
            break;
        }
        struct json_object *ev;
        int r = cli_next_event(cli, left, &ev, &err);
        if (r == -ETIMEDOUT) {
            fprintf(cli->out, "event loop timed out\n");
            break;
        }
        if (r < 0)
            return cli_fail_err(&err);
        print_event(cli->out, ev, cli_flag(a, "timestamp"));
        json_object_put(ev);
        count++;
        if (!cli_flag(a, "loop"))
            break;
    }
    fprintf(cli->out, "events received: %u\n\n", count);
    return 0;
}

static const struct cli_opt opt_event[] = {
    { "domain", CLI_STRING, CLI_POS, "filter by domain name, id or uuid" },
    { "event", CLI_STRING, 0, "which event type to wait for (lifecycle, ...)" },
    { "all", CLI_BOOL, 0, "wait for all event types" },
    { "loop", CLI_BOOL, 0, "loop until timeout or interrupt, rather than one-shot" },
    { "timeout", CLI_INT, 0, "timeout in seconds" },
    { "timestamp", CLI_BOOL, 0, "show timestamp for each printed event" },
    { NULL },
};

const struct cli_cmd cli_event_cmds[] = {
    { "event", "domain events", opt_event, run_event },
    { NULL },
};
