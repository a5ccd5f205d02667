/* godwit: the command-line client of godwitd, with virsh's verbs.
 *   godwit [-c URI] [--tls-psk FILE | --tls-cert F --tls-key F --tls-ca F] COMMAND [ARGS]
 * URI: unix:PATH (default $GODWIT_DEFAULT_URI, else CLI_DEFAULT_URI) or
 * tcp:HOST:PORT (TLS with the given credentials). */
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

/* Every command table. */
static const struct cli_cmd *const tables[] = { cli_domain_cmds, cli_event_cmds, cli_migrate_cmds };

static const struct cli_cmd *find_cmd(const char *name)
{
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++)
        for (const struct cli_cmd *c = tables[t]; c->name; c++)
            if (strcmp(c->name, name) == 0)
                return c;
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: godwit [OPTIONS] COMMAND [ARGS]\n"
            "The godwit client: manage the VMs (domains) of a godwitd.\n\n"
            "  -c, --connect URI   unix:PATH or tcp:HOST:PORT (default $GODWIT_DEFAULT_URI,\n"
            "                      else " CLI_DEFAULT_URI ")\n"
            "  --tls-psk FILE      TLS pre-shared key (psktool format: username:hexkey)\n"
            "  --tls-cert FILE     TLS client certificate (PEM), with --tls-key and --tls-ca\n"
            "  --tls-key FILE\n  --tls-ca FILE\n"
            "  -h, --help          this help; COMMAND --help for a command's\n"
            "  -v, --version\n\nCommands:\n");
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++)
        for (const struct cli_cmd *c = tables[t]; c->name; c++)
            fprintf(out, "    %-22s %s\n", c->name, c->summary);
}

enum { O_PSK = 256, O_CERT, O_KEY, O_CA };

static const struct option opts[] = {
    { "connect", required_argument, NULL, 'c' }, { "tls-psk", required_argument, NULL, O_PSK },
    { "tls-cert", required_argument, NULL, O_CERT }, { "tls-key", required_argument, NULL, O_KEY },
    { "tls-ca", required_argument, NULL, O_CA },   { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'v' },         { NULL, 0, NULL, 0 },
};

/* Global options, up to the command name: -1 error, 0 ok, 1 done. */
static int parse_global(int argc, char **argv, struct cli *cli)
{
    int c;
    while ((c = getopt_long(argc, argv, "+c:hv", opts, NULL)) != -1) {
        switch (c) {
        case 'c': cli->uri = optarg; break;
        case O_PSK: cli->tls.psk_file = optarg; break;
        case O_CERT: cli->tls.cert_file = optarg; break;
        case O_KEY: cli->tls.key_file = optarg; break;
        case O_CA: cli->tls.ca_file = optarg; break;
        case 'h': usage(stdout); return 1;
        case 'v': printf("%s\n", GODWIT_VERSION); return 1;
        default: return -1;
        }
    }
    if (!cli->uri)
        cli->uri = getenv("GODWIT_DEFAULT_URI") && *getenv("GODWIT_DEFAULT_URI")
                       ? getenv("GODWIT_DEFAULT_URI") : CLI_DEFAULT_URI;
    return 0;
}

int main(int argc, char **argv)
{
    struct cli cli = { .out = stdout };
    signal(SIGPIPE, SIG_IGN); /* a daemon that hangs up is an error message, not a signal */
    int r = parse_global(argc, argv, &cli);
    if (r != 0)
        return r > 0 ? 0 : 1;
    if (optind >= argc) {
        usage(stderr);
        return 1;
    }
    const struct cli_cmd *cmd = find_cmd(argv[optind]);
    if (!cmd)
        return cli_fail("unknown command: '%s'", argv[optind]);
    if (strcmp(cmd->name, "help") != 0 && argc - optind > 1 && strcmp(argv[argc - 1], "--help") == 0) {
        cli_cmd_help(stdout, cmd);
        return 0;
    }
    struct cli_args a;
    r = cli_parse_args(cmd, argc - optind - 1, argv + optind + 1, &a);
    if (r != 0)
        return r > 0 ? 0 : 1;
    r = cmd->run(&cli, &a);
    fflush(stdout);
    cli_disconnect(&cli);
    return r;
}
