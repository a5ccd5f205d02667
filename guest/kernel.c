/* Test guest ring 0: set-up, interrupts and the few services ring 3 asks
 * for through the ud2 gate. Everything here runs emulated (slowly) on PVM,
 * so it does as little as possible. Compiled without vector registers. */
#include "guest.h"

#define LAPIC_BASE   0xfee00000UL
#define IOAPIC_BASE  0xfec00000UL
#define COM1         0x3f8
#define POWER_PORT   0x604
#define PM1_PWRBTN   0x0100  /* PWRBTN_STS in PM1_STS, PWRBTN_EN in PM1_EN */

#define VEC_TIMER    0x20
#define VEC_SERIAL   0x24
#define VEC_SCI      0x29
#define VEC_SPURIOUS 0xff

struct hvm_start_info {
    uint32_t magic, version, flags, nr_modules;
    uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    uint32_t memmap_entries, reserved;
};

struct hvm_memmap_entry {
    uint64_t addr, size;
    uint32_t type, reserved;
};

struct frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error, rip, cs, rflags, rsp, ss;
};

struct tss {
    uint32_t reserved0;
    uint64_t rsp0, rsp1, rsp2, reserved1, ist[7], reserved2;
    uint16_t reserved3, iomap;
} __attribute__((packed));

struct idt_entry {
    uint16_t off0, sel;
    uint8_t ist, type;
    uint16_t off1;
    uint32_t off2, zero;
} __attribute__((packed));

struct guest_shared g;
uint8_t kstacks[MAX_CPUS][KSTACK_SIZE] __attribute__((aligned(16)));
static uint8_t ustacks[MAX_CPUS][USTACK_SIZE] __attribute__((aligned(16)));
static struct tss tss[MAX_CPUS];
static struct idt_entry idt[256];
static volatile uint32_t serial_lock;
static char cmdline[1024];
/* xAPIC id -> vCPU index (0xff: none); read by the AP entry in boot.S. */
uint8_t apic_to_cpu[256];

