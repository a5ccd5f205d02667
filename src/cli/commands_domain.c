/* godwit's domain commands: list, define, undefine, start, shutdown,
 * destroy, suspend, resume, dominfo, domstate, console (virsh output). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/json_text.h"
#include "control/control.h"
#include "qmp/qmp_json.h"

static const struct cli_opt opt_domain[] = {
    { "domain", CLI_STRING, CLI_POS | CLI_REQ, "domain name, id or uuid" },
    { NULL },
};

/* The simple verbs: one request, one message. */
static int simple(struct cli *cli, const struct cli_args *a, const char *command, const char *done)
{
    struct gw_error err;
    gw_error_init(&err);
    const char *key = cli_arg(a, "domain");
    /* virsh names the domain by its name whatever the operator typed (a
     * UUID, an id): ask for it first (after undefine it is gone). A failed
     * look-up is left to the command itself to report. */
    char name[256]; /* a domain name is at most 64 bytes */
    struct json_object *info = NULL;
    const char *got = NULL;
    int r = cli_call(cli, "domain-info", cli_domain_args(key), &info, &err);
    if (r < 0 && r != -EREMOTEIO) /* no daemon, or no answer: the command would fare no better */
        return cli_fail_err(&err);
    gw_error_init(&err);
    if (r == 0)
        got = qmp_json_get_str(info, "name");
    snprintf(name, sizeof(name), "%s", got && *got ? got : key);
    json_object_put(info);
    if (cli_call(cli, command, cli_domain_args(key), NULL, &err) < 0)
        return cli_fail_err(&err);
    fprintf(cli->out, "Domain '%s' %s\n\n", name, done);
    return 0;
}

static int run_start(struct cli *c, const struct cli_args *a) { return simple(c, a, "domain-start", "started"); }
static int run_shutdown(struct cli *c, const struct cli_args *a) { return simple(c, a, "domain-shutdown", "is being shutdown"); }
static int run_destroy(struct cli *c, const struct cli_args *a) { return simple(c, a, "domain-destroy", "destroyed"); }
static int run_suspend(struct cli *c, const struct cli_args *a) { return simple(c, a, "domain-suspend", "suspended"); }
static int run_resume(struct cli *c, const struct cli_args *a) { return simple(c, a, "domain-resume", "resumed"); }
static int run_undefine(struct cli *c, const struct cli_args *a) { return simple(c, a, "domain-undefine", "has been undefined"); }

/* FILE (a pipe too) held to the rule the daemon holds its own definition
 * files to (json_text_object): one JSON object and nothing after it but
 * white space, so that `{...} xyz` or two objects are not sent as the
 * first. At most CTL_MAX_MSG bytes: no more could be sent. */
static int read_definition(const char *file, struct json_object **def, struct gw_error *err)
{
    *def = NULL;
    FILE *f = fopen(file, "re");
    if (!f)
        return gw_error_set(err, errno, "%m");
    size_t cap = CTL_MAX_MSG + 1, n = 0, got;
    char *text = malloc(cap);
    int r = text ? 0 : gw_error_set(err, ENOMEM, "out of memory");
    while (r == 0 && n < cap && (got = fread(text + n, 1, cap - n, f)) > 0)
        n += got;
    if (r == 0 && ferror(f))
        r = gw_error_set(err, errno ? errno : EIO, "%m");
    else if (r == 0 && n == cap)
        r = gw_error_set(err, EFBIG, "larger than a definition may be (%u bytes)", CTL_MAX_MSG);
    if (r == 0)
        r = json_text_object(text, n, def, err);
    fclose(f);
    free(text);
    return r;
}

static int run_define(struct cli *cli, const struct cli_args *a)
{
    const char *file = cli_arg(a, "file");
    struct json_object *def, *args = json_object_new_object(), *ret;
    struct gw_error err;
    gw_error_init(&err);
    if (read_definition(file, &def, &err) < 0) {
        json_object_put(args);
        return cli_fail("failed to read '%s': %s", file, err.msg);
    }
    /* the name the daemon returns; the file's if it returns none */
    const char *own = qmp_json_get_str(def, "name");
    char name[256];
    snprintf(name, sizeof(name), "%s", own ? own : "?");
    json_object_object_add(args, "definition", def);
    if (cli_call(cli, "domain-define", args, &ret, &err) < 0)
        return cli_fail("failed to define domain from %s\nerror: %s", file, err.msg);
    const char *got = qmp_json_get_str(ret, "name");
    fprintf(cli->out, "Domain '%s' defined from %s\n\n", got ? got : name, file);
    json_object_put(ret);
    return 0;
}

