/* Post-copy engine benchmark, runnable without KVM: the migration engine
 * between two stand-in VMs (tests/lib/engine_vm.h) in this process, over
 * loopback TCP, guest RAM in memfds, missing pages caught by userfaultfd.
 * The source's "vCPU" rewrites a hot quarter of RAM as fast as it can; the
 * destination's reads every page in a scattered order and compares it with
 * the source's copy (a fault on each missing page).
 *
 *   make bench && build/bench/postcopy_bench [RAM_MiB] [--json FILE] [--label TEXT]
 *                                            [--log debug] [--only TEXT]
 *
 * Scenarios: post-copy at once and after the first pass, bandwidth
 * unlimited and capped at 1 Gbit/s (both channels), and at once over
 * 1 Gbit/s with compress-zstd (`--only TEXT` runs the scenarios whose name
 * holds TEXT). Reports downtime, total
 * time, page requests, fault latency p50/p99/max (fault to page installed),
 * time the vCPU was blocked, and the destination vCPU's progress (pages
 * read per second) during post-copy against the same reader once every
 * page is local. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "engine_vm.h"
#include "memory/uffd.h"

struct scenario {
    const char *name;
    bool after_pass;
    uint64_t bandwidth;       /* bytes/s, 0 = unlimited */
    bool zstd;                /* compress-zstd */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Pages the destination's reader gets through per second, sampled over
 * `secs` (from its own counter). */
static double reader_rate(struct evm *dst, double secs)
{
    uint64_t c0 = dst->checked;
    double t0 = now_s();
    evm_sleep_us((unsigned)(secs * 1e6));
    return (double)(dst->checked - c0) / (now_s() - t0);
}

/* label: which build this is, in the JSON ("" for none). */
static int run(const struct scenario *sc, uint64_t ram, int port, FILE *json, const char *label)
{
    static struct evm src, dst;
    char uri[64];
    snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", port);
    if (evm_init(&src, ram, NULL) < 0 || evm_init(&dst, ram, &src) < 0)
        return -1;
    struct gw_error err;
    gw_error_init(&err);
    evm_set_param(&src, "downtime-limit", 1); /* the hot set must not converge */
    if (sc->zstd && (evm_set_cap(&src, MIG_CAP_COMPRESS_ZSTD, true) < 0 ||
                     evm_set_cap(&dst, MIG_CAP_COMPRESS_ZSTD, true) < 0))
        return -1;
    if (sc->bandwidth) {
        evm_set_param(&src, "max-bandwidth", (int64_t)sc->bandwidth);
        evm_set_param(&src, "max-postcopy-bandwidth", (int64_t)sc->bandwidth);
    }
    evm_sleep_us(200000);
    double t0 = now_s();
    if (mig_start_incoming(&dst.mig, uri, &err) < 0 || mig_start_outgoing(&src.mig, uri, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    struct mig_stats s, d;
    if (sc->after_pass) {
        do {
            evm_sleep_us(1000);
            mig_get_stats(&src.mig, &s);
        } while (s.dirty_sync_count < 2 && !mig_state_is_final(s.status));
    }
    mig_start_postcopy(&src.mig, &err);
    double t_switch = now_s();
    if (!evm_wait_state(&dst, MIG_POSTCOPY_ACTIVE, 60000))
        return -1;
    double during = reader_rate(&dst, 0.2);
    if (!evm_wait_state(&src, MIG_COMPLETED, 600000) || !evm_wait_state(&dst, MIG_COMPLETED, 60000))
        return -1;
    double t_end = now_s();
    double local = reader_rate(&dst, 0.5);
    evm_set_run(&dst, false, true);
    uint64_t first, bad = evm_compare(&dst, &src, &first);
    mig_get_stats(&src.mig, &s);
    mig_get_stats(&dst.mig, &d);
    printf("%-22s %6.0f ms %4llu ms %7llu %6llu %7llu %8llu %7llu ms %10.0f %10.0f %s\n", sc->name,
           (t_end - t0) * 1e3, (unsigned long long)s.downtime_ms,
           (unsigned long long)s.postcopy_requests, (unsigned long long)d.fault_p50_us,
           (unsigned long long)d.fault_p99_us, (unsigned long long)d.fault_max_us,
           (unsigned long long)(d.vcpu_blocktime_us[0] / 1000), during, local,
           bad ? "RAM DIFFERS" : "ok");
    if (json)
        fprintf(json, "{\"bench\": \"postcopy-engine\", %s%s%s\"scenario\": \"%s\", "
                "\"ram_mib\": %llu, "
                "\"total_ms\": %.0f, \"postcopy_ms\": %.0f, \"downtime_ms\": %llu, "
                "\"requests\": %llu, \"postcopy_bytes\": %llu, \"fault_p50_us\": %llu, "
                "\"fault_p99_us\": %llu, \"fault_max_us\": %llu, \"blocked_ms\": %llu, "
                "\"progress_postcopy_pages_s\": %.0f, \"progress_local_pages_s\": %.0f, "
                "\"ram_equal\": %s}\n",
                label[0] ? "\"label\": \"" : "", label, label[0] ? "\", " : "",
                sc->name, (unsigned long long)(ram >> 20), (t_end - t0) * 1e3,
                (t_end - t_switch) * 1e3, (unsigned long long)s.downtime_ms,
                (unsigned long long)s.postcopy_requests, (unsigned long long)s.postcopy_bytes,
                (unsigned long long)d.fault_p50_us, (unsigned long long)d.fault_p99_us,
                (unsigned long long)d.fault_max_us, (unsigned long long)(d.vcpu_blocktime_us[0] / 1000),
                during, local, bad ? "false" : "true");
    evm_fini(&dst);
    evm_fini(&src);
    return bad ? -1 : 0;
}

int main(int argc, char **argv)
{
    uint64_t ram = 1024ULL << 20;
    FILE *json = NULL;
    const char *label = "", *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc)
            json = fopen(argv[++i], "a");
        else if (!strcmp(argv[i], "--label") && i + 1 < argc)
            label = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--log") && i + 1 < argc && gw_log_parse_level(argv[i + 1]) >= 0)
            gw_log_set_level((enum gw_log_level)gw_log_parse_level(argv[++i]));
        else
            ram = strtoull(argv[i], NULL, 0) << 20;
    }
    signal(SIGPIPE, SIG_IGN);
    if (!uffd_available()) {
        fprintf(stderr, "postcopy_bench: userfaultfd is not available here\n");
        return 77;
    }
    static const struct scenario scs[] = {
        { "at-once unlimited", false, 0, false },
        { "after-pass unlimited", true, 0, false },
        { "at-once 1Gbit/s", false, 125000000, false },
        { "after-pass 1Gbit/s", true, 125000000, false },
        { "at-once 1Gbit/s zstd", false, 125000000, true },
    };
    printf("RAM %llu MiB, hot set a quarter of it; loopback TCP\n", (unsigned long long)(ram >> 20));
    printf("%-22s %9s %7s %7s %6s %7s %8s %10s %10s %10s\n", "scenario", "total", "down",
           "reqs", "p50us", "p99us", "max-us", "blocked", "pages/s pc", "local");
    int rc = 0;
    for (unsigned i = 0; i < sizeof(scs) / sizeof(scs[0]); i++)
        if ((!only || strstr(scs[i].name, only)) && run(&scs[i], ram, 47100 + (int)i, json, label) < 0)
            rc = 1;
    if (json)
        fclose(json);
    return rc;
}
