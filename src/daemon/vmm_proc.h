/* godwit-vmm processes: spawn one for a domain, watch it, stop it.
 *
 * The VMM runs in its own session (setsid), so that the daemon exiting or
 * being killed does not take its VMs along. Its serial output is appended
 * to the domain's serial log (the VMM runs with --serial stdio, stdout the
 * log), its serial input is a FIFO in the state directory that the daemon
 * writes to (the test guest's power-off command 'p'), its own messages go
 * to STATE/log/NAME.vmm.log.
 *
 * Returns: 0 or -errno with err filled; predicates bool. */
#ifndef GW_DAEMON_VMM_PROC_H
#define GW_DAEMON_VMM_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/error.h"
#include "daemon/domain_def.h"

struct vmm_spawn {
    const char *vmm_path;      /* the godwit-vmm binary */
    const struct dom_def *def;
    const char *qmp_path;
    const char *serial_log;
    const char *console_fifo;  /* created if missing */
    const char *vmm_log;
    bool incoming;             /* --incoming: wait for a migration instead of booting */
};

/* Start the VMM; -EIO when something already answers on qmp_path (a VMM
 * no daemon recorded: it is never replaced). *console_fd: the daemon's write end of the serial input
 * FIFO (O_NONBLOCK, close-on-exec). */
int vmm_spawn(const struct vmm_spawn *s, pid_t *pid, int *console_fd, struct gw_error *err);

/* A pidfd for pid (our child or not), or -errno. */
int vmm_pidfd(pid_t pid);
/* Send sig to the process behind pidfd: 0, or -ESRCH once it has exited.
 * Never kill(pid): once the VMM is reaped (by its monitor, or by init for
 * the VMM of an earlier daemon) its pid may name another process. */
int vmm_signal(int pidfd, int sig);
/* Wait until the process behind pidfd has exited; true if it has within
 * timeout_ms (0: just look). */
bool vmm_wait_gone(int pidfd, int timeout_ms);
/* Reap pid if it is our child: true and *status when reaped. */
bool vmm_reap(pid_t pid, int *status);
/* Open the write end of an existing console FIFO (a VMM must hold it open). */
int vmm_console_open(const char *fifo);
/* The last line of a VMM's log file, for error messages ("" if none). */
void vmm_log_tail(const char *path, char *buf, size_t len);
/* Whether pid runs the VMM that listens on qmp_path (its command line
 * holds "--qmp QMP_PATH", a path unique to one state directory and domain)
 * and, when start_time is not 0, started at start_time (vmm_start_time):
 * tells our VMM from an unrelated process, or another daemon's VMM, that
 * reused its pid. Only such a process may be killed. */
bool vmm_is_ours(pid_t pid, const char *qmp_path, unsigned long long start_time);
/* The process start time of pid (/proc/PID/stat field 22, clock ticks
 * since boot); 0 if unknown. */
unsigned long long vmm_start_time(pid_t pid);
/* Who serves the unix socket at path: its pid (SO_PEERCRED), 0 when
 * nothing answers (missing or stale socket), -1 when something answers
 * whose pid is unknown. vmm_spawn refuses to start over a live one. */
pid_t vmm_socket_owner(const char *path);
/* Process CPU time (user + system) in nanoseconds; 0 if unknown. */
unsigned long long vmm_cpu_time_ns(pid_t pid);

#endif
