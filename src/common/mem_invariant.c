#include "common/mem_invariant.h"

#include <string.h>

bool mem_invariant_check(const uint8_t *buf, size_t len, struct mem_invariant_report *rep)
{
    memset(rep, 0, sizeof(*rep));
    rep->pages = len / 4096;
    if (rep->pages == 0)
        return false;
    rep->first = buf[0];
    uint8_t prev = buf[0];
    for (uint64_t i = 1; i < rep->pages; i++) {
        uint8_t v = buf[i * 4096];
        if (v == prev)
            continue;
        if ((uint8_t)(prev - 1) == v && rep->boundaries == 0) {
            rep->boundaries = 1;
            rep->boundary = i;
            prev = v;
            continue;
        }
        if ((uint8_t)(prev - 1) == v)
            rep->boundaries++;
        rep->bad_page = i;
        rep->last = buf[(rep->pages - 1) * 4096];
        return false;
    }
    rep->last = prev;
    return true;
}
