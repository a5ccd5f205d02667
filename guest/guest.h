/* The test guest: shared definitions between ring 0 (kernel.c) and the
 * ring-3 workloads (user.c). Freestanding; no libc. */
#ifndef GUEST_H
#define GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_CPUS        16
#define MAX_RANGES      8
#define TICK_HZ         100
#define KSTACK_SIZE     8192
#define USTACK_SIZE     8192

/* System calls through the ud2 gate: rax = number, rdi/rsi/rdx = args. */
enum { SYS_WRITE = 1, SYS_POWEROFF = 2, SYS_IDLE = 3 };

enum workload { WL_MEM_INVARIANT, WL_DIRTY, WL_VERIFY, WL_FPU, WL_TIME, WL_IDLE, WL_CRASH, WL__MAX };

struct range {
    uint64_t start, end; /* guest-physical, page aligned */
};

/* A workload's memory: a slice of the RAM above 1 MiB, as page indices
 * into the list of RAM ranges. */
struct region {
    uint64_t first_page, npages;
};

struct cpu_info {
    volatile uint32_t online;
    volatile uint32_t panicked;     /* set by GUEST-PANIC: this vCPU halted */
    uint32_t apic_id;
    enum workload wl;
    struct region region;
    /* Self-check reports: the cpu answers request `report_seq` here. */
    volatile uint32_t report_done;
    volatile uint32_t report_ok;
    char report_what[64];
};

struct guest_shared {
    volatile uint64_t ticks;        /* 100 Hz, advanced by cpu 0's timer */
    volatile uint64_t cpu_ticks[MAX_CPUS];
    volatile uint32_t report_seq;   /* bumped by the serial 'v' command */
    uint32_t ncpus;
    const char *cpus_from;          /* "acpi", "cmdline" or "default" */
    uint64_t ram_pages;             /* pages above 1 MiB */
    uint64_t ram_bytes;             /* all RAM in the memory map */
    unsigned nranges;
    struct range ranges[MAX_RANGES];/* RAM above 1 MiB */
    uint64_t wss_bytes;             /* dirty: working set (0 = its region) */
    uint64_t rate;                  /* dirty: pages/s (0 = as fast as possible) */
    uint64_t poweroff_after;        /* seconds, 0 = never */
    uint64_t boot_tsc;              /* TSC when the BSP entered C */
    uint64_t passes;                /* dirty: stop writing after N passes (0 = never) */
    uint64_t beat_ticks;            /* dirty: heartbeat period in ticks (default 100) */
    bool has_avx;
    bool timer_calibrated;          /* LAPIC timer measured against the PIT */
    uint64_t tsc_per_tick;          /* TSC counts per tick (PIT-measured; else ring 3 measures) */
    uint64_t lapic_hz;              /* LAPIC timer input clock (after divide by 16) */
    struct cpu_info cpu[MAX_CPUS];
};

extern struct guest_shared g;

/* lib.c (usable from both rings; no vector registers) */
size_t g_strlen(const char *s);
int g_strncmp(const char *a, const char *b, size_t n);
void *g_memset(void *d, int c, size_t n);
void *g_memcpy(void *d, const void *s, size_t n);
/* Minimal formatter: %s %d %u %x %lx %lu %ld %c %%; returns length. */
int g_snprintf(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
uint64_t g_parse_size(const char *s, const char **end);
const char *workload_name(enum workload w);

/* RAM page index (0 = 1 MiB) -> physical address. */
uint64_t page_addr(uint64_t idx);

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline void cpu_relax(void) { __asm__ volatile("pause"); }

/* user.c */
void user_main(unsigned cpu) __attribute__((noreturn));

#endif
