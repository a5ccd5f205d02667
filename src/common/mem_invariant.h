/* The test guest's memory invariant (docs/test-guest.md): byte 0 of every
 * 4 KiB page equals its predecessor's, except at most one boundary where it
 * is one less (mod 256) -- the place the guest's current pass has reached.
 * Pure: no I/O, no allocation; used by godwit-memcheck and the tests.
 *
 * Return convention: mem_invariant_check() is a predicate (true when the
 * invariant holds); the report is always filled in. */
#ifndef GW_COMMON_MEM_INVARIANT_H
#define GW_COMMON_MEM_INVARIANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MEM_INVARIANT_PAGE 4096

struct mem_invariant_report {
    uint64_t pages;      /* whole pages examined (len / 4096) */
    uint64_t boundary;   /* index of the first page one less than its predecessor (0: none) */
    uint64_t boundaries; /* pages one less than their predecessor, over the whole buffer */
    uint64_t changes;    /* pages different from their predecessor (boundaries included) */
    bool has_bad;        /* the invariant breaks at bad_page */
    uint64_t bad_page;   /* first page breaking it: any change but a single drop by one */
    uint8_t bad_value;   /* byte 0 of bad_page ... */
    uint8_t bad_prev;    /* ... and of its predecessor */
    uint8_t first, last; /* byte 0 of the first and the last page */
};

/* Checks the pages of buf[0, len) (a trailing partial page is ignored).
 * Fewer than one whole page fails. */
bool mem_invariant_check(const uint8_t *buf, size_t len, struct mem_invariant_report *rep);

#endif
