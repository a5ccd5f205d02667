/* Pre-copy engine benchmark, runnable without KVM: the migration engine
 * between two stand-in VMs (tests/lib/engine_vm.h) in this process, over
 * loopback TCP, guest RAM in memfds. The source guest is idle and holds a
 * given amount of data, written through its own mapping (as a KVM guest
 * writes), so the engine pays for its first look at each page as the VMM
 * does. This is the idle scenario of bench/migrate_bench.py (which needs
 * KVM) reduced to the engine: how fast the stream moves memory.
 *
 *   make bench && build/bench/precopy_bench [--json FILE] [--label TEXT] [--repeat N]
 *                                           [--log debug] [SCENARIO...]
 *
 * Scenarios: idle-1g (1 GiB holding 768 MiB), idle-4g (4 GiB holding
 * 3.8 GiB), busy-1g-ac (the stand-in vCPU rewrites a 256 MiB hot set as
 * fast as it can; auto-converge, 20 ms downtime limit), busy-1g (the same
 * with the default 300 ms limit and no auto-converge). Reports total time,
 * downtime and where it went (query-migrate's downtime-phases), bytes on
 * the wire, rounds, throughput (idle: guest data moved per second; busy:
 * bytes on the wire per second) and the highest throttle. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "engine_vm.h"

struct scenario {
    const char *name;
    uint64_t ram_mib, data_mib;   /* busy: data_mib 0 */
    bool busy;                    /* the stand-in vCPU rewrites a quarter of RAM */
    bool ac;                      /* busy: auto-converge and a 20 ms limit (else 300 ms) */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* label: which build this is, in the JSON ("" for none). */
static int run(const struct scenario *sc, int port, FILE *json, const char *label)
{
    static struct evm src, dst;
    char uri[64];
    snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", port);
    uint64_t ram = sc->ram_mib << 20;
    if (evm_init(&src, ram, NULL) < 0 || evm_init(&dst, ram, &src) < 0)
        return -1;
    /* A plain pre-copy: without postcopy-ram the destination preallocates. */
    if (evm_set_cap(&src, MIG_CAP_POSTCOPY_RAM, false) < 0 ||
        evm_set_cap(&dst, MIG_CAP_POSTCOPY_RAM, false) < 0)
        return -1;
    if (sc->busy) {
        /* Auto-converge and a 20 ms limit, as QEMU's busy-1g-ac figures. */
        if (sc->ac && (evm_set_cap(&src, MIG_CAP_AUTO_CONVERGE, true) < 0 ||
                       evm_set_param(&src, "downtime-limit", 20) < 0))
            return -1;
        evm_sleep_us(1000000); /* the hot set written once at least */
    } else {
        evm_fill_idle(&src, sc->data_mib << 20);
    }
    struct gw_error err;
    gw_error_init(&err);
    double t0 = now_s();
    if (mig_start_incoming(&dst.mig, uri, &err) < 0 || mig_start_outgoing(&src.mig, uri, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    if (!evm_wait_state(&src, MIG_COMPLETED, 600000) || !evm_wait_state(&dst, MIG_COMPLETED, 60000))
        return -1;
    double secs = now_s() - t0;
    evm_set_run(&dst, false, true);
    uint64_t first, bad = evm_compare(&dst, &src, &first);
    struct mig_stats s;
    mig_get_stats(&src.mig, &s);
    double mbs = (double)(sc->busy ? s.transferred : sc->data_mib << 20) / secs / 1e6;
    printf("%-10s %8.0f ms %5llu ms %9.1f MiB %6llu %9.0f MB/s %7u %% %s\n", sc->name,
           secs * 1e3, (unsigned long long)s.downtime_ms, (double)s.transferred / 1048576.0,
           (unsigned long long)s.dirty_sync_count, mbs, src.throttle_max,
           bad ? "RAM DIFFERS" : "ok");
    char text[160], phases[160];
    printf("%-10s downtime phases: %s\n", "",
           mig_phases_text(s.downtime_phases.us, text, sizeof(text)));
    size_t at = 0; /* {"stop": N, "sync": N, ...} */
    for (unsigned i = 0; i < MIG_NPHASES && at < sizeof(phases); i++)
        at += (size_t)snprintf(phases + at, sizeof(phases) - at, "%s\"%s\": %llu",
                               i ? ", " : "{", mig_phase_names[i],
                               (unsigned long long)s.downtime_phases.us[i]);
    if (json)
        fprintf(json, "{\"bench\": \"precopy-engine\", %s%s%s\"scenario\": \"%s\", "
                "\"ram_mib\": %llu, "
                "\"data_mib\": %llu, \"total_ms\": %.0f, \"downtime_ms\": %llu, "
                "\"downtime_phases_us\": %s}, "
                "\"transferred\": %llu, \"rounds\": %llu, \"throughput_mb_s\": %.0f, "
                "\"throttle_max_pct\": %u, \"ram_equal\": %s}\n",
                label[0] ? "\"label\": \"" : "", label, label[0] ? "\", " : "",
                sc->name, (unsigned long long)sc->ram_mib, (unsigned long long)sc->data_mib,
                secs * 1e3, (unsigned long long)s.downtime_ms, phases,
                (unsigned long long)s.transferred,
                (unsigned long long)s.dirty_sync_count, mbs, src.throttle_max,
                bad ? "false" : "true");
    evm_fini(&dst);
    evm_fini(&src);
    return bad ? -1 : 0;
}

int main(int argc, char **argv)
{
    static const struct scenario scs[] = {
        { "idle-1g", 1024, 768, false, false },
        { "idle-4g", 4096, 3891, false, false },
        { "busy-1g-ac", 1024, 0, true, true },
        { "busy-1g", 1024, 0, true, false },
    };
    FILE *json = NULL;
    const char *label = "";
    int repeat = 1;
    const char *only[8];
    int nonly = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc)
            json = fopen(argv[++i], "a");
        else if (!strcmp(argv[i], "--label") && i + 1 < argc)
            label = argv[++i];
        else if (!strcmp(argv[i], "--log") && i + 1 < argc && gw_log_parse_level(argv[i + 1]) >= 0)
            gw_log_set_level((enum gw_log_level)gw_log_parse_level(argv[++i]));
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = atoi(argv[++i]) > 0 ? atoi(argv[i]) : 1;
        else if (nonly < 8)
            only[nonly++] = argv[i];
    }
    signal(SIGPIPE, SIG_IGN);
    printf("%-10s %11s %8s %13s %6s %14s %9s\n", "scenario", "total", "down", "wire", "rounds",
           "throughput", "throttle");
    int rc = 0;
    for (int n = 0; n < repeat; n++) {
        for (unsigned i = 0; i < sizeof(scs) / sizeof(scs[0]); i++) {
            bool want = nonly == 0;
            for (int k = 0; k < nonly; k++)
                want |= !strcmp(only[k], scs[i].name);
            if (want && run(&scs[i], 47200 + (int)i, json, label) < 0)
                rc = 1;
        }
    }
    if (json)
        fclose(json);
    return rc;
}
