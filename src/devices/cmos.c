/* MC146818 CMOS RTC model. See cmos.h. */
#define LOG_PREFIX "cmos"
#include "devices/cmos.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

enum {
    RTC_SECONDS = 0x00, RTC_MINUTES = 0x02, RTC_HOURS = 0x04, RTC_DAY_OF_WEEK = 0x06,
    RTC_DAY = 0x07, RTC_MONTH = 0x08, RTC_YEAR = 0x09, RTC_REG_A = 0x0a, RTC_REG_B = 0x0b,
    RTC_REG_C = 0x0c, RTC_REG_D = 0x0d, RTC_CENTURY = 0x32,
};

#define REGA_UIP       0x80
#define REGA_RATE      0x0f
#define REGB_24H       0x02
#define REGB_DM_BINARY 0x04
#define REGB_UIE       0x10
#define REGB_PIE       0x40
#define REGB_SET       0x80
#define REGC_UF        0x10
#define REGC_PF        0x40
#define REGC_IRQF      0x80
#define REGD_VRT       0x80
#define HOUR_PM        0x80

#define UIP_WINDOW_NS  2000000L   /* UIP during the last 2 ms of a second */
#define RTC_HZ         32768      /* the MC146818's time base */
#define MAX_OFFSET_S   1000000000000LL

struct cmos {
    pthread_mutex_t lock;
    cmos_clock_fn clock;
    void *clock_opaque;
    uint8_t index;
    int64_t time_offset_s;
    int64_t last_c_ticks;     /* guest time of the last register C read, 1/RTC_HZ s */
    uint8_t ram[128];
};

static const uint8_t clock_regs[] = {
    RTC_SECONDS, RTC_MINUTES, RTC_HOURS, RTC_DAY_OF_WEEK, RTC_DAY, RTC_MONTH, RTC_YEAR, RTC_CENTURY,
};

/* ---- pure encoding ---- */

