/* A byte-rate limiter (max-bandwidth): pure arithmetic over timestamps the
 * caller supplies, so it is unit-tested without sleeping.
 * A limit of 0 means unlimited. */
#ifndef GW_MIGRATION_RATELIMIT_H
#define GW_MIGRATION_RATELIMIT_H

#include <stdint.h>

struct ratelimit {
    uint64_t bytes_per_sec;
    uint64_t window_start_ns;
    uint64_t window_bytes;
};

#define RATELIMIT_WINDOW_NS 100000000ULL /* 100 ms windows, as QEMU */

void ratelimit_init(struct ratelimit *rl, uint64_t bytes_per_sec, uint64_t now_ns);
void ratelimit_set(struct ratelimit *rl, uint64_t bytes_per_sec);
/* Account `bytes` sent at `now_ns`; returns how many ns the sender should
 * wait before sending more (0 = go on). */
uint64_t ratelimit_account(struct ratelimit *rl, uint64_t bytes, uint64_t now_ns);

#endif
