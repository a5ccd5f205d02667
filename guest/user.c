/* Test guest ring 3: the workloads, one per vCPU, and their self-checks.
 * They run at native speed on PVM; ring 0 is only entered for output. */
#include "guest.h"

static long sys(long nr, long a, long b)
{
    long ret;
    __asm__ volatile("ud2" : "=a"(ret) : "a"(nr), "D"(a), "S"(b) : "memory");
    return ret;
}

static void print(const char *s) { sys(SYS_WRITE, (long)s, (long)g_strlen(s)); }

#define PRINTF(...)                                   \
    do {                                              \
        char _b[256];                                 \
        g_snprintf(_b, sizeof(_b), __VA_ARGS__);      \
        print(_b);                                    \
    } while (0)

#define REPORT_WAIT_S 10

static uint64_t tsc_per_tick;
static uint32_t seen_report[MAX_CPUS];

static void calibrate(void)
{
    if (g.timer_calibrated) {
        tsc_per_tick = g.tsc_per_tick;
        return;
    }
    uint64_t t = g.ticks;
    while (g.ticks == t)
        cpu_relax();
    uint64_t t0 = rdtsc(), k = g.ticks;
    while (g.ticks < k + 50)
        cpu_relax();
    tsc_per_tick = (rdtsc() - t0) / 50;
    if (!tsc_per_tick)
        tsc_per_tick = 1;
}

/* ---- self-check reports (serial 'v') ------------------------------------------ */

static void answer_report(unsigned cpu, bool ok, const char *what)
{
    struct cpu_info *ci = &g.cpu[cpu];
    g_snprintf(ci->report_what, sizeof(ci->report_what), "%s", what);
    ci->report_ok = ok;
    __atomic_store_n(&ci->report_done, seen_report[cpu], __ATOMIC_RELEASE);
    if (cpu != 0)
        return;
    /* cpu 0 collects every answer and prints one line. */
    /* 10 s of TSC time: a vCPU whose timer stopped still gets an answer. */
    uint64_t deadline = rdtsc() + REPORT_WAIT_S * TICK_HZ * (tsc_per_tick ? tsc_per_tick : 30000000);
    bool all_ok = true;
    char buf[256];
    size_t pos = 0;
    buf[0] = 0;
    for (unsigned c = 0; c < g.ncpus; c++) {
        while (__atomic_load_n(&g.cpu[c].report_done, __ATOMIC_ACQUIRE) != seen_report[0] &&
               !g.cpu[c].panicked && rdtsc() < deadline)
            cpu_relax();
        bool answered = g.cpu[c].report_done == seen_report[0];
        if (!answered || !g.cpu[c].report_ok) {
            all_ok = false;
            pos += (size_t)g_snprintf(buf + pos, sizeof(buf) - pos, " vcpu%u:%s", c,
                                      answered            ? g.cpu[c].report_what
                                      : g.cpu[c].panicked ? "panicked"
                                                          : "no-answer");
            if (pos >= sizeof(buf))
                pos = sizeof(buf) - 1;
        }
    }
    if (all_ok)
        print("REPORT ok\n");
    else
        PRINTF("REPORT FAIL%s\n", buf);
}

static bool report_requested(unsigned cpu)
{
    uint32_t seq = __atomic_load_n(&g.report_seq, __ATOMIC_ACQUIRE);
    if (seq == seen_report[cpu])
        return false;
    seen_report[cpu] = seq;
    return true;
}

static void maybe_poweroff(unsigned cpu)
{
    if (cpu != 0 || !g.poweroff_after)
        return;
    /* TSC time when it was calibrated (timer ticks can be lost on a busy
     * host), else ticks. */
    bool due = g.timer_calibrated
                   ? rdtsc() - g.boot_tsc >= g.poweroff_after * TICK_HZ * g.tsc_per_tick
                   : g.ticks >= g.poweroff_after * TICK_HZ;
    if (due) {
        print("godwit-guest: powering off\n");
        sys(SYS_POWEROFF, 0, 0);
    }
}

/* ---- mem-invariant ------------------------------------------------------------ */

