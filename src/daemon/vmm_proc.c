/* godwit-vmm processes. */
#define LOG_PREFIX "vmm-proc"
#include "daemon/vmm_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"

#define VMM_MAX_ARGS 32

static void build_argv(const struct vmm_spawn *s, char *mem, char *vcpus, const char **argv)
{
    const struct dom_def *d = s->def;
    int n = 0;
    snprintf(mem, 24, "%llu", (unsigned long long)d->memory_mib);
    snprintf(vcpus, 12, "%u", d->vcpus);
    argv[n++] = s->vmm_path;
    argv[n++] = "--name";
    argv[n++] = d->name;
    argv[n++] = "--uuid";
    argv[n++] = d->uuid;
    argv[n++] = "--memory";
    argv[n++] = mem;
    argv[n++] = "--vcpus";
    argv[n++] = vcpus;
    argv[n++] = "--qmp";
    argv[n++] = s->qmp_path;
    argv[n++] = "--serial";
    argv[n++] = "stdio";
    if (d->memory_prealloc)
        argv[n++] = "--mem-prealloc";
    if (s->incoming) {
        argv[n++] = "--incoming";
        argv[n] = NULL;
        return; /* the guest arrives with the migration stream */
    }
    if (d->test_guest)
        argv[n++] = "--test-guest";
    if (d->kernel) {
        argv[n++] = "--kernel";
        argv[n++] = d->kernel;
    }
    if (d->initrd) {
        argv[n++] = "--initrd";
        argv[n++] = d->initrd;
    }
    if (d->cmdline) {
        argv[n++] = "--cmdline";
        argv[n++] = d->cmdline;
    }
    if (d->cpu) {
        argv[n++] = "--cpu";
        argv[n++] = d->cpu;
    }
    argv[n] = NULL;
}

/* In the child: only async-signal-safe calls. */
static void child_exec(const char **argv, int in_fd, int out_fd, int log_fd)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    setsid();
    if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(log_fd, 2) < 0)
        _exit(127);
    syscall(SYS_close_range, 3U, ~0U, 0U); /* other VMs' sockets, listeners */
    execv(argv[0], (char *const *)argv);
    static const char msg[] = "godwitd: cannot execute godwit-vmm\n";
    ssize_t ignored = write(2, msg, sizeof(msg) - 1);
    (void)ignored;
    _exit(127);
}

static int open_files(const struct vmm_spawn *s, int fds[3], struct gw_error *err)
{
    fds[0] = fds[1] = fds[2] = -1;
    if (mkfifo(s->console_fifo, 0600) < 0 && errno != EEXIST)
        return gw_error_set(err, errno, "cannot create serial input FIFO '%s': %m", s->console_fifo);
    /* O_RDWR: the VMM never sees end-of-file, whoever writes. */
    fds[0] = open(s->console_fifo, O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fds[0] < 0)
        return gw_error_set(err, errno, "cannot open '%s': %m", s->console_fifo);
    fds[1] = open(s->serial_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fds[1] < 0)
        return gw_error_set(err, errno, "cannot open serial log '%s': %m", s->serial_log);
    fds[2] = open(s->vmm_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fds[2] < 0)
        return gw_error_set(err, errno, "cannot open '%s': %m", s->vmm_log);
    return 0;
}

int vmm_spawn(const struct vmm_spawn *s, pid_t *pid, int *console_fd, struct gw_error *err)
{
    const char *argv[VMM_MAX_ARGS];
    char mem[24], vcpus[12];
    int fds[3];
    build_argv(s, mem, vcpus, argv);
    if (access(s->vmm_path, X_OK) < 0)
        return gw_error_set(err, errno, "cannot execute '%s': %m", s->vmm_path);
    pid_t owner = vmm_socket_owner(s->qmp_path);
    if (owner != 0) /* a VMM nobody recorded (e.g. its daemon died starting it) */
        return gw_error_set(err, EIO,
                            "a process (pid %d) already serves the QMP socket %s: the domain's VMM "
                            "may be running unwatched; restart godwitd to take it back, or stop "
                            "that process", (int)owner, s->qmp_path);
    unlink(s->qmp_path); /* stale: nobody answers there */
    int r = open_files(s, fds, err);
    if (r < 0)
        goto out;
    pid_t p = fork();
    if (p < 0) {
        r = gw_error_set(err, errno, "cannot fork: %m");
        goto out;
    }
    if (p == 0)
        child_exec(argv, fds[0], fds[1], fds[2]);
    *pid = p;
    *console_fd = fds[0];
    fds[0] = -1;
out:
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return r;
}

int vmm_pidfd(pid_t pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : fd;
}

int vmm_signal(int pidfd, int sig)
{
    return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 ? -errno : 0;
}

bool vmm_wait_gone(int pidfd, int timeout_ms)
{
    struct pollfd p = { .fd = pidfd, .events = POLLIN };
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    return r > 0;
}

bool vmm_reap(pid_t pid, int *status)
{
    pid_t r;
    do {
        r = waitpid(pid, status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    return r == pid;
}

int vmm_console_open(const char *fifo)
{
    int fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

void vmm_log_tail(const char *path, char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0])
            snprintf(buf, len, "%s", line);
    }
    fclose(f);
}

/* The fields of /proc/PID/stat after "pid (comm) " (comm may hold
 * spaces and parentheses: the last ')' ends it), read into text; NULL if
 * the process is gone. */
static const char *stat_fields(pid_t pid, char *text, size_t len)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t n = fread(text, 1, len - 1, f);
    fclose(f);
    text[n] = '\0';
    char *p = strrchr(text, ')');
    return p && p[1] == ' ' ? p + 2 : NULL;
}

unsigned long long vmm_cpu_time_ns(pid_t pid)
{
    char text[1024];
    const char *p = stat_fields(pid, text, sizeof(text));
    unsigned long long ut = 0, st = 0;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (!p || sscanf(p, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    long hz = sysconf(_SC_CLK_TCK);
    return (ut + st) * (1000000000ULL / (unsigned long long)(hz > 0 ? hz : 100));
}

/* Field 22 of /proc/PID/stat: when the process started, in clock ticks
 * since boot; with the pid it names one process for ever (pids are
 * reused, this pair is not). */
unsigned long long vmm_start_time(pid_t pid)
{
    char text[1024];
    const char *p = stat_fields(pid, text, sizeof(text));
    unsigned long long t = 0;
    /* fields 3 .. 21, then starttime */
    if (!p || sscanf(p, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
                        "%*d %*d %llu", &t) != 1)
        return 0;
    return t;
}

bool vmm_is_ours(pid_t pid, const char *qmp_path, unsigned long long start_time)
{
    char path[64], buf[8192];
    if (pid <= 0 || !qmp_path || !qmp_path[0])
        return false;
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    bool found = false;
    for (size_t i = 0; !found && i < n; i += strlen(buf + i) + 1) {
        size_t next = i + strlen(buf + i) + 1;
        found = strcmp(buf + i, "--qmp") == 0 && next < n && strcmp(buf + next, qmp_path) == 0;
    }
    return found && (start_time == 0 || vmm_start_time(pid) == start_time);
}

pid_t vmm_socket_owner(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    struct ucred cred = { 0 };
    socklen_t len = sizeof(cred);
    if (strlen(path) >= sizeof(a.sun_path))
        return 0;
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        cred.pid = 0;
    else if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.pid <= 0)
        cred.pid = -1; /* something answers, we cannot say who */
    close(fd);
    return cred.pid;
}
