/* godwit-vmm: one virtual machine per process. */
#define LOG_PREFIX "vmm"
#include <errno.h>
#include <stdarg.h>
#include <json-c/json.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include "common/evloop.h"
#include "common/log.h"
#include "devices/serial.h"
#include "vmm/machine.h"
#include "vmm/options.h"
#include "vmm/vmm_control.h"

struct vmm {
    struct vmm_options opt;
    struct evloop *loop;
    struct machine machine;
    struct vmm_control *control;
    int serial_out_fd;
    int sigfd;
    int exit_status;
    bool tty_raw;
    struct termios tty_saved;
    uint8_t in_buf[256];
    size_t in_len, in_off;
    bool in_held;              /* stdin unwatched until the UART takes more */
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "godwit-vmm: error: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* ---- machine hooks ---------------------------------------------------------- */

static void on_event(void *opaque, const char *name, struct json_object *data)
{
    struct vmm *v = opaque;
    vmm_control_event(v->control, name, data);
}

static void stop_loop(void *opaque)
{
    struct vmm *v = opaque;
    evloop_stop(v->loop);
}

static void on_terminate(void *opaque, int status)
{
    struct vmm *v = opaque;
    v->exit_status = status;
    /* Posted after the SHUTDOWN event so that clients receive it first. */
    evloop_post(v->loop, stop_loop, v);
}

static enum machine_verdict on_guest_request(void *opaque, bool reset)
{
    struct vmm *v = opaque;
    return vmm_control_guest_request(v->control, reset);
}

static const struct machine_ops machine_ops = {
    .event = on_event,
    .terminate = on_terminate,
    .guest_request = on_guest_request,
};

/* ---- serial input from stdin -------------------------------------------------- */

static void stdin_cb(struct evloop *loop, int fd, uint32_t events, void *opaque);

static void feed_serial(struct vmm *v)
{
    while (v->in_off < v->in_len) {
        size_t n = machine_serial_input(&v->machine, v->in_buf + v->in_off, v->in_len - v->in_off);
        if (n == 0)
            return; /* FIFO full: the UART's rx-notify calls us again */
        v->in_off += n;
    }
    v->in_off = v->in_len = 0;
    if (v->in_held) {
        v->in_held = false;
        evloop_add_fd(v->loop, STDIN_FILENO, EPOLLIN, stdin_cb, v);
    }
}

static void feed_serial_cb(void *opaque) { feed_serial(opaque); }

/* The UART has room again after refusing input (any thread, usually a
 * vCPU's): continue on the loop thread. */
static void serial_has_room(void *opaque)
{
    struct vmm *v = opaque;
    evloop_post(v->loop, feed_serial_cb, v);
}

static void stdin_cb(struct evloop *loop, int fd, uint32_t events, void *opaque)
{
    struct vmm *v = opaque;
    ssize_t n = read(fd, v->in_buf, sizeof(v->in_buf));
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        evloop_del_fd(loop, fd); /* EOF: the guest just sees no more input */
        return;
    }
    v->in_len = (size_t)n;
    v->in_off = 0;
    feed_serial(v);
    if (v->in_len) {
        /* Hold further input until the guest drains its FIFO. */
        evloop_del_fd(loop, fd);
        v->in_held = true;
    }
}

static void setup_tty(struct vmm *v)
{
    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &v->tty_saved) < 0)
        return;
    struct termios t = v->tty_saved;
    t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    t.c_iflag &= ~(tcflag_t)ICRNL;
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0)
        v->tty_raw = true;
}

static void restore_tty(struct vmm *v)
{
    if (v->tty_raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &v->tty_saved);
}

/* ---- signals -------------------------------------------------------------------- */

static void signal_cb(struct evloop *loop, int fd, uint32_t events, void *opaque)
{
    struct vmm *v = opaque;
    struct signalfd_siginfo si;
    if (read(fd, &si, sizeof(si)) != sizeof(si))
        return;
    log_info("terminating on signal %u", si.ssi_signo);
    vmm_control_event(v->control, "SHUTDOWN",
                      json_tokener_parse("{\"guest\": false, \"reason\": \"host-signal\"}"));
    v->exit_status = 0;
    /* Posted after the event's delivery, so that clients receive it. */
    if (evloop_post(loop, stop_loop, v) < 0)
        evloop_stop(loop);
}

static int setup_signals(struct vmm *v)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    v->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (v->sigfd < 0)
        return -errno;
    return evloop_add_fd(v->loop, v->sigfd, EPOLLIN, signal_cb, v);
}

/* ---- set-up --------------------------------------------------------------------- */