static const char *str_of(struct json_object *o, const char *key)
{
    const char *s = qmp_json_get_str(o, key);
    return s ? s : "";
}

static int64_t int_of(struct json_object *o, const char *key)
{
    struct json_object *v = qmp_json_get(o, key);
    return v ? json_object_get_int64(v) : 0;
}

static int run_list(struct cli *cli, const struct cli_args *a)
{
    struct json_object *args = json_object_new_object(), *ret;
    json_object_object_add(args, "all", json_object_new_boolean(cli_flag(a, "all")));
    struct gw_error err;
    gw_error_init(&err);
    if (cli_call(cli, "domain-list", args, &ret, &err) < 0)
        return cli_fail_err(&err);
    struct json_object *list = qmp_json_get(ret, "domains");
    if (list && !json_object_is_type(list, json_type_array)) { /* json-c would abort() */
        json_object_put(ret);
        return cli_fail("malformed reply from the daemon: 'domains' is not an array");
    }
    size_t n = list ? json_object_array_length(list) : 0;
    const char **cells = calloc(n * 3 + 1, sizeof(*cells));
    char (*ids)[16] = calloc(n + 1, sizeof(*ids));
    for (size_t i = 0; cells && ids && i < n; i++) {
        struct json_object *d = json_object_array_get_idx(list, i);
        int64_t id = int_of(d, "id");
        if (id >= 0)
            snprintf(ids[i], sizeof(ids[i]), "%lld", (long long)id);
        else
            strcpy(ids[i], "-");
        cells[i * 3] = ids[i];
        cells[i * 3 + 1] = str_of(d, "name");
        cells[i * 3 + 2] = str_of(d, "state");
    }
    static const char *const header[] = { "Id", "Name", "State" };
    if (cells && ids)
        cli_table(cli->out, header, 3, cells, n);
    free(cells);
    free(ids);
    json_object_put(ret);
    return 0;
}

static void print_info(FILE *out, struct json_object *i)
{
    int64_t id = int_of(i, "id");
    if (id >= 0)
        cli_label(out, "Id:", "%lld", (long long)id);
    else
        cli_label(out, "Id:", "-");
    cli_label(out, "Name:", "%s", str_of(i, "name"));
    cli_label(out, "UUID:", "%s", str_of(i, "uuid"));
    cli_label(out, "OS Type:", "%s", str_of(i, "os_type"));
    cli_label(out, "State:", "%s", str_of(i, "state"));
    cli_label(out, "CPU(s):", "%lld", (long long)int_of(i, "vcpus"));
    if (qmp_json_get(i, "cpu_time_ns"))
        cli_label(out, "CPU time:", "%.1fs", (double)int_of(i, "cpu_time_ns") / 1e9);
    cli_label(out, "Max memory:", "%lld KiB", (long long)int_of(i, "max_memory_kib"));
    cli_label(out, "Used memory:", "%lld KiB", (long long)int_of(i, "used_memory_kib"));
    cli_label(out, "Persistent:", "%s", "yes");
    cli_label(out, "Autostart:", "%s", "disable");
    cli_label(out, "Managed save:", "%s", "no");
    cli_label(out, "Security model:", "%s", "none");
    cli_label(out, "Security DOI:", "%s", "0");
    cli_label(out, "Job:", "%s", str_of(i, "job"));
    cli_label(out, "Serial log:", "%s", str_of(i, "serial_log"));
    fputc('\n', out);
}

static int run_dominfo(struct cli *cli, const struct cli_args *a)
{
    struct json_object *ret;
    struct gw_error err;
    gw_error_init(&err);
    if (cli_call(cli, "domain-info", cli_domain_args(cli_arg(a, "domain")), &ret, &err) < 0)
        return cli_fail_err(&err);
    print_info(cli->out, ret);
    json_object_put(ret);
    return 0;
}

static int run_domstate(struct cli *cli, const struct cli_args *a)
{
    struct json_object *ret;
    struct gw_error err;
    gw_error_init(&err);
    if (cli_call(cli, "domain-state", cli_domain_args(cli_arg(a, "domain")), &ret, &err) < 0)
        return cli_fail_err(&err);
    if (cli_flag(a, "reason"))
        fprintf(cli->out, "%s (%s)\n\n", str_of(ret, "state"), str_of(ret, "reason"));
    else
        fprintf(cli->out, "%s\n\n", str_of(ret, "state"));
    json_object_put(ret);
    return 0;
}