/* Byte 0 of each page: equal to the predecessor, except at most one place
 * where it is one less. */
static bool invariant_holds(const struct region *r, char *what, size_t len)
{
    unsigned drops = 0;
    uint8_t prev = *(volatile uint8_t *)page_addr(r->first_page);
    for (uint64_t i = 1; i < r->npages; i++) {
        uint8_t v = *(volatile uint8_t *)page_addr(r->first_page + i);
        if (v == prev)
            continue;
        if ((uint8_t)(prev - 1) == v && ++drops == 1) {
            prev = v;
            continue;
        }
        g_snprintf(what, len, "invariant-broken-at-page-%lu", i);
        return false;
    }
    return true;
}

static void mem_invariant(unsigned cpu)
{
    const struct region *r = &g.cpu[cpu].region;
    PRINTF("vcpu%u: workload mem-invariant started\n", cpu);
    for (;;) {
        uint64_t idx = r->first_page, left = r->npages;
        for (unsigned i = 0; i < g.nranges && left; i++) {
            uint64_t n = (g.ranges[i].end - g.ranges[i].start) / 4096;
            if (idx >= n) {
                idx -= n;
                continue;
            }
            volatile uint8_t *p = (volatile uint8_t *)(g.ranges[i].start + idx * 4096);
            uint64_t take = n - idx < left ? n - idx : left;
            for (uint64_t k = 0; k < take; k++) {
                p[k * 4096]++;
                if ((k & 4095) == 0 && report_requested(cpu)) {
                    char what[64] = "";
                    bool ok = invariant_holds(r, what, sizeof(what));
                    answer_report(cpu, ok, what);
                }
            }
            left -= take;
            idx = 0;
        }
        print(".");
        maybe_poweroff(cpu);
    }
}

/* ---- dirty ----------------------------------------------------------------------- */

/* Page j of the working set holds the last count written into it: the
 * largest w < written with w = j (mod pages), or 0 if never written. A page
 * a migration lost or left stale breaks this. */
static bool dirty_holds(const struct region *r, uint64_t pages, uint64_t written, char *what,
                        size_t len)
{
    for (uint64_t j = 0; j < pages; j++) {
        uint64_t want = written > j ? j + (written - 1 - j) / pages * pages : 0;
        uint64_t got = *(volatile uint64_t *)page_addr(r->first_page + j);
        if (got != want) {
            g_snprintf(what, len, "dirty-page-%lu-holds-%lu-not-%lu", j, got, want);
            return false;
        }
    }
    return true;
}

static void dirty(unsigned cpu)
{
    const struct region *r = &g.cpu[cpu].region;
    uint64_t pages = g.wss_bytes ? g.wss_bytes / 4096 : r->npages;
    if (pages > r->npages)
        pages = r->npages;
    if (!pages)
        pages = 1;
    PRINTF("vcpu%u: workload dirty started, wss %lu pages, rate %lu pages/s\n", cpu, pages, g.rate);
    uint64_t written = 0, idx = 0, beat = g.cpu_ticks[cpu], tick = 0, budget_tick = g.cpu_ticks[cpu], budget = 0;
    uint64_t per_tick = g.rate ? (g.rate + TICK_HZ - 1) / TICK_HZ : 0;
    for (;;) {
        bool idle = g.passes && written >= g.passes * pages;
        for (unsigned k = 0; k < 256 && !idle; k++) {
            if (per_tick) {
                if (g.cpu_ticks[cpu] != budget_tick) {
                    budget_tick = g.cpu_ticks[cpu];
                    budget = 0;
                }
                if (budget >= per_tick)
                    break;
                budget++;
            }
            volatile uint64_t *p = (volatile uint64_t *)page_addr(r->first_page + idx);
            *p = written;
            written++;
            if (++idx == pages)
                idx = 0;
        }
        if (idle)
            sys(SYS_IDLE, 0, 0);
        if (g.cpu_ticks[cpu] - beat >= g.beat_ticks) {
            beat = g.cpu_ticks[cpu];
            PRINTF("heartbeat vcpu=%u tick=%lu pages=%lu\n", cpu, ++tick, written);
            maybe_poweroff(cpu);
        }
        if (report_requested(cpu)) {
            char what[64] = "";
            bool ok = dirty_holds(r, pages, written, what, sizeof(what));
            answer_report(cpu, ok, what);
        }
    }
}

