#include "migration/ratelimit.h"

void ratelimit_init(struct ratelimit *rl, uint64_t bytes_per_sec, uint64_t now_ns)
{
    rl->bytes_per_sec = bytes_per_sec;
    rl->window_start_ns = now_ns;
    rl->window_bytes = 0;
}

void ratelimit_set(struct ratelimit *rl, uint64_t bytes_per_sec) { rl->bytes_per_sec = bytes_per_sec; }

uint64_t ratelimit_account(struct ratelimit *rl, uint64_t bytes, uint64_t now_ns)
{
    if (rl->bytes_per_sec == 0)
        return 0;
    if (now_ns - rl->window_start_ns >= RATELIMIT_WINDOW_NS) {
        /* Carry over what the previous window overspent. */
        uint64_t budget = rl->bytes_per_sec * (now_ns - rl->window_start_ns) / 1000000000ULL;
        rl->window_bytes = rl->window_bytes > budget ? rl->window_bytes - budget : 0;
        rl->window_start_ns = now_ns;
    }
    rl->window_bytes += bytes;
    /* Time at which window_bytes would have been allowed. */
    uint64_t due_ns = rl->window_bytes * 1000000000ULL / rl->bytes_per_sec;
    uint64_t elapsed = now_ns - rl->window_start_ns;
    return due_ns > elapsed ? due_ns - elapsed : 0;
}
