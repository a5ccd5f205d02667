/* godwitd: the host daemon. Defines and runs domains (godwit-vmm
 * processes), serves godwit clients and peer daemons (docs/daemon.md). */
#define LOG_PREFIX "godwitd"
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"
#include "control/control.h"
#include "daemon/daemon.h"

#define DEFAULT_STATE_DIR "/var/lib/godwit"
#define DEFAULT_LISTEN    "unix:/run/godwit/godwitd.sock"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: godwitd [OPTIONS]\n"
            "The godwit host daemon: defines and runs VMs (domains), serves godwit clients.\n\n"
            "  --state-dir DIR       definitions, runtime state and logs (default " DEFAULT_STATE_DIR ")\n"
            "  --listen ADDR         unix:PATH or tcp:HOST:PORT; repeatable\n"
            "                        (default " DEFAULT_LISTEN ")\n"
            "  --tls-psk FILE        TLS with pre-shared keys (psktool format, username:hexkey)\n"
            "  --tls-cert FILE       TLS with X.509: this daemon's certificate (PEM) ...\n"
            "  --tls-key FILE        ... its private key ...\n"
            "  --tls-ca FILE         ... and the CA that signs clients' certificates\n"
            "  --insecure            allow a TCP listener without TLS (anyone who can connect\n"
            "                        controls the daemon)\n"
            "  --vmm PATH            the godwit-vmm binary (default: next to godwitd)\n"
            "  --log-level LEVEL     error, warn, info (default) or debug\n"
            "  --help, --version\n");
}

enum { O_STATE = 256, O_LISTEN, O_PSK, O_CERT, O_KEY, O_CA, O_INSECURE, O_VMM, O_LOG, O_HELP, O_VERSION };

static const struct option opts[] = {
    { "state-dir", required_argument, NULL, O_STATE }, { "listen", required_argument, NULL, O_LISTEN },
    { "tls-psk", required_argument, NULL, O_PSK },     { "tls-cert", required_argument, NULL, O_CERT },
    { "tls-key", required_argument, NULL, O_KEY },     { "tls-ca", required_argument, NULL, O_CA },
    { "insecure", no_argument, NULL, O_INSECURE },     { "vmm", required_argument, NULL, O_VMM },
    { "log-level", required_argument, NULL, O_LOG },   { "help", no_argument, NULL, O_HELP },
    { "version", no_argument, NULL, O_VERSION },       { NULL, 0, NULL, 0 },
};

/* 0: run; 1: exit 0 (help); -1: usage error. */
static int parse(int argc, char **argv, struct daemon_config *cfg)
{
    int c, lvl;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_STATE: cfg->state_dir = optarg; break;
        case O_LISTEN:
            if (cfg->nlisten == DAEMON_MAX_LISTEN) {
                fprintf(stderr, "godwitd: error: at most %d --listen\n", DAEMON_MAX_LISTEN);
                return -1;
            }
            cfg->listen[cfg->nlisten++] = optarg;
            break;
        case O_PSK: cfg->tls.psk_file = optarg; break;
        case O_CERT: cfg->tls.cert_file = optarg; break;
        case O_KEY: cfg->tls.key_file = optarg; break;
        case O_CA: cfg->tls.ca_file = optarg; break;
        case O_INSECURE: cfg->insecure = true; break;
        case O_VMM: cfg->vmm_path = optarg; break;
        case O_LOG:
            if ((lvl = gw_log_parse_level(optarg)) < 0) {
                fprintf(stderr, "godwitd: error: bad log level '%s'\n", optarg);
                return -1;
            }
            gw_log_set_level((enum gw_log_level)lvl);
            break;
        case O_HELP: usage(stdout); return 1;
        case O_VERSION: printf("godwitd %s\n", GODWIT_VERSION); return 1;
        default: usage(stderr); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "godwitd: error: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!cfg->nlisten)
        cfg->listen[cfg->nlisten++] = DEFAULT_LISTEN;
    if (!cfg->state_dir)
        cfg->state_dir = DEFAULT_STATE_DIR;
    return 0;
}

/* The default socket lives in /run/godwit: create that directory. */
static void make_socket_dirs(const struct daemon_config *cfg)
{
    for (unsigned i = 0; i < cfg->nlisten; i++) {
        struct ctl_uri u;
        if (ctl_uri_parse(cfg->listen[i], &u, NULL) == 0 && u.kind == CTL_URI_UNIX)
            mkdir(dirname(u.path), 0755);
    }
}

int main(int argc, char **argv)
{
    struct daemon_config cfg = { 0 };
    int r = parse(argc, argv, &cfg);
    if (r != 0)
        return r > 0 ? 0 : 2;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* every thread inherits this */
    signal(SIGPIPE, SIG_IGN);
    struct gw_error err;
    gw_error_init(&err);
    make_socket_dirs(&cfg);
    struct daemon *dm = daemon_new(&cfg, &err);
    if (!dm || daemon_start(dm, &err) < 0) {
        fprintf(stderr, "godwitd: error: %s\n", err.msg);
        if (dm && daemon_stop(dm))
            daemon_free(dm);
        return 1;
    }
    log_info("godwitd %s ready (state in %s)", GODWIT_VERSION, cfg.state_dir);
    int sig = 0;
    sigwait(&set, &sig);
    log_info("stopping on signal %d; running VMs keep running", sig);
    if (daemon_stop(dm))
        daemon_free(dm);
    else /* a handler still runs on its thread: exit under it, never free what it uses */
        log_warn("exiting with request handlers still running; their clients see the "
                 "connection close");
    return 0;
}
