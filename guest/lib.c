/* Freestanding helpers for both rings (compiled without vector registers). */
#include <stdarg.h>

#include "guest.h"

size_t g_strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int g_strncmp(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i])
            return (unsigned char)a[i] - (unsigned char)b[i];
        if (!a[i])
            return 0;
    }
    return 0;
}

void *g_memset(void *d, int c, size_t n)
{
    unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}

void *g_memcpy(void *d, const void *s, size_t n)
{
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

/* The compiler may emit calls to these for struct copies. */
void *memset(void *d, int c, size_t n) { return g_memset(d, c, n); }
void *memcpy(void *d, const void *s, size_t n) { return g_memcpy(d, s, n); }

static void put(char *buf, size_t len, size_t *pos, char c)
{
    if (*pos + 1 < len)
        buf[*pos] = c;
    (*pos)++;
}

static void put_num(char *buf, size_t len, size_t *pos, uint64_t v, unsigned base, bool neg)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg)
        put(buf, len, pos, '-');
    while (n)
        put(buf, len, pos, tmp[--n]);
}

int g_snprintf(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t pos = 0;
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(buf, len, &pos, *fmt);
            continue;
        }
        fmt++;
        bool lng = false;
        if (*fmt == 'l') {
            lng = true;
            fmt++;
        }
        switch (*fmt) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            while (*s)
                put(buf, len, &pos, *s++);
            break;
        }
        case 'c': put(buf, len, &pos, (char)va_arg(ap, int)); break;
        case 'd': {
            int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
            put_num(buf, len, &pos, v < 0 ? (uint64_t)-v : (uint64_t)v, 10, v < 0);
            break;
        }
        case 'u': put_num(buf, len, &pos, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, false); break;
        case 'x': put_num(buf, len, &pos, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, false); break;
        case '%': put(buf, len, &pos, '%'); break;
        default: put(buf, len, &pos, '?'); break;
        }
    }
    if (len)
        buf[pos < len ? pos : len - 1] = 0;
    va_end(ap);
    return (int)pos;
}

uint64_t g_parse_size(const char *s, const char **end)
{
    uint64_t v = 0;
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (uint64_t)(*s++ - '0');
    switch (*s) {
    case 'K': case 'k': v <<= 10; s++; break;
    case 'M': case 'm': v <<= 20; s++; break;
    case 'G': case 'g': v <<= 30; s++; break;
    default: break;
    }
    if (end)
        *end = s;
    return v;
}

const char *workload_name(enum workload w)
{
    static const char *const names[] = { "mem-invariant", "dirty", "verify", "fpu", "time",
                                         "idle", "crash" };
    return w < WL__MAX ? names[w] : "?";
}

uint64_t page_addr(uint64_t idx)
{
    for (unsigned i = 0; i < g.nranges; i++) {
        uint64_t n = (g.ranges[i].end - g.ranges[i].start) / 4096;
        if (idx < n)
            return g.ranges[i].start + idx * 4096;
        idx -= n;
    }
    return 0;
}
