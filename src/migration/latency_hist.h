/* A latency histogram for post-copy page faults (fault to page installed):
 * log-linear buckets (16 per power of two, so a percentile is within ~6 %)
 * from 1 µs to about an hour, fixed size, no allocation. Pure; the caller
 * provides exclusion.
 * Returns: percentiles in microseconds (0 when empty). */
#ifndef GW_MIGRATION_LATENCY_HIST_H
#define GW_MIGRATION_LATENCY_HIST_H

#include <stdint.h>

#define LAT_SUB 16
#define LAT_POW 32
struct latency_hist {
    uint64_t count;
    uint64_t sum_us;
    uint64_t max_us;
    uint32_t bucket[LAT_POW * LAT_SUB];
};

void latency_hist_reset(struct latency_hist *h);
void latency_hist_add(struct latency_hist *h, uint64_t us);
/* The value at or below which `pct` percent (0 < pct <= 100) of samples
 * lie, as the upper edge of its bucket (never above max). */
uint64_t latency_hist_percentile(const struct latency_hist *h, double pct);

#endif
