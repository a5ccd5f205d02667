/* godwit, the command-line client of godwitd (virsh's verbs and output).
 *
 * Commands are table entries (struct cli_cmd): a name, a one-line
 * summary, option specs and a run function. main.c lists the tables
 * (cli_domain_cmds, cli_event_cmds, cli_migrate_cmds); it parses
 * the global options, the command's options (--name VALUE, --name=VALUE,
 * or positionally for options marked CLI_POS, in order), prints --help
 * from the specs, and runs the command. A run function returns the exit
 * status (0, or 1 after printing "error: MESSAGE" with cli_fail).
 *
 * The connection to the daemon is opened on first use (cli_call). */
#ifndef GW_CLI_CLI_H
#define GW_CLI_CLI_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "control/control_tls.h"

#define CLI_MAX_OPTS 16
#define CLI_DEFAULT_URI "unix:/run/godwit/godwitd.sock"

enum cli_opt_type { CLI_BOOL, CLI_STRING, CLI_INT };

#define CLI_POS 1u   /* may be given without its --name, in order */
#define CLI_REQ 2u   /* required */

struct cli_opt {
    const char *name;
    enum cli_opt_type type;
    unsigned flags;
    const char *help;
};

struct cli;
struct cli_args;

struct cli_cmd {
    const char *name;
    const char *summary;
    const struct cli_opt *opts;   /* terminated by a NULL name */
    int (*run)(struct cli *cli, const struct cli_args *a);
};

struct cli_args {
    const struct cli_cmd *cmd;
    const char *val[CLI_MAX_OPTS];
    bool set[CLI_MAX_OPTS];
};

struct ctl_client;

struct cli {
    const char *uri;
    struct ctl_tls_config tls;
    struct ctl_client *conn;   /* control/control_client.h */
    FILE *out;
};

/* The command tables. */
extern const struct cli_cmd cli_domain_cmds[];
extern const struct cli_cmd cli_event_cmds[];
extern const struct cli_cmd cli_migrate_cmds[];

/* ---- arguments (args.c) ---- */
/* Parse a command's arguments: 0 to run, 1 when --help was printed,
 * -EINVAL after printing the error. */
int cli_parse_args(const struct cli_cmd *cmd, int argc, char **argv, struct cli_args *a);
void cli_cmd_help(FILE *out, const struct cli_cmd *cmd);
const char *cli_arg(const struct cli_args *a, const char *name);  /* NULL if not given */
bool cli_flag(const struct cli_args *a, const char *name);
/* 0 with *out (def when absent) or -EINVAL (message printed). */
int cli_arg_int(const struct cli_args *a, const char *name, int64_t def, int64_t *out);

/* ---- talking to the daemon (client.c) ---- */
/* Send a request (args taken, NULL: none) and wait for its reply; an error
 * reply becomes -EREMOTEIO with its desc in err. */
int cli_call(struct cli *cli, const char *command, struct json_object *args,
             struct json_object **ret, struct gw_error *err);
/* Wait up to timeout_ms (-1: forever) for the next event message. */
int cli_next_event(struct cli *cli, int timeout_ms, struct json_object **ev, struct gw_error *err);
void cli_disconnect(struct cli *cli);

/* ---- output (output.c) ---- */
/* Print "error: MESSAGE" to stderr; returns 1 (the exit status). */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int cli_fail_err(const struct gw_error *err);
/* A virsh-style table: header cells, then rows of ncols cells. */
void cli_table(FILE *out, const char *const *header, size_t ncols, const char *const *cells,
               size_t nrows);
/* "Label:" padded to 15 columns, then the value (virsh dominfo). */
void cli_label(FILE *out, const char *label, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* {"domain": name} for requests about one domain. */
struct json_object *cli_domain_args(const char *name);

#endif