uint8_t cmos_encode(uint8_t regb, unsigned v)
{
    if (regb & REGB_DM_BINARY)
        return (uint8_t)v;
    return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static unsigned decode(uint8_t regb, uint8_t v)
{
    if (regb & REGB_DM_BINARY)
        return v;
    return (unsigned)((v >> 4) * 10 + (v & 0x0f));
}

static uint8_t encode_hour(uint8_t regb, unsigned h)
{
    if (regb & REGB_24H)
        return cmos_encode(regb, h);
    unsigned h12 = h % 12 ? h % 12 : 12;
    return (uint8_t)(cmos_encode(regb, h12) | (h >= 12 ? HOUR_PM : 0));
}

static unsigned decode_hour(uint8_t regb, uint8_t v)
{
    if (regb & REGB_24H)
        return decode(regb, v);
    return decode(regb, v & 0x7f) % 12 + ((v & HOUR_PM) ? 12 : 0);
}

static bool is_clock(uint8_t idx)
{
    return memchr(clock_regs, idx, sizeof(clock_regs)) != NULL;
}

/* The value of clock register idx for broken-down time tm. */
static uint8_t encode_field(uint8_t regb, const struct tm *tm, uint8_t idx)
{
    unsigned year = (unsigned)(tm->tm_year + 1900);
    switch (idx) {
    case RTC_SECONDS: return cmos_encode(regb, (unsigned)tm->tm_sec);
    case RTC_MINUTES: return cmos_encode(regb, (unsigned)tm->tm_min);
    case RTC_HOURS: return encode_hour(regb, (unsigned)tm->tm_hour);
    case RTC_DAY_OF_WEEK: return cmos_encode(regb, (unsigned)tm->tm_wday + 1);
    case RTC_DAY: return cmos_encode(regb, (unsigned)tm->tm_mday);
    case RTC_MONTH: return cmos_encode(regb, (unsigned)tm->tm_mon + 1);
    case RTC_YEAR: return cmos_encode(regb, year % 100);
    default: return cmos_encode(regb, (year / 100) % 100);
    }
}

/* Store clock register idx = v into tm (day of week is derived: ignored). */
static void decode_field(uint8_t regb, struct tm *tm, uint8_t idx, uint8_t v)
{
    int year = tm->tm_year + 1900;
    switch (idx) {
    case RTC_SECONDS: tm->tm_sec = (int)decode(regb, v); break;
    case RTC_MINUTES: tm->tm_min = (int)decode(regb, v); break;
    case RTC_HOURS: tm->tm_hour = (int)decode_hour(regb, v); break;
    case RTC_DAY: tm->tm_mday = (int)decode(regb, v); break;
    case RTC_MONTH: tm->tm_mon = (int)decode(regb, v) - 1; break;
    case RTC_YEAR: tm->tm_year = year / 100 * 100 + (int)decode(regb, v) - 1900; break;
    case RTC_CENTURY: tm->tm_year = (int)decode(regb, v) * 100 + year % 100 - 1900; break;
    default: break;
    }
}

/* ---- time (lock held) ---- */

static struct timespec host_now(const struct cmos *c)
{
    if (c->clock)
        return c->clock(c->clock_opaque);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts;
}

/* Guest time in ticks of the chip's 32.768 kHz base. Nanoseconds would
 * overflow 64 bits for a guest time past 2262 or before 1678, which the
 * guest can set (the century register) and a state may hold; ticks hold
 * any time_offset_s cmos_state_check accepts. */
static int64_t guest_now_ticks(const struct cmos *c)
{
    struct timespec ts = host_now(c);
    return ((int64_t)ts.tv_sec + c->time_offset_s) * RTC_HZ +
           (int64_t)ts.tv_nsec * RTC_HZ / 1000000000L;
}

/* a / b rounded down (b > 0): the period that contains a time before 1970. */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

static void guest_tm(const struct cmos *c, struct tm *tm)
{
    time_t t = (time_t)(host_now(c).tv_sec + c->time_offset_s);
    gmtime_r(&t, tm);
}

/* Make tm the guest's current time (keeping the sub-second phase). Field
 * values past their range carry over (month 255 is 21 years on), so
 * repeated single-field writes could move the time without bound: an
 * offset beyond what cmos_state_check accepts is ignored, as is a time
 * timegm cannot represent. */
static void set_guest_time(struct cmos *c, struct tm *tm)
{
    tm->tm_wday = -1; /* timegm sets it on success: -1 is also 23:59:59 in 1969 */
    time_t want = timegm(tm);
    int64_t offset = (int64_t)want - (int64_t)host_now(c).tv_sec;
    if ((want == (time_t)-1 && tm->tm_wday == -1) || offset > MAX_OFFSET_S ||
        offset < -MAX_OFFSET_S) {
        log_debug("guest set an impossible time: ignored");
        return;
    }
    c->time_offset_s = offset;
}

/* ---- registers ---- */

static uint8_t read_reg_a(struct cmos *c)
{
    uint8_t a = c->ram[RTC_REG_A] & (uint8_t)~REGA_UIP;
    if (c->ram[RTC_REG_B] & REGB_SET)
        return a; /* updates are stopped */
    if (host_now(c).tv_nsec >= 1000000000L - UIP_WINDOW_NS)
        a |= REGA_UIP;
    return a;
}

/* Flags that became true since the last read of C, then cleared. */
static uint8_t read_reg_c(struct cmos *c)
{
    int64_t now = guest_now_ticks(c), last = c->last_c_ticks;
    uint8_t b = c->ram[RTC_REG_B], rate = c->ram[RTC_REG_A] & REGA_RATE;
    uint8_t v = c->ram[RTC_REG_C];
    if (!(b & REGB_SET) && floor_div(now, RTC_HZ) != floor_div(last, RTC_HZ))
        v |= REGC_UF;
    if (rate) {
        /* Rate r divides the time base by 2^(r-1); rates 1 and 2 behave
         * as 8 and 9 on the MC146818. */
        unsigned shift = rate < 3 ? rate + 7u : rate;
        int64_t period = INT64_C(1) << (shift - 1);
        if (floor_div(now, period) != floor_div(last, period))
            v |= REGC_PF;
    }
    if (((v & REGC_UF) && (b & REGB_UIE)) || ((v & REGC_PF) && (b & REGB_PIE)))
        v |= REGC_IRQF;
    c->ram[RTC_REG_C] = 0;
    c->last_c_ticks = now;
    return v;
}

static uint8_t data_read(struct cmos *c)
{
    uint8_t idx = c->index & 0x7f;
    if (is_clock(idx) && !(c->ram[RTC_REG_B] & REGB_SET)) {
        struct tm tm;
        guest_tm(c, &tm);
        return encode_field(c->ram[RTC_REG_B], &tm, idx);
    }
    switch (idx) {
    case RTC_REG_A: return read_reg_a(c);
    case RTC_REG_C: return read_reg_c(c);
    case RTC_REG_D: return REGD_VRT;
    default: return c->ram[idx];
    }
}

/* SET on: freeze the current time into the clock registers. SET off: the
 * registers (as the guest left them) become the time. */
static void write_reg_b(struct cmos *c, uint8_t v)
{
    uint8_t old = c->ram[RTC_REG_B];
    struct tm tm;
    guest_tm(c, &tm);
    if (!(old & REGB_SET) && (v & REGB_SET)) {
        for (size_t i = 0; i < sizeof(clock_regs); i++)
            c->ram[clock_regs[i]] = encode_field(v, &tm, clock_regs[i]);
    } else if ((old & REGB_SET) && !(v & REGB_SET)) {
        for (size_t i = 0; i < sizeof(clock_regs); i++)
            decode_field(v, &tm, clock_regs[i], c->ram[clock_regs[i]]);
        set_guest_time(c, &tm);
    }
    c->ram[RTC_REG_B] = v;
}

static void data_write(struct cmos *c, uint8_t v)
{
    uint8_t idx = c->index & 0x7f;
    if (is_clock(idx) && !(c->ram[RTC_REG_B] & REGB_SET)) {
        /* One field while the clock runs: keep the others. */
        struct tm tm;
        guest_tm(c, &tm);
        decode_field(c->ram[RTC_REG_B], &tm, idx, v);
        if (idx != RTC_DAY_OF_WEEK)
            set_guest_time(c, &tm);
        return;
    }
    switch (idx) {
    case RTC_REG_B: write_reg_b(c, v); break;
    case RTC_REG_C:
    case RTC_REG_D: break; /* read-only */
    case RTC_REG_A: c->ram[idx] = v & (uint8_t)~REGA_UIP; break;
    default: c->ram[idx] = v; break;
    }
}

static void pio_read(void *dev, uint16_t off, uint8_t *data, unsigned size)
{
    struct cmos *c = dev;
    pthread_mutex_lock(&c->lock);
    data[0] = off == 0 ? 0xff : data_read(c); /* the index port is write-only */
    pthread_mutex_unlock(&c->lock);
    for (unsigned i = 1; i < size; i++)
        data[i] = 0xff;
}

static void pio_write(void *dev, uint16_t off, const uint8_t *data, unsigned size)
{
    struct cmos *c = dev;
    pthread_mutex_lock(&c->lock);
    if (off == 0)
        c->index = data[0]; /* bit 7 masks NMI: nothing to mask here */
    else
        data_write(c, data[0]);
    pthread_mutex_unlock(&c->lock);
}

const struct pio_dev_ops cmos_pio_ops = { .read = pio_read, .write = pio_write };

/* ---- life cycle ---- */

struct cmos *cmos_new(void)
{
    struct cmos *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    int r = pthread_mutex_init(&c->lock, NULL);
    if (r) {
        free(c);
        errno = r;
        return NULL;
    }
    c->ram[RTC_REG_A] = 0x26;            /* 32.768 kHz base, 1024 Hz rate */
    c->ram[RTC_REG_B] = REGB_24H;        /* BCD, 24-hour, as PC firmware */
    c->ram[RTC_REG_D] = REGD_VRT;
    c->last_c_ticks = guest_now_ticks(c);
    return c;
}

void cmos_free(struct cmos *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void cmos_set_clock(struct cmos *c, cmos_clock_fn fn, void *opaque)
{
    pthread_mutex_lock(&c->lock);
    c->clock = fn;
    c->clock_opaque = opaque;
    c->last_c_ticks = guest_now_ticks(c);
    pthread_mutex_unlock(&c->lock);
}

static void put16(uint8_t *ram, unsigned lo, uint64_t v)
{
    ram[lo] = (uint8_t)v;
    ram[lo + 1] = (uint8_t)(v >> 8);
}

void cmos_set_memory_size(struct cmos *c, uint64_t bytes)
{
    const uint64_t mib = 1ULL << 20, low_max = 0xC0000000ULL;
    uint64_t low = bytes < low_max ? bytes : low_max;
    uint64_t ext = low > mib ? (low - mib) / 1024 : 0;             /* KiB above 1 MiB */
    uint64_t above16 = low > 16 * mib ? (low - 16 * mib) >> 16 : 0; /* 64 KiB units */
    uint64_t high = bytes > low_max ? (bytes - low_max) >> 16 : 0;  /* 64 KiB units */
    pthread_mutex_lock(&c->lock);
    put16(c->ram, 0x15, 640);                                  /* base memory, KiB */
    put16(c->ram, 0x17, ext > 0xffff ? 0xffff : ext);
    put16(c->ram, 0x30, ext > 0xffff ? 0xffff : ext);
    put16(c->ram, 0x34, above16 > 0xffff ? 0xffff : above16);
    c->ram[0x5b] = (uint8_t)high;
    c->ram[0x5c] = (uint8_t)(high >> 8);
    c->ram[0x5d] = (uint8_t)(high >> 16);
    pthread_mutex_unlock(&c->lock);
}

/* ---- state ---- */

void cmos_save(struct cmos *c, struct cmos_state *st)
{
    memset(st, 0, sizeof(*st));
    pthread_mutex_lock(&c->lock);
    st->version = CMOS_STATE_VERSION;
    st->index = c->index;
    st->time_offset_s = c->time_offset_s;
    memcpy(st->ram, c->ram, sizeof(st->ram));
    pthread_mutex_unlock(&c->lock);
}

int cmos_state_check(const struct cmos_state *st, struct gw_error *err)
{
    if (st->version != CMOS_STATE_VERSION)
        return gw_error_set(err, EINVAL, "CMOS state version %u is not supported (want %u)",
                            st->version, CMOS_STATE_VERSION);
    if (st->reserved[0] || st->reserved[1] || st->reserved[2])
        return gw_error_set(err, EINVAL, "CMOS state: reserved bytes are not zero");
    if (st->time_offset_s > MAX_OFFSET_S || st->time_offset_s < -MAX_OFFSET_S)
        return gw_error_set(err, EINVAL, "CMOS state: time offset %lld s is out of range",
                            (long long)st->time_offset_s);
    return 0;
}

int cmos_load(struct cmos *c, const struct cmos_state *st, struct gw_error *err)
{
    int r = cmos_state_check(st, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&c->lock);
    c->index = st->index;
    c->time_offset_s = st->time_offset_s;
    /* Taken as sent, UIP included: a read of A computes UIP and never
     * shows the stored bit, and the state saves back to the same bytes. */
    memcpy(c->ram, st->ram, sizeof(c->ram));
    c->last_c_ticks = guest_now_ticks(c);
    pthread_mutex_unlock(&c->lock);
    return 0;
}
