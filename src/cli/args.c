/* godwit's command-option parsing and --help, driven by struct cli_opt. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static int find_opt(const struct cli_cmd *cmd, const char *name, size_t len)
{
    for (int i = 0; cmd->opts && cmd->opts[i].name; i++)
        if (strlen(cmd->opts[i].name) == len && strncmp(cmd->opts[i].name, name, len) == 0)
            return i;
    return -1;
}

static int next_positional(const struct cli_cmd *cmd, const struct cli_args *a)
{
    for (int i = 0; cmd->opts && cmd->opts[i].name; i++)
        if ((cmd->opts[i].flags & CLI_POS) && !a->set[i])
            return i;
    return -1;
}

void cli_cmd_help(FILE *out, const struct cli_cmd *cmd)
{
    fprintf(out, "  NAME\n    %s - %s\n\n  SYNOPSIS\n    %s", cmd->name, cmd->summary, cmd->name);
    for (int i = 0; cmd->opts && cmd->opts[i].name; i++) {
        const struct cli_opt *o = &cmd->opts[i];
        const char *open = o->flags & CLI_REQ ? "" : "[", *close = o->flags & CLI_REQ ? "" : "]";
        if (o->type == CLI_BOOL)
            fprintf(out, " [--%s]", o->name);
        else if (o->flags & CLI_POS)
            fprintf(out, " %s[--%s] <%s>%s", open, o->name, o->name, close);
        else
            fprintf(out, " %s--%s <%s>%s", open, o->name, o->name, close);
    }
    fprintf(out, "\n\n  OPTIONS\n");
    for (int i = 0; cmd->opts && cmd->opts[i].name; i++) {
        const struct cli_opt *o = &cmd->opts[i];
        char left[64];
        snprintf(left, sizeof(left), o->type == CLI_BOOL ? "--%s" : "--%s <%s>", o->name, o->name);
        fprintf(out, "    %-24s %s\n", left, o->help);
    }
    fputc('\n', out);
}

static int set_opt(struct cli_args *a, int i, const char *val)
{
    if (a->set[i]) {
        cli_fail("option --%s was given twice", a->cmd->opts[i].name);
        return -EINVAL;
    }
    a->set[i] = true;
    a->val[i] = val;
    return 0;
}

static int parse_named(struct cli_args *a, int argc, char **argv, int *k)
{
    const char *arg = argv[*k] + 2, *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    int i = find_opt(a->cmd, arg, len);
    if (i < 0) {
        cli_fail("command '%s' doesn't support option --%.*s", a->cmd->name, (int)len, arg);
        return -EINVAL;
    }
    if (a->cmd->opts[i].type == CLI_BOOL) {
        if (eq) {
            cli_fail("option --%s takes no value", a->cmd->opts[i].name);
            return -EINVAL;
        }
        return set_opt(a, i, "1");
    }
    if (eq)
        return set_opt(a, i, eq + 1);
    if (*k + 1 >= argc) {
        cli_fail("expected syntax: --%s <%s>", a->cmd->opts[i].name, a->cmd->opts[i].name);
        return -EINVAL;
    }
    return set_opt(a, i, argv[++*k]);
}

/* 0: run; 1: help printed; -EINVAL: error printed. */
int cli_parse_args(const struct cli_cmd *cmd, int argc, char **argv, struct cli_args *a)
{
    memset(a, 0, sizeof(*a));
    a->cmd = cmd;
    for (int k = 0; k < argc; k++) {
        int r;
        if (strcmp(argv[k], "--help") == 0 || strcmp(argv[k], "-h") == 0) {
            cli_cmd_help(stdout, cmd);
            return 1;
        }
        if (strncmp(argv[k], "--", 2) == 0 && argv[k][2]) {
            r = parse_named(a, argc, argv, &k);
        } else {
            int i = next_positional(cmd, a);
            if (i < 0) {
                cli_fail("unexpected data '%s'", argv[k]);
                return -EINVAL;
            }
            r = set_opt(a, i, argv[k]);
        }
        if (r < 0)
            return r;
    }
    for (int i = 0; cmd->opts && cmd->opts[i].name; i++)
        if ((cmd->opts[i].flags & CLI_REQ) && !a->set[i]) {
            cli_fail("command '%s' requires <%s> option", cmd->name, cmd->opts[i].name);
            return -EINVAL;
        }
    return 0;
}

const char *cli_arg(const struct cli_args *a, const char *name)
{
    int i = find_opt(a->cmd, name, strlen(name));
    return i >= 0 && a->set[i] ? a->val[i] : NULL;
}

bool cli_flag(const struct cli_args *a, const char *name) { return cli_arg(a, name) != NULL; }

int cli_arg_int(const struct cli_args *a, const char *name, int64_t def, int64_t *out)
{
    const char *s = cli_arg(a, name);
    *out = def;
    if (!s)
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !*s || *end) {
        cli_fail("numerical value expected for --%s, got '%s'", name, s);
        return -EINVAL;
    }
    *out = v;
    return 0;
}
