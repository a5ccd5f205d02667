#include "devices/cmos.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    RTC_SECONDS = 0x00, RTC_MINUTES = 0x02, RTC_HOURS = 0x04, RTC_DAY_OF_WEEK = 0x06,
    RTC_DAY = 0x07, RTC_MONTH = 0x08, RTC_YEAR = 0x09, RTC_REG_A = 0x0a, RTC_REG_B = 0x0b,
    RTC_REG_C = 0x0c, RTC_REG_D = 0x0d, RTC_CENTURY = 0x32,
};

#define REGB_24H 0x02
#define REGB_DM_BINARY 0x04
#define REGB_SET 0x80
#define REGD_VRT 0x80

struct cmos {
    pthread_mutex_t lock;
    uint8_t index;
    int64_t time_offset_s;
    uint8_t ram[128];
};

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
    return (uint8_t)(cmos_encode(regb, h12) | (h >= 12 ? 0x80 : 0));
}

static void guest_tm(const struct cmos *c, struct tm *tm)
{
    time_t t = time(NULL) + c->time_offset_s;
    gmtime_r(&t, tm);
}

static uint8_t read_clock(struct cmos *c, uint8_t idx)
{
    struct tm tm;
    guest_tm(c, &tm);
    uint8_t b = c->ram[RTC_REG_B];
    switch (idx) {
    case RTC_SECONDS: return cmos_encode(b, (unsigned)tm.tm_sec);
    case RTC_MINUTES: return cmos_encode(b, (unsigned)tm.tm_min);
    case RTC_HOURS: return encode_hour(b, (unsigned)tm.tm_hour);
    case RTC_DAY_OF_WEEK: return cmos_encode(b, (unsigned)tm.tm_wday + 1);
    case RTC_DAY: return cmos_encode(b, (unsigned)tm.tm_mday);
    case RTC_MONTH: return cmos_encode(b, (unsigned)tm.tm_mon + 1);
    case RTC_YEAR: return cmos_encode(b, (unsigned)(tm.tm_year + 1900) % 100);
    case RTC_CENTURY: return cmos_encode(b, (unsigned)(tm.tm_year + 1900) / 100);
    default: return c->ram[idx];
    }
}

static bool is_clock(uint8_t idx)
{
    return idx == RTC_SECONDS || idx == RTC_MINUTES || idx == RTC_HOURS ||
           idx == RTC_DAY_OF_WEEK || idx == RTC_DAY || idx == RTC_MONTH || idx == RTC_YEAR ||
           idx == RTC_CENTURY;
}

/* The guest set a clock field: keep the rest and move the offset. */
static void write_clock(struct cmos *c, uint8_t idx, uint8_t v)
{
    struct tm tm;
    guest_tm(c, &tm);
    uint8_t b = c->ram[RTC_REG_B];
    unsigned d = decode(b, v & 0x7f);
    switch (idx) {
    case RTC_SECONDS: tm.tm_sec = (int)d; break;
    case RTC_MINUTES: tm.tm_min = (int)d; break;
    case RTC_HOURS:
        if (!(b & REGB_24H))
            d = (d % 12) + ((v & 0x80) ? 12 : 0);
        tm.tm_hour = (int)d;
        break;
    case RTC_DAY: tm.tm_mday = (int)d; break;
    case RTC_MONTH: tm.tm_mon = (int)d - 1; break;
    case RTC_YEAR: tm.tm_year = (tm.tm_year / 100) * 100 + (int)d; break;
    case RTC_CENTURY: tm.tm_year = (int)d * 100 + (tm.tm_year + 1900) % 100 - 1900; break;
    default: return;
    }
    time_t want = timegm(&tm);
    if (want != (time_t)-1)
        c->time_offset_s = (int64_t)want - (int64_t)time(NULL);
}

static uint8_t data_read(struct cmos *c)
{
    uint8_t idx = c->index & 0x7f;
    if (is_clock(idx))
        return read_clock(c, idx);
    if (idx == RTC_REG_A) {
        /* Update-in-progress for the first ~2 ms of each second. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint8_t)((c->ram[RTC_REG_A] & 0x7f) | (ts.tv_nsec < 2000000 ? 0x80 : 0));
    }
    if (idx == RTC_REG_C) {
        uint8_t v = c->ram[RTC_REG_C];
        c->ram[RTC_REG_C] = 0;
        return v;
    }
    if (idx == RTC_REG_D)
        return REGD_VRT;
    return c->ram[idx];
}

static void data_write(struct cmos *c, uint8_t v)
{
    uint8_t idx = c->index & 0x7f;
    if (is_clock(idx)) {
        write_clock(c, idx, v);
        return;
    }
    if (idx == RTC_REG_C || idx == RTC_REG_D)
        return; /* read-only */
    c->ram[idx] = v;
}

static void pio_read(void *dev, uint16_t off, uint8_t *data, unsigned size)
{
    struct cmos *c = dev;
    pthread_mutex_lock(&c->lock);
    data[0] = off == 0 ? 0xff : data_read(c);
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

struct cmos *cmos_new(void)
{
    struct cmos *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    pthread_mutex_init(&c->lock, NULL);
    c->ram[RTC_REG_A] = 0x26;            /* 32.768 kHz base, 1024 Hz rate */
    c->ram[RTC_REG_B] = REGB_24H;        /* BCD, 24-hour, as PC firmware */
    c->ram[RTC_REG_D] = REGD_VRT;
    return c;
}

void cmos_free(struct cmos *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void cmos_set_memory_size(struct cmos *c, uint64_t bytes)
{
    pthread_mutex_lock(&c->lock);
    /* Base memory 640 KiB. */
    c->ram[0x15] = 0x80;
    c->ram[0x16] = 0x02;
    /* Extended memory between 1 MiB and 64 MiB, in KiB (capped). */
    uint64_t ext = bytes > (1 << 20) ? (bytes - (1 << 20)) / 1024 : 0;
    if (ext > 0xfc00)
        ext = 0xfc00;
    c->ram[0x17] = c->ram[0x30] = (uint8_t)ext;
    c->ram[0x18] = c->ram[0x31] = (uint8_t)(ext >> 8);
    /* Memory between 16 MiB and 4 GiB, in 64 KiB units. */
    uint64_t low = bytes > 0xC0000000ULL ? 0xC0000000ULL : bytes;
    uint64_t above16 = low > (16 << 20) ? (low - (16 << 20)) >> 16 : 0;
    if (above16 > 0xffff)
        above16 = 0xffff;
    c->ram[0x34] = (uint8_t)above16;
    c->ram[0x35] = (uint8_t)(above16 >> 8);
    /* Memory above 4 GiB, in 64 KiB units (3 bytes). */
    uint64_t high = bytes > 0xC0000000ULL ? (bytes - 0xC0000000ULL) >> 16 : 0;
    c->ram[0x5b] = (uint8_t)high;
    c->ram[0x5c] = (uint8_t)(high >> 8);
    c->ram[0x5d] = (uint8_t)(high >> 16);
    pthread_mutex_unlock(&c->lock);
}

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

int cmos_load(struct cmos *c, const struct cmos_state *st, struct gw_error *err)
{
    if (st->version != CMOS_STATE_VERSION)
        return gw_error_set(err, EINVAL, "CMOS state version %u is not supported", st->version);
    pthread_mutex_lock(&c->lock);
    c->index = st->index;
    c->time_offset_s = st->time_offset_s;
    memcpy(c->ram, st->ram, sizeof(c->ram));
    pthread_mutex_unlock(&c->lock);
    return 0;
}