/* ---- verify ------------------------------------------------------------------------ */

#define VERIFY_MAGIC 0x676f64776974ULL /* "godwit" */

static void verify(unsigned cpu)
{
    const struct region *r = &g.cpu[cpu].region;
    /* The generation table lives in the first pages of the region. */
    uint64_t table_pages = (r->npages * 4 + 4095) / 4096;
    if (table_pages >= r->npages) {
        PRINTF("vcpu%u: verify region too small\n", cpu);
        for (;;)
            cpu_relax();
    }
    uint32_t *gen = (uint32_t *)page_addr(r->first_page);
    uint64_t first = r->first_page + table_pages, n = r->npages - table_pages;
    /* The table is contiguous only within one RAM range: check. */
    if (page_addr(r->first_page + table_pages - 1) != (uint64_t)gen + (table_pages - 1) * 4096) {
        PRINTF("vcpu%u: verify table crosses a hole\n", cpu);
        for (;;)
            cpu_relax();
    }
    PRINTF("vcpu%u: workload verify started, %lu pages\n", cpu, n);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t *p = (uint64_t *)page_addr(first + i);
        p[0] = VERIFY_MAGIC;
        p[1] = first + i;
        p[2] = 0;
        p[511] = ~(first + i);
        gen[i] = 0;
    }
    uint64_t errors = 0, pass = 0, beat = g.cpu_ticks[cpu];
    for (;;) {
        bool reporting = report_requested(cpu);
        uint64_t errors_before = errors;
        for (uint64_t i = 0; i < n; i++) {
            volatile uint64_t *p = (volatile uint64_t *)page_addr(first + i);
            uint64_t want_gen = gen[i];
            if (p[0] != VERIFY_MAGIC || p[1] != first + i || p[2] != want_gen ||
                p[511] != ~((first + i) ^ want_gen)) {
                if (errors++ < 10)
                    PRINTF("CORRUPT page=0x%lx expected=%lu got=%lu\n", page_addr(first + i),
                           want_gen, p[2]);
                p[0] = VERIFY_MAGIC;
                p[1] = first + i;
            }
            want_gen++;
            p[2] = want_gen;
            p[511] = ~((first + i) ^ want_gen);
            gen[i] = (uint32_t)want_gen;
        }
        pass++;
        if (reporting)
            answer_report(cpu, errors == errors_before, "corrupt-pages");
        if (pass == 1 || g.cpu_ticks[cpu] - beat >= 2 * TICK_HZ) {
            beat = g.cpu_ticks[cpu];
            PRINTF("verify vcpu=%u pass=%lu %s\n", cpu, pass, errors ? "FAILING" : "ok");
        }
        maybe_poweroff(cpu);
    }
}

/* ---- fpu ----------------------------------------------------------------------------- */

static uint8_t fpu_want[16][32] __attribute__((aligned(32)));
static uint8_t fpu_got[MAX_CPUS][16][32] __attribute__((aligned(32)));

