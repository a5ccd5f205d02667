#include "migration/latency_hist.h"

#include <string.h>

void latency_hist_reset(struct latency_hist *h) { memset(h, 0, sizeof(*h)); }

/* Bucket of value v (>= 0): values below LAT_SUB get one bucket each; above,
 * each power of two is split in LAT_SUB equal steps. */
static unsigned bucket_of(uint64_t v)
{
    if (v < LAT_SUB)
        return (unsigned)v;
    unsigned p = 63u - (unsigned)__builtin_clzll(v); /* v in [2^p, 2^(p+1)) */
    unsigned sub = (unsigned)((v >> (p - 4)) & (LAT_SUB - 1));
    unsigned b = (p - 3) * LAT_SUB + sub;
    return b < LAT_POW * LAT_SUB ? b : LAT_POW * LAT_SUB - 1;
}

/* Largest value that falls in bucket b. */
static uint64_t bucket_top(unsigned b)
{
    if (b < LAT_SUB)
        return b;
    unsigned p = b / LAT_SUB + 3, sub = b % LAT_SUB;
    return (1ULL << p) + ((uint64_t)(sub + 1) << (p - 4)) - 1;
}

void latency_hist_add(struct latency_hist *h, uint64_t us)
{
    h->count++;
    h->sum_us += us;
    if (us > h->max_us)
        h->max_us = us;
    h->bucket[bucket_of(us)]++;
}

uint64_t latency_hist_percentile(const struct latency_hist *h, double pct)
{
    if (!h->count)
        return 0;
    uint64_t want = (uint64_t)((double)h->count * pct / 100.0 + 0.999999);
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < LAT_POW * LAT_SUB; b++) {
        seen += h->bucket[b];
        if (seen >= want) {
            uint64_t top = b == LAT_POW * LAT_SUB - 1 ? h->max_us : bucket_top(b);
            return top < h->max_us ? top : h->max_us;
        }
    }
    return h->max_us;
}
