/* godwitd's context: set-up, the handler registry, start and stop. */
#define LOG_PREFIX "daemon"
#include "daemon/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "common/log.h"
#include "control/control.h"
#include "daemon/domain_store.h"
#include "daemon/domains.h"
#include "daemon/lifecycle.h"
#include "daemon/migrate.h"
#include "daemon/monitor.h"
#include "daemon/server.h"
#include "qmp/qmp_client.h"

static int default_vmm_path(char *buf, size_t len, struct gw_error *err)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n < 0)
        return gw_error_set(err, errno, "cannot find the godwitd binary: %m");
    exe[n] = '\0';
    snprintf(buf, len, "%s/godwit-vmm", dirname(exe));
    return 0;
}

/* Refuse a TCP listener without TLS unless asked for on purpose. */
static int check_listeners(const struct daemon_config *cfg, struct gw_error *err)
{
    int r = ctl_tls_config_check(&cfg->tls, err);
    if (r < 0)
        return r;
    for (unsigned i = 0; i < cfg->nlisten; i++) {
        struct ctl_uri u;
        if ((r = ctl_uri_parse(cfg->listen[i], &u, err)) < 0)
            return r;
        if (u.kind == CTL_URI_TCP && !ctl_tls_configured(&cfg->tls) && !cfg->insecure)
            return gw_error_set(err, EPERM,
                                "refusing to listen on %s without TLS: give --tls-psk FILE or "
                                "--tls-cert/--tls-key/--tls-ca (or --insecure to accept "
                                "unauthenticated clients on purpose)", cfg->listen[i]);
    }
    return 0;
}

struct daemon *daemon_new(const struct daemon_config *cfg, struct gw_error *err)
{
    if (check_listeners(cfg, err) < 0)
        return NULL;
    struct daemon *dm = calloc(1, sizeof(*dm));
    if (!dm) {
        gw_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    dm->cfg = *cfg;
    dm->uid = getuid();
    dm->next_id = 1;
    dm->lock_fd = -1;
    pthread_mutex_init(&dm->lock, NULL);
    pthread_cond_init(&dm->cond, NULL);
    if (cfg->vmm_path)
        snprintf(dm->vmm_path, sizeof(dm->vmm_path), "%s", cfg->vmm_path);
    else if (default_vmm_path(dm->vmm_path, sizeof(dm->vmm_path), err) < 0)
        goto fail;
    dm->bus = event_bus_new();
    if (!dm->bus) {
        gw_error_set(err, ENOMEM, "out of memory");
        goto fail;
    }
    daemon_register_commands(dm, lifecycle_commands, lifecycle_ncommands);
    daemon_register_commands(dm, domains_commands, domains_ncommands);
    if (migrate_init(dm, err) < 0)
        goto fail;
    return dm;
fail:
    daemon_free(dm);
    return NULL;
}

/* One daemon per state directory: two would both drive the same VMMs. The
 * lock is an flock() on STATE/godwitd.lock, released by the kernel however
 * the daemon ends; the file holds the owner's pid, for the message. */
static int lock_state_dir(struct daemon *dm, struct gw_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/godwitd.lock", dm->cfg.state_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return gw_error_set(err, errno, "cannot open '%s': %m", path);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        close(fd);
        if (e == EWOULDBLOCK)
            return gw_error_set(err, EBUSY, "another godwitd%s%s%s is using the state directory "
                                "'%s' (%s is locked)", pid[0] ? " (pid " : "", pid,
                                pid[0] ? ")" : "", dm->cfg.state_dir, path);
        return gw_error_set(err, e, "cannot lock '%s': %s", path, strerror(e));
    }
    char text[32];
    int len = snprintf(text, sizeof(text), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, text, (size_t)len, 0) != len)
        log_warn("cannot write the pid to %s: %m", path);
    dm->lock_fd = fd;
    return 0;
}

int daemon_start(struct daemon *dm, struct gw_error *err)
{
    int r = store_init(dm->cfg.state_dir, err);
    if (r < 0 || (r = lock_state_dir(dm, err)) < 0 || (r = domains_load(dm, err)) < 0)
        return r;
    migrate_recover(dm);
    dm->server = server_new(dm, err);
    if (!dm->server)
        return -EINVAL;
    for (unsigned i = 0; i < dm->cfg.nlisten; i++)
        if ((r = server_listen(dm->server, dm->cfg.listen[i], err)) < 0)
            return r;
    return 0;
}

bool daemon_stop(struct daemon *dm)
{
    atomic_store(&dm->stopping, true);
    bool idle = !dm->server || server_stop(dm->server);
    migrate_stop(dm);
    pthread_mutex_lock(&dm->lock);
    for (struct domain *d = dm->domains; d; d = d->next)
        monitor_wait_end(dm, d, 5000);
    for (struct domain *d = dm->domains; d; d = d->next)
        monitor_join(d);
    pthread_mutex_unlock(&dm->lock);
    return idle;
}

void daemon_free(struct daemon *dm)
{
    if (!dm)
        return;
    server_free(dm->server);
    while (dm->domains) {
        struct domain *d = dm->domains;
        dm->domains = d->next;
        if (d->pidfd >= 0)
            close(d->pidfd);
        if (d->console_fd >= 0)
            close(d->console_fd);
        qmp_client_free(d->qmp);
        domain_free(d);
    }
    migrate_free(dm);
    event_bus_free(dm->bus);
    if (dm->lock_fd >= 0)
        close(dm->lock_fd);
    pthread_mutex_destroy(&dm->lock);
    pthread_cond_destroy(&dm->cond);
    free(dm);
}

int daemon_register_commands(struct daemon *dm, const struct daemon_command *cmds, size_t n)
{
    if (dm->ntables == DAEMON_MAX_TABLES)
        return -E2BIG;
    dm->tables[dm->ntables] = cmds;
    dm->table_len[dm->ntables] = n;
    dm->ntables++;
    return 0;
}

int daemon_register_qmp_hook(struct daemon *dm, daemon_qmp_event_fn fn)
{
    if (dm->nhooks == DAEMON_MAX_HOOKS)
        return -E2BIG;
    dm->hooks[dm->nhooks++] = fn;
    return 0;
}

const struct daemon_command *daemon_find_command(struct daemon *dm, const char *name)
{
    for (unsigned t = 0; t < dm->ntables; t++)
        for (size_t i = 0; i < dm->table_len[t]; i++)
            if (strcmp(dm->tables[t][i].name, name) == 0)
                return &dm->tables[t][i];
    return NULL;
}