extern uint64_t gdt[];
extern uint8_t gdt_tss[];
extern struct { uint16_t limit; uint64_t base; } __attribute__((packed)) gdt_ptr;
extern const uint64_t isr_stub_base;
extern void enter_user(uint64_t rip, uint64_t rsp, uint64_t cpu) __attribute__((noreturn));

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint16_t inw(uint16_t port)
{
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint32_t lapic_read(uint32_t reg) { return *(volatile uint32_t *)(LAPIC_BASE + reg); }
static inline void lapic_write(uint32_t reg, uint32_t v) { *(volatile uint32_t *)(LAPIC_BASE + reg) = v; }

static void ioapic_write(uint32_t reg, uint32_t v)
{
    *(volatile uint32_t *)IOAPIC_BASE = reg;
    *(volatile uint32_t *)(IOAPIC_BASE + 0x10) = v;
}

/* ---- serial output ------------------------------------------------------- */

static void serial_lock_take(void)
{
    while (__atomic_exchange_n(&serial_lock, 1, __ATOMIC_ACQUIRE))
        cpu_relax();
}

static void serial_lock_drop(void) { __atomic_store_n(&serial_lock, 0, __ATOMIC_RELEASE); }

static void serial_write(const char *s, size_t n)
{
    serial_lock_take();
    while (n) {
        /* THR empty means the whole 16-byte FIFO is: send a burst with one
         * string instruction (one VM exit instead of two per byte). */
        while (!(inb(COM1 + 5) & 0x20))
            cpu_relax();
        size_t burst = n < 16 ? n : 16;
        n -= burst;
        __asm__ volatile("rep outsb" : "+S"(s), "+c"(burst) : "d"(COM1) : "memory");
    }
    serial_lock_drop();
}

static void kprint(const char *fmt_done) { serial_write(fmt_done, g_strlen(fmt_done)); }

/* ACPI fixed-feature power button, from the FADT (0: none). */
static struct {
    uint16_t pm1_evt;            /* PM1a_EVT_BLK: PM1_STS, PM1_EN at +2 */
    uint16_t pm1_cnt;            /* PM1a_CNT_BLK */
    uint32_t sci_gsi;
    bool level, active_low;      /* SCI trigger and polarity */
} acpi_pm = { 0, POWER_PORT, 0, true, true };

static void power_off(void)
{
    outw(acpi_pm.pm1_cnt, 0x2000);
    /* Still here: no power-off device (e.g. QEMU with qboot). */
    kprint("godwit-guest: power-off port ignored, halting this vcpu\n");
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* ---- interrupts ------------------------------------------------------------ */

/* The vCPU we run on, from the kernel stack we are on (every interrupt and
 * gate entry runs on its vCPU's stack): no LAPIC access needed. */
static unsigned this_cpu(const struct frame *f)
{
    return (unsigned)(((uintptr_t)f - (uintptr_t)kstacks) / KSTACK_SIZE);
}

static void panic_frame(const struct frame *f)
{
    char buf[160];
    uint64_t cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    unsigned cpu = this_cpu(f);
    if (cpu < MAX_CPUS)
        g.cpu[cpu].panicked = 1;
    g_snprintf(buf, sizeof(buf), "GUEST-PANIC vector=%lu rip=0x%lx cr2=0x%lx error=0x%lx cs=0x%lx vcpu=%u\n",
               f->vector, f->rip, cr2, f->error, f->cs, cpu);
    kprint(buf);
    for (;;)
        __asm__ volatile("cli; hlt");
}

static void syscall_gate(struct frame *f)
{
    switch (f->rax) {
    case SYS_WRITE: {
        const char *p = (const char *)f->rdi;
        size_t n = f->rsi < 512 ? f->rsi : 512;
        serial_write(p, n);
        f->rax = n;
        break;
    }
    case SYS_POWEROFF:
        power_off();
        break;
    case SYS_IDLE:
        /* Halt until the next interrupt: an idle vCPU costs the host nothing. */
        __asm__ volatile("sti; hlt; cli");
        f->rax = 0;
        break;
    default:
        f->rax = (uint64_t)-1;
        break;
    }
    f->rip += 2; /* skip the ud2 */
}

static void serial_irq(void)
{
    while (inb(COM1 + 5) & 0x01) {
        uint8_t c = inb(COM1);
        if (c == 'v')
            __atomic_fetch_add(&g.report_seq, 1, __ATOMIC_RELEASE);
        else if (c == 'p')
            power_off();
    }
}

/* The SCI: a pressed power button (PWRBTN_STS) is acknowledged (write 1 to
 * clear, which lowers the level-triggered line) and powers off. */
static void acpi_sci(void)
{
    uint16_t sts = inw(acpi_pm.pm1_evt);
    if (!(sts & PM1_PWRBTN))
        return;
    outw(acpi_pm.pm1_evt, PM1_PWRBTN);
    kprint("godwit-guest: power button\n");
    power_off();
}

void isr_dispatch(struct frame *f)
{
    switch (f->vector) {
    case VEC_TIMER: {
        unsigned cpu = this_cpu(f);
        if (cpu < MAX_CPUS)
            g.cpu_ticks[cpu]++;
        if (cpu == 0)
            g.ticks++;
        lapic_write(0xb0, 0);
        return;
    }
    case VEC_SERIAL:
        serial_irq();
        lapic_write(0xb0, 0);
        return;
    case VEC_SCI:
        acpi_sci();
        lapic_write(0xb0, 0);
        return;
    case VEC_SPURIOUS:
        return;
    case 6:
        if ((f->cs & 3) == 3 && *(const uint16_t *)f->rip == 0x0b0f) {
            syscall_gate(f);
            return;
        }
        break;
    default:
        break;
    }
    panic_frame(f);
}

/* ---- set-up ---------------------------------------------------------------- */

static void setup_idt(void)
{
    for (unsigned v = 0; v < 256; v++) {
        uint64_t a = isr_stub_base + v * 16;
        idt[v] = (struct idt_entry){ (uint16_t)a, 0x08, 0, 0x8e, (uint16_t)(a >> 16),
                                     (uint32_t)(a >> 32), 0 };
    }
}

static void load_cpu_tables(unsigned cpu)
{
    struct { uint16_t limit; uint64_t base; } __attribute__((packed)) idtr = { sizeof(idt) - 1,
                                                                             (uint64_t)idt };
    __asm__ volatile("lgdt %0" ::"m"(gdt_ptr));
    __asm__ volatile("lidt %0" ::"m"(idtr));
    tss[cpu].rsp0 = (uint64_t)&kstacks[cpu + 1];
    tss[cpu].iomap = sizeof(struct tss);
    uint64_t base = (uint64_t)&tss[cpu], limit = sizeof(struct tss) - 1;
    uint64_t *d = (uint64_t *)(gdt_tss + cpu * 16);
    d[0] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ULL << 40) |
           ((limit >> 16) & 0xf) << 48 | ((base >> 24) & 0xff) << 56;
    d[1] = base >> 32;
    uint16_t sel = (uint16_t)(0x30 + cpu * 16);
    __asm__ volatile("ltr %0" ::"r"(sel));
}

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

/* SSE always; AVX state in XCR0 when the CPU has it. */
static void setup_fpu(void)
{
    uint32_t a, b, c, d;
    cpuid(1, 0, &a, &b, &c, &d);
    uint64_t cr0, cr4;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    cr0 = (cr0 & ~(1ULL << 2)) | (1ULL << 1); /* EM off, MP on */
    __asm__ volatile("mov %0, %%cr0" ::"r"(cr0));
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    cr4 |= (1 << 9) | (1 << 10); /* OSFXSR, OSXMMEXCPT */
    bool xsave = c & (1u << 26), avx = c & (1u << 28);
    if (xsave)
        cr4 |= 1 << 18; /* OSXSAVE */
    cr4 &= ~(1ULL << 2); /* TSD off: ring 3 reads the TSC */
    __asm__ volatile("mov %0, %%cr4" ::"r"(cr4));
    if (xsave) {
        uint32_t xcr0 = 0x3 | (avx ? 0x4 : 0);
        __asm__ volatile("xsetbv" ::"c"(0), "a"(xcr0), "d"(0));
    }
    g.has_avx = xsave && avx;
    __asm__ volatile("fninit");
}

/* LAPIC timer counts per tick, measured once by the BSP against the PIT. */
static uint32_t lapic_per_tick;
#define PIT_HZ 1193182
#define CALIB_PIT_COUNTS (PIT_HZ / 200) /* 5 ms */

struct clock_sample {
    uint64_t tsc;     /* midpoint of the sample */
    uint64_t span;    /* TSC counts the sample took */
    uint32_t lapic;   /* LAPIC timer current count (counts down) */
    uint16_t pit;     /* PIT channel 2 count (counts down) */
};

static uint16_t pit2_read(void)
{
    outb(0x43, 0x80); /* latch channel 2 */
    uint8_t lo = inb(0x42);
    return (uint16_t)(lo | inb(0x42) << 8);
}

static uint64_t min_span; /* quickest sample seen */

/* The quickest of a few back-to-back samples: a sample in which the host
 * preempted us takes long and is not chosen. */
static struct clock_sample clock_sample(void)
{
    struct clock_sample best = { .span = ~0ULL };
    for (int i = 0; i < 3; i++) {
        uint64_t t0 = rdtsc();
        uint32_t l = lapic_read(0x390);
        uint16_t p = pit2_read();
        uint64_t t1 = rdtsc();
        if (t1 - t0 < best.span)
            best = (struct clock_sample){ t0 + (t1 - t0) / 2, t1 - t0, l, p };
    }
    if (best.span < min_span)
        min_span = best.span;
    return best;
}

/* One measurement over CALIB_PIT_COUNTS: PIT channel 2 counts down from
 * 0xffff (gate: port 0x61 bit 0) and the LAPIC timer from 0xffffffff; both
 * are sampled with the TSC at the start and at the end. Returns false if
 * the PIT does not count, wrapped, or if a chosen sample was slow
 * (preempted). */
static bool pit_measure(struct clock_sample *a, struct clock_sample *b)
{
    lapic_write(0x380, 0xffffffff);
    outb(0x61, (uint8_t)((inb(0x61) & ~0x02) | 0x01));
    outb(0x43, 0xb0); /* channel 2, lo/hi, mode 0 */
    outb(0x42, 0xff);
    outb(0x42, 0xff);
    *a = *b = clock_sample();
    uint64_t give_up = a->tsc + 20000000000ULL;
    while (b->tsc < give_up && (uint16_t)(a->pit - b->pit) < CALIB_PIT_COUNTS)
        *b = clock_sample();
    lapic_write(0x380, 0);
    /* OUT high: the count reached 0 and wrapped (we were away > 50 ms), so
     * the PIT difference is ambiguous. */
    bool wrapped = inb(0x61) & 0x20;
    return !wrapped && (uint16_t)(a->pit - b->pit) >= CALIB_PIT_COUNTS && a->lapic - b->lapic >= 1000 &&
           a->span <= 4 * min_span && b->span <= 4 * min_span;
}

/* Measure the LAPIC timer and the TSC against the PIT (1.193182 MHz) over
 * 5 ms. Each port or LAPIC access is a VM exit (~25 µs here), so a sample
 * is ~100 µs wide and the error stays near 0.1%; a measurement in which the
 * host preempted us inside a sample is repeated (up to 5 times). Falls
 * back to KVM's default APIC bus (1 GHz) if the PIT does not count. */
static void calibrate_timer(void)
{
    struct clock_sample a, b;
    lapic_write(0x3e0, 0x3);                 /* divide by 16 */
    lapic_write(0x320, 0x10000 | VEC_TIMER); /* masked one-shot */
    min_span = ~0ULL;
    for (int tries = 0; tries < 5; tries++) {
        if (!pit_measure(&a, &b))
            continue;
        uint32_t dpit = (uint16_t)(a.pit - b.pit);
        g.lapic_hz = (uint64_t)(a.lapic - b.lapic) * PIT_HZ / dpit;
        g.tsc_per_tick = (b.tsc - a.tsc) * PIT_HZ / dpit / TICK_HZ;
        lapic_per_tick = (uint32_t)(g.lapic_hz / TICK_HZ);
        g.timer_calibrated = true;
        return;
    }
    lapic_per_tick = 1000000000 / 16 / TICK_HZ;
    g.lapic_hz = 1000000000 / 16;
}

static void setup_lapic(void)
{
    lapic_write(0xf0, 0x100 | VEC_SPURIOUS);  /* enable, spurious vector */
    lapic_write(0x80, 0);                      /* task priority */
    lapic_write(0x3e0, 0x3);                   /* divide by 16 */
    lapic_write(0x320, 0x20000 | VEC_TIMER);   /* periodic */
    lapic_write(0x380, lapic_per_tick);
}

#define MAPPED_LIMIT ((uint64_t)20 << 30) /* boot.S maps 0..20 GiB */

static void add_range(uint64_t s, uint64_t e)
{
    unsigned i = g.nranges;
    while (i > 0 && g.ranges[i - 1].start > s) { /* keep sorted */
        g.ranges[i] = g.ranges[i - 1];
        i--;
    }
    g.ranges[i] = (struct range){ s, e };
    g.nranges++;
}

/* RAM above 1 MiB, page aligned, sorted, adjacent ranges merged, clipped to
 * what the page tables map. */
static void parse_memmap(const struct hvm_start_info *si)
{
    const struct hvm_memmap_entry *mm = (const void *)si->memmap_paddr;
    g.nranges = 0;
    g.ram_pages = 0;
    g.ram_bytes = 0;
    for (uint32_t i = 0; si->memmap_paddr && i < si->memmap_entries; i++) {
        if (mm[i].type != 1)
            continue;
        g.ram_bytes += mm[i].size;
        uint64_t s = mm[i].addr, e = mm[i].addr + mm[i].size;
        if (s < 0x100000)
            s = 0x100000;
        if (e > MAPPED_LIMIT)
            e = MAPPED_LIMIT;
        s = (s + 4095) & ~4095ULL;
        e &= ~4095ULL;
        if (e > s && g.nranges < MAX_RANGES)
            add_range(s, e);
    }
    unsigned n = 0;
    for (unsigned i = 0; i < g.nranges; i++) {
        if (n && g.ranges[n - 1].end >= g.ranges[i].start) {
            if (g.ranges[i].end > g.ranges[n - 1].end)
                g.ranges[n - 1].end = g.ranges[i].end;
        } else {
            g.ranges[n++] = g.ranges[i];
        }
    }
    g.nranges = n;
    for (unsigned i = 0; i < n; i++)
        g.ram_pages += (g.ranges[i].end - g.ranges[i].start) / 4096;
}

/* ---- ACPI: the vCPUs from the MADT ------------------------------------------ */

struct acpi_rsdp {
    char sig[8];
    uint8_t csum;
    char oem[6];
    uint8_t rev;
    uint32_t rsdt;
    uint32_t len;
    uint64_t xsdt;
} __attribute__((packed));

struct acpi_sdt {
    char sig[4];
    uint32_t len;
    uint8_t rev, csum;
    char oem[6], oem_table[8];
    uint32_t oem_rev, creator, creator_rev;
} __attribute__((packed));

static bool acpi_sum_ok(const void *p, size_t n)
{
    uint8_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum = (uint8_t)(sum + ((const uint8_t *)p)[i]);
    return sum == 0;
}

static const struct acpi_sdt *acpi_find(const struct acpi_rsdp *rsdp, const char *sig)
{
    bool x = rsdp->rev >= 2 && rsdp->xsdt;
    const struct acpi_sdt *root = (const void *)(x ? rsdp->xsdt : (uint64_t)rsdp->rsdt);
    if (!root || root->len < sizeof(*root) || !acpi_sum_ok(root, root->len))
        return 0;
    size_t esz = x ? 8 : 4, n = (root->len - sizeof(*root)) / esz;
    const uint8_t *ents = (const uint8_t *)(root + 1);
    for (size_t i = 0; i < n; i++) {
        uint64_t a = 0;
        g_memcpy(&a, ents + i * esz, esz);
        const struct acpi_sdt *t = (const void *)a;
        if (t && g_strncmp(t->sig, sig, 4) == 0 && acpi_sum_ok(t, t->len))
            return t;
    }
    return 0;
}

/* Enabled processors of the MADT (xAPIC and x2APIC entries, APIC ids below
 * 255), in table order: vCPU i is the i-th. Returns how many, 0 if none. */
static unsigned acpi_cpus(uint64_t rsdp_paddr)
{
    const struct acpi_rsdp *rsdp = (const void *)rsdp_paddr;
    if (g_strncmp(rsdp->sig, "RSD PTR ", 8) != 0 || !acpi_sum_ok(rsdp, 20))
        return 0;
    const struct acpi_sdt *madt = acpi_find(rsdp, "APIC");
    if (!madt)
        return 0;
    const uint8_t *p = (const uint8_t *)madt + sizeof(*madt) + 8, *end = (const uint8_t *)madt + madt->len;
    unsigned n = 0;
    for (; p + 2 <= end && p[1] >= 2 && p + p[1] <= end && n < MAX_CPUS; p += p[1]) {
        uint32_t id, flags;
        if (p[0] == 0 && p[1] >= 8) {        /* processor local APIC */
            id = p[3];
            g_memcpy(&flags, p + 4, 4);
        } else if (p[0] == 9 && p[1] >= 16) { /* processor local x2APIC */
            g_memcpy(&id, p + 4, 4);
            g_memcpy(&flags, p + 8, 4);
        } else {
            continue;
        }
        if ((flags & 1) && id < 255)
            g.cpu[n++].apic_id = id;
    }
    return n;
}

/* The SCI's GSI, trigger and polarity: ISA IRQ sci_int, unless the MADT has
 * an interrupt source override for it. The ACPI default for the SCI is
 * level, active low; "conforms" (0) in a flag field keeps the default. */
static void acpi_sci_route(const struct acpi_rsdp *rsdp, uint16_t sci_int)
{
    acpi_pm.sci_gsi = sci_int;
    const struct acpi_sdt *madt = acpi_find(rsdp, "APIC");
    if (!madt)
        return;
    const uint8_t *p = (const uint8_t *)madt + sizeof(*madt) + 8, *end = (const uint8_t *)madt + madt->len;
    for (; p + 2 <= end && p[1] >= 2 && p + p[1] <= end; p += p[1]) {
        if (p[0] != 2 || p[1] < 10 || p[2] != 0 || p[3] != sci_int)
            continue;
        uint16_t flags;
        g_memcpy(&acpi_pm.sci_gsi, p + 4, 4);
        g_memcpy(&flags, p + 8, 2);
        if ((flags & 3) == 1)
            acpi_pm.active_low = false;
        if (((flags >> 2) & 3) == 1)
            acpi_pm.level = false;
    }
}

/* The FADT's PM1a blocks and SCI, when it has a fixed-feature power button
 * (flag PWR_BUTTON clear) and is not hardware-reduced. */
static void acpi_find_power(uint64_t rsdp_paddr)
{
    const struct acpi_rsdp *rsdp = (const void *)rsdp_paddr;
    if (!rsdp || g_strncmp(rsdp->sig, "RSD PTR ", 8) != 0 || !acpi_sum_ok(rsdp, 20))
        return;
    const struct acpi_sdt *fadt = acpi_find(rsdp, "FACP");
    if (!fadt || fadt->len < 116)
        return;
    const uint8_t *f = (const uint8_t *)fadt;
    uint32_t evt, cnt, flags;
    uint16_t sci;
    g_memcpy(&sci, f + 46, 2);
    g_memcpy(&evt, f + 56, 4);
    g_memcpy(&cnt, f + 64, 4);
    g_memcpy(&flags, f + 112, 4);
    if (cnt && cnt <= 0xffff)
        acpi_pm.pm1_cnt = (uint16_t)cnt;
    if (!evt || evt > 0xffff || f[88] < 4 || (flags & (1u << 4)) || (flags & (1u << 20)))
        return;
    acpi_pm.pm1_evt = (uint16_t)evt;
    acpi_sci_route(rsdp, sci);
}

/* vCPUs: the MADT's when there are ACPI tables, else `cpus=N` (APIC ids
 * 0..N-1, as KVM numbers them), else 1. The BSP is always vCPU 0. */
static void find_cpus(uint64_t rsdp_paddr, const char *cpus_arg)
{
    uint32_t bsp = lapic_read(0x20) >> 24;
    g.cpus_from = "cmdline";
    g.ncpus = rsdp_paddr ? acpi_cpus(rsdp_paddr) : 0;
    if (g.ncpus) {
        g.cpus_from = "acpi";
    } else {
        g.ncpus = cpus_arg ? (uint32_t)g_parse_size(cpus_arg, 0) : 1;
        if (g.ncpus < 1 || g.ncpus > MAX_CPUS)
            g.ncpus = 1;
        if (!cpus_arg)
            g.cpus_from = "default";
        for (unsigned c = 0; c < g.ncpus; c++)
            g.cpu[c].apic_id = c;
    }
    for (unsigned c = 1; c < g.ncpus; c++) /* the BSP first */
        if (g.cpu[c].apic_id == bsp) {
            g.cpu[c].apic_id = g.cpu[0].apic_id;
            g.cpu[0].apic_id = bsp;
        }
    for (unsigned i = 0; i < 256; i++)
        apic_to_cpu[i] = 0xff;
    for (unsigned c = 0; c < g.ncpus; c++)
        apic_to_cpu[g.cpu[c].apic_id] = (uint8_t)c;
}

static const char *arg(const char *key)
{
    size_t kl = g_strlen(key);
    for (const char *p = cmdline; *p;) {
        while (*p == ' ')
            p++;
        if (g_strncmp(p, key, kl) == 0 && p[kl] == '=')
            return p + kl + 1;
        while (*p && *p != ' ')
            p++;
    }
    return 0;
}

static enum workload parse_workload(const char *p, size_t n)
{
    for (int w = 0; w < WL__MAX; w++) {
        const char *name = workload_name((enum workload)w);
        if (g_strlen(name) == n && g_strncmp(p, name, n) == 0)
            return (enum workload)w;
    }
    return WL__MAX;
}

static bool wl_uses_memory(enum workload w) { return w == WL_MEM_INVARIANT || w == WL_DIRTY || w == WL_VERIFY; }

static void parse_cmdline(uint64_t rsdp_paddr)
{
    const char *v;
    find_cpus(rsdp_paddr, arg("cpus"));
    const char *w = arg("workload");
    enum workload last = WL_MEM_INVARIANT;
    for (unsigned cpu = 0; cpu < g.ncpus; cpu++) {
        if (w && *w && *w != ' ') {
            const char *e = w;
            while (*e && *e != ',' && *e != ' ')
                e++;
            enum workload wl = parse_workload(w, (size_t)(e - w));
            if (wl == WL__MAX) {
                char buf[96];
                g_snprintf(buf, sizeof(buf), "godwit-guest: unknown workload, using %s\n",
                           workload_name(last));
                kprint(buf);
            } else {
                last = wl;
            }
            w = *e == ',' ? e + 1 : e;
        }
        g.cpu[cpu].wl = last;
    }
    if ((v = arg("wss")))
        g.wss_bytes = g_parse_size(v, 0);
    if ((v = arg("rate")))
        g.rate = g_parse_size(v, 0);
    if ((v = arg("passes")))
        g.passes = g_parse_size(v, 0);
    g.beat_ticks = TICK_HZ;
    if ((v = arg("beat-ms")))
        g.beat_ticks = g_parse_size(v, 0) / (1000 / TICK_HZ) ? g_parse_size(v, 0) / (1000 / TICK_HZ) : 1;
    if ((v = arg("poweroff-after")))
        g.poweroff_after = g_parse_size(v, 0);
}

/* Split the RAM above 1 MiB between the memory workloads, in cpu order,
 * in 2 MiB-aligned slices. */
static void assign_regions(void)
{
    unsigned n = 0;
    for (unsigned c = 0; c < g.ncpus; c++)
        n += wl_uses_memory(g.cpu[c].wl);
    uint64_t per = n ? (g.ram_pages / n) & ~511ULL : 0;
    uint64_t next = 0;
    for (unsigned c = 0; c < g.ncpus; c++) {
        if (!wl_uses_memory(g.cpu[c].wl))
            continue;
        bool last = --n == 0;
        g.cpu[c].region = (struct region){ next, last ? g.ram_pages - next : per };
        next += per;
        char buf[128];
        struct region *r = &g.cpu[c].region;
        g_snprintf(buf, sizeof(buf), "godwit-guest: region vcpu%u %s pages %lu-%lu addr 0x%lx end 0x%lx\n",
                   c, workload_name(g.cpu[c].wl), r->first_page, r->first_page + r->npages,
                   page_addr(r->first_page), page_addr(r->first_page + r->npages - 1) + 4096);
        kprint(buf);
    }
}

static void print_banner(void)
{
    char wl[MAX_CPUS * 16] = "";
    size_t pos = 0;
    for (unsigned c = 0; c < g.ncpus && pos < sizeof(wl); c++)
        pos += (size_t)g_snprintf(wl + pos, sizeof(wl) - pos, "%s%s", c ? "," : "",
                                  workload_name(g.cpu[c].wl));
    char buf[320];
    g_snprintf(buf, sizeof(buf),
               "godwit-guest: booted, %u cpus (%s), RAM %lu MiB, %lu MiB above 1 MiB, workloads %s, avx %s\n",
               g.ncpus, g.cpus_from, g.ram_bytes >> 20, g.ram_pages / 256, wl, g.has_avx ? "yes" : "no");
    kprint(buf);
    g_snprintf(buf, sizeof(buf), "godwit-guest: timer %u Hz, lapic %lu kHz, tsc %lu MHz, %s\n", TICK_HZ,
               g.lapic_hz / 1000, g.tsc_per_tick * TICK_HZ / 1000000,
               g.timer_calibrated ? "calibrated against the PIT" : "PIT silent, assumed 1 GHz APIC bus");
    kprint(buf);
    if (acpi_pm.pm1_evt) {
        g_snprintf(buf, sizeof(buf), "godwit-guest: acpi power button, PM1 0x%x, SCI GSI %u %s %s\n",
                   acpi_pm.pm1_evt, acpi_pm.sci_gsi, acpi_pm.level ? "level" : "edge",
                   acpi_pm.active_low ? "active-low" : "active-high");
        kprint(buf);
    }
}

static void setup_serial(void)
{
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x80);
    outb(COM1 + 0, 0x01); /* 115200 */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); /* 8N1 */
    outb(COM1 + 2, 0xc7); /* FIFO on, cleared, trigger 14 */
    outb(COM1 + 4, 0x0b); /* DTR, RTS, OUT2 */
    outb(COM1 + 1, 0x01); /* receive interrupt */
}