/* One chunk of the serial log, printed up to byte *end of the log (-1:
 * no end; a reply sets an unset end, -2, to the log's size then);
 * *active: the domain still runs. */
static int console_chunk(struct cli *cli, const char *dom, int64_t *offset, int64_t *end,
                         bool *active, size_t *got, struct gw_error *err)
{
    struct json_object *args = cli_domain_args(dom), *ret;
    json_object_object_add(args, "offset", json_object_new_int64(*offset));
    int r = cli_call(cli, "domain-console", args, &ret, err);
    if (r < 0)
        return r;
    struct json_object *next = qmp_json_get(ret, "offset");
    if (!json_object_is_type(next, json_type_int)) { /* the next chunk would be this one again */
        json_object_put(ret);
        return gw_error_set(err, EBADMSG, "malformed reply from the daemon: no 'offset' in the "
                            "console data");
    }
    if (*end == -2)
        *end = int_of(ret, "size");
    const char *b64 = str_of(ret, "data");
    uint8_t *buf = malloc(strlen(b64) * 3 / 4 + 4);
    ssize_t n = buf ? ctl_unbase64(b64, buf) : -ENOMEM;
    int64_t at = int_of(ret, "offset");
    if (n > 0 && *end >= 0 && at > *end) /* bytes the log gained after the first answer */
        n = at - n < *end ? *end - (at - n) : 0;
    if (n > 0)
        fwrite(buf, 1, (size_t)n, cli->out);
    free(buf);
    *got = n > 0 ? (size_t)n : 0;
    *offset = at;
    *active = json_object_get_boolean(qmp_json_get(ret, "active"));
    json_object_put(ret);
    return 0;
}

static int run_console(struct cli *cli, const struct cli_args *a)
{
    const char *dom = cli_arg(a, "domain");
    bool follow = cli_flag(a, "follow"), active = true;
    int64_t offset = 0;
    if (cli_arg_int(a, "tail", 0, &offset) < 0)
        return 1;
    if (offset < 0) /* it would start that far from the beginning instead */
        return cli_fail("--tail must be a number of bytes (0 or more), got %lld", (long long)offset);
    offset = -offset;
    /* Without --follow: the log as it was at the first answer, however
     * much the guest writes meanwhile (--tail N prints at most N bytes). */
    int64_t end = follow ? -1 : -2;
    struct gw_error err;
    gw_error_init(&err);
    for (;;) {
        size_t got = 0;
        if (console_chunk(cli, dom, &offset, &end, &active, &got, &err) < 0)
            return cli_fail_err(&err);
        fflush(cli->out);
        if (!follow && offset >= end)
            return 0;
        if (got)
            continue;
        if (!follow || !active)
            return 0;
        struct timespec ts = { 0, 200 * 1000000L };
        nanosleep(&ts, NULL);
    }
}

static const struct cli_opt opt_list[] = {
    { "all", CLI_BOOL, 0, "list inactive & active domains" },
    { NULL },
};
static const struct cli_opt opt_define[] = {
    { "file", CLI_STRING, CLI_POS | CLI_REQ, "file containing the domain definition (JSON)" },
    { NULL },
};
static const struct cli_opt opt_domstate[] = {
    { "domain", CLI_STRING, CLI_POS | CLI_REQ, "domain name, id or uuid" },
    { "reason", CLI_BOOL, 0, "also print the reason for the state" },
    { NULL },
};
static const struct cli_opt opt_console[] = {
    { "domain", CLI_STRING, CLI_POS | CLI_REQ, "domain name, id or uuid" },
    { "follow", CLI_BOOL, 0, "keep printing new output while the domain runs" },
    { "tail", CLI_INT, 0, "start this many bytes before the end of the log" },
    { NULL },
};

const struct cli_cmd cli_domain_cmds[] = {
    { "list", "list domains", opt_list, run_list },
    { "define", "define (but don't start) a domain from a JSON file", opt_define, run_define },
    { "undefine", "undefine an inactive domain", opt_domain, run_undefine },
    { "start", "start a (previously defined) inactive domain", opt_domain, run_start },
    { "shutdown", "gracefully shutdown a domain", opt_domain, run_shutdown },
    { "destroy", "destroy (stop) a domain", opt_domain, run_destroy },
    { "suspend", "suspend a domain", opt_domain, run_suspend },
    { "resume", "resume a domain", opt_domain, run_resume },
    { "dominfo", "domain information", opt_domain, run_dominfo },
    { "domstate", "domain state", opt_domstate, run_domstate },
    { "console", "print the domain's serial console log", opt_console, run_console },
    { NULL },
};