/* Load the registers, spin with them live (timer interrupts arrive), store. */
static void fpu_round(unsigned cpu, bool avx)
{
    if (avx) {
        __asm__ volatile(
            "vmovdqa 0(%0), %%ymm0\n vmovdqa 32(%0), %%ymm1\n vmovdqa 64(%0), %%ymm2\n"
            "vmovdqa 96(%0), %%ymm3\n vmovdqa 128(%0), %%ymm4\n vmovdqa 160(%0), %%ymm5\n"
            "vmovdqa 192(%0), %%ymm6\n vmovdqa 224(%0), %%ymm7\n vmovdqa 256(%0), %%ymm8\n"
            "vmovdqa 288(%0), %%ymm9\n vmovdqa 320(%0), %%ymm10\n vmovdqa 352(%0), %%ymm11\n"
            "vmovdqa 384(%0), %%ymm12\n vmovdqa 416(%0), %%ymm13\n vmovdqa 448(%0), %%ymm14\n"
            "vmovdqa 480(%0), %%ymm15\n"
            "mov $20000000, %%ecx\n1: pause\n dec %%ecx\n jnz 1b\n"
            "vmovdqa %%ymm0, 0(%1)\n vmovdqa %%ymm1, 32(%1)\n vmovdqa %%ymm2, 64(%1)\n"
            "vmovdqa %%ymm3, 96(%1)\n vmovdqa %%ymm4, 128(%1)\n vmovdqa %%ymm5, 160(%1)\n"
            "vmovdqa %%ymm6, 192(%1)\n vmovdqa %%ymm7, 224(%1)\n vmovdqa %%ymm8, 256(%1)\n"
            "vmovdqa %%ymm9, 288(%1)\n vmovdqa %%ymm10, 320(%1)\n vmovdqa %%ymm11, 352(%1)\n"
            "vmovdqa %%ymm12, 384(%1)\n vmovdqa %%ymm13, 416(%1)\n vmovdqa %%ymm14, 448(%1)\n"
            "vmovdqa %%ymm15, 480(%1)\n"
            :: "r"(fpu_want), "r"(fpu_got[cpu]) : "rcx", "memory");
    } else {
        __asm__ volatile(
            "movdqa 0(%0), %%xmm0\n movdqa 32(%0), %%xmm1\n movdqa 64(%0), %%xmm2\n"
            "movdqa 96(%0), %%xmm3\n movdqa 128(%0), %%xmm4\n movdqa 160(%0), %%xmm5\n"
            "movdqa 192(%0), %%xmm6\n movdqa 224(%0), %%xmm7\n movdqa 256(%0), %%xmm8\n"
            "movdqa 288(%0), %%xmm9\n movdqa 320(%0), %%xmm10\n movdqa 352(%0), %%xmm11\n"
            "movdqa 384(%0), %%xmm12\n movdqa 416(%0), %%xmm13\n movdqa 448(%0), %%xmm14\n"
            "movdqa 480(%0), %%xmm15\n"
            "mov $20000000, %%ecx\n1: pause\n dec %%ecx\n jnz 1b\n"
            "movdqa %%xmm0, 0(%1)\n movdqa %%xmm1, 32(%1)\n movdqa %%xmm2, 64(%1)\n"
            "movdqa %%xmm3, 96(%1)\n movdqa %%xmm4, 128(%1)\n movdqa %%xmm5, 160(%1)\n"
            "movdqa %%xmm6, 192(%1)\n movdqa %%xmm7, 224(%1)\n movdqa %%xmm8, 256(%1)\n"
            "movdqa %%xmm9, 288(%1)\n movdqa %%xmm10, 320(%1)\n movdqa %%xmm11, 352(%1)\n"
            "movdqa %%xmm12, 384(%1)\n movdqa %%xmm13, 416(%1)\n movdqa %%xmm14, 448(%1)\n"
            "movdqa %%xmm15, 480(%1)\n"
            :: "r"(fpu_want), "r"(fpu_got[cpu]) : "rcx", "memory");
    }
}

static void fpu(unsigned cpu)
{
    bool avx = g.has_avx;
    for (unsigned r = 0; r < 16; r++)
        for (unsigned b = 0; b < 32; b++)
            fpu_want[r][b] = (uint8_t)(r * 37 + b * 11 + 1);
    PRINTF("vcpu%u: workload fpu started (%s)\n", cpu, avx ? "ymm0-15" : "xmm0-15");
    uint64_t rounds = 0, errors = 0, beat = g.cpu_ticks[cpu];
    unsigned width = avx ? 32 : 16;
    for (;;) {
        bool reporting = report_requested(cpu);
        fpu_round(cpu, avx);
        rounds++;
        bool ok = true;
        for (unsigned r = 0; r < 16; r++)
            for (unsigned b = 0; b < width; b++)
                if (fpu_got[cpu][r][b] != fpu_want[r][b]) {
                    if (ok && errors++ < 10)
                        PRINTF("FPU-CORRUPT vcpu=%u reg=%u byte=%u got=%u want=%u\n", cpu, r, b,
                               fpu_got[cpu][r][b], fpu_want[r][b]);
                    ok = false;
                }
        if (reporting)
            answer_report(cpu, ok && !errors, "fpu-corrupt");
        if (g.cpu_ticks[cpu] - beat >= 2 * TICK_HZ) {
            beat = g.cpu_ticks[cpu];
            PRINTF("fpu vcpu=%u rounds=%lu %s\n", cpu, rounds, errors ? "FAILING" : "ok");
        }
        maybe_poweroff(cpu);
    }
}