/* Legacy PICs off; COM1 (ISA IRQ 4) through IOAPIC pin 4 (edge, active
 * high, fixed) to vCPU 0. */
static void route_serial_irq(void)
{
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    ioapic_write(0x10 + 4 * 2 + 1, g.cpu[0].apic_id << 24);
    ioapic_write(0x10 + 4 * 2, VEC_SERIAL);
}

/* The SCI through its IOAPIC pin to vCPU 0, then PWRBTN_EN. A button
 * pressed before this (PWRBTN_STS already set) raises the SCI at once. */
static void setup_power_button(void)
{
    if (!acpi_pm.pm1_evt || acpi_pm.sci_gsi >= 24)
        return;
    uint32_t lo = VEC_SCI | (acpi_pm.level ? 1u << 15 : 0) | (acpi_pm.active_low ? 1u << 13 : 0);
    ioapic_write(0x10 + acpi_pm.sci_gsi * 2 + 1, g.cpu[0].apic_id << 24);
    ioapic_write(0x10 + acpi_pm.sci_gsi * 2, lo);
    outw(acpi_pm.pm1_evt + 2, (uint16_t)(inw(acpi_pm.pm1_evt + 2) | PM1_PWRBTN));
}

static void delay_ticks(uint64_t n)
{
    uint64_t end = g.ticks + n;
    while (g.ticks < end)
        __asm__ volatile("sti; hlt; cli");
}