static int open_serial(struct vmm *v)
{
    const char *s = v->opt.serial;
    if (strcmp(s, "stdio") == 0) {
        v->serial_out_fd = STDOUT_FILENO;
        fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
        setup_tty(v);
        if (evloop_add_fd(v->loop, STDIN_FILENO, EPOLLIN, stdin_cb, v) < 0)
            log_debug("stdin cannot be watched; the guest gets no serial input");
        return 0;
    }
    if (strcmp(s, "none") == 0) {
        v->serial_out_fd = -1;
        return 0;
    }
    v->serial_out_fd = open(s, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    return v->serial_out_fd < 0 ? -errno : 0;
}

/* MiB of RAM plus swap on this host (0 if unknown). */
static uint64_t host_memory_mib(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    uint64_t total = 0, kib;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "MemTotal: %lu kB", &kib) == 1 || sscanf(line, "SwapTotal: %lu kB", &kib) == 1)
            total += kib;
    }
    fclose(f);
    return total / 1024;
}

static void check_files(const struct vmm_options *o)
{
    uint64_t host = host_memory_mib();
    if (host && o->memory_mib > host)
        die("cannot give the guest %llu MiB of memory: this host has %llu MiB",
            (unsigned long long)o->memory_mib, (unsigned long long)host);
    if (o->kernel && access(o->kernel, R_OK) < 0)
        die("cannot read kernel '%s': %s", o->kernel, strerror(errno));
    if (o->initrd && access(o->initrd, R_OK) < 0)
        die("cannot read initrd '%s': %s", o->initrd, strerror(errno));
}

int main(int argc, char **argv)
{
    static struct vmm v = { .sigfd = -1 };
    struct gw_error err;
    gw_error_init(&err);

    int r = vmm_options_parse(&v.opt, argc, argv, stdout, &err);
    if (r == 1)
        return 0;
    if (r < 0)
        die("%s", err.msg);
    gw_log_set_level((enum gw_log_level)v.opt.log_level);
    gw_log_set_vm(v.opt.name);
    check_files(&v.opt);

    v.loop = evloop_new();
    if (!v.loop)
        die("cannot create event loop: %s", strerror(errno));
    if (open_serial(&v) < 0)
        die("cannot open serial output '%s': %s", v.opt.serial, strerror(errno));
    if (setup_signals(&v) < 0)
        die("cannot set up signal handling: %s", strerror(errno));

    struct machine_config cfg = {
        .name = v.opt.name,
        .memory_mib = v.opt.memory_mib,
        .nr_vcpus = v.opt.vcpus,
        .kernel = v.opt.kernel,
        .initrd = v.opt.initrd,
        .cmdline = v.opt.cmdline,
        .test_guest = v.opt.test_guest,
        .incoming = v.opt.incoming,
        .no_reboot = v.opt.no_reboot,
        .serial_out_fd = v.serial_out_fd,
        .cpu = &v.opt.cpu,
    };
    memcpy(cfg.uuid, v.opt.uuid, sizeof(cfg.uuid));
    if (machine_init(&v.machine, &cfg, v.loop, &machine_ops, &v, &err) < 0)
        die("%s", err.msg);
    if (v.opt.mem_prealloc && guest_ram_prealloc_start(&v.machine.ram, &err) < 0)
        die("%s", err.msg);
    serial_set_rx_notify(v.machine.serial, serial_has_room, &v);
    v.control = vmm_control_new(v.loop, &v.machine, &err);
    if (!v.control)
        die("%s", err.msg);
    if (v.opt.qmp_path && vmm_control_listen(v.control, v.opt.qmp_path, &err) < 0)
        die("%s", err.msg);
    if (!v.opt.incoming && machine_boot(&v.machine, &err) < 0)
        die("%s", err.msg);
    if (machine_start_threads(&v.machine, &err) < 0)
        die("%s", err.msg);
    if (v.opt.incoming) {
        /* Input waits until the migrated guest runs (machine_resume): a
         * byte taken by the UART now would be overwritten by the loaded
         * state, lost. */
        serial_pause_input(v.machine.serial, true);
        r = machine_set_state(&v.machine, RUNSTATE_INMIGRATE, &err);
    }
    else if (v.opt.paused)
        r = 0; /* prelaunch until `cont` */
    else
        r = machine_resume(&v.machine, &err);
    if (r < 0)
        die("%s", err.msg);
    log_info("VM '%s' %s: %u vCPU(s), %llu MiB", v.opt.name,
             v.opt.incoming ? "waiting for incoming migration" : "started", v.opt.vcpus,
             (unsigned long long)v.opt.memory_mib);

    evloop_run(v.loop);

    restore_tty(&v);
    struct vmm_control *ctl = v.control;
    v.control = NULL; /* late events are dropped */
    vmm_control_free(ctl);
    machine_fini(&v.machine);
    evloop_free(v.loop);
    return v.exit_status;
}