/* ---- time ------------------------------------------------------------------------------ */

static void time_wl(unsigned cpu)
{
    /* Only this workload needs the TSC rate: measure it over 0.5 s unless
     * ring 0 measured it against the PIT. */
    calibrate();
    PRINTF("vcpu%u: workload time started, %lu TSC/tick\n", cpu, tsc_per_tick);
    uint64_t last_tsc = rdtsc(), last_ticks = g.cpu_ticks[cpu], ticks_tsc = last_tsc;
    uint64_t errors = 0, beat = g.cpu_ticks[cpu];
    for (;;) {
        bool reporting = report_requested(cpu);
        uint64_t errors_before = errors;
        uint64_t now = rdtsc();
        if (now < last_tsc) {
            if (errors++ < 10)
                PRINTF("TIME-ERROR vcpu=%u tsc went backwards %lu -> %lu\n", cpu, last_tsc, now);
        }
        last_tsc = now;
        uint64_t t = g.cpu_ticks[cpu];
        if (t != last_ticks) {
            last_ticks = t;
            ticks_tsc = now;
        } else if (now - ticks_tsc > 1000 * tsc_per_tick) {
            /* 10 s of TSC time without a timer tick on this vCPU. */
            if (errors++ < 10)
                PRINTF("TIME-ERROR vcpu=%u timer stopped at tick %lu\n", cpu, t);
            ticks_tsc = now;
        }
        if (reporting)
            answer_report(cpu, errors == errors_before && !errors, "time-error");
        if (g.cpu_ticks[cpu] - beat >= 2 * TICK_HZ) {
            beat = g.cpu_ticks[cpu];
            PRINTF("time vcpu=%u ticks=%lu %s\n", cpu, t, errors ? "FAILING" : "ok");
        }
        maybe_poweroff(cpu);
    }
}

/* ---- idle, crash ------------------------------------------------------------------ */

/* Halts between timer ticks; answers reports. */
static void idle(unsigned cpu)
{
    PRINTF("vcpu%u: workload idle started\n", cpu);
    for (;;) {
        sys(SYS_IDLE, 0, 0);
        if (report_requested(cpu))
            answer_report(cpu, true, "");
        maybe_poweroff(cpu);
    }
}

/* Exercises the error path: a ring-3 page fault far above RAM, which the
 * guest reports as GUEST-PANIC vector=14. */
static void crash(unsigned cpu)
{
    PRINTF("vcpu%u: workload crash started\n", cpu);
    *(volatile uint64_t *)0x7ff000000000ULL = 1;
    for (;;)
        cpu_relax();
}

void user_main(unsigned cpu)
{
    if (g.timer_calibrated) /* else the time workload measures it */
        tsc_per_tick = g.tsc_per_tick;
    seen_report[cpu] = g.report_seq;
    switch (g.cpu[cpu].wl) {
    case WL_MEM_INVARIANT: mem_invariant(cpu); break;
    case WL_DIRTY: dirty(cpu); break;
    case WL_VERIFY: verify(cpu); break;
    case WL_FPU: fpu(cpu); break;
    case WL_TIME: time_wl(cpu); break;
    case WL_IDLE: idle(cpu); break;
    case WL_CRASH: crash(cpu); break;
    default: break;
    }
    for (;;)
        cpu_relax();
}