static void start_aps(void)
{
    for (unsigned cpu = 1; cpu < g.ncpus; cpu++) {
        lapic_write(0x310, g.cpu[cpu].apic_id << 24);
        lapic_write(0x300, 0x4500);                 /* INIT */
        delay_ticks(1);
        for (int i = 0; i < 2; i++) {
            lapic_write(0x310, g.cpu[cpu].apic_id << 24);
            lapic_write(0x300, 0x4600 | 0x10);      /* SIPI, vector 0x10 = 0x10000 */
            delay_ticks(1);
            if (g.cpu[cpu].online)
                break;
        }
    }
    uint64_t deadline = g.ticks + 10 * TICK_HZ;
    for (unsigned cpu = 1; cpu < g.ncpus; cpu++) {
        while (!g.cpu[cpu].online && g.ticks < deadline)
            __asm__ volatile("sti; hlt; cli");
        if (!g.cpu[cpu].online) {
            char buf[64];
            g_snprintf(buf, sizeof(buf), "GUEST-PANIC vcpu%u did not start\n", cpu);
            kprint(buf);
        }
    }
}

static void __attribute__((noreturn)) run_user(unsigned cpu)
{
    g.cpu[cpu].online = 1;
    /* As if called: the ABI wants rsp + 8 16-byte aligned at entry. */
    enter_user((uint64_t)user_main, (uint64_t)&ustacks[cpu + 1] - 8, cpu);
}

void kmain_ap(unsigned cpu)
{
    if (cpu >= MAX_CPUS)
        for (;;)
            __asm__ volatile("cli; hlt");
    load_cpu_tables(cpu);
    setup_fpu();
    setup_lapic();
    run_user(cpu);
}

void kmain_bsp(const struct hvm_start_info *si)
{
    g.boot_tsc = rdtsc();
    setup_serial();
    if (si->magic != 0x336ec578) {
        kprint("GUEST-PANIC bad hvm_start_info magic\n");
        power_off();
    }
    if (si->cmdline_paddr) {
        const char *c = (const char *)si->cmdline_paddr;
        size_t i = 0;
        for (; c[i] && i < sizeof(cmdline) - 1; i++)
            cmdline[i] = c[i];
        cmdline[i] = 0;
    }
    setup_idt();
    load_cpu_tables(0);
    setup_fpu();
    parse_memmap(si);
    parse_cmdline(si->rsdp_paddr);
    acpi_find_power(si->rsdp_paddr);
    route_serial_irq();
    setup_power_button();
    calibrate_timer();
    setup_lapic();
    print_banner();
    assign_regions();
    start_aps();
    run_user(0);
}
