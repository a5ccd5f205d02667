#include "common/mem_invariant.h"

#include <string.h>

static void note_bad(struct mem_invariant_report *rep, uint64_t i, uint8_t prev, uint8_t v)
{
    if (rep->has_bad)
        return;
    rep->has_bad = true;
    rep->bad_page = i;
    rep->bad_prev = prev;
    rep->bad_value = v;
}

bool mem_invariant_check(const uint8_t *buf, size_t len, struct mem_invariant_report *rep)
{
    memset(rep, 0, sizeof(*rep));
    rep->pages = len / MEM_INVARIANT_PAGE;
    if (rep->pages == 0)
        return false;
    uint8_t prev = buf[0];
    rep->first = prev;
    for (uint64_t i = 1; i < rep->pages; i++) {
        uint8_t v = buf[i * MEM_INVARIANT_PAGE];
        if (v == prev)
            continue;
        rep->changes++;
        if ((uint8_t)(prev - 1) == v) {
            if (rep->boundaries++ == 0)
                rep->boundary = i;
            else
                note_bad(rep, i, prev, v);
        } else {
            note_bad(rep, i, prev, v);
        }
        prev = v;
    }
    rep->last = prev;
    return !rep->has_bad;
}
