#include "migration/policy.h"

#include <string.h>

void precopy_params_default(struct precopy_params *p)
{
    memset(p, 0, sizeof(*p));
    p->downtime_limit_ms = 300;
    p->throttle_initial = 20;
    p->throttle_increment = 10;
    p->throttle_max = 99;
    p->throttle_trigger_pct = 50;
}

uint64_t precopy_switch_bandwidth(uint64_t bytes, uint64_t round_ns, uint64_t cpu_wait_ns)
{
    if (round_ns == 0)
        round_ns = 1;
    uint64_t busy_ns = round_ns - (cpu_wait_ns < round_ns / 2 ? cpu_wait_ns : round_ns / 2);
    /* bytes * 1e9 overflows past 18 GB in one round: divide first then. */
    if (bytes > UINT64_MAX / 1000000000ULL)
        return bytes / busy_ns * 1000000000ULL;
    return bytes * 1000000000ULL / busy_ns;
}

uint64_t precopy_expected_downtime_ms(uint64_t remaining_bytes, uint64_t bandwidth_bps)
{
    if (remaining_bytes == 0)
        return 0;
    if (bandwidth_bps == 0)
        return UINT64_MAX;
    /* Round up so that "fits" is never optimistic. */
    return (remaining_bytes * 1000 + bandwidth_bps - 1) / bandwidth_bps;
}

/* Did the guest dirty more than trigger% of what we managed to send? The
 * first pass counts too, as in QEMU (whose check runs at every dirty
 * bitmap sync, the end of pass 1 included): a guest that dirties half of
 * what the whole first pass moved is a busy one. Counting from pass 2
 * started the throttle a round later than QEMU, and busy 1 GiB with
 * auto-converge spent one more 100-300 ms round unthrottled. */
static bool round_dirtied_too_much(const struct precopy_params *p, const struct precopy_round *r)
{
    return r->dirtied_bytes * 100 > r->transferred_bytes * p->throttle_trigger_pct;
}

static unsigned next_throttle(const struct precopy_params *p, unsigned cur)
{
    unsigned next = cur == 0 ? p->throttle_initial : cur + p->throttle_increment;
    return next > p->throttle_max ? p->throttle_max : next;
}

void precopy_decide(const struct precopy_params *p, struct precopy_policy_state *st,
                    const struct precopy_round *r, struct precopy_decision *d)
{
    memset(d, 0, sizeof(*d));
    d->expected_downtime_ms = precopy_expected_downtime_ms(r->remaining_bytes, r->bandwidth_bps);
    d->switchover = r->iteration >= 1 && d->expected_downtime_ms <= p->downtime_limit_ms;
    d->throttle_pct = st->throttle_pct;
    if (d->switchover || !p->auto_converge)
        return;
    if (round_dirtied_too_much(p, r))
        st->high_dirty_rounds++;
    else
        st->high_dirty_rounds = 0;
    /* Two bad rounds in a row, as QEMU does, before touching the guest. */
    if (st->high_dirty_rounds >= 2) {
        unsigned next = next_throttle(p, st->throttle_pct);
        if (next != st->throttle_pct) {
            st->throttle_pct = next;
            d->throttle_changed = true;
        }
        st->high_dirty_rounds = 0;
    }
    d->throttle_pct = st->throttle_pct;
}

bool precopy_round_ends_early(uint64_t downtime_limit_ms, uint64_t sent, uint64_t again,
                              uint64_t left_bytes, uint64_t bandwidth_bps)
{
    if (sent == 0 || again * 2 < sent)
        return false;
    return precopy_expected_downtime_ms(left_bytes, bandwidth_bps) <= downtime_limit_ms;
}

uint64_t precopy_stop_allowance_ms(uint64_t downtime_limit_ms)
{
    uint64_t more = downtime_limit_ms / 4 > 10 ? downtime_limit_ms / 4 : 10;
    return downtime_limit_ms + more;
}

bool precopy_stop_overruns(uint64_t downtime_limit_ms, uint64_t elapsed_ms, uint64_t sent,
                           uint64_t total)
{
    uint64_t allow = precopy_stop_allowance_ms(downtime_limit_ms);
    if (elapsed_ms >= allow)
        return true;
    if (elapsed_ms * 4 < allow || sent == 0 || sent >= total)
        return false;
    /* elapsed / sent * total > allow, without dividing (both below 2^40) */
    return elapsed_ms * total > allow * sent;
}
