/* Pre-copy engine benchmark, runnable without KVM: the migration engine
 * between two stand-in VMs (tests/lib/engine_vm.h) in this process, over
 * loopback TCP, guest RAM in memfds. The source guest is idle and holds a
 * given amount of data, written through its own mapping (as a KVM guest
 * writes), so the engine pays for its first look at each page as the VMM
 * does. This is the idle scenario of bench/migrate_bench.py (which needs
 * KVM) reduced to the engine: how fast the stream moves memory.
 *
 *   make bench && build/bench/precopy_bench [--json FILE] [SCENARIO...]
 *
 * Scenarios: idle-1g (1 GiB holding 768 MiB), idle-4g (4 GiB holding
 * 3.8 GiB). Reports total time, downtime, bytes on the wire, rounds and
 * throughput (guest data moved per second of migration). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_vm.h"

struct scenario {
    const char *name;
    uint64_t ram_mib, data_mib;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run(const struct scenario *sc, int port, FILE *json)
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
    evm_fill_idle(&src, sc->data_mib << 20);
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
    double mbs = (double)(sc->data_mib << 20) / secs / 1e6;
    printf("%-10s %8.0f ms %5llu ms %9.1f MiB %6llu %9.0f MB/s %s\n", sc->name, secs * 1e3,
           (unsigned long long)s.downtime_ms, (double)s.transferred / 1048576.0,
           (unsigned long long)s.dirty_sync_count, mbs, bad ? "RAM DIFFERS" : "ok");
    if (json)
        fprintf(json, "{\"bench\": \"precopy-engine\", \"scenario\": \"%s\", \"ram_mib\": %llu, "
                "\"data_mib\": %llu, \"total_ms\": %.0f, \"downtime_ms\": %llu, "
                "\"transferred\": %llu, \"rounds\": %llu, \"throughput_mb_s\": %.0f, "
                "\"ram_equal\": %s}\n",
                sc->name, (unsigned long long)sc->ram_mib, (unsigned long long)sc->data_mib,
                secs * 1e3, (unsigned long long)s.downtime_ms, (unsigned long long)s.transferred,
                (unsigned long long)s.dirty_sync_count, mbs, bad ? "false" : "true");
    evm_fini(&dst);
    evm_fini(&src);
    return bad ? -1 : 0;
}

int main(int argc, char **argv)
{
    static const struct scenario scs[] = {
        { "idle-1g", 1024, 768 },
        { "idle-4g", 4096, 3891 },
    };
    FILE *json = NULL;
    const char *only[8];
    int nonly = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc)
            json = fopen(argv[++i], "a");
        else if (nonly < 8)
            only[nonly++] = argv[i];
    }
    signal(SIGPIPE, SIG_IGN);
    printf("%-10s %11s %8s %13s %6s %14s\n", "scenario", "total", "down", "wire", "rounds",
           "throughput");
    int rc = 0;
    for (unsigned i = 0; i < sizeof(scs) / sizeof(scs[0]); i++) {
        bool want = nonly == 0;
        for (int k = 0; k < nonly; k++)
            want |= !strcmp(only[k], scs[i].name);
        if (want && run(&scs[i], 47200 + (int)i, json) < 0)
            rc = 1;
    }
    if (json)
        fclose(json);
    return rc;
}
